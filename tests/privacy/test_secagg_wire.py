"""privacy/secagg/wire.py: every message survives bytes exactly; malformed bytes are one clear error."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from fedsilo.errors import SecAggError
from fedsilo.privacy.secagg import FixedPoint, layout_of, new_round, simulate_round
from fedsilo.privacy.secagg.messages import (
    AdvertiseKeys,
    KeyDirectory,
    MaskedInput,
    ShareKeys,
    SharesForSilo,
    UnmaskRequest,
    UnmaskShares,
)
from fedsilo.privacy.secagg.wire import META_KEY, from_bytes, to_bytes
from fedsilo.wire.arrays import to_bytes as arrays_to_bytes


def _equal(a: object, b: object) -> bool:
    for name in a.__dataclass_fields__:  # type: ignore[attr-defined]
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, np.ndarray):
            if not (x.dtype == y.dtype and np.array_equal(x, y)):
                return False
        elif x != y:
            return False
    return True


MESSAGES = [
    AdvertiseKeys(3, b"\x01" * 32, b"\x02" * 32),
    KeyDirectory({1: (b"a" * 32, b"b" * 32), 12: (b"c" * 32, b"d" * 32)}),
    ShareKeys(2, {1: b"ct-1", 3: b"ct-3"}, {1: (b"h" * 32, b"i" * 32), 2: (b"j" * 32, b"k" * 32)}),
    SharesForSilo(1, (1, 2, 3), {2: b"\x00\xff"}, {2: (b"x" * 32, b"y" * 32)}),
    MaskedInput(4, np.array([0, 2**64 - 1, 12345], dtype=np.uint64), (2, 5)),
    MaskedInput(4, np.array([7, 2**32 - 1], dtype=np.uint32)),
    UnmaskRequest((1, 2, 4), (3,)),
    UnmaskShares(2, {1: b"s" * 66, 4: b"t" * 66}, {3: b"u" * 66}),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips_exactly(message: object) -> None:
    data = to_bytes(message)
    assert isinstance(data, bytes)
    assert _equal(from_bytes(data, type(message)), message)


def test_a_round_config_round_trips_with_its_layout_and_encoding() -> None:
    layout = layout_of({"w": np.zeros((2, 3), np.float32), "b": np.zeros(3, np.float32)})
    encoding = FixedPoint(clip=4.0, frac_bits=20, ring_bits=32)
    config = new_round([1, 2, 5, 9], layout, np.random.default_rng(1), neighbours=2, encoding=encoding)
    assert from_bytes(to_bytes(config), type(config)) == config


def test_a_whole_round_through_the_wire_gives_the_same_sum() -> None:
    updates = {u: {"w": np.array([u * 1.25, -u], np.float32)} for u in range(1, 6)}
    config = new_round(range(1, 6), layout_of(updates[1]), np.random.default_rng(2), threshold=3)
    plain = simulate_round(config, updates, drop={5: "masked_input"})
    wired = simulate_round(config, updates, drop={5: "masked_input"}, wire=True)
    assert np.array_equal(plain.result.total["w"], wired.result.total["w"])
    assert wired.result.total["w"].tolist() == [12.5, -10.0]
    assert all(wired.sent_bytes[u] > plain.sent_bytes[u] for u in range(1, 6))  # framing and base64 cost


def test_the_wrong_kind_is_refused() -> None:
    with pytest.raises(SecAggError, match="expected a MaskedInput message, got 'AdvertiseKeys'"):
        from_bytes(to_bytes(MESSAGES[0]), MaskedInput)


def test_garbage_and_truncated_bytes_are_one_clear_error() -> None:
    data = to_bytes(MESSAGES[4])
    for bad in (b"", b"not safetensors at all", data[: len(data) // 2], (2**62).to_bytes(8, "little") + data[8:]):
        with pytest.raises(SecAggError, match="malformed secure-aggregation message"):
            from_bytes(bad, MaskedInput)


def _forge(kind: str, fields: dict[str, object], tensors: dict[str, np.ndarray] | None = None) -> bytes:
    body = json.dumps({"kind": kind, "fields": fields})
    return arrays_to_bytes(tensors or {}, {META_KEY: body})


def test_every_bad_field_is_named_at_once() -> None:
    data = _forge(
        "UnmaskShares",
        {"silo": True, "b_shares": {"1": "%%%"}, "s_shares": {"x": base64.b64encode(b"ok").decode()}, "more": 1},
    )
    with pytest.raises(SecAggError) as info:
        from_bytes(data, UnmaskShares)
    msg = info.value.message
    assert "silo: not an integer" in msg and "b_shares[1]: not base64" in msg
    assert "key 'x' is not a silo number" in msg and "unexpected fields ['more']" in msg


def test_a_masked_input_must_carry_exactly_its_vector() -> None:
    data = _forge("MaskedInput", {"silo": 1, "suspects": []}, {"other": np.zeros(2, np.uint64)})
    with pytest.raises(SecAggError, match="expected exactly one tensor 'vector'"):
        from_bytes(data, MaskedInput)
    with pytest.raises(SecAggError, match="suspects: missing"):
        from_bytes(_forge("MaskedInput", {"silo": 1}, {"vector": np.zeros(2, np.uint64)}), MaskedInput)


def test_objects_that_are_not_messages_are_not_serialized() -> None:
    with pytest.raises(TypeError, match="not a secure-aggregation message"):
        to_bytes({"silo": 1})
