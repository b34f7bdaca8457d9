"""A simulation worker process: a :class:`~fedsilo.silo.host.SiloHost` behind a pipe to the server.

It reads the global model from shared memory and writes each silo's update into one of its two
result slots there; only small control messages (:mod:`fedsilo.runtime.pipes`: which silo, which
slot, metrics) go through its pipe. What a silo is and keeps (its agent, the agent cache, its
store) is the silo wing's; this module only carries jobs in and replies out.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from functools import partial
from multiprocessing import connection
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path

from fedsilo.errors import FedsiloError
from fedsilo.runtime.pipes import (
    Attach,
    EvaluateDone,
    Exchanged,
    ExchangeJob,
    FitDone,
    FitJob,
    JobFailed,
    PoolJob,
    PoolReply,
    Ready,
    StartFailed,
    Stop,
)
from fedsilo.silo.agent import describe
from fedsilo.silo.host import AgentCache, SiloHost, load_task
from fedsilo.silo.store import SiloStore
from fedsilo.wire.arrays import BufferLayout
from fedsilo.wire.codecs import Codec, encoded_layout
from fedsilo.wire.messages import EvaluateRes, ExchangeRes, Failure, FitRes, check_update


@dataclass(frozen=True)
class WorkerSetup:
    """What a worker needs to start; the silos' folders come with each job, not up front."""

    task_path: str
    seed: int
    device: str
    threads: int
    max_cached_silos: int
    max_cached_bytes: int = 32 << 20  # this worker's share of runtime.cache_mb


class SharedBuffer(SharedMemory):
    """Shared memory whose close() tolerates views still held elsewhere (they keep the mapping alive)."""

    def close(self) -> None:
        with contextlib.suppress(BufferError):
            super().close()


def buffer_of(shm: SharedMemory) -> memoryview:
    buf = shm.buf
    assert buf is not None, "shared memory used after close"
    return buf


def _device(setup: WorkerSetup, index: int) -> str:
    """This worker's device: several workers share a GPU, and several GPUs are used round-robin."""
    if "torch" not in sys.modules or setup.device == "cpu":
        return setup.device
    from fedsilo.client.torch import gpu_count, worker_device

    return worker_device(setup.device, index, gpu_count())


def worker_main(conn: connection.Connection, setup: WorkerSetup, index: int = 0) -> None:
    """A worker's life: load the task once, serve jobs until told to stop, then leave at once.

    ``os._exit`` skips the interpreter's teardown (half a second with torch loaded): the worker
    has closed its shared memory and holds nothing else that needs finalizing.
    """
    code = 0
    try:
        _serve(conn, setup, index)
    except BaseException:
        code = 1
        raise
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _serve(conn: connection.Connection, setup: WorkerSetup, index: int) -> None:
    try:
        task, model = load_task(Path(setup.task_path), setup.seed, setup.threads)
        cache = AgentCache(setup.max_cached_silos, setup.max_cached_bytes)
        host = SiloHost(task, model, setup.seed, _device(setup, index), cache)
        conn.send(Ready())
    except BaseException as exc:  # report why this worker cannot start, then exit
        conn.send(StartFailed(describe(exc)))
        return
    shms: list[SharedMemory] = []
    try:
        attach = conn.recv()
        if not isinstance(attach, Attach):  # told to stop before any work
            return
        host.attach(SiloStore(Path(attach.store_dir)))
        shms = [SharedBuffer(name=n) for n in (*attach.global_names, *attach.slot_names)]
        while not isinstance(job := conn.recv(), Stop):
            conn.send(_answer(host, job, attach.layout, shms))
    except (EOFError, KeyboardInterrupt):
        return
    finally:
        for shm in shms:
            shm.close()


def _answer(host: SiloHost, job: PoolJob, layout: BufferLayout, shms: list[SharedMemory]) -> PoolReply:
    """Run one job; the global model is read in place from its buffer, the update written to its slot."""
    if isinstance(job, ExchangeJob):
        return _piped(host.exchange(job.silo, job.step, job.payload))
    params = layout.view(buffer_of(shms[job.buffer]))
    if isinstance(job, FitJob):
        upload = partial(_write_update, layout, buffer_of(shms[2 + job.slot]))
        return _piped(host.fit(job.silo, job.folders, job.round, params, job.instructions, upload))
    return _piped(host.evaluate(job.silo, job.folders, job.round, params, job.instructions))


def _write_update(layout: BufferLayout, slot: memoryview, res: FitRes, codec: Codec) -> FitRes | Failure:
    """Write the update into the job's result slot, where the server expects it (the model's or its encoded form)."""
    try:
        up = encoded_layout(layout, codec)
        check_update(res.silo, res.parameters, up.spec())
        up.write(res.parameters, slot)
    except FedsiloError as exc:
        return Failure(res.silo, exc.message, "rejected")
    return res


def _piped(res: FitRes | EvaluateRes | ExchangeRes | Failure) -> PoolReply:
    """The pipe message for a silo's reply; a fit's parameters stay behind (in the slot, or in the session)."""
    if isinstance(res, FitRes):
        return FitDone(res.silo, res.num_examples, dict(res.metrics), kept=not res.parameters)
    if isinstance(res, EvaluateRes):
        return EvaluateDone(res.silo, res.loss, res.num_examples, dict(res.metrics))
    if isinstance(res, ExchangeRes):
        return Exchanged(res.silo, res.step, res.payload)
    return JobFailed(res.silo, res.reason, res.kind)
