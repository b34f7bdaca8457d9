"""Helpers several test modules share (imported as ``helpers``; fixtures are in conftest.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

TASKS = Path(__file__).resolve().parent / "tasks"
LINEAR_TASK = TASKS / "linear_numpy.py"
TORCH_TASK = TASKS / "tiny_torch.py"
TRUE_W = np.array([1.5, -2.0, 0.5, 1.0])


def silo_arrays(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` samples of 4 float32 features with a (nearly) linearly separable int64 label."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = (x @ TRUE_W + 0.25 > 0).astype(np.int64)
    return x, y


def write_silo_folder(folder: Path, n_train: int, n_test: int = 10, seed: int = 0) -> Path:
    """``<folder>/train.npz`` and ``<folder>/test.npz`` with arrays x and y, as load_split reads them."""
    folder.mkdir(parents=True, exist_ok=True)
    x, y = silo_arrays(n_train + n_test, seed)
    np.savez(folder / "train.npz", x=x[:n_train], y=y[:n_train])
    np.savez(folder / "test.npz", x=x[n_train:], y=y[n_train:])
    return folder


def in_runtime(config: Any, kind: str, **updates: Any) -> Any:
    """``config`` with ``runtime.kind`` set to ``kind`` (and other top-level keys updated)."""
    return config.model_copy(update={"runtime": config.runtime.model_copy(update={"kind": kind}), **updates})


def run_in_processes(config: Any, text: str, **kwargs: Any) -> Any:
    """``fedsilo run --runtime processes``: one OS process per silo over gRPC + mTLS on 127.0.0.1."""
    from fedsilo.runtime.launch import run_experiment

    return run_experiment(in_runtime(config, "processes"), text, **kwargs)


HAM_HEADER = ("lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization", "dataset")
HAM_SITES = ("vidir_molemax", "vidir_modern", "rosendahl", "vienna_dias")
HAM_DX = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
#: One solid colour per diagnosis in the generated images, so a test can tell which image is where.
HAM_COLOURS = (
    (200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40), (40, 200, 200), (200, 40, 200), (90, 90, 90),
)  # fmt: skip


def ham10000_rows() -> list[dict[str, str]]:
    """A small HAM10000-like table: 4 sites of 24, 16, 12 and 8 lesions with 1-3 images each.

    Lesion ``HAM_0000900`` has two images at vidir_modern and one at vidir_molemax (as 9 real
    lesions do), and row 7 of vienna_dias has no age. Every lesion has one diagnosis.
    """
    rows: list[dict[str, str]] = []
    lesion = 0
    for site, n_lesions in zip(HAM_SITES, (24, 16, 12, 8), strict=True):
        for k in range(n_lesions):
            lesion += 1
            dx = HAM_DX[(lesion * 3 + k) % len(HAM_DX)]
            for _ in range(1 + lesion % 3):
                rows.append(
                    {
                        "lesion_id": f"HAM_{lesion:07d}",
                        "image_id": f"ISIC_{len(rows):07d}",
                        "dx": dx,
                        "dx_type": "histo",
                        "age": "" if site == "vienna_dias" and k == 7 else str(20 + 5 * (lesion % 12)),
                        "sex": ("male", "female", "unknown")[lesion % 3],
                        "localization": ("back", "face", "lower extremity", "unknown")[lesion % 4],
                        "dataset": site,
                    }
                )
    for site in ("vidir_modern", "vidir_modern", "vidir_molemax"):
        rows.append({**rows[0], "lesion_id": "HAM_0000900", "image_id": f"ISIC_{len(rows):07d}", "dataset": site})
    return rows


def write_ham10000_release(root: Path, rows: list[dict[str, str]], size: tuple[int, int] = (60, 45)) -> Path:
    """The release layout: ``HAM10000_metadata.csv`` (CRLF, as shipped) and two folders of JPEGs."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    lines = [",".join(HAM_HEADER)] + [",".join(r[c] for c in HAM_HEADER) for r in rows]
    (root / "HAM10000_metadata.csv").write_bytes(("\r\n".join(lines) + "\r\n").encode())
    for i, row in enumerate(rows):
        folder = root / f"HAM10000_images_part_{1 + i % 2}"
        folder.mkdir(exist_ok=True)
        colour = HAM_COLOURS[HAM_DX.index(row["dx"])]
        Image.new("RGB", size, colour).save(folder / f"{row['image_id']}.jpg", quality=95)
    return root


def attached_pool(
    task: Path, folders: Any, params: Any, store: Path, *args: Any, codec: Any = None, **kwargs: Any
) -> Any:
    """A started :class:`WorkerPool` with the model's layout attached (the silo store in ``store``)."""
    from fedsilo.runtime.simulation import WorkerPool
    from fedsilo.wire.arrays import BufferLayout
    from fedsilo.wire.codecs import Codec

    pool = WorkerPool(task, folders, *args, **kwargs)
    pool.attach(BufferLayout.of(params), codec or Codec(), store)
    return pool
