"""A silo's upload: its update encoded with the codec the server asks for; residuals kept in its state."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedsilo.client.numpy import NumpyClient
from fedsilo.silo.agent import SiloAgent
from fedsilo.silo.store import SiloStore
from fedsilo.silo.uplink import RESIDUAL, encode_upload
from fedsilo.wire.arrays import spec_of
from fedsilo.wire.codecs import Codec, decode, encoded_spec, model_from
from fedsilo.wire.instructions import FitInstructions
from fedsilo.wire.messages import FitIns, FitRes

GLOBAL = {"w": np.array([1.0, 2.0, 3.0, 4.0], np.float32), "steps": np.array([7], np.int64)}


def trained() -> dict[str, np.ndarray]:
    return {"w": np.array([1.5, 2.0, 1.0, 4.25], np.float32), "steps": np.array([9], np.int64)}


def test_float16_upload_is_the_update_and_integer_arrays_go_whole() -> None:
    sent = encode_upload("a", 1, trained(), GLOBAL, Codec("float16"), 0, SiloStore())
    np.testing.assert_array_equal(sent["w"], np.array([0.5, 0.0, -2.0, 0.25], np.float16))
    np.testing.assert_array_equal(sent["steps"], [9])
    back = model_from(decode(sent, spec_of(GLOBAL)), GLOBAL)
    np.testing.assert_array_equal(back["w"], trained()["w"])
    np.testing.assert_array_equal(back["steps"], [9])


def test_topk_residual_survives_in_a_folder_another_agent_reads(tmp_path: Path) -> None:
    """Two states over one folder stand for two simulation workers serving the same silo in turn."""
    codec = Codec("topk", 0.25)  # 1 of 4 entries per round
    first = encode_upload("a", 1, trained(), GLOBAL, codec, 0, SiloStore(tmp_path))
    np.testing.assert_array_equal(first["w"], [-2.0])  # the largest |delta| entry, index 2
    np.testing.assert_array_equal(first["w::topk"], [2])
    other = SiloStore(tmp_path)
    np.testing.assert_array_equal(other.arrays("a", RESIDUAL, before_round=2)["w"], [0.5, 0.0, 0.0, 0.25])
    # next round the model did not move: the residual alone is sent, largest first (0.5 at index 0)
    second = encode_upload("a", 2, GLOBAL, GLOBAL, codec, 1, other)
    np.testing.assert_array_equal(second["w"], [0.5])
    np.testing.assert_array_equal(second["w::topk"], [0])
    np.testing.assert_array_equal(SiloStore(tmp_path).arrays("a", RESIDUAL, before_round=3)["w"], [0.0, 0.0, 0.0, 0.25])
    # round 2 re-run (a resume from round 1's checkpoint) starts from round 1's residual, not round 2's
    np.testing.assert_array_equal(SiloStore(tmp_path).arrays("a", RESIDUAL, before_round=2)["w"], [0.5, 0.0, 0.0, 0.25])


def test_agent_sends_the_encoded_update_the_config_asks_for() -> None:
    def train(params, data, settings, rng):  # noqa: ANN001, ANN202 - a NumPy task's train()
        return {"w": params["w"] + np.float32(0.5), "steps": params["steps"] + 1}, {"train_loss": 0.1}

    client = NumpyClient(GLOBAL, train, lambda p, d: (0.0, {}), lambda: np.zeros((3, 1)), lambda: np.zeros((1, 1)))
    agent = SiloAgent("a", lambda: client)
    reply = agent.fit(FitIns(1, GLOBAL, FitInstructions(codec=Codec("q8"))))
    assert isinstance(reply, FitRes), reply
    assert spec_of(reply.parameters) == encoded_spec(spec_of(GLOBAL), Codec("q8"))
    back = model_from(decode(reply.parameters, spec_of(GLOBAL)), GLOBAL)
    np.testing.assert_allclose(back["w"], GLOBAL["w"] + 0.5, atol=1e-6)  # a constant update quantizes exactly
    np.testing.assert_array_equal(back["steps"], [8])
