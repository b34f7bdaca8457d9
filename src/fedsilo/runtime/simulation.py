"""Simulation: virtual silos run in a pool of worker processes started once.

- The global model is written once per call into shared memory; every worker reads it in place,
  and writes each silo's update into shared memory too (:mod:`fedsilo.runtime.pool_workers`): the
  server reads updates as zero-copy views and accumulates them as they arrive.
- Each worker keeps one model object and the agents of the silos it has served (an LRU cache,
  bounded by silos and by bytes: ``runtime.cache_mb`` for all workers together; see
  :mod:`fedsilo.silo.host`) between rounds; only parameters move. A silo's data is read only
  when it is first sampled.
- Silos are handed out largest-first to whichever worker is free, so workers finish together, and
  every wait has a deadline: a worker that misses it, or dies, is replaced; its silo is reported
  as a timeout or disconnect Failure and the round goes on (:mod:`fedsilo.runtime.dispatch`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from multiprocessing import connection
from pathlib import Path
from typing import cast

from fedsilo.errors import FedsiloError
from fedsilo.runtime.dispatch import Dispatcher, Job
from fedsilo.runtime.pipes import EvaluateJob, ExchangeJob, FitJob, PoolJob
from fedsilo.runtime.pool_workers import PoolWorkers, start_context
from fedsilo.runtime.silo_folders import SiloFolders
from fedsilo.runtime.worker import WorkerSetup
from fedsilo.wire.arrays import BufferLayout
from fedsilo.wire.codecs import Codec
from fedsilo.wire.messages import EvaluateIns, EvaluateRes, ExchangeRes, Failure, FitIns, FitRes

START_TIMEOUT_S = 180.0


class WorkerPool(SiloFolders):
    """A :class:`~fedsilo.transport.base.Transport` over local worker processes."""

    def __init__(
        self,
        task_path: Path,
        silos: Mapping[str, Sequence[Path]],
        seed: int,
        workers: int,
        device: str = "auto",
        max_cached_silos: int = 256,
        cache_bytes: int = 64 << 20,
        start_timeout: float = START_TIMEOUT_S,
    ) -> None:
        """Start ``workers`` processes and return at once; :meth:`attach` gives them the model's layout.

        Starting early lets the workers import the task (and torch) while the caller builds the
        initial model, instead of one after the other.
        """
        super().__init__(silos)
        threads = max(1, (os.cpu_count() or 1) // workers)
        per_worker = cache_bytes // max(workers, 1)  # the budget is for all workers together
        setup = WorkerSetup(str(task_path), seed, device, threads, max_cached_silos, per_worker)
        self._workers = PoolWorkers(start_context(Path(task_path)), setup, start_timeout)
        self._dispatch: Dispatcher[PoolJob, connection.Connection] = Dispatcher(self._workers)
        self._start_error: BaseException | None = None
        # Starting blocks until the fork server has imported the task's libraries: do it on a thread
        # so the caller imports and builds its own model meanwhile.
        self._starter = threading.Thread(target=self._start_workers, args=(workers,), daemon=True)
        self._starter.start()

    def _start_workers(self, count: int) -> None:
        try:
            self._workers.start_processes(count)
        except BaseException as exc:  # re-raised by attach() on the caller's thread
            self._start_error = exc

    def attach(self, layout: BufferLayout, codec: Codec, store_dir: Path) -> None:
        """Wait for every worker to be ready, then give them the model's shared-memory buffers.

        Result slots fit the model and its update encoded with ``codec`` (which has other arrays).
        A silo may run on any worker, and a worker may drop it from its cache: what silos keep
        between rounds (top-k residuals, local-DP accountants) is in ``store_dir``, which all read.
        """
        try:
            self._starter.join()
            if self._start_error is not None:
                raise FedsiloError(
                    f"simulation workers could not start: {self._start_error}",
                    "run `fedsilo validate` on the experiment, or set runtime.workers: 0 to run silos in this process",
                )
            self._workers.attach(layout, codec, store_dir)
        except BaseException:
            self.close()
            raise

    def fit(self, silos: Sequence[str], ins: FitIns, timeout: float) -> Iterator[FitRes | Failure]:
        folders, todo = self.folders_of(silos), ins.instructions.to_json()
        buffer = self._workers.broadcast(ins.parameters, ins.instructions.codec)  # the one broadcast of this call
        jobs = [Job[PoolJob](s, FitJob(s, folders[s], buffer, ins.round, todo)) for s in silos]
        yield from cast(Iterator[FitRes | Failure], self._dispatch.run(jobs, timeout))

    def evaluate(self, silos: Sequence[str], ins: EvaluateIns, timeout: float) -> Iterator[EvaluateRes | Failure]:
        folders, todo = self.folders_of(silos), ins.instructions.to_json()
        buffer = self._workers.broadcast(ins.parameters, Codec())
        jobs = [Job[PoolJob](s, EvaluateJob(s, folders[s], buffer, ins.round, todo)) for s in silos]
        yield from cast(Iterator[EvaluateRes | Failure], self._dispatch.run(jobs, timeout))

    def exchange(
        self, step: str, messages: Mapping[str, bytes], timeout: float, max_reply_bytes: int
    ) -> Iterator[ExchangeRes | Failure]:
        """A protocol step, each silo's message sent to the worker that trained it this round."""
        yield from self._dispatch.exchange(
            step, messages, timeout, max_reply_bytes, lambda silo, payload: ExchangeJob(silo, step, payload)
        )

    def close(self) -> None:
        self._starter.join()
        self._workers.close()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
