"""silo/host.py: many silos over one model object, their agents cached by count and bytes of loaded data.

The NumPy test task's data is 24 bytes a training row (4 float32 features, an int64 label), so a
silo of 12 rows holds 288 bytes once it has trained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedsilo.client.base import nbytes_of
from fedsilo.errors import FedsiloError
from fedsilo.silo.agent import SiloAgent
from fedsilo.silo.host import AgentCache, SiloHost, load_task
from fedsilo.silo.store import SiloStore
from fedsilo.silo.task import TaskModule
from fedsilo.wire.codecs import Codec
from fedsilo.wire.instructions import EvaluateInstructions, FitInstructions, SecAggRequest, TrainSettings
from fedsilo.wire.messages import EvaluateRes, Failure, FitIns, FitRes

CONFIG = FitInstructions(TrainSettings(epochs=1, batch_size=4, lr=0.1, seed=0))


class HoldsBytes:
    """A client that has loaded ``size`` bytes of data (all the cache asks of it)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def get_parameters(self) -> dict[str, np.ndarray]:
        return {}

    def data_bytes(self) -> int:
        return self.size


def served(cache: AgentCache, silo: str, size: int = 100) -> None:
    agent = cache.use(silo, lambda: SiloAgent(silo, lambda: HoldsBytes(size)))
    agent.client  # noqa: B018 - loads the "data"
    cache.settle(silo)


def host_of(task_path: Path, tmp_path: Path, max_silos: int = 8, max_bytes: int = 1 << 20) -> SiloHost:
    task, model = load_task(task_path, seed=0, threads=1)
    host = SiloHost(task, model, 0, "cpu", AgentCache(max_silos, max_bytes))
    host.attach(SiloStore(tmp_path / "store"))
    return host


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


def test_the_cache_drops_least_recently_used_until_both_bounds_hold() -> None:
    cache = AgentCache(max_silos=3, max_bytes=250)
    for silo in "abc":
        served(cache, silo)
    assert cache.silos() == ["b", "c"]  # 300 bytes were over 250
    served(cache, "b")  # used again: now the most recent
    served(cache, "d")
    assert cache.silos() == ["b", "d"]
    served(cache, "e", size=1000)
    assert cache.silos() == ["e"]  # the silo just served stays, even over the budget
    served(cache, "e", size=1000)
    assert cache.silos() == ["e"]


def test_the_cache_is_bounded_by_count_too() -> None:
    cache = AgentCache(max_silos=2, max_bytes=1 << 20)
    for silo in "abc":
        served(cache, silo, size=1)
    assert cache.silos() == ["b", "c"]


def test_a_host_trains_any_silo_and_evicts_by_the_bytes_they_loaded(
    tmp_path: Path, linear_task: Path, write_silo
) -> None:
    folders = {name: [str(write_silo(tmp_path / name, 12, seed=i))] for i, name in enumerate("abc")}
    host = host_of(linear_task, tmp_path, max_bytes=600)
    params = host.task.parameters_of(host.model)
    for name in "abc":
        res = host.fit(name, folders[name], 1, params, CONFIG.to_json(), upload=None)
        assert isinstance(res, FitRes) and res.num_examples == 12 and set(res.parameters) == {"w", "b"}
    assert host.cache.silos() == ["b", "c"]  # 3 x 288 bytes were over 600
    ev = host.evaluate("a", folders["a"], 1, params, EvaluateInstructions().to_json())
    assert isinstance(ev, EvaluateRes) and ev.num_examples == 10
    assert host.cache.silos() == ["c", "a"]  # a read again: b, the least recent, went


def test_a_host_hands_the_update_to_upload_with_the_codec_asked_for(
    tmp_path: Path, linear_task: Path, write_silo
) -> None:
    folder = str(write_silo(tmp_path / "a", 6))
    host = host_of(linear_task, tmp_path)
    seen: list[Any] = []

    def upload(res: FitRes, codec: Codec) -> Failure:
        seen.append((res.silo, codec))
        return Failure(res.silo, "the slot is full", "rejected")

    res = host.fit("a", [folder], 1, host.task.parameters_of(host.model), CONFIG.to_json(), upload)
    assert isinstance(res, Failure) and res.reason == "the slot is full"
    assert seen == [("a", CONFIG.codec)]


def test_a_secure_fit_keeps_its_update_and_answers_its_steps(tmp_path: Path, linear_task: Path, write_silo) -> None:
    pytest.importorskip("cryptography")
    folder = str(write_silo(tmp_path / "a", 6))
    host = host_of(linear_task, tmp_path)
    secure = FitInstructions(TrainSettings(seed=0), secagg=SecAggRequest())

    def no_upload(res: FitRes, codec: Codec) -> FitRes:
        raise AssertionError("a kept update is not uploaded")

    res = host.fit("a", [folder], 1, host.task.parameters_of(host.model), secure.to_json(), no_upload)
    assert isinstance(res, FitRes) and res.parameters == {}
    reply = host.exchange("a", "advertise", b"not a protocol message")
    assert isinstance(reply, Failure)  # the session parsed it (and refused it): it is there
    missing = host.exchange("b", "advertise", b"")
    assert isinstance(missing, Failure) and missing.reason == "its session is not in this worker"


def test_instructions_that_do_not_parse_are_a_failure_and_cache_nothing(tmp_path: Path, linear_task: Path) -> None:
    host = host_of(linear_task, tmp_path)
    params = host.task.parameters_of(host.model)
    bad = host.fit("a", [str(tmp_path)], 1, params, '{"train": {"epochs": "many"}}', upload=None)
    assert isinstance(bad, Failure) and "fit instructions do not parse" in bad.reason
    worse = host.evaluate("a", [str(tmp_path)], 1, params, '{"unknown": 1}')
    assert isinstance(worse, Failure) and "evaluate instructions do not parse" in worse.reason
    assert host.cache.silos() == []


def test_a_host_needs_its_store_before_it_serves(tmp_path: Path, linear_task: Path) -> None:
    task, model = load_task(linear_task, seed=0, threads=1)
    host = SiloHost(task, model, 0, "cpu", AgentCache(8, 1 << 20))
    with pytest.raises(FedsiloError, match="before attach"):
        host.fit("a", [str(tmp_path)], 1, task.parameters_of(model), CONFIG.to_json(), upload=None)
