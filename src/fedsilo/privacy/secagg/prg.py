"""Expanding a 32-byte seed into a mask vector over Z_(2^64) with a cryptographic PRG.

AES-256 in counter mode over zero bytes is the PRG: its output is indistinguishable from uniform
bytes to anyone without the seed, and OpenSSL's AES-NI path produces several GB/s, so masking a
100k-parameter model (800 kB) takes well under a millisecond. A fixed all-zero nonce is safe because
every seed is used for exactly one vector: seeds are derived per round and per pair (see ``keys.py``),
and the mask of each silo is derived from a fresh random seed.
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

SEED_BYTES = 32
_ZERO_NONCE = bytes(16)


def expand(seed: bytes, size: int, dtype: type[np.unsignedinteger] = np.uint64) -> np.ndarray:
    """``size`` pseudo-random ``dtype`` values from ``seed``: the same seed always gives the same vector."""
    if len(seed) != SEED_BYTES:
        raise ValueError(f"a PRG seed has {SEED_BYTES} bytes, not {len(seed)}")
    if size < 0:
        raise ValueError(f"size must be >= 0, not {size}")
    encryptor = Cipher(algorithms.AES(seed), modes.CTR(_ZERO_NONCE)).encryptor()
    # The ciphertext of zero bytes is the raw keystream. (recent cryptography releases refuse to encrypt a
    # buffer in place, so the zeros and the keystream are two buffers.)
    keystream = encryptor.update(bytes(size * np.dtype(dtype).itemsize)) + encryptor.finalize()
    return np.frombuffer(bytearray(keystream), dtype=dtype)
