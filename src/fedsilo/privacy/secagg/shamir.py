"""Shamir t-of-n secret sharing of byte secrets over the prime field GF(2^521 - 1).

A secret ``s`` (32 bytes, read as an integer below 2^256) is the constant term of a random
polynomial ``f`` of degree ``t - 1``; holder ``x`` gets ``f(x)``. Any ``t`` shares give ``f(0) = s`` by
Lagrange interpolation; any ``t - 1`` shares are consistent with *every* secret, so they reveal
nothing (Shamir 1979). The Mersenne prime 2^521 - 1 is larger than any 32-byte secret, so a secret
is one field element. Coefficients come from the OS CSPRNG (``secrets``), never a seeded generator.

Integrity: a share is 66 big-endian bytes and carries no integrity by itself, so :func:`share_digest`
gives a domain-separated SHA-256 commitment that a dealer publishes next to each encrypted share; a
share later revealed with a different digest is rejected instead of silently poisoning the secret.
A reconstructed value that does not fit the secret's length is reported as inconsistent shares.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping, Sequence
from functools import lru_cache

from fedsilo.errors import SecAggError

PRIME = 2**521 - 1
SHARE_BYTES = 66  # ceil(521 / 8)


def split(secret: bytes, holders: Sequence[int], threshold: int) -> dict[int, bytes]:
    """Share ``secret`` among ``holders`` (distinct x-coordinates) so that any ``threshold`` of them recover it."""
    if len(set(holders)) != len(holders) or any(not 0 < x < PRIME for x in holders):
        raise ValueError(f"holders must be distinct positive integers, got {list(holders)}")
    if not 1 <= threshold <= len(holders):
        raise ValueError(f"threshold {threshold} must be in 1..{len(holders)} (the number of holders)")
    if len(secret) * 8 >= 521:
        raise ValueError(f"a secret of {len(secret)} bytes does not fit the field")
    coeffs = [int.from_bytes(secret, "big")] + [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    shares: dict[int, bytes] = {}
    for x in holders:
        y = 0
        for c in reversed(coeffs):  # Horner
            y = (y * x + c) % PRIME
        shares[x] = y.to_bytes(SHARE_BYTES, "big")
    return shares


@lru_cache(maxsize=256)
def lagrange_at_zero(xs: tuple[int, ...]) -> tuple[int, ...]:
    """The weights ``l_i`` with ``f(0) = sum l_i f(x_i)`` for any polynomial of degree < len(xs) (cached per set)."""
    weights = []
    for i, xi in enumerate(xs):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if i != j:
                num = num * xj % PRIME
                den = den * (xj - xi) % PRIME
        weights.append(num * pow(den, -1, PRIME) % PRIME)
    return tuple(weights)


def interpolate_at_zero(shares: Mapping[int, bytes]) -> int:
    """``f(0)`` of the unique polynomial of degree < len(shares) through the shares."""
    xs = tuple(sorted(shares))
    weights = lagrange_at_zero(xs)
    total = 0
    for x, w in zip(xs, weights, strict=True):
        y = int.from_bytes(shares[x], "big")
        if len(shares[x]) != SHARE_BYTES or y >= PRIME:
            raise SecAggError(
                f"share {x} is malformed ({len(shares[x])} bytes)", "its holder sent a damaged share: it is left out"
            )
        total += w * y
    return total % PRIME


def reconstruct(shares: Mapping[int, bytes], threshold: int, secret_bytes: int = 32) -> bytes:
    """The secret from at least ``threshold`` shares (the ``threshold`` lowest x-coordinates are used)."""
    if len(shares) < threshold:
        raise SecAggError(
            f"{len(shares)} shares cannot reconstruct a secret shared with threshold {threshold}",
            "too many silos dropped: bring them back or lower privacy.secure_aggregation.threshold",
        )
    chosen = {x: shares[x] for x in sorted(shares)[:threshold]}
    value = interpolate_at_zero(chosen)
    if value >= 1 << (8 * secret_bytes):
        raise SecAggError(
            "the shares are inconsistent: they do not interpolate to a secret of the expected size",
            "a silo revealed a wrong share: the round is abandoned, the model is unchanged",
        )
    return value.to_bytes(secret_bytes, "big")


def share_digest(context: bytes, dealer: int, holder: int, kind: str, share: bytes) -> bytes:
    """A binding commitment to one share: who dealt it, to whom, of which secret, in which round."""
    h = hashlib.sha256(b"fedsilo-secagg-share-v1\x00")
    for part in (context, str(dealer).encode(), str(holder).encode(), kind.encode(), share):
        h.update(len(part).to_bytes(4, "big"))
        h.update(part)
    return h.digest()
