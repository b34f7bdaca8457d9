"""privacy/secagg/__init__.py: a complete public surface, and a privacy package that imports nothing heavy."""

from __future__ import annotations

import json
import subprocess
import sys

import fedsilo.privacy.secagg as secagg


def test_all_is_sorted_and_every_name_exists() -> None:
    assert secagg.__all__ == sorted(secagg.__all__)
    assert [n for n in secagg.__all__ if not hasattr(secagg, n)] == []


def test_importing_fedsilo_or_fedsilo_privacy_loads_no_cryptography() -> None:
    code = "import json, sys, fedsilo, fedsilo.privacy; print(json.dumps('cryptography' in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(done.stdout) is False


def test_secagg_error_is_a_fedsilo_error_with_its_own_exit_code() -> None:
    from fedsilo import errors

    assert issubclass(errors.SecAggError, errors.FedsiloError)
    others = [
        c
        for c in vars(errors).values()
        if isinstance(c, type) and issubclass(c, errors.FedsiloError) and c not in (errors.SecAggError,)
    ]
    assert errors.SecAggError.exit_code not in {c.exit_code for c in others}
    assert errors.SecAggError("3 silos left", "wait").one_line() == "3 silos left -> wait"
