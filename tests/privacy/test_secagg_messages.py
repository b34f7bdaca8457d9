"""privacy/secagg/messages.py: frozen messages, and payload sizes counted by hand."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fedsilo.privacy.secagg.messages import AdvertiseKeys, MaskedInput, ShareKeys, UnmaskRequest, payload_bytes


def test_payload_bytes_pinned_by_hand() -> None:
    assert payload_bytes(AdvertiseKeys(1, b"a" * 32, b"b" * 32)) == 8 + 32 + 32
    assert payload_bytes(MaskedInput(2, np.zeros(10, np.uint64), (3, 4))) == 8 + 80 + 16
    assert payload_bytes(MaskedInput(2, np.zeros(10, np.uint32))) == 8 + 40
    # silo + per holder: key (8) + ciphertext; per digest entry: key (8) + two 32-byte digests
    msg = ShareKeys(1, {2: b"x" * 160, 3: b"y" * 160}, {1: (b"d" * 32, b"e" * 32), 2: (b"f" * 32, b"g" * 32)})
    assert payload_bytes(msg) == 8 + 2 * (8 + 160) + 2 * (8 + 64)
    assert payload_bytes(UnmaskRequest((1, 2, 3), ())) == 24


def test_messages_are_frozen() -> None:
    msg = UnmaskRequest((1, 2), (3,))
    with pytest.raises(dataclasses.FrozenInstanceError):
        msg.survivors = (1,)  # type: ignore[misc]
