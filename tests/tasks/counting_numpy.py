"""The NumPy test task (linear_numpy.py), recording every data folder it reads.

Each ``load_data`` call appends ``<folder name> <split>`` to ``reads.log`` beside the folder (in
the data root), whichever process makes the call: a test can then list exactly which silos'
data was ever opened.
"""

from __future__ import annotations

from pathlib import Path

import linear_numpy  # beside this file; the task loader puts this folder on the path while importing
from linear_numpy import evaluate, model, train

__all__ = ["evaluate", "load_data", "model", "train"]


def load_data(folder: Path, split: str) -> linear_numpy.SiloData:
    with open(Path(folder).parent / "reads.log", "a") as log:
        log.write(f"{Path(folder).name} {split}\n")
    return linear_numpy.load_data(folder, split)
