"""The simulation's worker processes and the shared memory they read and write: the dispatcher's local backend.

- The global model is written once per call into one of two shared buffers (calls use them in
  turn); every worker reads it in place.
- Each worker has two result slots of its own in shared memory, which its fits use in turn: it can
  write the next silo's update while the server still reads the last one, as zero-copy views.
- Jobs and replies are the small frozen messages of :mod:`fedsilo.runtime.pipes`, over one pipe per
  worker; waiting is ``multiprocessing.connection.wait`` over the busy workers' pipes.
- A replaced worker is killed at once and a fresh one started (a fork-server fork: milliseconds)
  and attached to the same memory.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import re
import signal
import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace
from multiprocessing import connection, forkserver, get_context
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path
from typing import Any

from fedsilo.errors import FedsiloError
from fedsilo.runtime.dispatch import Reply, WorkerDied
from fedsilo.runtime.pipes import (
    Attach,
    EvaluateDone,
    Exchanged,
    FitDone,
    FitJob,
    PoolJob,
    PoolReply,
    Ready,
    StartFailed,
    Stop,
)
from fedsilo.runtime.worker import SharedBuffer, WorkerSetup, buffer_of, worker_main
from fedsilo.wire.arrays import BufferLayout
from fedsilo.wire.codecs import Codec, encoded_layout
from fedsilo.wire.messages import EvaluateRes, ExchangeRes, Failure, FitRes

TORCH_IMPORT = re.compile(r"^\s*(import|from)\s+torch\b", re.MULTILINE)  # a hint for what workers preload


def start_context(task_path: Path) -> Any:
    """How workers start: forked from a clean server process that imported torch once, if we can.

    Plain ``fork`` is unsafe once the caller has started torch's threads; ``spawn`` makes every
    worker import torch again (seconds each, all at once on a small machine). A forkserver imports
    it once, before any thread exists, and forks workers from there in milliseconds.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return get_context("spawn")
    ctx = get_context("forkserver")
    preload = ["fedsilo.runtime.worker", "fedsilo.silo.task"]
    try:
        if TORCH_IMPORT.search(Path(task_path).read_text(errors="replace")):
            # torch imports _dynamo lazily when the first optimizer is built (1.5 s): pay it once here
            preload += ["fedsilo.client.torch", "torch._dynamo"]
    except OSError:
        pass  # the worker will report the missing task module itself
    ctx.set_forkserver_preload(preload)
    if threading.current_thread() is threading.main_thread():
        # Ctrl-C goes to the whole process group: the fork server (and the workers it forks, which
        # inherit this) must not print tracebacks; the main process stops the workers itself.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            forkserver.ensure_running()
        finally:
            signal.signal(signal.SIGINT, previous)
    return ctx


class WorkerProcess:
    """One worker process and the server's end of its pipe."""

    def __init__(self, ctx: Any, setup: WorkerSetup, index: int) -> None:
        self.index = index
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=worker_main, args=(child, setup, index), name=f"fedsilo-worker-{index}", daemon=True
        )
        self.process.start()
        child.close()
        self.slot = 0  # the result slot its current (or last) fit writes into

    def await_ready(self, timeout: float) -> None:
        if not self.conn.poll(timeout):
            raise FedsiloError(
                f"simulation worker {self.index} did not start within {timeout:.0f}s",
                "check that the task module imports quickly",
            )
        try:
            msg = self.conn.recv()
        except EOFError:
            msg = StartFailed(f"worker exited with code {self.process.exitcode}")
        if not isinstance(msg, Ready):
            reason = msg.reason if isinstance(msg, StartFailed) else repr(msg)
            raise FedsiloError(
                f"simulation worker could not load the task: {reason}", "run `fedsilo validate` on the experiment"
            )

    def ask_to_stop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(Stop())

    def stop(self, kill: bool = False) -> None:
        if not kill:
            self.ask_to_stop()
            self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        self.conn.close()


class PoolWorkers:
    """The worker processes behind the dispatcher's :class:`~fedsilo.runtime.dispatch.Backend` protocol."""

    def __init__(self, ctx: Any, setup: WorkerSetup, start_timeout: float) -> None:
        self._ctx, self._setup, self._start_timeout = ctx, setup, start_timeout
        self.processes: list[WorkerProcess] = []
        self._shms: list[SharedMemory] = []  # the two global buffers, then two result slots per worker
        self.layout: BufferLayout | None = None
        self.reply_layout: BufferLayout | None = None  # where the current call's updates lie in the slots
        self._store_dir = ""
        self._next_buffer = 0

    def start_processes(self, count: int) -> None:
        for i in range(count):
            self.processes.append(WorkerProcess(self._ctx, self._setup, i))

    def attach(self, layout: BufferLayout, codec: Codec, store_dir: Path) -> None:
        """Wait for every worker to be ready, then give them the shared memory, sized for ``layout``."""
        for worker in self.processes:
            worker.await_ready(self._start_timeout)
        self.layout, self._store_dir = layout, str(store_dir)
        slot = max(layout.size, encoded_layout(layout, codec).size)
        self._shms = [SharedBuffer(create=True, size=layout.size) for _ in range(2)]
        self._shms += [SharedBuffer(create=True, size=slot) for _ in range(2 * len(self.processes))]
        for worker in self.processes:
            worker.conn.send(self._attach_for(worker.index))

    def _attach_for(self, index: int) -> Attach:
        """Worker ``index``'s view: the two global buffers and its own two result slots."""
        assert self.layout is not None
        names = [s.name for s in self._shms]
        return Attach(self.layout, (names[0], names[1]), (names[2 + 2 * index], names[3 + 2 * index]), self._store_dir)

    def broadcast(self, params: Mapping[str, Any], codec: Codec) -> int:
        """Write a call's global model into the buffer the last call did not use; return which buffer."""
        if self.layout is None:
            raise FedsiloError(
                "the worker pool was used before attach(layout)",
                "call WorkerPool.attach(layout, codec, store_dir) first",
            )
        self.reply_layout = encoded_layout(self.layout, codec)
        buffer, self._next_buffer = self._next_buffer, self._next_buffer ^ 1
        self.layout.write(params, buffer_of(self._shms[buffer]))
        return buffer

    # --- the dispatcher's backend ------------------------------------------------------------

    def workers(self) -> int:
        return len(self.processes)

    def start(self, index: int, work: PoolJob) -> connection.Connection:
        worker = self.processes[index]
        if isinstance(work, FitJob):
            worker.slot ^= 1
            work = replace(work, slot=worker.slot)
        with contextlib.suppress(OSError):  # a worker that died since its last job: reply() reads EOF
            worker.conn.send(work)
        return worker.conn

    def wait(self, running: Sequence[connection.Connection], timeout: float) -> Sequence[connection.Connection]:
        return connection.wait(running, timeout=timeout)  # type: ignore[return-value]

    def reply(self, index: int, handle: connection.Connection, silo: str) -> Reply:
        worker = self.processes[index]
        try:
            msg: PoolReply = handle.recv()
        except (EOFError, OSError):
            worker.process.join(5)  # the pipe closes before the process is reaped
            raise WorkerDied(f"its worker process died (exit code {worker.process.exitcode})") from None
        if isinstance(msg, FitDone):
            return FitRes(msg.silo, {} if msg.kept else self._update_in(worker), msg.num_examples, msg.metrics)
        if isinstance(msg, EvaluateDone):
            return EvaluateRes(msg.silo, msg.loss, msg.num_examples, msg.metrics)
        if isinstance(msg, Exchanged):
            return ExchangeRes(msg.silo, msg.step, msg.payload)
        return Failure(msg.silo, msg.reason, msg.kind)

    def _update_in(self, worker: WorkerProcess) -> dict[str, Any]:
        assert self.reply_layout is not None
        return self.reply_layout.view(buffer_of(self._shms[2 + 2 * worker.index + worker.slot]))

    def replace(self, index: int) -> None:
        self.processes[index].stop(kill=True)
        fresh = WorkerProcess(self._ctx, self._setup, index)
        fresh.await_ready(self._start_timeout)
        fresh.conn.send(self._attach_for(index))
        self.processes[index] = fresh

    def close(self) -> None:
        for worker in self.processes:
            worker.ask_to_stop()  # all at once: they wind down in parallel
        for worker in self.processes:
            worker.stop()
        self.processes = []
        for shm in self._shms:
            shm.close()
            with contextlib.suppress(FileNotFoundError):
                shm.unlink()
        self._shms = []
