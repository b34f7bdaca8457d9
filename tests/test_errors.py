"""errors.py: one exception tree; each error has its own exit code and prints as one line."""

from __future__ import annotations

from fedsilo import errors


def test_exit_codes_are_distinct_and_non_zero() -> None:
    classes = [
        errors.ConfigError,
        errors.TaskError,
        errors.DataError,
        errors.PlanError,
        errors.UpdateRejected,
        errors.RoundFailed,
        errors.RunDirError,
    ]
    codes = [c.exit_code for c in classes]
    assert all(code != 0 for code in codes)
    assert len(set(codes)) == len(codes)
    assert all(issubclass(c, errors.FedsiloError) for c in classes)
    assert issubclass(errors.DatasetNotFound, errors.DataError)
    assert issubclass(errors.ChecksumMismatch, errors.DataError)


def test_one_line_joins_message_and_fix() -> None:
    exc = errors.ConfigError("rounds: must be >= 1", "set rounds: 10")
    assert exc.one_line() == "rounds: must be >= 1 -> set rounds: 10"
    assert str(exc) == "rounds: must be >= 1"
    assert errors.DataError("no data").one_line() == "no data"
