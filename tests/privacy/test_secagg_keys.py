"""privacy/secagg/keys.py: both sides derive the same key, bound to round and purpose; AES-GCM catches tampering."""

from __future__ import annotations

import pytest

from fedsilo.errors import SecAggError
from fedsilo.privacy.secagg import keys


def test_both_silos_derive_the_same_key_and_nobody_else_does() -> None:
    a_priv, a_pub = keys.generate_keypair()
    b_priv, b_pub = keys.generate_keypair()
    c_priv, _ = keys.generate_keypair()
    k_ab = keys.agree(a_priv, b_pub, b"round", b"mask")
    assert len(k_ab) == 32
    assert k_ab == keys.agree(b_priv, a_pub, b"round", b"mask")
    assert k_ab != keys.agree(c_priv, b_pub, b"round", b"mask")
    assert k_ab != keys.agree(a_priv, b_pub, b"round", b"share")  # another purpose
    assert k_ab != keys.agree(a_priv, b_pub, b"round2", b"mask")  # another round
    assert keys.public_of(a_priv) == a_pub


def test_sealed_shares_open_only_untampered_and_with_the_same_associated_data() -> None:
    key = keys.agree(*_pair(), b"ctx", b"share")
    sealed = keys.seal(key, b"secret share", b"1->2")
    assert keys.open_sealed(key, sealed, b"1->2") == b"secret share"
    assert sealed != keys.seal(key, b"secret share", b"1->2")  # fresh nonce each time
    flipped = bytearray(sealed)
    flipped[20] ^= 0x40
    assert keys.open_sealed(key, bytes(flipped), b"1->2") is None
    assert keys.open_sealed(key, sealed, b"3->2") is None  # replayed to another silo
    assert keys.open_sealed(key, sealed[:10], b"1->2") is None
    assert keys.open_sealed(bytes(32), sealed, b"1->2") is None


def test_a_malformed_public_key_is_a_secagg_error() -> None:
    priv, _ = keys.generate_keypair()
    with pytest.raises(SecAggError, match="key agreement failed"):
        keys.agree(priv, b"short", b"ctx", b"mask")
    with pytest.raises(SecAggError, match="key agreement failed"):
        keys.agree(priv, bytes(32), b"ctx", b"mask")  # the all-zero point gives an all-zero secret


def _pair() -> tuple[bytes, bytes]:
    a_priv, _ = keys.generate_keypair()
    _, b_pub = keys.generate_keypair()
    return a_priv, b_pub
