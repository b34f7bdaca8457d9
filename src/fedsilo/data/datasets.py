"""The datasets fedsilo knows by name: where to find them, how to check them, how to fetch them.

Files are looked up offline first (see :func:`data_dirs`) and always checked against a published
checksum, so a run never trains on a truncated or substituted file. Downloading is opt-in
(``--download``) and lands a file under its real name only after its checksum matched.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from fedsilo.data.catalogue import DatasetInfo, dataset_info
from fedsilo.errors import ChecksumMismatch, DataError, DatasetNotFound

ENV_VAR = "FEDSILO_DATA_DIR"
SPLITS = ("train", "val", "test")
_CHUNK = 1 << 20
def _cache_dir() -> Path:
    return Path.home() / ".cache" / "fedsilo" / "datasets"


def _env_dirs() -> list[Path]:
    return [Path(p) for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p]


def _shared_dirs(start: Path) -> list[Path]:
    """``shared/data`` folders beside or inside any ancestor of ``start`` (a checkout's sibling)."""
    found = []
    for ancestor in (start, *start.parents):
        for candidate in (ancestor.parent / "shared" / "data", ancestor / "shared" / "data"):
            if candidate.is_dir():
                found.append(candidate)
    return found


def data_dirs(extra: Sequence[Path | str] = ()) -> list[Path]:
    """Folders searched for dataset files, in order, without duplicates.

    ``extra``, then each ``$FEDSILO_DATA_DIR`` entry, then ``./data/datasets``, then
    ``~/.cache/fedsilo/datasets``, then ``shared/data`` beside the checkout.
    """
    cwd = Path.cwd()
    candidates = [Path(p) for p in extra] + _env_dirs() + [cwd / "data" / "datasets", _cache_dir()]
    candidates += _shared_dirs(cwd) + _shared_dirs(Path(__file__).resolve().parent)
    unique: dict[str, Path] = {}
    for candidate in candidates:
        path = Path(os.path.abspath(candidate.expanduser()))
        unique.setdefault(str(path), path)
    return list(unique.values())


def digests(path: Path) -> tuple[str, str]:
    """``(md5, sha256)`` hex digests of a file, read in chunks."""
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            md5.update(chunk)
            sha.update(chunk)
    return md5.hexdigest(), sha.hexdigest()


def _mismatch(what: str, info: DatasetInfo, md5: str, sha: str, fix: str) -> ChecksumMismatch:
    return ChecksumMismatch(
        f"{what} is not the published {info.name} file: expected {info.expected()}, got md5 {md5} / sha256 {sha}",
        fix=fix,
    )


def verify(path: Path, info: DatasetInfo) -> None:
    """Raise ChecksumMismatch unless ``path`` has one of ``info``'s accepted checksums."""
    md5, sha = digests(Path(path))
    if not info.accepts(md5, sha):
        fix = f"delete {path} and download it again (--download), or put the official file there"
        raise _mismatch(str(path), info, md5, sha, fix)


def _progress(filename: str) -> Progress:
    console = Console(stderr=True)
    return Progress(
        TextColumn(filename),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )


def download(info: DatasetInfo, dest_dir: Path, url: str | None = None, timeout: float = 60) -> Path:
    """Fetch ``info``'s file into ``dest_dir``; ``url`` overrides ``info.url`` (mirrors, tests).

    Bytes stream into a hidden temp file that is renamed into place only after its checksum
    matched, so a bad or interrupted download never sits under the real name.
    """
    dest_dir = Path(dest_dir)
    final = dest_dir / info.filename
    source = url or info.url
    if source is None:
        raise DataError(
            f"{info.name} cannot be downloaded automatically",
            fix=f"get {info.filename} from {info.homepage} and put it in {dest_dir}",
        )
    dest_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{info.filename}.", suffix=".part", dir=dest_dir)
    tmp = Path(tmp_name)
    try:
        md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
        with (
            os.fdopen(fd, "wb") as out,
            urllib.request.urlopen(source, timeout=timeout) as response,
            _progress(info.filename) as progress,
        ):
            length = response.headers.get("Content-Length")
            task = progress.add_task("download", total=int(length) if length else None)
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                md5.update(chunk)
                sha.update(chunk)
                progress.advance(task, len(chunk))
        if not info.accepts(md5.hexdigest(), sha.hexdigest()):
            what = f"the {info.filename} downloaded from {source}"
            fix = f"the mirror may be broken: retry later or put the official file at {final}"
            raise _mismatch(what, info, md5.hexdigest(), sha.hexdigest(), fix)
        os.replace(tmp, final)
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(exc, urllib.error.HTTPError):
            exc.close()  # an HTTPError holds the open response
            reason = f"HTTP {exc.code} {exc.reason}"
        raise DataError(
            f"could not download {info.filename} from {source}: {reason}",
            fix=f"no internet? fetch it on another machine and put it at {final} "
            f"(or set {ENV_VAR} to the folder holding it)",
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)
    return final


# ``find_dataset``'s parameters shadow these two functions' names.
_search_dirs = data_dirs
_download = download


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK)


def find_dataset(
    name: str,
    data_dirs: Sequence[Path] | None = None,
    download: bool = False,
    url: str | None = None,
) -> Path:
    """Return the verified local path of dataset ``name``, downloading it only if asked.

    ``data_dirs`` replaces the default search path. A download goes to the first writable of
    those dirs, ``$FEDSILO_DATA_DIR`` and ``~/.cache/fedsilo/datasets``.
    """
    info = dataset_info(name)
    searched = [Path(d) for d in data_dirs] if data_dirs is not None else _search_dirs() + info.bundled_dirs()
    for folder in searched:
        if (folder / info.filename).is_file():
            verify(folder / info.filename, info)
            return folder / info.filename
    explicit = [Path(d) for d in data_dirs] if data_dirs is not None else []
    targets = [*explicit, *_env_dirs(), _cache_dir()]
    if download:
        target = next((d for d in targets if _writable(d)), None)
        if target is None:
            raise DataError(
                f"no writable folder to download {info.filename} into",
                fix=f"set {ENV_VAR} to a writable folder",
            )
        return _download(info, target, url=url)
    where = f"get it from {info.homepage} and put" if info.url is None else "put"
    if info.bundled_in:
        package = info.bundled_in.split("/")[0]
        where = f"install {package} (pip install 'fedsilo[{package}]'), which ships it, or put"
    fetch = "" if info.url is None else ", or pass --download"
    checksum = f"md5 {info.md5}" if info.md5 else f"sha256 {info.sha256}"
    raise DatasetNotFound(
        f"dataset {name!r} not found: no {info.filename} in {', '.join(str(d) for d in searched) or '(no folders)'}",
        fix=f"{where} {info.filename} ({checksum}) in {targets[0]}, or set {ENV_VAR} "
        f"to the folder that holds it{fetch}",
    )


def _labels_1d(y: np.ndarray, where: str) -> np.ndarray:
    if y.ndim > 1 and int(np.prod(y.shape[1:])) != 1:
        raise DataError(
            f"{where} holds multi-label targets of shape {y.shape}",
            fix="use a dataset with one integer label per sample",
        )
    if y.dtype.kind not in "iub":
        raise DataError(f"{where} has {y.dtype} labels", fix="store labels as integers")
    return y.reshape(-1).astype(np.int64)


def _load_sklearn_csv(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """scikit-learn's bundled CSV layout: a ``n_samples,n_features,class names...`` line, then
    one row of features and an integer label per sample. All of it is the ``train`` split."""
    try:
        with open(path) as f:
            head = f.readline().strip().split(",")
            n, d = int(head[0]), int(head[1])
            rows = np.loadtxt(f, delimiter=",", ndmin=2)
    except (OSError, ValueError, IndexError) as exc:
        raise DataError(
            f"cannot read {path} as a scikit-learn data CSV: {exc}",
            fix="use the file scikit-learn ships, or an .npz with train/test arrays",
        ) from exc
    if rows.shape != (n, d + 1):
        raise DataError(f"{path}: header says {n} x {d + 1} values, found {rows.shape}", fix="restore the file")
    return {"train": (rows[:, :d], _labels_1d(rows[:, d].astype(np.int64), str(path)))}


def load_arrays(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Map split name to ``(x, y)`` from an .npz in MedMNIST or Keras layout (y 1-D int64), or
    from a CSV in scikit-learn's bundled-data layout."""
    if Path(path).suffix == ".csv":
        return _load_sklearn_csv(Path(path))
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
            out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
            for split in SPLITS:
                for xk, yk in (f"{split}_images", f"{split}_labels"), (f"x_{split}", f"y_{split}"):
                    if xk in keys and yk in keys:
                        x, y = npz[xk], _labels_1d(npz[yk], f"{path}:{yk}")
                        if len(x) != len(y):
                            raise DataError(
                                f"{path}: {xk} has {len(x)} samples but {yk} has {len(y)}",
                                fix="repair or re-download the file",
                            )
                        out[split] = (x, y)
                        break
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read {path} as .npz: {exc}", fix="re-download or regenerate the file") from exc
    if not out:
        raise DataError(
            f"{path} has no train/val/test arrays (keys found: {', '.join(sorted(keys))})",
            fix="use MedMNIST keys (train_images, train_labels, ...) or Keras keys (x_train, y_train, ...)",
        )
    return out
