"""messages.py: the wire dataclasses and the checks every received update goes through."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fedsilo.errors import UpdateRejected
from fedsilo.wire.arrays import ArraySpec
from fedsilo.wire.messages import (
    DEFAULT_MAX_UPDATE_BYTES,
    EvaluateIns,
    EvaluateRes,
    Failure,
    FitIns,
    FitRes,
    check_num_examples,
    check_update,
    clean_metrics,
    update_problems,
)

EXPECTED = {
    "w": ArraySpec((2, 3), "float32"),
    "b": ArraySpec((3,), "float32"),
    "c": ArraySpec((2,), "float64"),
    "d": ArraySpec((4,), "float32"),
}


def good_update() -> dict[str, np.ndarray]:
    return {
        "w": np.zeros((2, 3), np.float32),
        "b": np.zeros(3, np.float32),
        "c": np.zeros(2, np.float64),
        "d": np.zeros(4, np.float32),
    }


def test_a_matching_update_has_no_problems() -> None:
    assert update_problems(good_update(), EXPECTED) == []
    check_update("a", good_update(), EXPECTED)  # does not raise


def test_every_problem_is_reported_at_once() -> None:
    update = good_update()
    del update["b"]  # missing
    update["extra"] = np.zeros(1, np.float32)  # unexpected
    update["w"] = np.zeros((3, 2), np.float32)  # wrong shape
    update["c"] = np.zeros(2, np.float32)  # wrong dtype
    update["d"] = np.array([1.0, np.nan, np.inf, -np.inf], np.float32)  # 3 non-finite values
    problems = update_problems(update, EXPECTED, max_bytes=16)  # 24 + 8 + 16 = 48 bytes > 16
    assert len(problems) == 6, problems
    text = " | ".join(problems)
    assert "missing arrays ['b']" in text
    assert "unexpected arrays ['extra']" in text
    assert "w: shape (3, 2), expected (2, 3)" in text
    assert "c: dtype float32, expected float64" in text
    assert "d: 3 non-finite values" in text
    assert "update is 48 bytes, over the limit of 16" in text


def test_check_update_raises_naming_the_silo_and_all_problems() -> None:
    update = good_update()
    update["w"] = np.zeros((3, 2), np.float32)
    update["d"] = np.full(4, np.nan, np.float32)
    with pytest.raises(UpdateRejected) as info:
        check_update("hospital_b", update, EXPECTED)
    message = info.value.message
    assert "hospital_b" in message
    assert "w: shape (3, 2)" in message and "d: 4 non-finite" in message
    assert "\n" not in info.value.one_line()
    assert info.value.exit_code == 6


def test_inf_alone_is_rejected() -> None:
    update = good_update()
    update["c"] = np.array([np.inf, 0.0])
    assert update_problems(update, EXPECTED) == ["c: 1 non-finite values (NaN or inf)"]


def test_size_cap_is_inclusive() -> None:
    size = 6 * 4 + 3 * 4 + 2 * 8 + 4 * 4  # 68 bytes
    assert update_problems(good_update(), EXPECTED, max_bytes=size) == []
    assert update_problems(good_update(), EXPECTED, max_bytes=size - 1) == [
        f"update is {size} bytes, over the limit of {size - 1}"
    ]
    assert DEFAULT_MAX_UPDATE_BYTES == 2 * 1024**3


def test_a_non_array_value_is_a_problem_not_a_crash() -> None:
    update: dict = good_update()
    update["b"] = [0.0, 0.0, 0.0]
    assert update_problems(update, EXPECTED) == ["b: not a numpy array but list"]


def test_integer_arrays_are_not_checked_for_nan() -> None:
    expected = {"steps": ArraySpec((2,), "int64")}
    assert update_problems({"steps": np.array([1, -1], np.int64)}, expected) == []


@pytest.mark.parametrize("bad", [0, -1, -100, True, False, 2.0, 2.5, "3", None, np.float64(4.0)])
def test_check_num_examples_rejects_non_positive_and_non_integers(bad: object) -> None:
    with pytest.raises(UpdateRejected, match="silo 'a'"):
        check_num_examples("a", bad)


@pytest.mark.parametrize("good", [1, 5, np.int64(7), np.int32(3)])
def test_check_num_examples_accepts_positive_integers(good: object) -> None:
    got = check_num_examples("a", good)
    assert got == int(good) and type(got) is int  # type: ignore[call-overload]


def test_clean_metrics_keeps_finite_numbers_as_floats() -> None:
    got = clean_metrics(
        {"acc": 0.5, "n": 3, "np": np.float32(0.25), "i": np.int64(2), "nan": float("nan"), "inf": np.inf, "s": "x"}
    )
    assert got == {"acc": 0.5, "n": 3.0, "np": 0.25, "i": 2.0}
    assert all(type(v) is float for v in got.values())


def test_wire_types_are_frozen_and_slotted() -> None:
    msgs = [
        FitIns(1, {}),
        FitRes("a", {}, 1),
        EvaluateIns(1, {}),
        EvaluateRes("a", 0.5, 1),
        Failure("a", "boom"),
    ]
    for msg in msgs:
        assert not hasattr(msg, "__dict__")
        field = dataclasses.fields(msg)[0].name
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(msg, field, None)
    assert Failure("a", "boom").kind == "error"
