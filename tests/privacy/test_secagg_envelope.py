"""privacy/secagg/envelope.py: the step header round-trips, and a malformed one names every problem."""

from __future__ import annotations

import json

import pytest

from fedsilo.errors import SecAggError
from fedsilo.privacy.secagg.envelope import pack, unpack


def test_header_and_body_round_trip() -> None:
    data = pack({"round": 3, "silo": 2, "step": "masked_input", "total": 1234}, b"\x00body")
    assert unpack(data) == ({"round": 3, "silo": 2, "step": "masked_input", "total": 1234}, b"\x00body")


def test_every_problem_of_a_header_is_reported_at_once() -> None:
    raw = json.dumps({"round": -1, "silo": True, "step": "steal", "extra": 1}).encode()
    with pytest.raises(SecAggError) as err:
        unpack(len(raw).to_bytes(8, "little") + raw)
    message = err.value.message
    for part in ("unexpected fields ['extra']", "round=-1", "silo=True", "step='steal'"):
        assert part in message


@pytest.mark.parametrize(
    "data, problem",
    [
        (b"\x01", "too short"),
        ((10**9).to_bytes(8, "little") + b"{}", "does not fit"),
        (b"\x02" + bytes(7) + b"[]", "not a JSON object"),
    ],
)
def test_malformed_framing_is_refused(data: bytes, problem: str) -> None:
    with pytest.raises(SecAggError, match=problem):
        unpack(data)
