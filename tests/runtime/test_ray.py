"""The Ray runtime: the same experiment on a (local) Ray cluster gives the same model as the local engine."""

from __future__ import annotations

import numpy as np
import pytest

from fedsilo.experiment.config import load_config
from fedsilo.runtime.launch import run_experiment

ray = pytest.importorskip("ray", reason="the ray extra is not installed")


def test_ray_gives_the_same_model_and_baselines_as_the_local_engine(make_experiment, torch_task) -> None:
    config, text = load_config(make_experiment(task=torch_task, workers=2))
    local = run_experiment(config, text, baselines=True)
    on_ray = run_experiment(
        config.model_copy(
            update={
                "output": config.output.parent / "ray",
                "runtime": config.runtime.model_copy(update={"kind": "ray"}),
            }
        ),
        text,
        baselines=True,
    )
    assert not ray.is_initialized()  # the runtime stopped the local Ray instance it started
    for name, value in local.parameters.items():
        np.testing.assert_allclose(on_ray.parameters[name], value, rtol=0, atol=1e-6)
    assert on_ray.summary["failures"] == 0
    assert (
        on_ray.summary["baselines"]["centralized"]["accuracy"] == local.summary["baselines"]["centralized"]["accuracy"]
    )
    assert on_ray.summary["per_silo"] == local.summary["per_silo"]


def test_a_silo_that_raises_on_ray_is_a_failure_row_and_the_run_goes_on(make_experiment, metrics_of) -> None:
    path = make_experiment(workers=2, extra={"runtime": {"kind": "ray"}})
    (path.parent / "data" / "b" / "RAISE").write_text("")
    config, text = load_config(path)
    result = run_experiment(config, text)
    failures = [r for r in metrics_of(result.run_dir) if "failure" in r]
    assert {(r["silo"], r["failure_kind"]) for r in failures} == {("b", "error")}
    assert "RuntimeError: training crashed in b" in failures[0]["failure"]


def test_a_secure_run_on_ray_matches_the_local_engine(make_experiment) -> None:
    pytest.importorskip("cryptography")
    config, text = load_config(
        make_experiment(workers=2, rounds=2, seed=4, extra={"privacy": {"secure_aggregation": True}})
    )
    local = run_experiment(config, text)
    on_ray = config.model_copy(
        update={"output": config.output.parent / "ray", "runtime": config.runtime.model_copy(update={"kind": "ray"})}
    )
    result = run_experiment(on_ray, text)
    assert not ray.is_initialized()
    for name, value in local.parameters.items():
        np.testing.assert_allclose(result.parameters[name], value, rtol=0, atol=1e-6)
    assert result.summary["failures"] == 0
