"""Simulation: virtual silos run in a pool of worker processes started once.

- The global model is written once per call into shared memory; every worker reads it in place.
- Each worker keeps one model object and the data of the silos it has served (an LRU cache,
  bounded by silos and by bytes: ``runtime.cache_mb`` for all workers together) between rounds;
  only parameters move. A silo's data is read only when it is first sampled.
- A worker writes a silo's update into its own shared-memory slot (two slots, alternating, so it
  can start the next silo while the server folds in the last one); the server reads the update as
  zero-copy views and accumulates it as it arrives.
- Silos are handed out largest-first to whichever worker is free, so workers finish together.
- Every wait has a deadline. A worker that misses it, or dies, is replaced; its silo is reported
  as a timeout or disconnect Failure and the round goes on.

Control messages between the server and its own workers go through multiprocessing pipes; they
never leave this machine and carry no parameters.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import re
import signal
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from multiprocessing import connection, forkserver, get_context
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path
from typing import Any

from fedsilo.errors import FedsiloError
from fedsilo.runtime.baselines import POOLED
from fedsilo.runtime.pool_exchange import pipe_exchange
from fedsilo.runtime.worker import Attach, SharedBuffer, WorkerSetup, buffer_of, worker_main
from fedsilo.wire.arrays import Layout
from fedsilo.wire.codecs import Codec, encoded_layout
from fedsilo.wire.messages import EvaluateIns, EvaluateRes, ExchangeRes, Failure, FitIns, FitRes

START_TIMEOUT_S = 180.0
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


class _Worker:
    def __init__(self, ctx: Any, setup: WorkerSetup, index: int) -> None:
        self.index = index
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=worker_main, args=(child, setup, index), name=f"fedsilo-worker-{index}", daemon=True
        )
        self.process.start()
        child.close()
        self.silo: str | None = None
        self.next_slot = 0

    def ask_to_stop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(("stop",))

    def stop(self, kill: bool = False) -> None:
        if not kill:
            self.ask_to_stop()
            self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        self.conn.close()


class WorkerPool:
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
        self._silos = {k: tuple(str(p) for p in v) for k, v in silos.items()}
        self._ctx = start_context(Path(task_path))
        self._shms: list[SharedMemory] = []
        self._layout: Layout | None = None
        self._reply_layout: Layout | None = None
        self._next_buffer = 0
        self._call_id = 0
        self._sizes: dict[str, int] = {}
        self._holder: dict[str, int] = {}  # silo -> index of the worker holding its secagg session
        self._lost: set[str] = set()  # silos whose session died with a replaced worker (since their last fit)
        self._start_timeout = start_timeout
        threads = max(1, (os.cpu_count() or 1) // workers)
        per_worker = cache_bytes // max(workers, 1)  # the budget is for all workers together
        self._setup = WorkerSetup(str(task_path), seed, device, threads, max_cached_silos, per_worker)
        self._store_dir = ""
        self._workers: list[_Worker] = []
        self._start_error: BaseException | None = None
        # Starting blocks until the fork server has imported the task's libraries: do it on a thread
        # so the caller imports and builds its own model meanwhile.
        self._starter = threading.Thread(target=self._start_workers, args=(workers,), daemon=True)
        self._starter.start()

    def _start_workers(self, count: int) -> None:
        try:
            for i in range(count):
                self._workers.append(_Worker(self._ctx, self._setup, i))
        except BaseException as exc:  # re-raised by attach() on the caller's thread
            self._start_error = exc

    def attach(self, layout: Layout, codec: Codec, store_dir: Path) -> None:
        """Wait for every worker to be ready, then give them the model's shared-memory buffers.

        Result slots fit the model and its update encoded with ``codec`` (which has other arrays).
        A silo may run on any worker, and a worker may drop it from its cache: what silos keep
        between rounds (top-k residuals, local-DP accountants) is in ``store_dir``, which all read.
        """
        try:
            self._starter.join()
            if self._start_error is not None:
                raise FedsiloError(f"simulation workers could not start: {self._start_error}")
            for w in self._workers:
                self._await_ready(w, self._start_timeout)
            self._layout = layout
            self._store_dir = str(store_dir)
            slot = max(layout.size, encoded_layout(layout, codec).size)
            self._shms = [SharedBuffer(create=True, size=layout.size) for _ in range(2)]
            self._shms += [SharedBuffer(create=True, size=slot) for _ in range(2 * len(self._workers))]
            for w in self._workers:
                w.conn.send(self._attach_for(w.index))
        except BaseException:
            self.close()
            raise

    def _attach_for(self, index: int) -> Attach:
        """Worker ``index``'s view: the two global buffers and its own two result slots."""
        assert self._layout is not None
        names = [s.name for s in self._shms]
        slots = (names[2 + 2 * index], names[3 + 2 * index])
        return Attach(self._layout, (names[0], names[1]), slots, self._store_dir)

    def _await_ready(self, worker: _Worker, timeout: float) -> None:
        if not worker.conn.poll(timeout):
            raise FedsiloError(
                f"simulation worker {worker.index} did not start within {timeout:.0f}s",
                "check that the task module imports quickly",
            )
        try:
            msg = worker.conn.recv()
        except EOFError:
            msg = ("error", f"worker exited with code {worker.process.exitcode}")
        if msg[0] != "ready":
            raise FedsiloError(
                f"simulation worker could not load the task: {msg[1]}", "run `fedsilo validate` on the experiment"
            )

    def _replace(self, worker: _Worker) -> _Worker:
        self._lost |= {s for s, i in self._holder.items() if i == worker.index}  # their sessions die with it
        self._holder = {s: i for s, i in self._holder.items() if i != worker.index}
        worker.stop(kill=True)
        fresh = _Worker(self._ctx, self._setup, worker.index)
        self._await_ready(fresh, self._start_timeout)
        fresh.conn.send(self._attach_for(worker.index))
        self._workers[worker.index] = fresh
        return fresh

    def available(self) -> list[str]:
        return [s for s in self._silos if s != POOLED]

    def add_pooled_silo(self) -> str:
        """Register the pseudo-silo with every silo's data, for the centralized baseline."""
        self._silos[POOLED] = tuple(p for k, v in self._silos.items() if k != POOLED for p in v)
        return POOLED

    def fit(self, silos: Sequence[str], ins: FitIns, timeout: float) -> Iterator[FitRes | Failure]:
        todo, codec = ins.instructions.to_json(), ins.instructions.codec
        yield from self._run("fit", silos, ins.round, ins.parameters, todo, codec, timeout)  # type: ignore[misc]

    def evaluate(self, silos: Sequence[str], ins: EvaluateIns, timeout: float) -> Iterator[EvaluateRes | Failure]:
        todo = ins.instructions.to_json()
        yield from self._run("evaluate", silos, ins.round, ins.parameters, todo, Codec(), timeout)  # type: ignore[misc]

    def _run(
        self,
        kind: str,
        silos: Sequence[str],
        rnd: int,
        params: Mapping[str, Any],
        instructions: str,
        codec: Codec,
        timeout: float,
    ) -> Iterator[FitRes | EvaluateRes | Failure]:
        unknown = [s for s in silos if s not in self._silos]
        if unknown:
            raise FedsiloError(f"unknown silos {unknown}")
        if self._layout is None:
            raise FedsiloError("the worker pool was used before attach(layout)")
        layout = self._layout
        self._reply_layout = encoded_layout(layout, codec)  # where this call's updates lie in the slots
        self._call_id += 1
        call_id, buffer = self._call_id, self._next_buffer
        self._next_buffer ^= 1
        layout.write(params, buffer_of(self._shms[buffer]))  # the one broadcast of this call
        pending = deque(sorted(silos, key=lambda s: -self._sizes.get(s, 0)))
        busy: dict[connection.Connection, _Worker] = {}
        deadline = time.monotonic() + timeout

        def dispatch(worker: _Worker) -> None:
            if pending:
                silo = pending.popleft()
                worker.silo = silo
                worker.next_slot ^= 1
                with contextlib.suppress(OSError):  # a worker dead since the last call: its pipe reads EOF below
                    worker.conn.send(
                        (kind, call_id, silo, self._silos[silo], buffer, worker.next_slot, rnd, instructions)
                    )
                busy[worker.conn] = worker

        try:
            for worker in self._workers:
                dispatch(worker)
            while busy:
                ready = connection.wait(list(busy), timeout=max(0.0, deadline - time.monotonic()))
                if not ready:
                    for worker in list(busy.values()):
                        yield Failure(
                            worker.silo or "?", f"no reply within the round deadline of {timeout:.0f}s", "timeout"
                        )
                        del busy[worker.conn]
                        self._replace(worker)
                    while pending:
                        yield Failure(
                            pending.popleft(), f"not started before the round deadline of {timeout:.0f}s", "timeout"
                        )
                    return
                for conn in ready:
                    worker = busy.pop(conn)  # type: ignore[call-overload]
                    try:
                        msg = worker.conn.recv()
                    except (EOFError, OSError):
                        silo = worker.silo or "?"
                        worker.process.join(5)  # the pipe closes before the process is reaped
                        code = worker.process.exitcode
                        dispatch(self._replace(worker))
                        yield Failure(silo, f"its worker process died (exit code {code})", "disconnected")
                        continue
                    slot = worker.next_slot
                    dispatch(worker)  # keep the worker busy while the server folds in this reply
                    yield self._reply(msg, slot, worker.index)
        finally:
            for worker in list(busy.values()):  # the caller stopped early: nothing may write on
                self._replace(worker)

    def exchange(
        self, step: str, messages: Mapping[str, bytes], timeout: float, max_reply_bytes: int
    ) -> Iterator[ExchangeRes | Failure]:
        """A protocol step, each silo's message sent to the worker that trained it this round.

        A silo that never kept a session is told so (``error``, as the silo itself says over any
        other transport); one whose session died with its worker is ``disconnected``.
        """
        self._call_id += 1
        routes = {s: self._workers[i] for s, i in self._holder.items() if s in messages}
        for silo in messages.keys() - routes.keys() - self._lost:
            yield Failure(silo, f"no secure-aggregation session for step '{step}' (no secagg fit on this silo)")
        known = {s: m for s, m in messages.items() if s in routes or s in self._lost}
        yield from pipe_exchange(routes, step, known, self._call_id, timeout, max_reply_bytes, self._replace)

    def _reply(self, msg: tuple[Any, ...], slot: int, index: int) -> FitRes | EvaluateRes | Failure:
        if msg[0] == "fit":
            _, _, silo, n, metrics, kept = msg
            self._sizes[silo] = n
            self._lost.discard(silo)  # a new fit: whatever session it lost is void anyway
            if kept:  # secure aggregation: the update stays in this worker, whose steps come next
                self._holder[silo] = index
                return FitRes(silo, {}, n, metrics)
            assert self._reply_layout is not None
            params = self._reply_layout.view(buffer_of(self._shms[2 + 2 * index + slot]))
            return FitRes(silo, params, n, metrics)
        if msg[0] == "evaluate":
            _, _, silo, loss, n, metrics = msg
            return EvaluateRes(silo, loss, n, metrics)
        _, _, silo, reason, kind = msg
        return Failure(silo, reason, kind)

    def close(self) -> None:
        self._starter.join()
        for worker in self._workers:
            worker.ask_to_stop()  # all at once: they wind down in parallel
        for worker in self._workers:
            worker.stop()
        self._workers = []
        for shm in self._shms:
            shm.close()
            with contextlib.suppress(FileNotFoundError):
                shm.unlink()
        self._shms = []

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
