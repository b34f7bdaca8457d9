"""errors.py, over the whole package: each error class its exit code, every raise a fix, one line each."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import fedsilo
from fedsilo import errors

PACKAGE = Path(fedsilo.__file__).resolve().parent


def error_classes() -> list[type[errors.FedsiloError]]:
    found: list[type[errors.FedsiloError]] = []
    todo = [errors.FedsiloError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def test_every_error_class_has_its_own_exit_code_or_refines_one() -> None:
    """A class either states its exit code (then no other does the same) or refines a class that does."""
    own = {cls: cls.__dict__["exit_code"] for cls in error_classes() if "exit_code" in cls.__dict__}
    assert errors.ConfigError in own and len(own) >= 12
    assert all(code != 0 for code in own.values())
    assert len(set(own.values())) == len(own), own
    for cls in error_classes():
        if cls not in own:  # a refinement: DatasetNotFound is a DataError, ParameterError a ConfigError
            assert cls.exit_code != 0 and any(base in own for base in cls.__mro__[1:]), cls


def raises_without_a_fix(folder: Path) -> list[str]:
    """Every ``raise SomeFedsiloError(message)`` in ``folder`` that gives no fix (positional or ``fix=``)."""
    names = {cls.__name__ for cls in error_classes()}
    found = []
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)):
                continue
            func = node.exc.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if name in names and len(node.exc.args) < 2 and not any(k.arg == "fix" for k in node.exc.keywords):
                found.append(f"{path.relative_to(folder.parent)}:{node.lineno} {name}")
    return found


def test_every_raise_in_the_package_says_how_to_fix_it() -> None:
    assert raises_without_a_fix(PACKAGE) == []


def test_the_scan_sees_a_raise_without_a_fix(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text(
        "from fedsilo.errors import DataError\n"
        "def f():\n    raise DataError('no data')\n"
        "def g():\n    raise DataError('no data', 'add some')\n"
        "def h():\n    raise DataError('no data', fix='add some')\n"
    )
    assert raises_without_a_fix(tmp_path / "pkg") == ["pkg/m.py:3 DataError"]


def test_one_line_joins_message_and_fix() -> None:
    exc = errors.ConfigError("rounds: must be >= 1", "set rounds: 10")
    assert exc.one_line() == "rounds: must be >= 1 -> set rounds: 10"
    assert str(exc) == "rounds: must be >= 1"
    assert errors.DataError("no data").one_line() == "no data"


def test_a_parameter_error_is_a_config_error_and_a_value_error() -> None:
    with pytest.raises(ValueError):
        raise errors.ParameterError("lr must be > 0", "use e.g. 0.01")
    assert issubclass(errors.ParameterError, errors.ConfigError)
    assert errors.ParameterError.exit_code == errors.ConfigError.exit_code == 2
