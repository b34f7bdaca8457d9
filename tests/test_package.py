"""The package surface: a light `import fedsilo`, a complete sorted `__all__`, `python -m fedsilo`."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import fedsilo

HEAVY = ("torch", "sklearn", "grpc", "ray", "mlflow")


def fresh_python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    return done.stdout


def test_import_fedsilo_loads_no_heavy_package() -> None:
    code = f"import json, sys, fedsilo; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    assert json.loads(fresh_python(code)) == []


def test_the_cli_module_loads_no_heavy_package_either() -> None:
    code = f"import json, sys, fedsilo.cli; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    assert json.loads(fresh_python(code)) == []


def test_all_is_sorted_unique_and_every_name_exists() -> None:
    names = fedsilo.__all__
    assert names == sorted(names)
    assert len(set(names)) == len(names)
    missing = [n for n in names if not hasattr(fedsilo, n)]
    assert missing == []


def test_every_public_name_in_init_is_in_all() -> None:
    tree = ast.parse(Path(fedsilo.__file__).read_text())
    defined: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom | ast.Import):
            defined.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.Assign):
            defined.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            defined.add(node.name)
    public = {n for n in defined if not n.startswith("_")}
    assert public - set(fedsilo.__all__) == set()


def test_version_matches_the_installed_metadata() -> None:
    assert fedsilo.__version__ == importlib.metadata.version("fedsilo")


def test_python_dash_m_fedsilo_help() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fedsilo", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    for command in ("run", "validate", "data"):
        assert command in done.stdout
    assert "Traceback" not in done.stderr


def test_python_dash_m_fedsilo_turns_errors_into_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fedsilo", "validate", str(tmp_path / "missing.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: experiment file")
    assert len(done.stderr.strip().splitlines()) == 1
