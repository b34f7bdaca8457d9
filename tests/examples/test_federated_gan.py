"""The federated GAN example, small: it validates, and its hooks work on a slice of the real data.

A full round trains on every hospital's images for minutes on a loaded CPU, so here the task
module's functions run on 64 real PneumoniaMNIST images with a smaller TSTR budget; the full run
is measured in the example's README.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import yaml

from fedsilo.data.datasets import find_dataset
from fedsilo.errors import DatasetNotFound
from fedsilo.tracking.images import png_bytes, tile_grid

torch = pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "federated_gan"


@pytest.fixture
def real_images() -> Path:
    try:
        return find_dataset("pneumoniamnist")
    except DatasetNotFound as exc:
        pytest.skip(f"PneumoniaMNIST is not available here: {exc.message}")


def load_task(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("federated_gan_task", EXAMPLE / "task.py")
    assert spec is not None and spec.loader is not None
    task = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(task)
    monkeypatch.setattr(task, "TSTR_PER_CLASS", 32)
    monkeypatch.setattr(task, "TSTR_EPOCHS", 1)
    return task


def test_the_example_validates(cli, tmp_path: Path, real_images: Path) -> None:
    spec = yaml.safe_load((EXAMPLE / "experiment.yaml").read_text())
    shutil.copy(EXAMPLE / "task.py", tmp_path / "task.py")
    data = tmp_path / "data"
    spec["prepare"]["out"] = str(data)
    spec["silos"] = [{**s, "data": str(data / s["name"])} for s in spec["silos"]]
    spec["server"]["data"] = str(data / "server")
    spec["output"] = str(tmp_path / "runs")
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    result = cli("validate", path)
    assert result.exit_code == 0, result.stderr
    assert "(torch)" in result.stdout and result.stdout.rstrip().endswith("valid")


def test_the_hooks_train_score_and_draw_on_real_images(
    tmp_path: Path, real_images: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fedsilo import TrainSettings
    from fedsilo.client.torch import get_parameters

    task = load_task(monkeypatch)
    with np.load(real_images) as npz:
        np.savez(tmp_path / "train.npz", x=npz["train_images"][:64], y=npz["train_labels"][:64].reshape(-1))
        np.savez(tmp_path / "test.npz", x=npz["test_images"][:64], y=npz["test_labels"][:64].reshape(-1))
    x, y = (torch.from_numpy(a) for a in task.load_data(tmp_path, "train"))
    assert x.shape == (64, 1, 28, 28) and float(x.min()) >= -1.0 and float(x.max()) <= 1.0

    torch.manual_seed(0)
    model = task.model()
    before = get_parameters(model)
    assert {name.split(".")[0] for name in before} == {"generator", "discriminator"}
    metrics = task.fit(model, (x, y), TrainSettings(epochs=1, batch_size=32, lr=5e-4))
    assert set(metrics) == {"train_loss", "d_loss"} and all(np.isfinite(v) for v in metrics.values())
    after = get_parameters(model)
    for net in ("generator", "discriminator"):  # both networks trained
        assert any(not np.array_equal(before[k], after[k]) for k in before if k.startswith(net + "."))

    model.eval()
    with torch.no_grad():
        loss, scores = task.evaluate(model, (x[:32], y[:32]))
    assert np.isfinite(loss) and set(scores) == {"d_real_accuracy", "d_fake_accuracy"}
    assert all(0.0 <= v <= 1.0 for v in scores.values())

    xt, yt = (torch.from_numpy(a) for a in task.load_data(tmp_path, "test"))
    result = task.server_evaluate(model, (xt, yt), 1)
    assert {"loss", "tstr_accuracy", "tstr_balanced_accuracy", "tstr_roc_auc"} <= set(result)
    assert all(0.0 <= result[k] <= 1.0 for k in result if k.startswith("tstr_"))

    with torch.no_grad():
        rows = task.samples(model, np.random.default_rng(0))
    assert list(rows) == ["normal", "pneumonia"]
    for images in rows.values():
        assert images.shape == (task.SAMPLES_PER_CLASS, 1, 28, 28)
        assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    grid = tile_grid({k: v.numpy().reshape(-1, 28, 28) for k, v in rows.items()})
    assert png_bytes(grid).startswith(b"\x89PNG")
