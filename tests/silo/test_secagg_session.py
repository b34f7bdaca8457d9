"""silo/secagg_session.py and SiloAgent.exchange: the update stays in the silo; stray messages are refused."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fedsilo.client.numpy import NumpyClient
from fedsilo.errors import SecAggError
from fedsilo.privacy.secagg import envelope, layout_of, new_round
from fedsilo.privacy.secagg.messages import AdvertiseKeys
from fedsilo.privacy.secagg.wire import from_bytes, to_bytes
from fedsilo.silo.agent import SiloAgent
from fedsilo.silo.secagg_session import SecAggSession
from fedsilo.wire.arrays import ArrayDict
from fedsilo.wire.instructions import FitInstructions, SecAggRequest, TrainSettings
from fedsilo.wire.messages import Failure, FitIns, FitRes

pytest.importorskip("cryptography")


def start() -> ArrayDict:
    return {"w": np.array([1.0, 2.0], np.float32)}


def agent() -> SiloAgent:
    data = (np.zeros((7, 1)), np.zeros(7))

    def train(params: ArrayDict, d: Any, settings: Any, rng: np.random.Generator):
        return {"w": params["w"] * 3}, {"train_loss": 0.1}

    return SiloAgent("h", lambda: NumpyClient(start(), train, lambda p, d: (1.0, {}), lambda: data, lambda: data))


def advertise_message(round: int, silo: int = 2, step: str = "advertise") -> bytes:
    config = new_round([1, 2, 3], layout_of(start()), np.random.default_rng(0))
    return envelope.pack({"round": round, "silo": silo, "step": step}, to_bytes(config))


def test_a_secagg_fit_keeps_the_update_and_sends_only_counts_and_metrics() -> None:
    a = agent()
    reply = a.fit(FitIns(4, start(), FitInstructions(secagg=SecAggRequest())))
    assert isinstance(reply, FitRes)
    assert reply.parameters == {} and reply.num_examples == 7 and reply.metrics == {"train_loss": 0.1}
    answer = a.exchange("advertise", advertise_message(4))
    assert isinstance(answer, bytes) and from_bytes(answer, AdvertiseKeys).silo == 2


def test_without_a_secagg_fit_there_is_no_session_and_a_plain_fit_sends_its_model() -> None:
    a = agent()
    failed = a.exchange("advertise", advertise_message(1))
    assert isinstance(failed, Failure) and "no secure-aggregation session" in failed.reason
    reply = a.fit(FitIns(1, start(), FitInstructions(TrainSettings())))
    assert isinstance(reply, FitRes)
    np.testing.assert_array_equal(reply.parameters["w"], [3.0, 6.0])
    assert isinstance(a.exchange("advertise", advertise_message(1)), Failure)  # the plain fit left no session


def test_the_session_refuses_another_round_a_step_out_of_order_and_another_silos_message() -> None:
    session = SecAggSession(5, {"w": np.array([2.0, 4.0])}, 7, None, np.random.default_rng(0))
    with pytest.raises(SecAggError, match="for round 4, this silo trained round 5"):
        session.step("advertise", advertise_message(4))
    with pytest.raises(SecAggError, match=r"out of order \(expected 'advertise'\)"):
        session.step("share_keys", advertise_message(5, step="share_keys"))
    with pytest.raises(SecAggError, match="is for step 'advertise', not 'unmask'"):
        session.step("unmask", advertise_message(5))
    session.step("advertise", advertise_message(5, silo=2))
    with pytest.raises(SecAggError, match="for silo number 3, this silo is 2"):
        session.step("share_keys", envelope.pack({"round": 5, "silo": 3, "step": "share_keys"}, b""))
