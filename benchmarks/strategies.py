"""Every strategy on PneumoniaMNIST, honest silos or one silo training on flipped labels.

    python benchmarks/strategies.py [--rounds 5] [--poison h4] [--only fedavg,median]

Five hospitals (Dirichlet label skew, alpha 2, sizes 2:3:5:4:6) train the example CNN of
examples/pneumonia (1 local epoch of SGD, lr 0.05 decaying x0.8 per round, momentum 0.9) for
``--rounds`` rounds, seed 0, in simulation. With ``--poison SILO`` that silo's training labels are
flipped (a data-poisoning silo; its test split stays honest). Prints one JSON line per strategy,
then a table: the final model's accuracy on the official test split (server) and on the silos' own
test splits (example-weighted), and the wall time of the run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from fedsilo.experiment.config import load_config
from fedsilo.experiment.strategy_config import STRATEGY_NAMES
from fedsilo.runtime.launch import run_experiment
from fedsilo.runtime.prepare import prepare_data

ROOT = Path(__file__).resolve().parents[1]
TASK = ROOT / "examples" / "pneumonia" / "task.py"
SILOS = ["h1", "h2", "h3", "h4", "h5"]
#: Every registered strategy with its defaults, but a trimmed mean that trims one of five silos.
STRATEGIES: dict[str, dict[str, Any]] = {name: {} for name in STRATEGY_NAMES} | {"trimmed_mean": {"beta": 0.2}}
POISONED_TASK = f"""
import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("pneumonia_task", {str(TASK)!r})
_base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_base)
model, loss = _base.model, _base.loss


def load_data(folder, split):
    x, y = _base.load_data(folder, split)
    if split == "train" and (Path(folder) / "FLIP").exists():
        y = 1 - y
    return x, y
"""


def experiment(folder: Path, name: str, params: dict[str, Any], rounds: int, task: Path) -> Path:
    spec = {
        "name": name,
        "task": str(task),
        "prepare": {
            "dataset": "pneumoniamnist",
            "method": "dirichlet",
            "alpha": 2.0,
            "sizes": [2, 3, 5, 4, 6],
            "test_fraction": 0.2,
            "seed": 0,
            "out": str(folder / "data"),
        },
        "silos": [{"name": s, "data": str(folder / "data" / s)} for s in SILOS],
        "server": {"data": str(folder / "data" / "server")},
        "strategy": {"name": name, **params},
        "rounds": rounds,
        "train": {"epochs": 1, "batch_size": 32, "lr": 0.05, "lr_decay": 0.8, "momentum": 0.9, "weight_decay": 5e-4},
        "seed": 0,
        "output": str(folder / "runs"),
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--poison", choices=SILOS, help="this silo trains on flipped labels")
    parser.add_argument("--only", help="comma-separated strategy names (default: all)")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(STRATEGIES)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        task = TASK
        if args.poison:
            task = folder / "poisoned_task.py"
            task.write_text(POISONED_TASK)
        for name in names:
            config, text = load_config(experiment(folder, name, STRATEGIES[name], args.rounds, task))
            prepare_data(config)  # the silos' folders, made once, before the marker goes in
            if args.poison:
                (folder / "data" / args.poison / "FLIP").touch()
            started = time.perf_counter()
            result = run_experiment(config, text)
            row = {
                "strategy": name,
                "poison": args.poison,
                "server_accuracy": result.summary["final"]["accuracy"],
                "silos_accuracy": result.summary["federated"]["accuracy"],
                "wall_s": round(time.perf_counter() - started, 1),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    print(f"\n{args.rounds} rounds, poisoned silo: {args.poison or 'none'}")
    print("| strategy | server test accuracy | silos' own test accuracy | wall s |\n| --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['strategy']} | {r['server_accuracy']:.4f} | {r['silos_accuracy']:.4f} | {r['wall_s']} |")


if __name__ == "__main__":
    main()
