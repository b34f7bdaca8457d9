"""Making the silos' data folders on the first run, when the experiment's ``prepare:`` says how."""

from __future__ import annotations

from fedsilo.data.split import SplitReport, split_dataset
from fedsilo.experiment.config import ExperimentConfig


def prepare_data(config: ExperimentConfig) -> SplitReport | None:
    """Split the dataset into the silos' folders if the experiment says how and they are missing."""
    p = config.prepare
    if p is None or all(s.data.exists() for s in config.silos):
        return None
    return split_dataset(
        p.dataset,
        p.out,
        [s.name for s in config.silos],
        method=p.method,
        alpha=p.alpha,
        sizes=p.sizes,
        groups_key=p.groups_key,
        test_fraction=p.test_fraction,
        seed=p.seed,
        column=p.column,
        label_column=p.label_column,
        image_size=p.image_size,
    )
