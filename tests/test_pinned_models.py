"""Pinned models: the same seeds give the same models as the code gave when these pins were made.

Each case is one experiment run through ``fedsilo run``; its final model must equal the one stored
under ``tests/pins/`` bit for bit. The pins were made before the code was split into a server wing
and a silo wing (issue 12) and must survive every restructuring that is meant to change no
behaviour. Floating-point results of BLAS and of torch's CPU kernels can differ in the last bits
between CPU types, so the comparison is exact where the machine matches the one that made the pins
(same architecture, CPU capability, numpy and torch) and to 1e-6 elsewhere.

Regenerate only when a change is *meant* to change models:
``FEDSILO_WRITE_PINS=1 pytest tests/test_pinned_models.py``.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedsilo.wire.arrays import load_file, save_file

PINS = Path(__file__).resolve().parent / "pins"
TASKS = Path(__file__).resolve().parent / "tasks"
MACHINE = PINS / "machine.json"

CASES: dict[str, dict[str, Any]] = {
    "numpy_fedavg": {"task": TASKS / "linear_numpy.py", "rounds": 3},
    "numpy_trimmed_mean": {
        "task": TASKS / "linear_numpy.py",
        "silos": {"a": 12, "b": 24, "c": 36, "d": 16, "e": 20},
        "extra": {"strategy": {"name": "trimmed_mean", "beta": 0.2}},
    },
    "numpy_secagg": {"task": TASKS / "linear_numpy.py", "extra": {"privacy": {"secure_aggregation": True}}},
    "sklearn_fedavg": {"task": TASKS / "tiny_sklearn.py", "rounds": 3},
    "torch_fedadam_pool": {
        "task": TASKS / "tiny_torch.py",
        "workers": 2,
        "rounds": 3,
        "extra": {"strategy": {"name": "fedadam", "eta": 0.05}},
    },
    "torch_fedprox_topk_pool": {
        "task": TASKS / "tiny_torch.py",
        "workers": 2,
        "rounds": 3,
        "extra": {"strategy": {"name": "fedprox", "mu": 0.1}, "compression": {"codec": "topk", "topk_fraction": 0.3}},
    },
    "torch_fedavgm_q8": {
        "task": TASKS / "tiny_torch.py",
        "extra": {"strategy": {"name": "fedavgm"}, "compression": {"codec": "q8"}},
    },
    "torch_central_dp_adaptive": {
        "task": TASKS / "tiny_torch.py",
        "rounds": 3,
        "extra": {
            "privacy": {"dp": {"noise_multiplier": 0.8, "clip_norm": 0.5, "adaptive": True, "count_stddev": 1.0}}
        },
    },
    "torch_local_dp": {
        "task": TASKS / "tiny_torch.py",
        "extra": {"privacy": {"local_dp": {"noise_multiplier": 1.0, "max_grad_norm": 1.0}}},
    },
    "torch_secagg_distributed_dp": {
        "task": TASKS / "tiny_torch.py",
        "extra": {"privacy": {"secure_aggregation": True, "dp": {"noise_multiplier": 0.5, "clip_norm": 1.0}}},
    },
}


def machine() -> dict[str, str]:
    import torch

    return {
        "machine": platform.machine(),
        "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
        "numpy": np.__version__,
        "torch": torch.__version__,
    }


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_same_seed_gives_the_pinned_model(case: str, cli, make_experiment, run_folder) -> None:
    spec = dict(CASES[case])
    path = make_experiment(folder=case, **spec)
    result = cli("run", path, "--quiet")
    assert result.exit_code == 0, result.stderr
    model = load_file(run_folder(path.parent / "runs") / "model.safetensors")
    pin = PINS / f"{case}.safetensors"
    if os.environ.get("FEDSILO_WRITE_PINS"):
        save_file(model, pin)
        MACHINE.write_text(json.dumps(machine(), indent=2) + "\n")
        return
    expected = load_file(pin)
    assert list(model) == list(expected)
    exact = json.loads(MACHINE.read_text()) == machine()
    for name, array in expected.items():
        assert model[name].dtype == array.dtype and model[name].shape == array.shape, name
        if exact:
            np.testing.assert_array_equal(model[name], array, err_msg=f"{case}: {name}")
        else:
            np.testing.assert_allclose(model[name], array, rtol=1e-6, atol=1e-7, err_msg=f"{case}: {name}")
