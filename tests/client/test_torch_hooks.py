"""A task with several models and its own training step: parameter names, round trip, the hooks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fedsilo.client.torch import get_parameters, set_parameters  # noqa: E402
from fedsilo.client.torch.hooks import TorchServerHooks  # noqa: E402
from fedsilo.errors import TaskError  # noqa: E402
from fedsilo.silo.task import TaskModule  # noqa: E402
from fedsilo.wire.arrays import from_bytes, to_bytes  # noqa: E402
from fedsilo.wire.instructions import EvaluateInstructions, TrainSettings  # noqa: E402

GAN_TASK = Path(__file__).resolve().parents[1] / "tasks" / "tiny_gan.py"


def folder_with(tmp_path: Path, x: np.ndarray) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    y = np.arange(len(x)) % 2
    for split in ("train", "test"):
        np.savez(tmp_path / f"{split}.npz", x=x, y=y)
    return tmp_path


def test_a_module_dict_travels_as_named_parameters_of_both_models() -> None:
    task = TaskModule.load(GAN_TASK)
    params = task.initial_parameters(seed=3)
    assert list(params) == ["generator.weight", "generator.bias", "discriminator.weight", "discriminator.bias"]
    assert [params[k].shape for k in params] == [(4, 2), (4,), (1, 4), (1,)]
    wire = from_bytes(to_bytes(params))  # what crosses the wire: safetensors bytes
    other = task.build_model(seed=4)
    assert not np.array_equal(get_parameters(other)["generator.weight"], params["generator.weight"])
    set_parameters(other, wire)
    back = get_parameters(other)
    assert list(back) == list(params)
    for name in params:
        np.testing.assert_array_equal(back[name], params[name])


def test_fit_and_evaluate_hooks_replace_the_supervised_loop(tmp_path: Path) -> None:
    x = np.array([[1.0, 2.0, 3.0, 6.0], [0.0, 0.0, 0.0, 4.0]], np.float32)  # mean 2.0
    task = TaskModule.load(GAN_TASK)
    client = task.make_client([folder_with(tmp_path, x)], seed=0, device="cpu")
    start = task.initial_parameters(seed=0)
    new, n, metrics = client.fit(start, TrainSettings(lr=0.25, epochs=3, seed=1))
    assert n == 2 and metrics == {"train_loss": 2.0, "rows": 2.0}
    np.testing.assert_allclose(new["generator.bias"], start["generator.bias"] + 0.25 * 2.0, rtol=1e-6)
    np.testing.assert_allclose(new["discriminator.bias"], start["discriminator.bias"] - 0.25 * 3, rtol=1e-6)
    np.testing.assert_array_equal(new["generator.weight"], start["generator.weight"])
    loss, n, metrics = client.evaluate(new, EvaluateInstructions(seed=1))
    assert n == 2 and loss == pytest.approx(float(start["discriminator.bias"][0]) - 0.75)
    assert metrics == {"mean_x": 2.0}


def test_a_hook_that_returns_no_numbers_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    task = TaskModule.load(GAN_TASK)
    client = task.make_client([folder_with(tmp_path, np.ones((2, 4), np.float32))], seed=0, device="cpu")
    monkeypatch.setattr(client, "fit_hook", lambda model, data, settings: {"loss": "high"})
    with pytest.raises(TaskError, match=r"fit\(\) returned dict with a value that is not a number") as info:
        client.fit(task.initial_parameters(0), TrainSettings(lr=0.1))
    assert info.value.fix == "return a dict of metric name -> number from fit()"


def test_server_hooks_score_the_global_model_and_draw_the_same_noise_each_time(tmp_path: Path) -> None:
    task = TaskModule.load(GAN_TASK)
    folder = folder_with(tmp_path, np.ones((5, 4), np.float32))
    model = task.build_model(2)
    evaluate, samples = task.hook("server_evaluate"), task.hook("samples")
    hooks = TorchServerHooks(model, lambda: task.load_data([folder], "test"), evaluate, samples, seed=2, device="cpu")
    assert hooks.has_samples
    params = task.initial_parameters(seed=0)
    params["generator.bias"] = np.array([0.5, -0.25, 1.0, 0.0], np.float32)
    assert hooks.evaluate(7, params) == {"generator_bias": 1.25, "seen_round": 7.0, "rows": 5.0}
    first, again = hooks.samples(params), hooks.samples(params)
    assert list(first) == ["zero", "one"] and first["zero"].shape == (3, 2, 2)
    np.testing.assert_array_equal(first["zero"], again["zero"])  # the same seeded noise
    np.testing.assert_allclose(first["one"], 1 - first["zero"], rtol=1e-6)
    z = np.random.default_rng(2).standard_normal((3, 2)).astype(np.float32)  # by hand: sigmoid(z W^T + b)
    expected = 1 / (1 + np.exp(-(z @ params["generator.weight"].T + params["generator.bias"])))
    np.testing.assert_allclose(first["zero"], expected.reshape(3, 2, 2), rtol=1e-5)


def test_supervised_tasks_have_no_server_hooks_and_numpy_tasks_cannot_have_them(
    tmp_path: Path, make_experiment, linear_task: Path, torch_task: Path
) -> None:
    from fedsilo.experiment.config import load_config
    from fedsilo.experiment.plan import build_plan
    from fedsilo.runtime.evaluation import central_evaluator

    plan = build_plan(load_config(make_experiment(folder="plain", task=torch_task))[0])
    evaluator = central_evaluator(plan)
    assert evaluator is not None and evaluator.hooks is None and evaluator.client is not None
    hooked = tmp_path / "numpy_with_samples.py"
    hooked.write_text(linear_task.read_text() + "\n\ndef samples(model, rng):\n    return {}\n")
    plan = build_plan(load_config(make_experiment(folder="hooked", task=hooked))[0])
    assert any("samples() in" in p and "need a PyTorch task" in p for p in plan.problems), plan.problems
