"""strategy/fedopt.py: FedAvgM, FedAdam, FedYogi and FedAdagrad over rounds, against hand arithmetic.

Each round the silos return the global model plus their own change, with unequal example counts,
so both the weighting of the pseudo-gradient and the state carried between rounds are pinned.
Square roots are left to ``math.sqrt`` of numbers worked out in the comments.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from fedsilo.errors import RunDirError
from fedsilo.experiment.config import load_config
from fedsilo.runtime.launch import run_experiment
from fedsilo.server.checkpoint import checkpoint_path, load_checkpoint
from fedsilo.strategy.base import StrategyState
from fedsilo.strategy.fedopt import FedOpt
from fedsilo.wire.arrays import ArrayDict
from fedsilo.wire.messages import FitRes


def f64(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float64)


def step(strategy: FedOpt, rnd: int, g: ArrayDict, state: StrategyState, replies: list[tuple[ArrayDict, int]]):
    agg = strategy.begin(rnd, g, state)
    for i, (params, n) in enumerate(replies):
        agg.add(FitRes(f"s{i}", params, n))
    return agg.finish()


def plus(g: ArrayDict, **offsets: list[float]) -> ArrayDict:
    return {k: v + np.asarray(offsets.get(k, 0.0)) for k, v in g.items()}


def test_fedavgm_three_rounds_by_hand() -> None:
    strategy = FedOpt("fedavgm", eta=0.5, beta1=0.5)
    g: ArrayDict = {"w": f64(0, 0)}
    state = strategy.initial_state(g)
    assert list(state.arrays) == ["m/w"]
    # Round 1: [1,2] x1 and [3,-2] x3 -> mean [10,-4]/4 = [2.5,-1] = delta ; m = delta ; x = 0.5 m
    g, state = step(strategy, 1, g, state, [({"w": f64(1, 2)}, 1), ({"w": f64(3, -2)}, 3)])
    np.testing.assert_array_equal(g["w"], [1.25, -0.5])
    np.testing.assert_array_equal(state.arrays["m/w"], [2.5, -1.0])
    # Round 2: x+[1,0] x2 and x+[0,1] x2 -> delta [0.5,0.5] ; m = 0.5*[2.5,-1] + delta = [1.75, 0]
    # x = [1.25,-0.5] + 0.5*[1.75,0] = [2.125, -0.5]
    g, state = step(strategy, 2, g, state, [(plus(g, w=[1, 0]), 2), (plus(g, w=[0, 1]), 2)])
    np.testing.assert_array_equal(g["w"], [2.125, -0.5])
    # Round 3: one silo, x+[-1,-1] x5 -> delta [-1,-1] ; m = [0.875-1, 0-1] = [-0.125,-1]
    # x = [2.125 - 0.0625, -0.5 - 0.5]
    g, state = step(strategy, 3, g, state, [(plus(g, w=[-1, -1]), 5)])
    np.testing.assert_array_equal(g["w"], [2.0625, -1.0])
    np.testing.assert_array_equal(state.arrays["m/w"], [-0.125, -1.0])


def test_fedadam_two_rounds_by_hand_with_a_counter_and_a_running_mean() -> None:
    strategy = FedOpt("fedadam", eta=0.1, beta1=0.5, beta2=0.5, tau=0.1)
    g = {"w": f64(1, 2), "bn.running_mean": f64(0), "bn.count": np.array([0], np.int64)}
    state = strategy.initial_state(g)
    assert list(state.arrays) == ["m/w", "v/w"]  # the counter and the running mean get no moments
    np.testing.assert_allclose(state.arrays["v/w"], [0.01, 0.01])  # tau^2

    # Round 1, weights 1 and 3: mean w = ([2,2] + 3*[1,3]) / 4 = [1.25, 2.75] -> delta [0.25, 0.75]
    # m = 0.5 * delta = [0.125, 0.375] ; v = 0.5*0.01 + 0.5*[0.0625, 0.5625] = [0.03625, 0.28625]
    # running_mean: plain weighted mean (1 + 3*3)/4 = 2.5 ; count: (10 + 3*21)/4 = 18.25 -> 18
    r1 = [
        ({"w": f64(2, 2), "bn.running_mean": f64(1), "bn.count": np.array([10], np.int64)}, 1),
        ({"w": f64(1, 3), "bn.running_mean": f64(3), "bn.count": np.array([21], np.int64)}, 3),
    ]
    g1, state = step(strategy, 1, g, state, r1)
    x1 = [1 + 0.1 * 0.125 / (math.sqrt(0.03625) + 0.1), 2 + 0.1 * 0.375 / (math.sqrt(0.28625) + 0.1)]
    np.testing.assert_allclose(g1["w"], x1, rtol=1e-12)
    np.testing.assert_allclose(state.arrays["m/w"], [0.125, 0.375], rtol=1e-12)
    np.testing.assert_allclose(state.arrays["v/w"], [0.03625, 0.28625], rtol=1e-12)
    np.testing.assert_array_equal(g1["bn.running_mean"], [2.5])
    assert g1["bn.count"].dtype == np.int64 and g1["bn.count"][0] == 18

    # Round 2, weights 2 and 6: offsets [-0.5, 0.25] and [0.1, -0.05]
    # delta = (2*[-0.5,0.25] + 6*[0.1,-0.05]) / 8 = [-0.4, 0.2] / 8 = [-0.05, 0.025]
    # m = 0.5*[0.125,0.375] + 0.5*[-0.05,0.025] = [0.0375, 0.2]
    # v = 0.5*[0.03625,0.28625] + 0.5*[0.0025,0.000625] = [0.019375, 0.1434375]
    g2, state = step(strategy, 2, g1, state, [(plus(g1, w=[-0.5, 0.25]), 2), (plus(g1, w=[0.1, -0.05]), 6)])
    x2 = [x1[0] + 0.1 * 0.0375 / (math.sqrt(0.019375) + 0.1), x1[1] + 0.1 * 0.2 / (math.sqrt(0.1434375) + 0.1)]
    np.testing.assert_allclose(g2["w"], x2, rtol=1e-12)
    np.testing.assert_allclose(state.arrays["v/w"], [0.019375, 0.1434375], rtol=1e-12)


def test_fedyogi_three_rounds_by_hand() -> None:
    strategy = FedOpt("fedyogi", eta=0.5, beta1=0.5, beta2=0.5, tau=0.1)
    g = {"w": f64(0.0)}
    state = strategy.initial_state(g)
    # Round 1: 0.4 x1, 1.2 x3 -> mean (0.4+3.6)/4 = 1.0 -> delta 1, delta^2 1
    # m = 0.5 ; v = 0.01 - 0.5*1*sign(0.01 - 1) = 0.51 (v grows)
    g, state = step(strategy, 1, g, state, [({"w": f64(0.4)}, 1), ({"w": f64(1.2)}, 3)])
    x1 = 0.5 * 0.5 / (math.sqrt(0.51) + 0.1)
    np.testing.assert_allclose(g["w"], [x1], rtol=1e-12)
    # Round 2: x+0.1 x1, x+0 x4 -> delta 0.02, delta^2 0.0004 ; sign(0.51-0.0004) = +1
    # v = 0.51 - 0.5*0.0004 = 0.5098 (shrinks) ; m = 0.25 + 0.01 = 0.26
    g, state = step(strategy, 2, g, state, [(plus(g, w=[0.1]), 1), (plus(g, w=[0.0]), 4)])
    x2 = x1 + 0.5 * 0.26 / (math.sqrt(0.5098) + 0.1)
    np.testing.assert_allclose(g["w"], [x2], rtol=1e-12)
    # Round 3: x-0.3 x2, x-0.9 x1 -> delta (-0.6-0.9)/3 = -0.5, delta^2 0.25 ; sign(0.5098-0.25) = +1
    # v = 0.5098 - 0.125 = 0.3848 ; m = 0.13 - 0.25 = -0.12
    g, state = step(strategy, 3, g, state, [(plus(g, w=[-0.3]), 2), (plus(g, w=[-0.9]), 1)])
    np.testing.assert_allclose(g["w"], [x2 + 0.5 * -0.12 / (math.sqrt(0.3848) + 0.1)], rtol=1e-12)
    np.testing.assert_allclose([state.arrays["m/w"][0], state.arrays["v/w"][0]], [-0.12, 0.3848], rtol=1e-12)


def test_fedadagrad_two_rounds_by_hand() -> None:
    strategy = FedOpt("fedadagrad", eta=0.1, beta1=0.5, tau=0.1)
    g = {"w": f64(1.0, -1.0)}
    state = strategy.initial_state(g)
    # Round 1: [1.5,-1] x3, [0.5,0] x1 -> mean [5,-3]/4 = [1.25,-0.75] -> delta [0.25, 0.25]
    # m = [0.125, 0.125] ; v = 0.01 + 0.0625 = 0.0725
    g1, state = step(strategy, 1, g, state, [({"w": f64(1.5, -1.0)}, 3), ({"w": f64(0.5, 0.0)}, 1)])
    x1 = np.array([1.0, -1.0]) + 0.1 * 0.125 / (math.sqrt(0.0725) + 0.1)
    np.testing.assert_allclose(g1["w"], x1, rtol=1e-12)
    # Round 2: x+[0.4,0] x1, x+[0,-0.2] x3 -> delta [0.1, -0.15]
    # m = [0.0625+0.05, 0.0625-0.075] = [0.1125, -0.0125] ; v = [0.0725+0.01, 0.0725+0.0225] = [0.0825, 0.095]
    g2, state = step(strategy, 2, g1, state, [(plus(g1, w=[0.4, 0.0]), 1), (plus(g1, w=[0.0, -0.2]), 3)])
    x2 = [x1[0] + 0.1 * 0.1125 / (math.sqrt(0.0825) + 0.1), x1[1] + 0.1 * -0.0125 / (math.sqrt(0.095) + 0.1)]
    np.testing.assert_allclose(g2["w"], x2, rtol=1e-12)
    np.testing.assert_allclose(state.arrays["v/w"], [0.0825, 0.095], rtol=1e-12)


def test_float32_models_keep_their_dtype_and_float32_moments() -> None:
    strategy = FedOpt("fedadam")
    g = {"w": np.zeros(3, np.float32), "h": np.zeros(2, np.float16)}
    state = strategy.initial_state(g)
    assert {k: v.dtype for k, v in state.arrays.items()} == {
        "m/w": np.float32,
        "v/w": np.float32,
        "m/h": np.float32,  # float16 moments would lose tau^2 = 1e-6
        "v/h": np.float32,
    }
    g1, state = step(strategy, 1, g, state, [({"w": np.ones(3, np.float32), "h": np.ones(2, np.float16)}, 2)])
    assert g1["w"].dtype == np.float32 and g1["h"].dtype == np.float16
    assert state.arrays["m/w"].dtype == np.float32


def test_inputs_are_not_changed() -> None:
    strategy = FedOpt("fedavgm")
    g = {"w": f64(1, 1)}
    state = strategy.initial_state(g)
    update = {"w": f64(3, 5)}
    step(strategy, 1, g, state, [(update, 4)])
    np.testing.assert_array_equal(g["w"], [1, 1])
    np.testing.assert_array_equal(update["w"], [3, 5])
    np.testing.assert_array_equal(state.arrays["m/w"], [0, 0])


def test_state_from_another_strategy_is_a_clear_error() -> None:
    with pytest.raises(RunDirError, match=r"fedadam state lacks 2 array\(s\) \(m/w, v/w"):
        FedOpt("fedadam").begin(1, {"w": f64(0)}, StrategyState())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "fedsgd"}, "name must be one of"),
        ({"eta": 0.0}, "eta must be > 0"),
        ({"beta1": 1.0, "beta2": -0.1}, "beta1 must be in .*; beta2 must be in"),
        ({"tau": 0.0}, "tau must be > 0"),
    ],
)
def test_invalid_parameters(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FedOpt(**kwargs)


def test_three_rounds_equal_two_rounds_and_a_resume(make_experiment, torch_task, run_folder) -> None:
    """Through run_experiment on the tiny torch task: the moments must travel in the checkpoint."""
    strategy = {"name": "fedadam", "eta": 0.05}
    straight, _ = load_config(make_experiment("straight", rounds=3, task=torch_task, extra={"strategy": strategy}))
    full = run_experiment(straight, "")
    stopped_path = make_experiment("stopped", rounds=2, task=torch_task, extra={"strategy": strategy})
    stopped, _ = load_config(stopped_path)
    part = run_experiment(stopped, "")
    resumed = run_experiment(stopped.model_copy(update={"rounds": 3}), "", resume=part.run_dir)

    assert resumed.run_dir == part.run_dir
    for name, value in full.parameters.items():
        np.testing.assert_array_equal(resumed.parameters[name], value, err_msg=name)
    ckpt = load_checkpoint(checkpoint_path(Path(part.run_dir) / "checkpoints", 2))
    assert set(ckpt.state.arrays) == {"m/weight", "v/weight", "m/bias", "v/bias"}
    assert np.abs(ckpt.state.arrays["m/weight"]).max() > 0  # the state is really there to carry
