"""Checking the silos' data offline: every folder exists (or ``prepare:`` will make it) and has samples.

With many silos (more than ``FULL_CHECK_SILOS``) only the first ``OPENED_SILOS`` silos' data is
opened and every other folder is checked to exist: reading 10,000 silos' files would cost what the
run itself avoids, since a silo's data is loaded only when a round samples it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fedsilo.client.numpy import num_examples
from fedsilo.data.catalogue import DATASETS
from fedsilo.data.datasets import find_dataset
from fedsilo.data.loaders import check_silo_folder, folder_problem, require_folder
from fedsilo.errors import FedsiloError
from fedsilo.experiment.config import ExperimentConfig
from fedsilo.silo.task import TaskModule

FULL_CHECK_SILOS = 100
OPENED_SILOS = 10
NAMED_MISSING = 5  # missing folders named in the problem line; the rest are counted
NOT_OPENED = "not opened (read when sampled)"


@dataclass(frozen=True)
class SiloPlan:
    name: str
    folder: Path
    train_examples: int | None
    test_examples: int | None
    note: str = ""


@dataclass(frozen=True)
class DataCheck:
    silos: tuple[SiloPlan, ...]
    server_test_examples: int | None
    problems: tuple[str, ...]


def count(task: TaskModule | None, folder: Path, split: str) -> int | None:
    """Samples in one split of a folder; opens the data without training on it.

    Without a task (it failed to load) only the folder's existence can be checked.
    """
    if task is None:
        require_folder(folder, needs_folder=False)  # whether it must be a folder is the task's to say
        return None
    if getattr(task.module, "load_data", None) is None:
        return check_silo_folder(folder, (split,))[split]
    return num_examples(task.load_data([folder], split))


def check_data(config: ExperimentConfig, task: TaskModule | None, silo_data: bool = True) -> DataCheck:
    """Each silo's folder and the server's test data; ``silo_data=False``: the silos' are on their machines."""
    problems: list[str] = []
    if not silo_data:
        silos = tuple(SiloPlan(s.name, s.data, None, None, "on the silo's machine") for s in config.silos)
        return DataCheck(silos, _server_test(config, task, None, problems), tuple(problems))
    prepare_note = _prepare_note(config, problems)
    needs_test = config.strategy.fraction_evaluate > 0
    opened = len(config.silos) if len(config.silos) <= FULL_CHECK_SILOS else OPENED_SILOS
    found, missing = [], []
    for i, silo in enumerate(config.silos):
        if prepare_note is not None and not silo.data.exists() and will_prepare(config, silo.data):
            found.append(SiloPlan(silo.name, silo.data, None, None, prepare_note))
        elif i >= opened:
            problem = folder_problem(silo.data, task is not None and task.needs_folders)
            if problem is not None:
                missing.append(silo.name)
            note = NOT_OPENED if problem is None else "missing" if not silo.data.exists() else "a file, not a folder"
            found.append(SiloPlan(silo.name, silo.data, None, None, note))
        else:
            found.append(_opened(silo.name, silo.data, task, needs_test, problems))
    if missing:
        more = f" and {len(missing) - NAMED_MISSING} more" if len(missing) > NAMED_MISSING else ""
        problems.append(
            f"{len(missing)} silos' data folders do not exist ({', '.join(missing[:NAMED_MISSING])}{more}; "
            "see the plan's notes)"
            " -> run `fedsilo data split` or fix `silos:` in the YAML"
        )
    return DataCheck(tuple(found), _server_test(config, task, prepare_note, problems), tuple(problems))


def _opened(name: str, folder: Path, task: TaskModule | None, needs_test: bool, problems: list[str]) -> SiloPlan:
    try:
        train = count(task, folder, "train")
        test = count(task, folder, "test") if needs_test else None
    except FedsiloError as exc:
        problems.append(f"silo '{name}': {exc.one_line()}")
        return SiloPlan(name, folder, None, None, "unreadable")
    if train == 0:
        problems.append(f"silo '{name}': {folder} has no training samples -> re-split the data or remove the silo")
    return SiloPlan(name, folder, train, test)


def _server_test(
    config: ExperimentConfig, task: TaskModule | None, prepare_note: str | None, problems: list[str]
) -> int | None:
    data = config.server.data
    if data is None or (prepare_note is not None and not data.exists() and will_prepare(config, data)):
        return None
    try:
        return count(task, data, "test")
    except FedsiloError as exc:
        problems.append(f"server.data: {exc.one_line()}")
        return None


def will_prepare(config: ExperimentConfig, folder: Path) -> bool:
    """Whether ``prepare:`` writes ``folder``: only folders under ``prepare.out`` are made by the split."""
    if config.prepare is None:
        return False
    return Path(folder).resolve().is_relative_to(Path(config.prepare.out).resolve())


def _prepare_note(config: ExperimentConfig, problems: list[str]) -> str | None:
    """When ``prepare:`` will make missing data folders: a note for them (the dataset is found once)."""
    if config.prepare is None or all(s.data.exists() for s in config.silos):
        return None
    source = Path(config.prepare.dataset)
    if config.prepare.dataset not in DATASETS and source.exists():  # a file or an image release folder
        return f"split from {source.name} on first run"
    try:
        return f"split from {find_dataset(config.prepare.dataset).name} on first run"
    except FedsiloError as exc:
        problems.append(f"prepare.dataset: {exc.one_line()}")
        return "dataset not found"
