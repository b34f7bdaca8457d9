"""The round's public settings and every message of the protocol: frozen dataclasses of ints, bytes and arrays.

Nothing here is pickled: ``wire.py`` turns a message into safetensors bytes, the one array
(:class:`MaskedInput.vector`) as a tensor and the ints and bytes as JSON in the header (bytes as
base64). :func:`payload_bytes` counts a message's payload without serializing it.
Silos are numbered 1..n: the numbers double as Shamir x-coordinates.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields

import numpy as np

from fedsilo.privacy.secagg.encoding import FixedPoint, VectorLayout
from fedsilo.wire.arrays import ArrayDict


@dataclass(frozen=True, slots=True)
class SecAggConfig:
    """Everything public about one round, chosen by the server (:func:`~fedsilo.privacy.secagg.new_round`)."""

    session: bytes  # random per round: binds every key, share and mask to this round
    silos: tuple[int, ...]  # sorted silo numbers, 1..n
    threshold: int  # shares needed to rebuild a secret; also the fewest silos a round may end with
    layout: VectorLayout  # names, shapes, dtypes of the update, in order
    encoding: FixedPoint = field(default_factory=FixedPoint)
    neighbours: int | None = None  # SecAgg+: mask with k neighbours on a random graph; None = everyone
    graph_seed: int = 0  # seeds the public neighbour graph (SecAgg+ only)


@dataclass(frozen=True, slots=True)
class AdvertiseKeys:
    """Step 0, silo -> server: the silo's two public keys for this round."""

    silo: int
    c_public: bytes  # for encrypting shares
    s_public: bytes  # for pairwise masks


@dataclass(frozen=True, slots=True)
class KeyDirectory:
    """Step 0, server -> every silo: the public keys of all silos that advertised (U1)."""

    keys: Mapping[int, tuple[bytes, bytes]]  # silo -> (c_public, s_public)


@dataclass(frozen=True, slots=True)
class ShareKeys:
    """Step 1, silo -> server: encrypted shares of the silo's secrets, one per holder, and their digests."""

    silo: int
    ciphertexts: Mapping[int, bytes]  # holder -> AES-GCM(b share, s share)
    digests: Mapping[int, tuple[bytes, bytes]]  # holder -> (digest of b share, digest of s share); self included


@dataclass(frozen=True, slots=True)
class SharesForSilo:
    """Step 1, server -> one silo: the shares addressed to it, and who completed step 1 (U2)."""

    silo: int
    participants: tuple[int, ...]
    ciphertexts: Mapping[int, bytes]  # dealer -> ciphertext
    digests: Mapping[int, tuple[bytes, bytes]]  # dealer -> the digests the dealer published for this silo


@dataclass(frozen=True, slots=True)
class MaskedInput:
    """Step 2, silo -> server: the masked update, and the dealers whose shares failed to decrypt or verify."""

    silo: int
    vector: np.ndarray  # uint64 (or uint32) over Z_2^k, uniform to anyone without the masks
    suspects: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class UnmaskRequest:
    """Step 3, server -> silos: whose inputs are in the sum (U3) and who dropped or was excluded."""

    survivors: tuple[int, ...]
    dropped: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class UnmaskShares:
    """Step 3, silo -> server: shares of self-mask seeds of survivors and of mask keys of dropped silos."""

    silo: int
    b_shares: Mapping[int, bytes]  # survivor -> share of its self-mask seed
    s_shares: Mapping[int, bytes]  # dropped silo -> share of its mask private key


@dataclass(frozen=True, slots=True)
class SecAggResult:
    """The server's output: the sum of the survivors' updates, and who was left out and why."""

    total: ArrayDict  # float64 arrays: the sum of the survivors' (clipped, fixed-point) updates
    survivors: tuple[int, ...]  # whose updates are in ``total``
    dropped: tuple[int, ...]  # completed step 1 but whose input is not in the sum (dropped or excluded)
    excluded: tuple[int, ...]  # of ``dropped``: named by a peer for a share that failed its tag or digest
    bad_shares: tuple[tuple[int, int], ...] = ()  # (revealer, dealer): revealed shares that failed their digest


def payload_bytes(message: object) -> int:
    """Bytes a message takes on the wire: payload bytes, 8 per int, array data (JSON framing not counted)."""
    return _size(message)


def _size(value: object) -> int:
    if isinstance(value, bytes):
        return len(value)
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, bool | int | float):
        return 8
    if isinstance(value, Mapping):
        return sum(_size(k) + _size(v) for k, v in value.items())
    if isinstance(value, tuple | list):
        return sum(_size(v) for v in value)
    if hasattr(value, "__dataclass_fields__"):
        return sum(_size(getattr(value, f.name)) for f in fields(value))  # type: ignore[arg-type, misc]
    return len(str(value).encode())
