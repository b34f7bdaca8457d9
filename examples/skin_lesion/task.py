"""Skin-lesion diagnosis from a site's metadata table (HAM10000: age, sex, body site -> one of 7 diagnoses).

Each site's folder holds its own rows of the HAM10000 metadata (``train.csv``, ``test.csv``, as
``fedsilo data split ... --method column`` writes them). The features are fixed here, not learnt
from a site's data, so every site encodes its rows identically: age scaled to about [-2, 2] with a
flag for a missing age, and one-hot sex and localization over the vocabularies of the published
table (a value outside them, or ``unknown``, sets no bit beyond its own). ``dx_type`` (how the
diagnosis was confirmed) is left out: it is decided after the diagnosis and would leak the label.

The loss is cross-entropy weighted against the class imbalance (nv is 58x as common as df), using
the published HAM10000 counts, so the model is pushed towards balanced accuracy rather than
towards calling every lesion a naevus.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fedsilo.errors import DataError

CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")  # alphabetical, as DermaMNIST's labels 0-6
CLASS_COUNTS = (327, 514, 1099, 115, 1113, 6705, 142)  # published HAM10000 counts, in CLASSES order
SEXES = ("male", "female", "unknown")
LOCALIZATIONS = (
    "abdomen", "acral", "back", "chest", "ear", "face", "foot", "genital", "hand",
    "lower extremity", "neck", "scalp", "trunk", "unknown", "upper extremity",
)  # fmt: skip
AGE_MEAN, AGE_SCALE = 50.0, 20.0
N_FEATURES = 2 + len(SEXES) + len(LOCALIZATIONS)


def model() -> nn.Module:
    """A small MLP (1,799 parameters): three metadata columns carry little signal, so a small net will do."""
    return nn.Sequential(nn.Linear(N_FEATURES, 64), nn.ReLU(), nn.Dropout(0.2), nn.Linear(64, len(CLASSES)))


def features(rows: list[dict[str, str]]) -> np.ndarray:
    """One float32 row of ``N_FEATURES`` per metadata row."""
    x = np.zeros((len(rows), N_FEATURES), dtype=np.float32)
    for i, row in enumerate(rows):
        age = row["age"].strip()
        if age:
            x[i, 0] = (float(age) - AGE_MEAN) / AGE_SCALE
        else:
            x[i, 1] = 1.0
        if row["sex"] in SEXES:
            x[i, 2 + SEXES.index(row["sex"])] = 1.0
        if row["localization"] in LOCALIZATIONS:
            x[i, 2 + len(SEXES) + LOCALIZATIONS.index(row["localization"])] = 1.0
    return x


def load_data(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """A site's ``<split>.csv`` as features and diagnosis indices into ``CLASSES``."""
    path = Path(folder) / f"{split}.csv"
    if not path.is_file():
        raise DataError(f"{path} is missing", fix="run `fedsilo data split ham10000_metadata --method column ...`")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    unknown = sorted({r["dx"] for r in rows} - set(CLASSES))
    if unknown:
        raise DataError(f"{path}: unknown diagnoses {', '.join(unknown)}", fix=f"use only {', '.join(CLASSES)}")
    y = np.array([CLASSES.index(r["dx"]) for r in rows], dtype=np.int64)
    return features(rows), y


def loss() -> nn.Module:
    """Cross-entropy with inverse-frequency class weights (fixed from the published counts)."""
    total = sum(CLASS_COUNTS)
    weights = torch.tensor([total / (len(CLASS_COUNTS) * c) for c in CLASS_COUNTS], dtype=torch.float32)
    return nn.CrossEntropyLoss(weight=weights)
