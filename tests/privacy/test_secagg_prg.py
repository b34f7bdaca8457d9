"""privacy/secagg/prg.py: AES-CTR mask expansion, deterministic per seed and fast enough for real models."""

from __future__ import annotations

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from fedsilo.privacy.secagg.prg import expand


def test_the_same_seed_gives_the_same_mask_and_another_seed_another() -> None:
    a, b = bytes(range(32)), bytes(range(1, 33))
    assert np.array_equal(expand(a, 1000), expand(a, 1000))
    assert np.count_nonzero(expand(a, 1000) == expand(b, 1000)) == 0
    assert np.array_equal(expand(a, 10), expand(a, 1000)[:10])  # a prefix: the size does not change the stream


def test_the_mask_is_the_aes256_ctr_keystream_read_as_little_endian_uint64() -> None:
    seed = bytes(range(32))
    stream = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor().update(bytes(24))
    expected = [int.from_bytes(stream[i : i + 8], "little") for i in (0, 8, 16)]
    assert expand(seed, 3).tolist() == expected


def test_bad_seed_or_size_is_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        expand(bytes(16), 4)
    with pytest.raises(ValueError, match="size"):
        expand(bytes(32), -1)
    assert expand(bytes(32), 0).shape == (0,)


def test_a_32_bit_mask_is_the_same_keystream_in_narrower_words() -> None:
    seed = bytes(range(32))
    wide, narrow = expand(seed, 2), expand(seed, 4, np.uint32)
    assert narrow.dtype == np.uint32
    assert narrow.tobytes() == wide.tobytes()
