"""The simulation runtimes: the silos as work items on a local worker pool, on Ray, or in this process.

``runtime.workers: 0`` runs every silo in this process, one after another (simplest to debug);
otherwise a pool of worker processes is started at once, so that the workers import the task
while the server builds its model; ``runtime.kind: ray`` spreads the same work over Ray actors.
Each keeps the silos' state between rounds in the run folder (:data:`~fedsilo.runtime.base.SILO_STORE`),
so ``--resume`` continues every silo's top-k residual and local-DP accountant exactly.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from fedsilo.experiment.config import ExperimentConfig
from fedsilo.experiment.plan import Plan
from fedsilo.runtime.base import SILO_STORE
from fedsilo.runtime.silo_folders import POOLED
from fedsilo.runtime.simulation import WorkerPool
from fedsilo.silo.agent import SiloAgent
from fedsilo.silo.store import SiloStore
from fedsilo.tracking.run_dir import RunDir
from fedsilo.transport.base import Transport
from fedsilo.transport.inproc import InProcessTransport
from fedsilo.wire.arrays import BufferLayout

if TYPE_CHECKING:
    from fedsilo.runtime.ray import RayTransport


def worker_count(config: ExperimentConfig, silos: int) -> int:
    if config.runtime.workers == "auto":
        return max(1, min(os.cpu_count() or 1, silos))
    return int(config.runtime.workers)


def silo_folders(config: ExperimentConfig, with_pooled: bool) -> dict[str, Sequence[Path]]:
    """Each silo's data folder, and with ``with_pooled`` the baseline's pseudo-silo holding all of them."""
    folders: dict[str, Sequence[Path]] = {s.name: [s.data] for s in config.silos}
    if with_pooled:
        folders[POOLED] = [s.data for s in config.silos]
    return folders


class SimulationRuntime:
    """The local worker pool, started now; or, with ``runtime.workers: 0``, the silos in this process."""

    def __init__(self, config: ExperimentConfig, baselines: bool = False) -> None:
        self._baselines = baselines
        self._pool: WorkerPool | None = None
        self._inproc: InProcessTransport | None = None
        workers = worker_count(config, len(config.silos))
        if workers > 0:
            cache = int(config.runtime.cache_mb * (1 << 20))
            folders = {s.name: [s.data] for s in config.silos}
            r = config.seed, workers, config.train.device
            self._pool = WorkerPool(config.task, folders, *r, cache_bytes=cache)
            if baselines:
                self._pool.add_pooled_silo()

    def transport(self, plan: Plan, run: RunDir) -> Transport:
        task, _, loop = plan.parts()
        store = run.path / SILO_STORE
        if self._pool is not None:
            self._pool.attach(BufferLayout.of(plan.initial), loop.instructions.codec, store)
            return self._pool
        config, shared = plan.config, SiloStore(store)
        agents = {
            name: SiloAgent(name, partial(task.make_client, folders, config.seed, config.train.device), shared)
            for name, folders in silo_folders(config, self._baselines).items()
        }
        self._inproc = InProcessTransport(agents, sampleable=[s.name for s in config.silos])
        return self._inproc

    def close(self, failure: BaseException | None = None) -> None:
        for started in (self._pool, self._inproc):
            if started is not None:
                started.close()


class RayRuntime:
    """The worker pool as Ray actors (a local Ray instance, or a running cluster at ``runtime.address``)."""

    def __init__(self, config: ExperimentConfig, baselines: bool = False) -> None:
        from fedsilo.runtime.ray import RayTransport  # ray only now

        r = config.runtime
        self._pool: RayTransport = RayTransport(
            config.task,
            silo_folders(config, False),
            config.seed,
            r.workers,
            config.train.device,
            r.address,
            cache_bytes=int(r.cache_mb * (1 << 20)),
        )
        if baselines:
            self._pool.add_pooled_silo()

    def transport(self, plan: Plan, run: RunDir) -> Transport:
        self._pool.attach(run.path / SILO_STORE)
        return self._pool

    def close(self, failure: BaseException | None = None) -> None:
        self._pool.close()
