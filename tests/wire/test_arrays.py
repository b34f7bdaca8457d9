"""arrays.py: safetensors bytes and files, the shared-memory BufferLayout, and streaming weighted sums."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedsilo.wire.arrays import (
    ArraySpec,
    BufferLayout,
    WeightedSum,
    from_bytes,
    load_file,
    num_bytes,
    read_metadata,
    save_file,
    spec_of,
    to_bytes,
)


def mixed_arrays() -> dict[str, np.ndarray]:
    """Names deliberately not in sorted order, mixed dtypes, odd sizes."""
    return {
        "zeta.weight": np.arange(6, dtype=np.float32).reshape(2, 3) / 7,
        "alpha.bias": np.array([-1.5, 0.25, 3.0], dtype=np.float64),
        "mid.steps": np.array([41], dtype=np.int64),
        "beta.mask": np.array([0, 1, 255, 7], dtype=np.uint8),
        "gamma.half": np.array([[0.5, -2.0], [1e-3, 65504.0]], dtype=np.float16),
        "delta.count": np.array([-3, 9, 2], dtype=np.int32),
    }


def assert_same_arrays(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert set(got) == set(want)
    for name, ref in want.items():
        assert got[name].dtype == ref.dtype, name
        assert got[name].shape == ref.shape, name
        np.testing.assert_array_equal(got[name], ref)


def test_bytes_round_trip_keeps_names_dtypes_shapes_values() -> None:
    arrays = mixed_arrays()
    assert_same_arrays(from_bytes(to_bytes(arrays)), arrays)


def test_round_trip_keeps_the_order_of_names(tmp_path: Path) -> None:
    # An ArrayDict is an *ordered* mapping; a model read back must list its arrays as written,
    # and two reads of the same bytes must agree (a BufferLayout built from it depends on the order).
    arrays = mixed_arrays()
    data = to_bytes(arrays)
    save_file(arrays, tmp_path / "m.safetensors")
    for _ in range(5):
        assert list(from_bytes(data)) == list(arrays)
        assert list(load_file(tmp_path / "m.safetensors")) == list(arrays)


def test_file_round_trip_keeps_values_and_metadata(tmp_path: Path) -> None:
    arrays = mixed_arrays()
    path = tmp_path / "model.safetensors"
    save_file(arrays, path, {"rounds": "3", "seed": "11"})
    assert_same_arrays(load_file(path), arrays)
    assert read_metadata(path) == {"rounds": "3", "seed": "11"}


def test_zero_dim_arrays_keep_their_shape_in_bytes_and_files(tmp_path: Path) -> None:
    # A 0-d array is common in real models: torch's BatchNorm keeps ``num_batches_tracked`` as one.
    # Read back as shape (1,), it no longer matches the model's spec, so every silo would refuse
    # a model (or checkpoint) that went through bytes or a file.
    arrays = {"bn.num_batches_tracked": np.array(7, dtype=np.int64), "scale": np.array(0.5, dtype=np.float32)}
    assert_same_arrays(from_bytes(to_bytes(arrays)), arrays)
    save_file(arrays, tmp_path / "m.safetensors")
    assert_same_arrays(load_file(tmp_path / "m.safetensors"), arrays)


def test_non_contiguous_arrays_are_serialized_by_value() -> None:
    base = np.arange(12, dtype=np.float32).reshape(3, 4)
    got = from_bytes(to_bytes({"t": base.T, "s": base[:, ::2]}))
    np.testing.assert_array_equal(got["t"], base.T)
    np.testing.assert_array_equal(got["s"], base[:, ::2])


def test_save_file_is_atomic_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.safetensors"
    save_file({"w": np.ones(3, dtype=np.float32)}, path)
    save_file({"w": np.full(3, 2.0, dtype=np.float32)}, path)  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.safetensors"]
    np.testing.assert_array_equal(load_file(path)["w"], [2.0, 2.0, 2.0])

    # A write that fails must leave the previous file intact and no temp file behind.
    with pytest.raises(Exception, match="object"):
        save_file({"w": np.array([object()], dtype=object)}, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.safetensors"]
    np.testing.assert_array_equal(load_file(path)["w"], [2.0, 2.0, 2.0])


def test_spec_of_and_num_bytes() -> None:
    arrays = {"w": np.zeros((2, 3), np.float32), "n": np.zeros((), np.int64)}
    assert spec_of(arrays) == {"w": ArraySpec((2, 3), "float32"), "n": ArraySpec((), "int64")}
    assert num_bytes(arrays) == 2 * 3 * 4 + 8


def test_layout_offsets_are_64_byte_aligned_by_hand() -> None:
    arrays = {
        "a": np.zeros(3, np.float32),  # 12 bytes -> next at 64
        "b": np.zeros((5, 2), np.int64),  # 80 bytes -> 128 -> next at 192
        "c": np.zeros(7, np.uint8),  # 7 bytes -> next at 256
        "d": np.zeros((3, 3), np.float16),  # 18 bytes -> next at 320
        "e": np.zeros((), np.float64),  # 8 bytes -> ends at 384
    }
    layout = BufferLayout.of(arrays)
    assert layout.names == ("a", "b", "c", "d", "e")
    assert layout.offsets == (0, 64, 192, 256, 320)
    assert layout.size == 384
    assert layout.spec() == spec_of(arrays)


def test_layout_write_then_view_round_trips_mixed_dtypes() -> None:
    arrays = {k: v for k, v in mixed_arrays().items()}
    arrays["empty"] = np.zeros((0, 3), np.float32)
    layout = BufferLayout.of(arrays)
    buffer = bytearray(layout.size)
    layout.write(arrays, buffer)
    view = layout.view(buffer)
    assert list(view) == list(arrays)
    assert_same_arrays(view, arrays)


def test_layout_view_is_zero_copy_over_the_buffer() -> None:
    arrays = {"w": np.arange(5, dtype=np.float32), "n": np.array([3], dtype=np.int64)}
    layout = BufferLayout.of(arrays)
    buffer = bytearray(layout.size)
    view = layout.view(buffer)
    layout.write(arrays, buffer)
    np.testing.assert_array_equal(view["w"], arrays["w"])  # the earlier view sees the write
    layout.write({"w": np.full(5, 9.0, dtype=np.float32), "n": np.array([4], dtype=np.int64)}, buffer)
    np.testing.assert_array_equal(view["w"], np.full(5, 9.0))
    assert view["n"][0] == 4


def test_layout_write_refuses_a_different_dtype() -> None:
    layout = BufferLayout.of({"w": np.zeros(3, np.float32)})
    with pytest.raises(TypeError):
        layout.write({"w": np.zeros(3, np.float64)}, bytearray(layout.size))


def test_empty_layout_still_has_a_buffer() -> None:
    assert BufferLayout.of({}).size == 64


def test_weighted_sum_uses_unequal_integer_weights() -> None:
    acc = WeightedSum()
    acc.add({"w": np.array([1.0, 2.0], np.float32), "b": np.array([10.0], np.float32)}, 1)
    acc.add({"w": np.array([3.0, 4.0], np.float32), "b": np.array([0.0], np.float32)}, 3)
    acc.add({"w": np.array([5.0, 10.0], np.float32), "b": np.array([5.0], np.float32)}, 6)
    like = {"w": np.zeros(2, np.float32), "b": np.zeros(1, np.float32)}
    mean = acc.mean(like)
    # (1*1 + 3*3 + 6*5) / 10 = 4.0 ; (1*2 + 3*4 + 6*10) / 10 = 7.4 ; (10 + 0 + 30) / 10 = 4.0
    np.testing.assert_allclose(mean["w"], [4.0, 7.4], rtol=1e-6)
    np.testing.assert_allclose(mean["b"], [4.0], rtol=1e-6)
    assert mean["w"].dtype == np.float32 and mean["b"].dtype == np.float32
    assert acc.count == 3 and acc.total_weight == 10


def test_weighted_sum_rounds_integer_arrays_to_nearest() -> None:
    acc = WeightedSum()
    for value, weight in ((10, 1), (0, 3), (1, 6)):
        acc.add({"steps": np.array([value, 2 * value], np.int64)}, weight)
    mean = acc.mean({"steps": np.zeros(2, np.int64)})
    # (10 + 0 + 6) / 10 = 1.6 -> 2 (truncation would give 1); (20 + 0 + 12) / 10 = 3.2 -> 3
    np.testing.assert_array_equal(mean["steps"], [2, 3])
    assert mean["steps"].dtype == np.int64


def test_weighted_sum_of_zero_dim_arrays_by_hand() -> None:
    # 0-d arrays (e.g. BatchNorm's num_batches_tracked) must be summed over every update and come
    # back as 0-d numpy arrays, like every other array of the model.
    acc = WeightedSum()
    acc.add({"n": np.array(10, np.int64), "f": np.array(1.0, np.float32)}, 1)
    acc.add({"n": np.array(21, np.int64), "f": np.array(3.0, np.float32)}, 3)
    mean = acc.mean({"n": np.array(0, np.int64), "f": np.array(0.0, np.float32)})
    assert isinstance(mean["n"], np.ndarray) and isinstance(mean["f"], np.ndarray)
    assert mean["n"].shape == () and mean["n"].dtype == np.int64
    assert int(mean["n"]) == 18  # (10 + 63) / 4 = 18.25
    assert float(mean["f"]) == pytest.approx(2.5)  # (1 + 9) / 4


def test_weighted_sum_does_not_alias_its_inputs() -> None:
    first = {"w": np.array([1.0, 1.0])}
    acc = WeightedSum()
    acc.add(first, 2)
    acc.add({"w": np.array([4.0, 4.0])}, 1)
    np.testing.assert_array_equal(first["w"], [1.0, 1.0])
    np.testing.assert_allclose(acc.mean(first)["w"], [2.0, 2.0])


def test_weighted_sum_errors() -> None:
    with pytest.raises(ValueError, match="no weighted updates"):
        WeightedSum().mean({"w": np.zeros(1)})
    acc = WeightedSum()
    with pytest.raises(ValueError, match="non-negative"):
        acc.add({"w": np.ones(1)}, -1)
    acc.add({"w": np.ones(1)}, 0)
    with pytest.raises(ValueError, match="no weighted updates"):
        acc.mean({"w": np.zeros(1)})


def test_views_of_reads_safetensors_bytes_without_copying() -> None:
    from fedsilo.wire.arrays import views_of

    arrays = {"z": np.arange(6, dtype=np.float32).reshape(2, 3), "a": np.array([1, -2], np.int64), "s": np.float64(3)}
    arrays["s"] = np.asarray(arrays["s"])
    buffer = bytearray(to_bytes(arrays))
    views = views_of(buffer)
    assert list(views) == ["z", "a", "s"]  # the writer's order, not safetensors' sorted one
    for name, value in arrays.items():
        np.testing.assert_array_equal(views[name], value)
        assert views[name].dtype == value.dtype and views[name].shape == value.shape
    views["z"][0, 0] = 42.0  # the views are the buffer's memory, not a copy of it
    assert views_of(buffer)["z"][0, 0] == 42.0


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda b: b[:4],  # too short
        lambda b: (10**9).to_bytes(8, "little") + b[8:],  # header longer than the buffer
        lambda b: b[:-4],  # data cut short: offsets point past the end
        lambda b: b[:8] + b"x" + b[9:],  # header is not JSON
        lambda b: b.replace(b'"F32"', b'"X32"'),  # unknown dtype
        lambda b: b.replace(b"[2,3]", b"[3,3]"),  # shape does not match the bytes
    ],
)
def test_views_of_refuses_damaged_bytes(corrupt) -> None:
    from fedsilo.wire.arrays import views_of

    data = to_bytes({"w": np.zeros((2, 3), np.float32)})
    with pytest.raises(ValueError):
        views_of(corrupt(data))


def test_wire_size_equals_the_length_of_the_safetensors_bytes() -> None:
    from fedsilo.wire.arrays import spec_of, to_bytes, wire_size

    cases = [
        {"w": np.zeros((3, 4), np.float32), "b": np.zeros(4, np.float32), "w::q8": np.zeros(2)},
        {
            "conv.weight": np.ones((16, 1, 3, 3), np.float32),
            "x": np.zeros((), np.float64),
            "i": np.arange(5),
            "u": np.zeros(1000, np.uint8),
            "h": np.zeros(7, np.float16),
            "t::topk": np.zeros(33, np.uint32),
            "big": np.zeros(123_457, np.float32),
        },
        {"empty": np.zeros((0, 3), np.float32), 'ünï"code': np.zeros(2, np.bool_)},
    ]
    for arrays in cases:
        assert wire_size(spec_of(arrays)) == len(to_bytes(arrays))
