"""A simulation worker process: loads the task once, then trains and evaluates silos on request.

It reads the global model from shared memory and writes each silo's update into one of its two
result slots there; only small control messages (which silo, which slot, metrics) go through its
pipe to the server. One model object serves every silo the worker runs; the silos' clients (and
so their data) are kept in an LRU cache between rounds, bounded by count and by bytes of data,
so a silo that is not sampled again soon costs nothing once it has been evicted.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from multiprocessing import connection
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path
from typing import Any

from fedsilo.errors import FedsiloError
from fedsilo.silo.agent import SiloAgent, describe
from fedsilo.silo.store import SiloStore
from fedsilo.wire.arrays import ArrayDict, Layout
from fedsilo.wire.codecs import encoded_layout
from fedsilo.wire.instructions import EvaluateInstructions, FitInstructions
from fedsilo.wire.messages import EvaluateIns, EvaluateRes, Failure, FitIns, FitRes, check_update


@dataclass(frozen=True)
class WorkerSetup:
    """What a worker needs to start; the silos' folders come with each job, not up front."""

    task_path: str
    seed: int
    device: str
    threads: int
    max_cached_silos: int
    max_cached_bytes: int = 32 << 20  # this worker's share of runtime.cache_mb


@dataclass(frozen=True)
class Attach:
    """Where the model's arrays live: sent once the server knows the model's layout."""

    layout: Layout
    global_names: tuple[str, str]
    slot_names: tuple[str, str]
    store_dir: str  # silos' top-k residuals and local-DP accountants (the run folder's), shared by all workers


class SharedBuffer(SharedMemory):
    """Shared memory whose close() tolerates views still held elsewhere (they keep the mapping alive)."""

    def close(self) -> None:
        with contextlib.suppress(BufferError):
            super().close()


def buffer_of(shm: SharedMemory) -> memoryview:
    buf = shm.buf
    assert buf is not None, "shared memory used after close"
    return buf


def _set_threads(count: int) -> None:
    if "torch" in sys.modules:
        from fedsilo.client.torch import set_threads

        set_threads(count)


def _device(setup: WorkerSetup, index: int) -> str:
    """This worker's device: several workers share a GPU, and several GPUs are used round-robin."""
    if "torch" not in sys.modules or setup.device == "cpu":
        return setup.device
    from fedsilo.client.torch import gpu_count, worker_device

    return worker_device(setup.device, index, gpu_count())


def evict(agents: OrderedDict[str, SiloAgent], held: dict[str, int], max_silos: int, max_bytes: int) -> None:
    """Drop least recently used silos until both bounds hold; the silo just served always stays."""
    total = sum(held.values())
    while len(agents) > 1 and (len(agents) > max_silos or total > max_bytes):
        silo, _ = agents.popitem(last=False)
        total -= held.pop(silo, 0)


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
    os.environ.setdefault("OMP_NUM_THREADS", str(setup.threads))
    shms: list[SharedMemory] = []
    try:
        from fedsilo.silo.task import TaskModule  # imported here: the worker process starts bare

        task = TaskModule.load(Path(setup.task_path))
        _set_threads(setup.threads)
        model = task.build_model(setup.seed)
        device = _device(setup, index)
        conn.send(("ready",))
    except BaseException as exc:  # report why this worker cannot start, then exit
        conn.send(("error", describe(exc)))
        return
    agents: OrderedDict[str, SiloAgent] = OrderedDict()
    held: dict[str, int] = {}  # bytes of data each cached silo holds
    try:
        attach: Attach = conn.recv()
        if not isinstance(attach, Attach):  # "stop" before any work
            return
        store = SiloStore(Path(attach.store_dir))
        layout = attach.layout
        shms = [SharedBuffer(name=n) for n in (*attach.global_names, *attach.slot_names)]
        globals_, slots = shms[:2], shms[2:]
        while True:
            msg = conn.recv()
            if msg[0] == "stop":
                return
            if msg[0] == "exchange":  # a secure-aggregation step for a silo this worker trained this round
                conn.send(_exchange(agents, *msg[1:]))
                continue
            kind, call_id, silo, folders, buffer, slot, rnd, instructions = msg
            agent = agents.pop(silo, None) or SiloAgent(
                silo, partial(task.make_client, folders, setup.seed, device, model=model), store
            )
            agents[silo] = agent
            params = layout.view(buffer_of(globals_[buffer]))
            if kind == "fit":
                res, kept = _fit(agent, rnd, params, instructions, layout, buffer_of(slots[slot]))
                reply: tuple[Any, ...] = (
                    ("fit", call_id, silo, res.num_examples, dict(res.metrics), kept)
                    if isinstance(res, FitRes)
                    else ("failure", call_id, silo, res.reason, res.kind)
                )
            else:
                ev = _evaluate(agent, rnd, params, instructions)
                reply = (
                    ("evaluate", call_id, silo, ev.loss, ev.num_examples, dict(ev.metrics))
                    if isinstance(ev, EvaluateRes)
                    else ("failure", call_id, silo, ev.reason, ev.kind)
                )
            del params
            held[silo] = agent.data_bytes()
            evict(agents, held, setup.max_cached_silos, setup.max_cached_bytes)
            conn.send(reply)
    except (EOFError, KeyboardInterrupt):
        return
    finally:
        for shm in shms:
            shm.close()


def _fit(
    agent: SiloAgent, rnd: int, params: ArrayDict, instructions: str, layout: Layout, slot: memoryview
) -> tuple[FitRes | Failure, bool]:
    """Parse the instructions as a deployed silo does (strictly), fit, and write the update into ``slot``.

    Returns the reply and whether the update stayed in this worker (secure aggregation).
    """
    try:
        parsed = FitInstructions.from_json(instructions)
    except FedsiloError as exc:
        return Failure(agent.name, exc.one_line()), False
    res = agent.fit(FitIns(rnd, params, parsed))
    if not isinstance(res, FitRes) or parsed.secagg is not None:
        return res, isinstance(res, FitRes)
    try:
        up = encoded_layout(layout, parsed.codec)  # the model's, or its encoded form's
        check_update(agent.name, res.parameters, up.spec())
        up.write(res.parameters, slot)
    except FedsiloError as exc:
        return Failure(agent.name, exc.message, "rejected"), False
    return res, False


def _evaluate(agent: SiloAgent, rnd: int, params: ArrayDict, instructions: str) -> EvaluateRes | Failure:
    try:
        parsed = EvaluateInstructions.from_json(instructions)
    except FedsiloError as exc:
        return Failure(agent.name, exc.one_line())
    return agent.evaluate(EvaluateIns(rnd, params, parsed))


def _exchange(agents: Mapping[str, SiloAgent], call_id: int, silo: str, step: str, payload: bytes) -> tuple[Any, ...]:
    """One protocol step of ``silo``'s session in this worker: ("exchanged", ..., bytes) or a failure."""
    agent = agents.get(silo)
    reply = agent.exchange(step, payload) if agent else Failure(silo, "its session is not in this worker")
    if isinstance(reply, Failure):
        return ("failure", call_id, silo, reply.reason, reply.kind)
    return ("exchanged", call_id, silo, reply)
