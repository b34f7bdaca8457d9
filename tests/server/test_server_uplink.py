"""The server loop with codecs and central DP: decoding on receipt, bytes per silo and round, epsilon rows."""

from __future__ import annotations

from typing import Any

import numpy as np

from fedsilo.client.numpy import NumpyClient
from fedsilo.privacy.accounting import PrivacyAccountant, PrivacyEvent
from fedsilo.server.loop import ServerLoop
from fedsilo.server.settings import LoopSettings
from fedsilo.silo.agent import SiloAgent
from fedsilo.strategy.base import Sampling
from fedsilo.strategy.central_dp import CentralDP
from fedsilo.strategy.fedavg import FedAvg
from fedsilo.tracking.rows import MetricRow
from fedsilo.transport.inproc import InProcessTransport
from fedsilo.wire.arrays import ArrayDict, spec_of, wire_size
from fedsilo.wire.codecs import Codec, encoded_spec
from fedsilo.wire.instructions import FitInstructions
from fedsilo.wire.messages import FitIns, FitRes

SIZE = 1000


def initial() -> ArrayDict:
    return {"w": np.zeros(SIZE, np.float32), "b": np.zeros(1, np.float32)}


def agent(name: str, n: int, shift: float) -> SiloAgent:
    def train(params: ArrayDict, data: Any, settings: Any, rng: np.random.Generator):
        return {k: v + np.float32(shift) for k, v in params.items()}, {"train_loss": 0.5}

    data = (np.zeros((n, 1)), np.zeros(n))
    return SiloAgent(name, lambda: NumpyClient(initial(), train, lambda p, d: (0.0, {}), lambda: data, lambda: data))


class Rows:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def on_round_start(self, round: int, silos: Any) -> None: ...
    def on_reply(self, round: int, phase: str, reply: Any) -> None: ...
    def on_round_end(self, round: int, rows: Any) -> None: ...

    def on_metrics(self, row: MetricRow) -> None:
        self.rows.append(row.to_json())  # as metrics.jsonl holds it


class Garbage:
    """A silo that answers with codes of the wrong shape: the server must reject, not crash."""

    def fit(self, ins: FitIns) -> FitRes:
        return FitRes("bad", {"w": np.zeros(3, np.uint8), "w::q8": np.zeros(2), "b": np.zeros(1, np.uint8)}, 5)

    def evaluate(self, ins: Any) -> Any:
        raise AssertionError("not asked")


def run(strategy: Any, codec: Codec, agents: dict[str, Any], rounds: int = 1) -> tuple[ArrayDict, Rows]:
    rows = Rows()
    loop = ServerLoop(
        InProcessTransport(agents),
        strategy,
        LoopSettings(rounds, seed=0, instructions=FitInstructions(codec=codec)),
        observers=[rows],
    )
    params = loop.run(initial(), strategy.initial_state(initial())).parameters
    return params, rows


def test_q8_updates_are_decoded_averaged_and_counted() -> None:
    agents = {"a": agent("a", 1, 0.25), "c": agent("c", 3, -0.75), "bad": Garbage()}
    params, rows = run(FedAvg(Sampling(fraction_evaluate=0.0)), Codec("q8"), agents)
    # constant updates quantize exactly (step 0): (1 * 0.25 + 3 * -0.75) / 4 = -0.5
    np.testing.assert_allclose(params["w"], -0.5, atol=1e-7)
    fit = {r["silo"]: r for r in rows.rows if r["phase"] == "fit" and r["scope"] == "silo"}
    assert (
        fit["bad"]["failure_kind"] == "rejected" and "q8 codes must be uint8 of shape (1000,)" in fit["bad"]["failure"]
    )
    q8 = wire_size(encoded_spec(spec_of(initial()), Codec("q8")))
    raw = wire_size(spec_of(initial()))
    assert fit["a"]["upload_bytes"] == q8 and fit["a"]["upload_bytes_raw"] == raw
    server = [r for r in rows.rows if r["scope"] == "server" and r["phase"] == "round"]
    bad = wire_size(spec_of(Garbage().fit(FitIns(1, {})).parameters))
    assert server == [
        {"round": 1, "scope": "server", "silo": None, "phase": "round", "updates": 2,
         "upload_bytes": 2 * q8 + bad, "upload_bytes_raw": 3 * raw},
    ]  # fmt: skip


def test_central_dp_rows_carry_the_accountants_epsilon_each_round() -> None:
    inner = FedAvg(Sampling(fraction_fit=0.5, fraction_evaluate=0.0, min_fit_clients=1))
    strategy = CentralDP(inner, noise_multiplier=1.3, clip_norm=0.5, expected_silos=1, sampling_rate=0.5)
    _, rows = run(strategy, Codec(), {"a": agent("a", 2, 0.1), "c": agent("c", 4, 0.2)}, rounds=3)
    server = [r for r in rows.rows if r["scope"] == "server" and r["phase"] == "round"]
    expected = [PrivacyAccountant().record(PrivacyEvent(1.3, 0.5, n)).epsilon(1e-5) for n in (1, 2, 3)]
    assert [r["epsilon"] for r in server] == expected
    assert all(r["delta"] == 1e-5 and r["clip_norm"] == 0.5 and r["updates"] == 1 for r in server)
