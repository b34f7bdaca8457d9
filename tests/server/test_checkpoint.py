"""server/checkpoint.py: the model, the strategy's state and the round in one file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedsilo.errors import RunDirError
from fedsilo.server.checkpoint import checkpoint_path, latest_checkpoint, load_checkpoint, save_checkpoint
from fedsilo.strategy.base import StrategyState
from fedsilo.wire.arrays import DIGEST_KEY, digest, save_file


def test_save_load_round_trip_with_strategy_arrays_and_values(tmp_path: Path) -> None:
    params = {
        "z.weight": np.arange(6, dtype=np.float32).reshape(3, 2) / 3,
        "a.bias": np.array([1, -2, 3], dtype=np.int64),
    }
    state = StrategyState(
        {"momentum/z.weight": np.full((3, 2), 0.5, np.float64), "v": np.array([1e-8], np.float32)},
        {"lr": 0.1, "step": 3, "name": "fedadam"},
    )
    path = save_checkpoint(tmp_path, 3, params, state)
    assert path == checkpoint_path(tmp_path, 3) == tmp_path / "round_0003.safetensors"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["round_0003.safetensors"]  # no temp file

    ckpt = load_checkpoint(path)
    assert ckpt.round == 3
    assert list(ckpt.parameters) == ["z.weight", "a.bias"]  # the model's own order
    for name, ref in params.items():
        assert ckpt.parameters[name].dtype == ref.dtype
        np.testing.assert_array_equal(ckpt.parameters[name], ref)
    assert set(ckpt.state.arrays) == {"momentum/z.weight", "v"}
    for name, ref in state.arrays.items():
        assert ckpt.state.arrays[name].dtype == ref.dtype
        np.testing.assert_array_equal(ckpt.state.arrays[name], ref)
    assert dict(ckpt.state.values) == {"lr": 0.1, "step": 3, "name": "fedadam"}
    assert isinstance(ckpt.state.values["step"], int)


def test_empty_strategy_state_round_trips(tmp_path: Path) -> None:
    ckpt = load_checkpoint(save_checkpoint(tmp_path, 1, {"w": np.ones(2, np.float32)}, StrategyState()))
    assert ckpt.state.arrays == {} and dict(ckpt.state.values) == {}


def test_zero_dim_model_arrays_survive_a_checkpoint(tmp_path: Path) -> None:
    # e.g. BatchNorm's num_batches_tracked: a resumed run must get the model's exact shapes back.
    params = {"bn.num_batches_tracked": np.array(12, np.int64), "w": np.ones(2, np.float32)}
    ckpt = load_checkpoint(save_checkpoint(tmp_path, 2, params, StrategyState()))
    assert ckpt.parameters["bn.num_batches_tracked"].shape == ()
    assert int(ckpt.parameters["bn.num_batches_tracked"]) == 12


def test_latest_checkpoint_picks_the_highest_round_numerically(tmp_path: Path) -> None:
    assert latest_checkpoint(tmp_path) is None
    for rnd in (2, 9999, 10000, 7):
        save_checkpoint(tmp_path, rnd, {"w": np.full(1, rnd, np.float32)}, StrategyState())
    (tmp_path / "round_20000.safetensors.tmp").write_bytes(b"half written")
    (tmp_path / "round_final.safetensors").write_bytes(b"not a round")
    (tmp_path / "notes.txt").write_text("x")
    latest = latest_checkpoint(tmp_path)
    assert latest == tmp_path / "round_10000.safetensors"
    assert load_checkpoint(latest).parameters["w"][0] == 10000


def test_latest_checkpoint_of_a_missing_folder_is_none(tmp_path: Path) -> None:
    assert latest_checkpoint(tmp_path / "nope") is None


def test_unreadable_checkpoint_is_a_run_dir_error(tmp_path: Path) -> None:
    path = tmp_path / "round_0001.safetensors"
    path.write_bytes(b"\x00\x01garbage, not safetensors")
    with pytest.raises(RunDirError, match="unreadable") as info:
        load_checkpoint(path)
    assert "delete it" in (info.value.fix or "")


def test_truncated_checkpoint_is_a_run_dir_error(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path, 1, {"w": np.ones(100, np.float32)}, StrategyState())
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(RunDirError):
        load_checkpoint(path)


def test_a_safetensors_file_that_is_not_a_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "round_0001.safetensors"
    save_file({"w": np.ones(2)}, path, {"format": "something-else"})
    with pytest.raises(RunDirError, match="not a fedsilo checkpoint"):
        load_checkpoint(path)


def _rewrite(path: Path, change: Callable[[dict[str, np.ndarray], dict[str, str]], None]) -> None:
    """Change a checkpoint's arrays or metadata and write it back as a valid safetensors file,
    keeping its digest: what a damaged disk, a bad copy or a hand edit leaves."""
    from safetensors.numpy import load_file as raw_load
    from safetensors.numpy import save_file as raw_save

    from fedsilo.wire.arrays import _raw_metadata

    arrays, meta = raw_load(str(path)), _raw_metadata(path)
    change(arrays, meta)
    raw_save(arrays, str(path), metadata=meta)


def _weight_to(value: float) -> Callable[[dict[str, np.ndarray], dict[str, str]], None]:
    def change(arrays: dict[str, np.ndarray], meta: dict[str, str]) -> None:
        arrays["model/w"] = arrays["model/w"].copy()
        arrays["model/w"][1] = value

    return change


def _state_value(arrays: dict[str, np.ndarray], meta: dict[str, str]) -> None:
    meta["strategy_values"] = meta["strategy_values"].replace("0.1", "0.9")


@pytest.mark.parametrize("change", [_weight_to(1000.0), _weight_to(float("nan")), _state_value],
                         ids=["weight to 1000", "NaN weight", "strategy value"])  # fmt: skip
def test_a_damaged_checkpoint_is_named_and_its_fix_given(tmp_path: Path, change: Any) -> None:
    state = StrategyState({"m": np.ones(4, np.float32)}, {"lr": 0.1})
    path = save_checkpoint(tmp_path, 3, {"w": np.arange(4, dtype=np.float32)}, state)
    _rewrite(path, change)
    with pytest.raises(RunDirError, match=r"checkpoint \S*round_0003.safetensors is damaged") as info:
        load_checkpoint(path)
    assert info.value.fix == "delete it to resume from the one before"


def test_a_flipped_byte_in_the_arrays_is_found(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path, 1, {"w": np.zeros(256, np.float32)}, StrategyState())
    data = bytearray(path.read_bytes())
    data[-7] ^= 0x40  # inside the array, not the header: still valid safetensors
    path.write_bytes(bytes(data))
    with pytest.raises(RunDirError, match="is damaged"):
        load_checkpoint(path)


def test_a_checkpoint_without_a_digest_cannot_be_trusted(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path, 1, {"w": np.zeros(2, np.float32)}, StrategyState())
    _rewrite(path, lambda arrays, meta: meta.pop(DIGEST_KEY))
    with pytest.raises(RunDirError, match="has no digest"):
        load_checkpoint(path)


def test_the_digest_covers_names_dtypes_shapes_and_order() -> None:
    a = {"x": np.zeros(4, np.float32), "y": np.ones(2, np.int64)}
    variants = [
        {"y": a["y"], "x": a["x"]},
        {"x2": a["x"], "y": a["y"]},
        {"x": a["x"].astype(np.float64), "y": a["y"]},
        {"x": a["x"].reshape(2, 2), "y": a["y"]},
    ]
    assert len({digest(a), *(digest(v) for v in variants)}) == 5
    assert digest(a) == digest({k: v.copy() for k, v in a.items()})
    assert digest(a, {"round": "1"}) != digest(a, {"round": "2"})
