"""Update codecs: exact round trips where promised, unbiased 8-bit quantization, top-k error feedback, wire bytes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedsilo.errors import ConfigError, UpdateRejected
from fedsilo.wire.arrays import from_bytes, spec_of, to_bytes, wire_size
from fedsilo.wire.codecs import Codec, decode, encode
from fedsilo.wire.lossy import encode_float16, encode_q8, encode_topk, quantize_q8


def small() -> dict[str, np.ndarray]:
    return {
        "w": np.array([[0.5, -1.25], [2.0, 0.0]], np.float32),
        "b": np.array([0.1, -0.3, 0.25], np.float64),
        "steps": np.array(12, np.int64),
        "mask": np.array([True, False]),
    }


def model_100k(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """An MLP 784-128-10 (101,770 float32 parameters) plus an integer buffer; update-sized values."""
    return {
        "fc1.weight": rng.normal(0, 0.01, size=(128, 784)).astype(np.float32),
        "fc1.bias": rng.normal(0, 0.01, size=128).astype(np.float32),
        "fc2.weight": rng.normal(0, 0.01, size=(10, 128)).astype(np.float32),
        "fc2.bias": rng.normal(0, 0.01, size=10).astype(np.float32),
        "bn.num_batches_tracked": np.array(5, np.int64),
    }


def over_the_wire(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return from_bytes(to_bytes(arrays))


def test_float16_round_trip_is_exact_for_representable_values_and_keeps_dtypes() -> None:
    arrays = small()
    encoded = encode_float16(arrays)
    assert encoded["w"].dtype == np.float16 and encoded["b"].dtype == np.float16
    assert encoded["steps"] is arrays["steps"] and encoded["mask"] is arrays["mask"]
    decoded = decode(over_the_wire(encoded), spec_of(arrays))
    assert list(decoded) == list(arrays)
    assert decoded["w"].dtype == np.float32 and decoded["w"].tolist() == arrays["w"].tolist()  # all exact in fp16
    assert decoded["b"].dtype == np.float64
    assert np.allclose(decoded["b"], arrays["b"], rtol=2**-11)  # 0.1 is not exact: half a float16 ulp
    assert decoded["steps"].tolist() == 12 and decoded["mask"].tolist() == [True, False]


def test_float16_refuses_values_it_cannot_hold() -> None:
    with pytest.raises(UpdateRejected, match=r"beyond \+-65504 in big") as e:
        encode_float16({"big": np.array([1e6], np.float32), "ok": np.ones(2, np.float32)})
    assert e.value.fix == "use codec q8, or none"


def test_q8_by_hand_with_a_fixed_generator() -> None:
    # low = -1, high = 1.55: step = 0.01; 0.005 sits halfway between codes 100 and 101.
    x = np.array([-1.0, 0.005, 1.55])
    codes, levels = quantize_q8(x, np.random.default_rng(0))
    draws = np.random.default_rng(0).random(3)
    assert levels.tolist() == [-1.0, pytest.approx(0.01)]
    assert codes[0] == 0 and codes[2] == 255
    assert codes[1] == (101 if draws[1] < 0.5 else 100)


def test_q8_is_unbiased_in_expectation() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=50).astype(np.float32)
    spec = spec_of({"x": x})
    trials = 4000
    total = np.zeros(50)
    for _ in range(trials):
        total += decode(encode_q8({"x": x}, rng), spec)["x"]
    mean = total / trials
    step = (float(x.max()) - float(x.min())) / 255
    # Each decoded value is x +- step with variance <= step^2 / 4: the mean is within 4 standard errors.
    assert np.abs(mean - x).max() < 4 * (step / 2) / math.sqrt(trials)
    # Deterministic rounding to the nearest level would be biased by up to step / 2 for some entries.
    nearest = float(x.min()) + np.rint((x - float(x.min())) / step) * step
    assert np.abs(nearest - x).max() > 10 * np.abs(mean - x).max()


def test_q8_error_is_at_most_one_step_and_constant_arrays_are_exact() -> None:
    rng = np.random.default_rng(2)
    arrays = {"w": rng.normal(size=(30, 7)).astype(np.float32), "c": np.full(4, 0.75, np.float32), "e": np.zeros(0)}
    decoded = decode(over_the_wire(encode_q8(arrays, rng)), spec_of(arrays))
    step = (arrays["w"].max() - arrays["w"].min()) / 255
    assert np.abs(decoded["w"] - arrays["w"]).max() <= step * (1 + 1e-5)
    assert decoded["c"].tolist() == [0.75] * 4
    assert decoded["e"].shape == (0,)


def test_q8_refuses_a_range_float64_cannot_hold() -> None:
    with pytest.raises(UpdateRejected, match="overflows float64"):
        quantize_q8(np.array([-1e308, 1e308]), np.random.default_rng(0))


def test_q8_same_seed_same_codes() -> None:
    arrays = small()
    one, two = encode_q8(arrays, np.random.default_rng(5)), encode_q8(arrays, np.random.default_rng(5))
    assert all(np.array_equal(one[k], two[k]) for k in one)


def test_q8_is_at_most_026_of_float32_bytes_for_a_100k_model() -> None:
    rng = np.random.default_rng(3)
    model = model_100k(rng)
    float32 = wire_size(spec_of(model))
    ratios = {}
    for codec in (Codec("float16"), Codec("q8"), Codec("topk", 0.01), Codec("topk", 0.1)):
        encoded, _ = encode(model, codec, rng)
        ratios[f"{codec.name}{'' if codec.name != 'topk' else f'@{codec.topk_fraction}'}"] = (
            wire_size(spec_of(encoded)) / float32
        )
    print(f"\nwire bytes vs float32 ({float32} bytes, 101,770 parameters): {ratios}")
    assert ratios["q8"] <= 0.26
    assert ratios["float16"] <= 0.51
    assert ratios["topk@0.01"] <= 0.03  # 1% of entries, 8 bytes each (value + uint32 index)


def test_topk_keeps_the_largest_magnitudes_and_feeds_back_the_rest() -> None:
    update = {"w": np.array([0.1, -3.0, 0.2, 2.0, -0.05], np.float32), "n": np.array([1, 2], np.int32)}
    encoded, residual = encode_topk(update, 0.4)  # ceil(0.4 * 5) = 2 entries
    assert encoded["w::topk"].tolist() == [1, 3] and encoded["w"].tolist() == [-3.0, 2.0]
    assert encoded["n"] is update["n"]
    assert residual["w"].tolist() == pytest.approx([0.1, 0.0, 0.2, 0.0, -0.05])
    assert list(residual) == ["w"]  # integer arrays have no residual
    decoded = decode(over_the_wire(encoded), spec_of(update))
    assert decoded["w"].tolist() == [0.0, -3.0, 0.0, 2.0, 0.0]

    # Next round: residual + new update, so the small entries that waited are sent once they add up.
    second = {"w": np.array([0.15, 0.0, 0.1, 0.0, 0.0], np.float32), "n": update["n"]}
    encoded, residual = encode_topk(second, 0.4, residual)
    assert encoded["w::topk"].tolist() == [0, 2]
    assert encoded["w"].tolist() == pytest.approx([0.25, 0.3])
    assert residual["w"].tolist() == pytest.approx([0.0, 0.0, 0.0, 0.0, -0.05])


def test_topk_breaks_ties_towards_the_lowest_index() -> None:
    encoded, residual = encode_topk({"w": np.array([1.0, -2.0, 2.0, 0.5, -2.0])}, 0.4)
    assert encoded["w::topk"].tolist() == [1, 2]
    assert residual["w"].tolist() == [1.0, 0.0, 0.0, 0.5, -2.0]


def test_topk_with_error_feedback_loses_nothing_over_rounds() -> None:
    """Sum of what was sent + final residual == sum of the updates (error feedback's invariant)."""
    rng = np.random.default_rng(4)
    spec = spec_of({"w": np.zeros((20, 10), np.float64)})
    sent, truth, residual = np.zeros((20, 10)), np.zeros((20, 10)), None
    for _ in range(6):
        update = {"w": rng.normal(size=(20, 10))}
        encoded, residual = encode_topk(update, 0.05, residual)
        sent += decode(encoded, spec)["w"]
        truth += update["w"]
    assert residual is not None
    assert np.allclose(sent + residual["w"], truth)


def test_topk_handles_0d_and_non_contiguous_arrays() -> None:
    update = {"s": np.array(2.5), "t": np.arange(12.0).reshape(3, 4).T}  # a transposed view
    spec = spec_of({"s": update["s"], "t": np.ascontiguousarray(update["t"])})
    encoded, residual = encode_topk(update, 0.25)
    first = decode(encoded, spec)
    assert first["s"].tolist() == 2.5 and residual["s"].shape == () and residual["s"].tolist() == 0.0
    assert np.count_nonzero(first["t"]) == 3 and np.allclose(first["t"] + residual["t"], update["t"])
    encoded, residual = encode_topk(update, 0.25, residual)
    second = decode(encoded, spec)["t"]
    assert np.allclose(first["t"] + second + residual["t"], 2 * update["t"])


def test_topk_residual_must_match_the_update() -> None:
    with pytest.raises(ConfigError, match="residual does not match the update: v, w"):
        encode_topk({"w": np.ones(3)}, 0.5, {"v": np.ones(3)})


def test_codec_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="unknown compression codec 'zip'"):
        Codec("zip")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="topk_fraction"):
        Codec("topk", 0.0)


def test_none_codec_passes_arrays_through() -> None:
    arrays = small()
    encoded, residual = encode(arrays, Codec(), np.random.default_rng(0))
    assert residual is None and all(encoded[k] is arrays[k] for k in arrays)
    assert decode(encoded, spec_of(arrays))["w"].tolist() == arrays["w"].tolist()


def test_inputs_with_reserved_names_or_non_finite_values_are_refused_together() -> None:
    with pytest.raises(UpdateRejected) as e:
        encode_q8({"a::q8": np.ones(2), "b": np.array([np.inf])}, np.random.default_rng(0))
    assert "'a::q8' contains '::'" in e.value.message and "'b' has non-finite values" in e.value.message


def test_decode_reports_every_problem_at_once() -> None:
    spec = spec_of({"w": np.zeros((2, 2), np.float32), "v": np.zeros(4, np.float32), "n": np.zeros(2, np.int64)})
    bad = {
        "w": np.zeros((2, 2), np.int16),  # q8 codes must be uint8
        "w::q8": np.array([0.0, 0.1]),
        "v": np.ones(2, np.float32),
        "v::topk": np.array([3, 7], np.uint32),  # 7 is out of range
        "n::q8": np.array([0.0, 1.0]),  # integers are never quantized
        "stray": np.ones(1),
    }
    with pytest.raises(UpdateRejected) as e:
        decode(bad, spec)
    message = e.value.message
    for part in ("unexpected array 'stray'", "'n' is int64", "'w': q8 codes must be uint8", "within 0..3", "'n'"):
        assert part in message
    with pytest.raises(UpdateRejected, match="missing array 'v'"):
        decode({"w": np.zeros((2, 2), np.float32), "n": np.zeros(2, np.int64)}, spec)
