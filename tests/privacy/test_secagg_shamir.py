"""privacy/secagg/shamir.py: t shares rebuild a secret, t - 1 reveal nothing, tampering is caught."""

from __future__ import annotations

import itertools
import secrets

import pytest

from fedsilo.errors import SecAggError
from fedsilo.privacy.secagg import shamir


def test_lagrange_weights_at_zero_pinned_by_hand() -> None:
    # a line through (1, f1) and (2, f2) has f(0) = 2 f1 - f2
    assert shamir.lagrange_at_zero((1, 2)) == (2, shamir.PRIME - 1)
    # a parabola through x = 1, 2, 3 has f(0) = 3 f1 - 3 f2 + f3
    assert shamir.lagrange_at_zero((1, 2, 3)) == (3, shamir.PRIME - 3, 1)


def test_any_t_of_n_shares_rebuild_the_secret() -> None:
    secret = secrets.token_bytes(32)
    shares = shamir.split(secret, [1, 2, 3, 4, 5], threshold=3)
    assert all(len(s) == shamir.SHARE_BYTES for s in shares.values())
    for subset in itertools.combinations(shares, 3):
        assert shamir.reconstruct({x: shares[x] for x in subset}, 3) == secret
    assert shamir.reconstruct(shares, 3) == secret  # more than t is fine too


def test_t_minus_1_shares_give_a_wrong_secret_for_random_secrets() -> None:
    for _ in range(20):
        secret = secrets.token_bytes(32)
        shares = shamir.split(secret, [3, 5, 8, 9], threshold=4)
        partial = {x: shares[x] for x in (3, 5, 9)}
        assert shamir.interpolate_at_zero(partial) != int.from_bytes(secret, "big")
        with pytest.raises(SecAggError, match="3 shares cannot reconstruct"):
            shamir.reconstruct(partial, 4)


def test_t_minus_1_shares_are_consistent_with_every_secret() -> None:
    # The t-1 shares plus (0, any secret) always define a valid polynomial of degree t-1: perfect secrecy.
    shares = shamir.split(secrets.token_bytes(32), [1, 2, 3], threshold=3)
    for candidate in (b"\x00" * 32, b"\xff" * 32, secrets.token_bytes(32)):
        points = {1: shares[1], 2: shares[2]}
        # the polynomial through (0, candidate), (1, y1), (2, y2) is degree 2 and gives some share for x = 3
        xs, ys = (0, 1, 2), [int.from_bytes(candidate, "big")] + [int.from_bytes(points[x], "big") for x in (1, 2)]
        y3 = 0
        for i, xi in enumerate(xs):
            num, den = 1, 1
            for j, xj in enumerate(xs):
                if i != j:
                    num = num * (3 - xj) % shamir.PRIME
                    den = den * (xi - xj) % shamir.PRIME
            y3 = (y3 + ys[i] * num * pow(den, -1, shamir.PRIME)) % shamir.PRIME
        forged = {**points, 3: y3.to_bytes(shamir.SHARE_BYTES, "big")}
        assert shamir.reconstruct(forged, 3) == candidate


def test_a_tampered_share_does_not_pass_as_the_secret() -> None:
    secret = secrets.token_bytes(32)
    shares = shamir.split(secret, [1, 2, 3], threshold=3)
    flipped = bytearray(shares[2])
    flipped[-1] ^= 1  # a one-bit change moves f(0) by a small multiple: a wrong secret of the right size,
    assert shamir.reconstruct({**shares, 2: bytes(flipped)}, 3) != secret  # which is why shares carry digests
    replaced = (secrets.randbelow(shamir.PRIME)).to_bytes(shamir.SHARE_BYTES, "big")
    with pytest.raises(SecAggError, match="inconsistent"):  # a random share lands f(0) outside 32 bytes
        shamir.reconstruct({**shares, 2: replaced}, 3)


def test_share_digests_bind_dealer_holder_kind_round_and_value() -> None:
    base = shamir.share_digest(b"round-1", 1, 2, "b", b"\x01" * 66)
    assert base == shamir.share_digest(b"round-1", 1, 2, "b", b"\x01" * 66)
    others = [
        shamir.share_digest(b"round-2", 1, 2, "b", b"\x01" * 66),
        shamir.share_digest(b"round-1", 2, 1, "b", b"\x01" * 66),
        shamir.share_digest(b"round-1", 12, 2, "b", b"\x01" * 66),
        shamir.share_digest(b"round-1", 1, 2, "s", b"\x01" * 66),
        shamir.share_digest(b"round-1", 1, 2, "b", b"\x01" * 65 + b"\x00"),
    ]
    assert base not in others and len(set(others)) == len(others)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="distinct"):
        shamir.split(bytes(32), [1, 1, 2], 2)
    with pytest.raises(ValueError, match="distinct"):
        shamir.split(bytes(32), [0, 1, 2], 2)
    with pytest.raises(ValueError, match="threshold 4"):
        shamir.split(bytes(32), [1, 2, 3], 4)
