"""A hand-built run folder: known metrics for 3 rounds, 2 silos, a failure and baselines."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

SILOS = ("north", "south")


def rows() -> list[dict[str, Any]]:
    """What the server loop writes: server, per-silo fit/evaluate and federated rows per round."""
    out: list[dict[str, Any]] = [
        {"round": 0, "scope": "server", "silo": None, "phase": "evaluate", "loss": 0.9, "accuracy": 0.5}
    ]
    for rnd in (1, 2, 3):
        for i, silo in enumerate(SILOS):
            if rnd == 2 and silo == "south":
                out.append(
                    {"round": 2, "scope": "silo", "silo": "south", "phase": "fit", "failure": "timed out after 5s",
                     "failure_kind": "timeout"}
                )  # fmt: skip
            else:
                out.append(
                    {"round": rnd, "scope": "silo", "silo": silo, "phase": "fit", "num_examples": 10 + 20 * i,
                     "train_loss": 0.8 - 0.1 * rnd - 0.05 * i}
                )  # fmt: skip
            out.append(
                {"round": rnd, "scope": "silo", "silo": silo, "phase": "evaluate", "num_examples": 5 + 5 * i,
                 "loss": 0.7 - 0.1 * rnd + 0.1 * i, "accuracy": 0.6 + 0.1 * rnd - 0.1 * i,
                 "balanced_accuracy": 0.55 + 0.1 * rnd - 0.05 * i, "roc_auc": 0.6 + 0.1 * rnd}
            )  # fmt: skip
        out.append({"round": rnd, "scope": "server", "silo": None, "phase": "evaluate", "loss": 0.8 - 0.1 * rnd,
                    "accuracy": 0.55 + 0.1 * rnd, "num_examples": 40.0})  # fmt: skip
        out.append({"round": rnd, "scope": "federated", "silo": None, "phase": "evaluate", "loss": 0.75 - 0.1 * rnd,
                    "accuracy": 0.57 + 0.1 * rnd, "worst_accuracy": 0.5 + 0.1 * rnd, "worst_silo": "south",
                    "balanced_accuracy": 0.53 + 0.1 * rnd, "worst_balanced_accuracy": 0.5 + 0.1 * rnd,
                    "worst_balanced_silo": "south", "num_examples": 15})  # fmt: skip
    return out


SUMMARY = {
    "name": "hand",
    "rounds": 3,
    "silos": list(SILOS),
    "final": {"loss": 0.5, "accuracy": 0.85, "num_examples": 40.0},
    "federated": {"loss": 0.45, "accuracy": 0.87, "worst_accuracy": 0.8, "worst_silo": "south"},
    "per_silo": {"north": {"accuracy": 0.9}, "south": {"accuracy": 0.8}},
    "failures": 1,
    "duration_s": 1.25,
    "baselines": {
        "centralized": {"loss": 0.4, "accuracy": 0.88, "train_examples": 40, "own_test": {"north": {"accuracy": 0.91}}},
        "local_only": {
            "north": {"loss": 0.6, "accuracy": 0.7, "own_test": {"north": {"accuracy": 0.75}}},
            "south": {"loss": 0.9, "accuracy": 0.61, "own_test": {"south": {"accuracy": 0.66}}},
        },
        "epochs": 3,
    },
}


def write_run(folder: Path, summary: dict[str, Any] | None = SUMMARY) -> Path:
    folder.mkdir(parents=True)
    config = {"name": "hand", "silos": [{"name": s, "data": f"/data/{s}"} for s in SILOS], "rounds": 3}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "metrics.jsonl").write_text("".join(json.dumps({**r, "time": 1.0}) + "\n" for r in rows()))
    if summary is not None:
        (folder / "summary.json").write_text(json.dumps(summary))
    return folder


@pytest.fixture
def write_hand_run() -> Callable[..., Path]:
    return write_run


@pytest.fixture
def hand_run(tmp_path: Path) -> Path:
    return write_run(tmp_path / "hand-20261122-120000")
