"""The server checks every reply at its boundary: evaluations as fits, in every runtime.

A silo is on the other side of a trust boundary: its loss, its example count and its metrics are
untrusted. A non-finite value, a count past :data:`MAX_NUM_EXAMPLES` or a metric named like one of
the row's own fields makes the reply a ``rejected`` failure; the round goes on without it.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from fedsilo.runtime.summary import summarize
from fedsilo.server.loop import ServerLoop
from fedsilo.server.settings import LoopSettings
from fedsilo.strategy.base import Sampling
from fedsilo.strategy.fedavg import FedAvg
from fedsilo.tracking.rows import MetricRow
from fedsilo.tracking.run_dir import RunDir
from fedsilo.transport.inproc import InProcessTransport
from fedsilo.wire.arrays import ArrayDict
from fedsilo.wire.messages import MAX_NUM_EXAMPLES, EvaluateIns, EvaluateRes, FitIns, FitRes


def initial() -> ArrayDict:
    return {"w": np.zeros(3, np.float32)}


class Silo:
    """A silo that sends whatever it is told to: honest by default."""

    def __init__(self, name: str, fit: dict[str, Any] | None = None, evaluate: dict[str, Any] | None = None) -> None:
        self.name = name
        self.fit_reply = {"num_examples": 4, "metrics": {"train_loss": 0.5}, **(fit or {})}
        self.evaluate_reply = {"loss": 0.5, "num_examples": 10, "metrics": {"accuracy": 0.75}, **(evaluate or {})}

    def fit(self, ins: FitIns) -> FitRes:
        params = {k: v + np.float32(1) for k, v in ins.parameters.items()}
        return FitRes(self.name, params, self.fit_reply["num_examples"], self.fit_reply["metrics"])

    def evaluate(self, ins: EvaluateIns) -> EvaluateRes:
        r = self.evaluate_reply
        return EvaluateRes(self.name, r["loss"], r["num_examples"], r["metrics"])


class Rows:
    def __init__(self) -> None:
        self.rows: list[MetricRow] = []

    def on_round_start(self, round: int, silos: Any) -> None: ...
    def on_reply(self, round: int, phase: str, reply: Any) -> None: ...
    def on_round_end(self, round: int, rows: Any) -> None: ...

    def on_metrics(self, row: MetricRow) -> None:
        self.rows.append(row)

    def one(self, phase: str, scope: str = "silo", silo: str | None = None) -> MetricRow:
        (row,) = [r for r in self.rows if r.phase == phase and r.scope == scope and r.silo == silo]
        return row


def run_round(*silos: Silo) -> Rows:
    rows = Rows()
    strategy = FedAvg(Sampling())
    loop = ServerLoop(
        InProcessTransport({s.name: s for s in silos}), strategy, LoopSettings(1, wait_timeout=1.0), observers=[rows]
    )
    loop.run(initial(), strategy.initial_state(initial()))
    return rows


HOSTILE_EVALUATIONS = {
    "nan loss": ({"loss": float("nan")}, "loss=nan"),
    "infinite loss": ({"loss": float("inf")}, "loss=inf"),
    "int64 overflow": ({"num_examples": 2**63 - 1}, f"over the limit of {MAX_NUM_EXAMPLES}"),
    "negative count": ({"num_examples": -3}, "num_examples=-3"),
    "nan metric": ({"metrics": {"accuracy": float("nan")}}, "metric 'accuracy' is nan"),
    "a row's field": ({"metrics": {"failure": 1.0, "accuracy": 0.1}}, "metric name 'failure' is the row's own"),
    "the loss itself": ({"metrics": {"loss": 0.0}}, "metric name 'loss' is the row's own"),
    "the worst silo": ({"metrics": {"worst_silo": 1.0}}, "metric name 'worst_silo' is the row's own"),
    "text": ({"metrics": {"accuracy": "high"}}, "metric 'accuracy' is not a number"),
    "escape in a name": ({"metrics": {"\x1b[2Jacc": 1.0}}, "metric name '\\x1b[2Jacc' is not"),
}


@pytest.mark.parametrize("case", list(HOSTILE_EVALUATIONS))
def test_a_hostile_evaluation_is_rejected_and_the_federated_row_is_the_honest_silos(case: str) -> None:
    reply, why = HOSTILE_EVALUATIONS[case]
    rows = run_round(Silo("a"), Silo("evil", evaluate=reply))
    bad = rows.one("evaluate", silo="evil")
    assert bad.failure_kind == "rejected" and why in str(bad.failure)
    federated = rows.one("evaluate", scope="federated")
    assert federated.values == {"loss": 0.5, "num_examples": 10, "accuracy": 0.75, "worst_accuracy": 0.75,
                                "worst_silo": "a"}  # fmt: skip
    assert rows.one("evaluate", silo="a").failure is None


HOSTILE_FITS = {
    "count past the bound": ({"num_examples": MAX_NUM_EXAMPLES + 1}, f"over the limit of {MAX_NUM_EXAMPLES}"),
    "nan metric": ({"metrics": {"train_loss": float("nan")}}, "metric 'train_loss' is nan"),
    "a row's field": ({"metrics": {"upload_bytes": 1.0}}, "metric name 'upload_bytes' is the row's own"),
}


@pytest.mark.parametrize("case", list(HOSTILE_FITS))
def test_a_hostile_fit_reply_is_rejected_and_left_out_of_the_model(case: str) -> None:
    reply, why = HOSTILE_FITS[case]
    rows = run_round(Silo("a"), Silo("b"), Silo("evil", fit=reply))
    bad = rows.one("fit", silo="evil")
    assert bad.failure_kind == "rejected" and why in str(bad.failure)
    assert rows.one("round", scope="server").values["updates"] == 2


def test_the_bound_on_examples_itself_is_accepted() -> None:
    rows = run_round(Silo("a", fit={"num_examples": MAX_NUM_EXAMPLES}, evaluate={"num_examples": MAX_NUM_EXAMPLES}))
    assert not [r for r in rows.rows if r.failed]


def test_the_summary_of_a_run_with_a_hostile_silo_is_standard_json(tmp_path: Any) -> None:
    run = RunDir.create(tmp_path, "exp", "")
    for row in run_round(Silo("a"), Silo("evil", evaluate={"loss": float("nan"), "metrics": {"failure": 1.0}})).rows:
        run.on_metrics(row)
    run.close()
    config: Any = type("Config", (), {"name": "exp", "seed": 0, "silos": []})()
    summary = summarize(config, run, 1.0, None)
    assert summary["failures"] == 1
    assert summary["federated"]["loss"] == 0.5
    run.write_summary(summary)
    json.loads((run.path / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(f"bare {c}"))
