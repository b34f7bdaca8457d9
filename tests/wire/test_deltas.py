"""wire/deltas.py: the one pair of array helpers, pinned by hand, and equal to float32 arithmetic."""

from __future__ import annotations

import numpy as np
import pytest

from fedsilo.wire.deltas import apply, delta


def test_delta_is_the_float64_difference_by_name_in_the_references_order() -> None:
    model = {"n": np.array(7, np.int64), "w": np.array([1.5, 2.0], np.float32)}
    ref = {"w": np.array([0.5, 3.0], np.float32), "n": np.array(4, np.int64)}
    d = delta(model, ref)
    assert list(d) == ["w", "n"]
    assert d["w"].dtype == np.float64 and d["w"].tolist() == [1.0, -1.0]
    assert d["n"].shape == () and float(d["n"]) == 3.0
    with pytest.raises(KeyError):
        delta({"w": model["w"]}, ref)


def test_delta_in_the_models_own_dtype() -> None:
    d = delta({"w": np.array([1.5], np.float16)}, {"w": np.array([0.25], np.float16)}, dtype=None)
    assert d["w"].dtype == np.float16 and d["w"].tolist() == [1.25]


def test_apply_scales_adds_and_rounds_integers_back() -> None:
    ref = {"w": np.array([1.0, 2.0], np.float32), "n": np.array(10, np.int64)}
    out = apply(ref, {"w": np.array([0.5, -1.0]), "n": np.array(2.6)}, scale=2.0)
    assert out["w"].dtype == np.float32 and out["w"].tolist() == [2.0, 0.0]
    assert out["n"].dtype == np.int64 and int(out["n"]) == 15  # 10 + 5.2, rounded


def test_cast_results_equal_float32_arithmetic_bit_for_bit() -> None:
    """The codec path used float32 subtraction and addition: float64 then a cast gives the same bits."""
    rng = np.random.default_rng(0)
    scales = 10.0 ** rng.integers(-30, 30, size=20_000)
    a = (rng.normal(size=20_000) * scales).astype(np.float32)
    b = (rng.normal(size=20_000) * scales[::-1]).astype(np.float32)
    np.testing.assert_array_equal(delta({"x": a}, {"x": b}, dtype=None)["x"], np.subtract(a, b, dtype=np.float32))
    np.testing.assert_array_equal(apply({"x": b}, {"x": a})["x"], np.add(b, a, dtype=np.float32))
