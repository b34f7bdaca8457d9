"""strategy/robust.py: median, trimmed mean, Krum and Multi-Krum as the server runs them, by hand.

Example counts are unequal and the outlier claims the most examples, so any hidden weighting by
``num_examples`` would show.
"""

from __future__ import annotations

import numpy as np
import pytest

from fedsilo.errors import RoundFailed
from fedsilo.strategy.base import Sampling, StrategyState
from fedsilo.strategy.robust import Robust
from fedsilo.wire.arrays import ArrayDict
from fedsilo.wire.instructions import StrategyExtras
from fedsilo.wire.messages import FitRes


def f32(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def run_round(strategy: Robust, rnd: int, g: ArrayDict, state: StrategyState, replies: list[tuple[ArrayDict, int]]):
    agg = strategy.begin(rnd, g, state)
    for i, (params, n) in enumerate(replies):
        agg.add(FitRes(f"s{i}", params, n))
    assert agg.count == len(replies)
    params, new_state = agg.finish()
    return params, new_state, agg


def test_median_two_rounds_by_hand() -> None:
    strategy = Robust("median")
    g0 = {"w": f32(0, 0)}
    state = strategy.initial_state(g0)
    assert state == StrategyState() and strategy.fit_extras(1, state) == StrategyExtras()
    # Round 1: x = {1, 2, 50}, y = {4, -1, 50}; the third claims 10^6 examples -> medians (2, 4)
    g1, state, _ = run_round(
        strategy, 1, g0, state, [({"w": f32(1, 4)}, 10), ({"w": f32(2, -1)}, 30), ({"w": f32(50, 50)}, 10**6)]
    )
    np.testing.assert_array_equal(g1["w"], [2.0, 4.0])
    # Round 2, four silos: x = {2.5, 1.5, 3, -100} -> sorted -100 1.5 2.5 3 -> (1.5+2.5)/2 = 2
    #                      y = {4, 5, 3.5, 100}   -> sorted 3.5 4 5 100   -> (4+5)/2 = 4.5
    g2, state, _ = run_round(
        strategy,
        2,
        g1,
        state,
        [({"w": f32(2.5, 4)}, 5), ({"w": f32(1.5, 5)}, 1), ({"w": f32(3, 3.5)}, 2), ({"w": f32(-100, 100)}, 99)],
    )
    np.testing.assert_array_equal(g2["w"], [2.0, 4.5])
    assert g2["w"].dtype == np.float32 and state == StrategyState()


def test_trimmed_mean_two_rounds_by_hand() -> None:
    strategy = Robust("trimmed_mean", beta=0.2)
    g0 = {"w": f32(0), "n": np.array([0], np.int64)}
    state = strategy.initial_state(g0)
    # Round 1, five silos: floor(0.2*5) = 1 dropped at each end
    # w = {1, 2, 3, 6, 1000} -> mean(2, 3, 6) = 11/3 ; n = {1, 2, 3, 4, 5} -> mean(2,3,4) = 3
    replies = [
        ({"w": f32(3), "n": np.array([1], np.int64)}, 7),
        ({"w": f32(1000), "n": np.array([5], np.int64)}, 500),
        ({"w": f32(1), "n": np.array([3], np.int64)}, 2),
        ({"w": f32(6), "n": np.array([2], np.int64)}, 9),
        ({"w": f32(2), "n": np.array([4], np.int64)}, 1),
    ]
    g1, state, _ = run_round(strategy, 1, g0, state, replies)
    np.testing.assert_allclose(g1["w"], [11 / 3], rtol=1e-6)
    np.testing.assert_array_equal(g1["n"], [3])
    # Round 2, four silos: floor(0.2*4) = 0 trimmed -> the unweighted mean (4 + 5 + 6 + 9)/4 = 6
    g2, state, _ = run_round(
        strategy, 2, g1, state, [({"w": f32(v), "n": g1["n"]}, n) for v, n in ((4, 1), (5, 2), (6, 3), (9, 40))]
    )
    np.testing.assert_array_equal(g2["w"], [6.0])


# a = (0,0) b = (1,0) c = (0,2) d = (1,1) e = (10,10), as x and y arrays; Krum scores with f = 1
# (sum of the 2 smallest squared distances): a 3, b 2, c 6, d 3, e 326 (see test_aggregate.py)
POINTS = [(0.0, 0.0), (1.0, 0.0), (0.0, 2.0), (1.0, 1.0), (10.0, 10.0)]
COUNTS = [3, 1, 4, 2, 1000]


def krum_replies(shift: float = 0.0) -> list[tuple[ArrayDict, int]]:
    return [({"x": f32(x + shift), "y": f32(y + shift)}, n) for (x, y), n in zip(POINTS, COUNTS, strict=True)]


def test_krum_two_rounds_by_hand() -> None:
    strategy = Robust("krum", byzantine=1)
    g0 = {"x": f32(0), "y": f32(0)}
    state = strategy.initial_state(g0)
    g1, state, agg = run_round(strategy, 1, g0, state, krum_replies())
    assert agg.selected == [1]  # b
    np.testing.assert_array_equal([g1["x"][0], g1["y"][0]], [1.0, 0.0])
    # Round 2: every point shifted by +3: distances, scores and the choice do not change
    g2, state, agg = run_round(strategy, 2, g1, state, krum_replies(3.0))
    assert agg.selected == [1]
    np.testing.assert_array_equal([g2["x"][0], g2["y"][0]], [4.0, 3.0])


def test_multi_krum_by_hand() -> None:
    g0 = {"x": f32(0), "y": f32(0)}
    # m = 3: b (2), a (3), d (3; a came first) -> ((0+1+1)/3, (0+0+1)/3), unweighted
    g, _, agg = run_round(Robust("multi_krum", byzantine=1, num_selected=3), 1, g0, StrategyState(), krum_replies())
    assert agg.selected == [1, 0, 3]
    np.testing.assert_allclose([g["x"][0], g["y"][0]], [2 / 3, 1 / 3], rtol=1e-6)
    # default m = n - f = 4: adds c -> ((0+1+0+1)/4, (0+0+2+1)/4) = (0.5, 0.75); e is left out
    g, _, agg = run_round(Robust("multi_krum", byzantine=1), 1, g0, StrategyState(), krum_replies())
    assert sorted(agg.selected) == [0, 1, 2, 3]
    np.testing.assert_allclose([g["x"][0], g["y"][0]], [0.5, 0.75])


def test_too_few_updates_for_krum_fail_the_round_readably() -> None:
    strategy = Robust("krum", byzantine=1)
    with pytest.raises(RoundFailed) as info:
        run_round(strategy, 4, {"x": f32(0), "y": f32(0)}, StrategyState(), krum_replies()[:4])
    assert "round 4: krum with byzantine=1 needs at least 5 updates, got 4" in info.value.one_line()
    strategy = Robust("multi_krum", byzantine=1, num_selected=5)
    with pytest.raises(RoundFailed, match="needs at least 6 updates, got 5"):  # m + f = 6
        run_round(strategy, 1, {"x": f32(0), "y": f32(0)}, StrategyState(), krum_replies())


def test_updates_are_copied_on_add() -> None:
    """A reply's arrays may be views over a buffer that is reused after add(): the rule must not see that."""
    strategy = Robust("median")
    agg = strategy.begin(1, {"w": f32(0)}, StrategyState())
    buffer = f32(1)
    for value in (1.0, 5.0, 3.0):
        buffer[0] = value
        agg.add(FitRes("s", {"w": buffer}, 1))
    buffer[0] = 1000.0
    np.testing.assert_array_equal(agg.finish()[0]["w"], [3.0])  # median of 1, 5, 3


def test_name_sampling_and_invalid_parameters() -> None:
    sampling = Sampling(fraction_fit=0.5)
    assert Robust("krum", sampling).sampling is sampling
    assert Robust("trimmed_mean").name == "trimmed_mean"
    with pytest.raises(ValueError, match="name must be one of median, trimmed_mean, krum, multi_krum"):
        Robust("mean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"beta must be in \[0, 0.5\).*byzantine must be >= 0"):
        Robust("trimmed_mean", beta=0.5, byzantine=-1)
    with pytest.raises(ValueError, match="num_selected must be >= 1"):
        Robust("multi_krum", num_selected=0)


def test_min_updates() -> None:
    assert Robust("krum", byzantine=2).min_updates() == 7  # 2f + 3
    assert Robust("krum", byzantine=1, num_selected=9).min_updates() == 5  # Krum selects one, always
    assert Robust("multi_krum", byzantine=1, num_selected=6).min_updates() == 7  # m + f
    assert Robust("median").min_updates() == 1


def test_a_krum_round_left_with_too_few_updates_stops_the_run_in_one_line(cli, make_experiment) -> None:
    path = make_experiment(
        silos={"a": 12, "b": 24, "c": 36, "d": 16, "e": 20},
        rounds=2,
        extra={"strategy": {"name": "krum", "byzantine": 1}},
    )
    (path.parent / "data" / "c" / "RAISE").touch()  # silo c's training crashes: 4 updates, Krum needs 5
    result = cli("run", path, "--quiet")
    assert result.exit_code == 7
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]  # progress goes there too
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "round 1: krum with byzantine=1 needs at least 5 updates, got 4" in lines[0]
    assert "fedsilo run --resume RUN_DIR" in lines[0]
