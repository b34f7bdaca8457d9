"""runtime/worker.py's cache of silos: bounded by count and by bytes of loaded data, LRU first."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np

from fedsilo.client.base import nbytes_of
from fedsilo.runtime.worker import evict
from fedsilo.silo.agent import SiloAgent
from fedsilo.silo.task import TaskModule
from fedsilo.wire.instructions import FitInstructions, TrainSettings
from fedsilo.wire.messages import FitIns

CONFIG = FitInstructions(TrainSettings(epochs=1, batch_size=4, lr=0.1, seed=0))


def test_nbytes_of_counts_arrays_in_tuples_and_nothing_else() -> None:
    x, y = np.zeros((10, 4), np.float32), np.zeros(10, np.int64)
    assert nbytes_of((x, y), None, "text", [y]) == 160 + 80 + 80


def test_an_agent_reports_the_bytes_its_client_loaded(tmp_path: Path, linear_task: Path, write_silo) -> None:
    task = TaskModule.load(linear_task)
    folder = write_silo(tmp_path / "a", 12, n_test=3)
    agent = SiloAgent("a", lambda: task.make_client([folder], 0))
    assert agent.data_bytes() == 0  # nothing built, nothing loaded
    agent.fit(FitIns(1, task.initial_parameters(0), CONFIG))
    assert agent.data_bytes() == 12 * 4 * 4 + 12 * 8  # float32 x, int64 y; the test split not read yet


def test_evict_drops_least_recently_used_until_both_bounds_hold(tmp_path: Path, linear_task: Path) -> None:
    task = TaskModule.load(linear_task)
    agents = OrderedDict((n, SiloAgent(n, lambda: task.make_client([tmp_path], 0))) for n in "abcd")
    held = {"a": 100, "b": 100, "c": 100, "d": 100}
    evict(agents, held, max_silos=3, max_bytes=250)
    assert list(agents) == ["c", "d"] and held == {"c": 100, "d": 100}
    evict(agents, held, max_silos=3, max_bytes=50)
    assert list(agents) == ["d"]  # the silo just served stays, even over the budget
    evict(agents, held, max_silos=3, max_bytes=50)
    assert list(agents) == ["d"]
