"""server/loop.py over the in-process transport with real silo agents and NumPy clients.

Each silo's "training" returns a fixed update or one derived from the global model it received,
so every expected global model below is worked out by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest

from fedsilo.client.base import silo_seed
from fedsilo.client.numpy import NumpyClient
from fedsilo.errors import RoundFailed
from fedsilo.server.evaluation import federated_summary
from fedsilo.server.gather import describe_failures
from fedsilo.server.loop import ServerLoop
from fedsilo.server.registry import FIT, round_rng, sample_silos
from fedsilo.server.settings import LoopSettings
from fedsilo.silo.agent import SiloAgent
from fedsilo.strategy.base import Sampling, StrategyState
from fedsilo.strategy.fedavg import FedAvg
from fedsilo.tracking.rows import MetricRow
from fedsilo.transport.inproc import InProcessTransport
from fedsilo.wire.arrays import ArrayDict
from fedsilo.wire.instructions import FitInstructions, TrainSettings
from fedsilo.wire.messages import EvaluateIns, EvaluateRes, Failure, FitIns, FitRes


def f32(values: object) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def initial() -> ArrayDict:
    return {"w": f32([0, 0, 0]), "b": f32([0])}


Update = Callable[[ArrayDict, TrainSettings], ArrayDict]


def agent(
    name: str, n_train: int, update: Update, loss: float = 1.0, accuracy: float = 0.5, n_test: int = 5
) -> SiloAgent:
    """A real SiloAgent over a real NumpyClient whose train() applies ``update``."""

    def train(params: ArrayDict, data: Any, settings: TrainSettings, rng: np.random.Generator):
        return update(params, settings), {"train_loss": 0.25}

    def evaluate(params: ArrayDict, data: Any):
        return loss, {"accuracy": accuracy}

    train_data = (np.zeros((n_train, 1)), np.zeros(n_train))
    test_data = (np.zeros((n_test, 1)), np.zeros(n_test))
    return SiloAgent(name, lambda: NumpyClient(initial(), train, evaluate, lambda: train_data, lambda: test_data))


def fixed(w: list[float], b: float) -> Update:
    return lambda params, settings: {"w": f32(w), "b": f32([b])}


def shifted(delta: float) -> Update:
    return lambda params, settings: {k: v + np.float32(delta) for k, v in params.items()}


def wrong_shape(params: ArrayDict, settings: TrainSettings) -> ArrayDict:
    return {"w": f32([1, 2, 3, 4]), "b": f32([0])}


def with_nan(params: ArrayDict, settings: TrainSettings) -> ArrayDict:
    return {"w": f32([1, np.nan, 3]), "b": f32([0])}


def raising(params: ArrayDict, settings: TrainSettings) -> ArrayDict:
    raise ValueError("bad batch in silo data")


class Recorder:
    """An observer that keeps everything it is told."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.starts: list[tuple[int, list[str]]] = []
        self.replies: list[tuple[int, str, Any]] = []
        self.ends: list[int] = []

    def on_round_start(self, round: int, silos: Sequence[str]) -> None:
        self.starts.append((round, list(silos)))

    def on_reply(self, round: int, phase: str, reply: Any) -> None:
        self.replies.append((round, phase, reply))

    def on_metrics(self, row: MetricRow) -> None:
        self.rows.append(row.to_json())  # as metrics.jsonl holds it

    def on_round_end(self, round: int, rows: Sequence[MetricRow]) -> None:
        self.ends.append(round)

    def fit_rows(self, rnd: int) -> dict[str, dict[str, Any]]:
        return {r["silo"]: r for r in self.rows if r["round"] == rnd and r["phase"] == "fit" and r["scope"] == "silo"}


def make_loop(
    agents: Sequence[SiloAgent], rounds: int = 1, sampling: Sampling | None = None, **kwargs: Any
) -> tuple[ServerLoop, Recorder]:
    recorder = Recorder()
    loop = ServerLoop(
        InProcessTransport({a.name: a for a in agents}),
        FedAvg(sampling or Sampling(min_fit_clients=2)),
        kwargs.pop("settings", LoopSettings(rounds=rounds, seed=3, wait_timeout=1.0)),
        observers=[recorder],
        **kwargs,
    )
    return loop, recorder


def test_rejected_updates_become_failures_and_the_round_goes_on() -> None:
    loop, rec = make_loop(
        [
            agent("a", 1, fixed([1, 2, 3], 1)),
            agent("b", 3, wrong_shape),
            agent("c", 6, with_nan),
            agent("d", 4, fixed([6, 2, -2], 6)),
        ]
    )
    params = loop.run(initial(), StrategyState()).parameters
    # Only a (1 example) and d (4 examples) count: ([1,2,3] + 4*[6,2,-2]) / 5 ; (1 + 24) / 5
    np.testing.assert_allclose(params["w"], [5.0, 2.0, -1.0], rtol=1e-6)
    np.testing.assert_allclose(params["b"], [5.0], rtol=1e-6)

    rows = rec.fit_rows(1)
    assert rows["b"]["failure_kind"] == "rejected" and rows["c"]["failure_kind"] == "rejected"
    assert "silo 'b'" in rows["b"]["failure"] and "shape (4,), expected (3,)" in rows["b"]["failure"]
    assert "silo 'c'" in rows["c"]["failure"] and "1 non-finite" in rows["c"]["failure"]
    assert rows["a"]["num_examples"] == 1 and rows["d"]["num_examples"] == 4
    assert rows["a"]["train_loss"] == 0.25 and "failure" not in rows["a"]
    assert all(r["scope"] == "silo" for r in rows.values())
    rejected = [r for _, phase, r in rec.replies if phase == "fit" and isinstance(r, Failure)]
    assert sorted((f.silo, f.kind) for f in rejected) == [("b", "rejected"), ("c", "rejected")]


def test_a_silo_whose_client_raises_becomes_a_failure() -> None:
    loop, rec = make_loop(
        [agent("a", 1, fixed([1, 2, 3], 1)), agent("b", 3, raising), agent("d", 4, fixed([6, 2, -2], 6))]
    )
    params = loop.run(initial(), StrategyState()).parameters
    np.testing.assert_allclose(params["w"], [5.0, 2.0, -1.0], rtol=1e-6)
    row = rec.fit_rows(1)["b"]
    assert row["failure_kind"] == "error"
    assert "ValueError: bad batch in silo data" in row["failure"]


def test_too_few_usable_updates_fail_the_round_naming_the_silos() -> None:
    checkpoints: list[int] = []
    loop, rec = make_loop(
        [
            agent("north", 1, fixed([1, 2, 3], 1)),
            agent("east", 3, wrong_shape),
            agent("south", 6, raising),
            agent("west", 4, fixed([6, 2, -2], 6)),
        ],
        sampling=Sampling(min_fit_clients=3),
        checkpoint=lambda r, p, s: checkpoints.append(r),
    )
    with pytest.raises(RoundFailed) as info:
        loop.run(initial(), StrategyState())
    message = info.value.one_line()
    assert "round 1: 2 of 4 silos returned a usable update" in message
    assert "min_fit_clients=3" in message
    assert "east: update from silo 'east' rejected" in message
    assert "south: ValueError: bad batch in silo data" in message
    assert "north" not in message and "west" not in message
    assert "--resume" in (info.value.fix or "")
    assert checkpoints == []
    assert {s for s, r in rec.fit_rows(1).items() if "failure" in r} == {"east", "south"}


def test_no_usable_update_at_all_fails_even_with_min_fit_clients_1() -> None:
    loop, _ = make_loop([agent("b", 3, wrong_shape)], sampling=Sampling(min_fit_clients=1))
    with pytest.raises(RoundFailed, match="0 of 1 silos"):
        loop.run(initial(), StrategyState())


def test_central_evaluation_at_round_zero_and_after_each_round_with_checkpoints() -> None:
    seen: list[ArrayDict] = []
    saved: list[tuple[int, ArrayDict]] = []

    def central(round: int, params: ArrayDict) -> tuple[float, dict[str, float]]:
        seen.append({k: v.copy() for k, v in params.items()})
        return float(len(seen)), {"accuracy": 0.1 * len(seen)}

    loop, rec = make_loop(
        [agent("a", 1, shifted(+1.0)), agent("d", 4, shifted(-1.0))],
        rounds=2,
        central_evaluate=central,
        checkpoint=lambda r, p, s: saved.append((r, {k: v.copy() for k, v in p.items()})),
    )
    params = loop.run(initial(), StrategyState()).parameters
    # Each round moves every entry by (1*(+1) + 4*(-1)) / 5 = -0.6, starting from the last model.
    np.testing.assert_allclose(params["w"], [-1.2, -1.2, -1.2], rtol=1e-6)
    assert [s["w"][0] for s in seen] == pytest.approx([0.0, -0.6, -1.2])
    assert [(r, p["b"][0]) for r, p in saved] == [(1, pytest.approx(-0.6)), (2, pytest.approx(-1.2))]

    server_rows = [r for r in rec.rows if r["scope"] == "server" and r["phase"] == "evaluate"]
    assert [r["round"] for r in server_rows] == [0, 1, 2]
    assert all(r["silo"] is None and r["phase"] == "evaluate" for r in server_rows)
    assert [r["loss"] for r in server_rows] == [1.0, 2.0, 3.0]
    assert [r["accuracy"] for r in server_rows] == pytest.approx([0.1, 0.2, 0.3])
    assert rec.ends == [0, 1, 2]
    assert rec.starts == [(1, ["a", "d"]), (2, ["a", "d"])]


def test_resuming_from_round_three_skips_the_initial_evaluation() -> None:
    evaluated: list[float] = []
    loop, rec = make_loop(
        [agent("a", 1, shifted(+1.0)), agent("d", 4, shifted(-1.0))],
        rounds=3,
        central_evaluate=lambda r, p: (evaluated.append(float(p["w"][0])) or 0.0, {}),
    )
    params = loop.run(initial(), StrategyState(), start_round=3).parameters
    np.testing.assert_allclose(params["w"], [-0.6] * 3, rtol=1e-6)
    assert evaluated == pytest.approx([-0.6])
    assert {r["round"] for r in rec.rows} == {3}


def test_federated_evaluation_rows_and_summary_each_round() -> None:
    loop, rec = make_loop(
        [
            agent("a", 1, fixed([1, 2, 3], 1), loss=1.0, accuracy=0.9, n_test=1),
            agent("b", 3, fixed([1, 2, 3], 1), loss=2.0, accuracy=0.5, n_test=3),
            agent("c", 6, fixed([1, 2, 3], 1), loss=0.5, accuracy=0.8, n_test=6),
        ],
        rounds=2,
    )
    loop.run(initial(), StrategyState())
    for rnd in (1, 2):
        evals = {
            r["silo"]: r for r in rec.rows if r["round"] == rnd and r["scope"] == "silo" and r["phase"] == "evaluate"
        }
        assert set(evals) == {"a", "b", "c"}
        assert evals["b"]["loss"] == 2.0 and evals["b"]["num_examples"] == 3 and evals["b"]["accuracy"] == 0.5
        (fed,) = [r for r in rec.rows if r["round"] == rnd and r["scope"] == "federated"]
        assert fed["silo"] is None
        assert fed["loss"] == pytest.approx(1.0)  # (1*1.0 + 3*2.0 + 6*0.5) / 10
        assert fed["accuracy"] == pytest.approx(0.72)  # (0.9 + 1.5 + 4.8) / 10
        assert fed["worst_silo"] == "b" and fed["worst_accuracy"] == 0.5
        assert fed["num_examples"] == 10


def test_federated_summary_by_hand() -> None:
    results = [
        EvaluateRes("a", 1.0, 1, {"accuracy": 0.9, "auc": 0.7, "only_a": 1.0}),
        EvaluateRes("b", 2.0, 3, {"accuracy": 0.5, "auc": 0.6}),
        EvaluateRes("c", 0.5, 6, {"accuracy": 0.8, "auc": 0.9}),
    ]
    summary = federated_summary(results)
    assert summary["loss"] == pytest.approx(1.0)
    assert summary["accuracy"] == pytest.approx(0.72)
    assert summary["auc"] == pytest.approx((0.7 + 1.8 + 5.4) / 10)  # 0.79
    assert summary["num_examples"] == 10
    assert summary["worst_silo"] == "b" and summary["worst_accuracy"] == 0.5
    assert "only_a" not in summary  # only metrics every silo reported are averaged


def test_federated_summary_worst_balanced_silo_can_differ_from_the_worst_by_accuracy() -> None:
    results = [
        EvaluateRes("big", 1.0, 8, {"accuracy": 0.9, "balanced_accuracy": 0.55}),  # majority-class guesser
        EvaluateRes("small", 3.0, 2, {"accuracy": 0.6, "balanced_accuracy": 0.7}),
    ]
    summary = federated_summary(results)
    assert summary["loss"] == pytest.approx((8 * 1.0 + 2 * 3.0) / 10)
    assert summary["accuracy"] == pytest.approx((8 * 0.9 + 2 * 0.6) / 10)  # 0.84
    assert summary["balanced_accuracy"] == pytest.approx((8 * 0.55 + 2 * 0.7) / 10)  # 0.58
    assert summary["worst_silo"] == "small" and summary["worst_accuracy"] == 0.6
    assert summary["worst_balanced_silo"] == "big" and summary["worst_balanced_accuracy"] == 0.55


def test_federated_summary_without_accuracy_has_no_worst_silo() -> None:
    summary = federated_summary([EvaluateRes("a", 3.0, 2, {}), EvaluateRes("b", 1.0, 6, {})])
    assert summary == {"loss": pytest.approx(1.5), "num_examples": 8}


def test_no_federated_evaluation_when_fraction_evaluate_is_zero() -> None:
    loop, rec = make_loop(
        [agent("a", 1, fixed([1, 2, 3], 1)), agent("b", 2, fixed([1, 2, 3], 1))],
        sampling=Sampling(fraction_evaluate=0.0, min_fit_clients=1),
    )
    loop.run(initial(), StrategyState())
    assert {r["phase"] for r in rec.rows} == {"fit", "round"}  # silos' fits and the round's own row


class ZeroExamples:
    """An endpoint that claims to have trained on no examples (it would zero out the mean)."""

    name = "z"

    def fit(self, ins: FitIns) -> FitRes:
        return FitRes(self.name, {"w": f32([100, 100, 100]), "b": f32([100])}, 0)

    def evaluate(self, ins: EvaluateIns) -> EvaluateRes:
        return EvaluateRes(self.name, 0.0, 1)


def test_an_update_claiming_zero_examples_is_rejected() -> None:
    loop, rec = make_loop([agent("a", 2, fixed([1, 2, 3], 1)), ZeroExamples()], sampling=Sampling())  # type: ignore[list-item]
    params = loop.run(initial(), StrategyState()).parameters
    np.testing.assert_allclose(params["w"], [1, 2, 3])
    row = rec.fit_rows(1)["z"]
    assert row["failure_kind"] == "rejected" and "num_examples=0" in row["failure"]


def test_sampling_follows_the_seeded_registry_and_config_reaches_the_silos() -> None:
    settings_seen: dict[tuple[int, str], TrainSettings] = {}

    def recording(name: str) -> Update:
        def update(params: ArrayDict, settings: TrainSettings) -> ArrayDict:
            settings_seen[(settings.round, name)] = settings
            return params

        return update

    names = ["a", "b", "c", "d"]
    loop, rec = make_loop(
        [agent(n, 2, recording(n)) for n in names],
        sampling=Sampling(fraction_fit=0.5, min_fit_clients=1),
        settings=LoopSettings(
            rounds=3, seed=11, instructions=FitInstructions(TrainSettings(lr=0.125, epochs=2)), wait_timeout=1.0
        ),
    )
    loop.run(initial(), StrategyState())
    for rnd, chosen in rec.starts:
        assert chosen == sample_silos(names, 0.5, 1, round_rng(11, rnd, FIT))
        assert set(rec.fit_rows(rnd)) == set(chosen)
        for name in chosen:
            s = settings_seen[(rnd, name)]
            assert (s.lr, s.epochs) == (0.125, 2)
            assert s.seed == silo_seed(11, rnd, name)
    assert len(settings_seen) == 3 * 2


def test_waiting_for_too_few_silos_fails_naming_the_missing_ones() -> None:
    loop, _ = make_loop(
        [agent("a", 1, fixed([1, 2, 3], 1))],
        sampling=Sampling(min_fit_clients=1, min_available_clients=3),
        settings=LoopSettings(rounds=1, wait_timeout=0.3),
        expected_silos=["a", "b", "c"],
    )
    with pytest.raises(RoundFailed, match="missing: b, c"):
        loop.run(initial(), StrategyState())


def test_a_silos_metrics_cannot_overwrite_the_rows_identity() -> None:
    # Metrics come from the silo's side of the trust boundary; a metric that happens to be called
    # "round" or "num_examples" must not rewrite which round/silo a row belongs to (resume
    # truncates metrics.jsonl by "round"): such a reply is rejected, and its row says so.
    def train(params: ArrayDict, data: Any, settings: TrainSettings, rng: np.random.Generator):
        return params, {"round": 99, "scope": 1.0, "silo": 2.0, "phase": 3.0, "num_examples": 1000, "train_loss": 0.5}

    def evaluate(params: ArrayDict, data: Any):
        return 0.25, {"round": 99, "loss": 7.0, "num_examples": 1000, "accuracy": 0.5}

    data = (np.zeros((3, 1)), np.zeros(3))
    silo = SiloAgent("a", lambda: NumpyClient(initial(), train, evaluate, lambda: data, lambda: data))
    honest = agent("b", 2, fixed([1, 2, 3], 1))
    loop, rec = make_loop([silo, honest], sampling=Sampling())
    loop.run(initial(), StrategyState())
    silo_rows = [r for r in rec.rows if r["scope"] == "silo" and r["silo"] == "a"]
    assert len(silo_rows) == 2
    for row in silo_rows:
        assert (row["round"], row["scope"], row["silo"]) == (1, "silo", "a")
        assert row["failure_kind"] == "rejected" and "metric name 'round' is the row's own" in row["failure"]
        assert "num_examples" not in row


def test_many_failures_with_one_cause_make_one_short_line() -> None:
    failures = [Failure(f"s{i}", "RuntimeError: dtype") for i in range(100)] + [Failure("x", "timeout!", "timeout")]
    assert describe_failures(failures) == "s0, s1, s2 and 97 more: RuntimeError: dtype; x: timeout!"
    assert describe_failures([]) == "no replies"


def test_central_evaluation_every_n_rounds_keeps_round_zero_and_the_last() -> None:
    seen: list[int] = []
    loop, rec = make_loop(
        [agent("a", 1, shifted(+1.0)), agent("d", 4, shifted(-1.0))],
        settings=LoopSettings(rounds=5, seed=3, wait_timeout=1.0, evaluate_every=2),
        central_evaluate=lambda r, p: (seen.append(r) or None, {"w0": float(p["w"][0])}),
    )
    loop.run(initial(), StrategyState())
    assert seen == [0, 2, 4, 5]
    server = [r for r in rec.rows if r["scope"] == "server" and r["phase"] == "evaluate"]
    assert [(r["round"], r["loss"]) for r in server] == [(0, None), (2, None), (4, None), (5, None)]
    assert [r["w0"] for r in server] == pytest.approx([0.0, -1.2, -2.4, -3.0])  # -0.6 per round
    assert rec.ends == [0, 1, 2, 3, 4, 5]
