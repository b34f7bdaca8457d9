"""privacy/secagg/encoding.py: fixed point in Z_2^64, pinned by hand, and sums that never wrap."""

from __future__ import annotations

import numpy as np
import pytest

from fedsilo.errors import SecAggError
from fedsilo.privacy.secagg.encoding import FixedPoint, decode, encode, layout_of, layout_size


def test_encode_pins_two_complement_fixed_point_by_hand() -> None:
    fp = FixedPoint(clip=8.0, frac_bits=4)  # steps of 1/16
    arrays = {"a": np.array([0.5, -0.25, 1.03125], dtype=np.float32), "b": np.array([[-8.0], [100.0]])}
    ring, clipped = encode(arrays, layout_of(arrays), fp)
    assert ring.dtype == np.uint64
    # 0.5*16=8; -0.25*16=-4 -> 2^64-4; 1.03125*16=16.5 -> 16 (round half to even); -8*16=-128; 100 clips to 8 -> 128
    assert ring.tolist() == [8, 2**64 - 4, 16, 2**64 - 128, 128]
    assert clipped == 1


def test_decoded_sum_equals_plain_sum_up_to_the_precision_with_unequal_signed_float32_updates() -> None:
    rng = np.random.default_rng(7)
    fp = FixedPoint(clip=50.0, frac_bits=20)
    updates = [
        {
            "conv": (rng.normal(size=(2, 3, 3)) * (i + 1) - i).astype(np.float32),
            "bias": (rng.normal(size=5) * 10 * (-1) ** i).astype(np.float32),
        }
        for i in range(5)
    ]
    layout = layout_of(updates[0])
    total = np.zeros(layout_size(layout), dtype=np.uint64)
    for u in updates:
        total += encode(u, layout, fp)[0]
    got = decode(total, layout, fp)
    for name in ("conv", "bias"):
        plain = sum(u[name].astype(np.float64) for u in updates)
        assert got[name].shape == plain.shape and got[name].dtype == np.float64
        err = np.abs(got[name] - plain).max()
        assert 0 < err <= 5 * fp.resolution / 2  # rounding happened, and stayed within n * half a step


def test_negative_sums_decode_through_the_wrap_around() -> None:
    fp = FixedPoint()
    arrays = {"x": np.array([-3.0, 2.0])}
    layout = layout_of(arrays)
    ring = encode(arrays, layout, fp)[0] + encode({"x": np.array([-1.5, -7.0])}, layout, fp)[0]
    assert decode(ring, layout, fp)["x"].tolist() == [-4.5, -5.0]


def test_overflow_analysis_bounds_the_number_of_summands() -> None:
    fp = FixedPoint(clip=2.0**20, frac_bits=40)  # one value up to 2^60: at most 7 fit below 2^63
    assert fp.max_summands == 7
    fp.check_summands(7)
    with pytest.raises(SecAggError, match="8 silos can overflow"):
        fp.check_summands(8)
    assert FixedPoint().max_summands == (2**63 - 1) // 2**42  # the defaults: about two million silos


def test_bad_settings_are_reported_all_at_once() -> None:
    with pytest.raises(SecAggError) as info:
        FixedPoint(clip=-1.0, frac_bits=60)
    assert "clip=-1.0" in info.value.message and "frac_bits=60" in info.value.message


def test_an_update_that_does_not_fit_the_layout_is_refused_naming_every_problem() -> None:
    layout = layout_of({"w": np.zeros((2, 2)), "b": np.zeros(2)})
    with pytest.raises(SecAggError) as info:
        encode({"w": np.zeros((2, 3)), "b": np.array([np.nan, np.inf])}, layout, FixedPoint())
    assert "w: shape (2, 3)" in info.value.message and "b: 2 non-finite" in info.value.message
    with pytest.raises(SecAggError, match="differ from the agreed"):
        encode({"b": np.zeros(2), "w": np.zeros((2, 2))}, layout, FixedPoint())


def test_decode_refuses_a_vector_of_the_wrong_size() -> None:
    layout = layout_of({"w": np.zeros(3)})
    with pytest.raises(SecAggError, match="does not match the layout"):
        decode(np.zeros(4, dtype=np.uint64), layout, FixedPoint())


def test_a_32_bit_ring_pins_by_hand_and_halves_the_bytes() -> None:
    fp = FixedPoint(clip=8.0, frac_bits=16, ring_bits=32)
    assert fp.max_summands == (2**31 - 1) // 2**19 == 4095
    arrays = {"x": np.array([1.5, -0.5], dtype=np.float32)}
    ring, _ = encode(arrays, layout_of(arrays), fp)
    assert ring.dtype == np.uint32 and ring.nbytes == arrays["x"].nbytes
    assert ring.tolist() == [3 * 2**15, 2**32 - 2**15]
    assert decode(ring + ring, layout_of(arrays), fp)["x"].tolist() == [3.0, -1.0]
    with pytest.raises(SecAggError, match="ring_bits=16"):
        FixedPoint(ring_bits=16)
    with pytest.raises(SecAggError, match="does not fit in 31 bits"):
        FixedPoint(clip=1024.0, frac_bits=32, ring_bits=32)
