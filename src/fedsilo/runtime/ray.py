"""The Ray runtime: the simulation's work spread over a Ray cluster, for experiments that outgrow one machine.

``runtime: {kind: ray}`` starts a local Ray instance; ``runtime: {kind: ray, address: auto}``
joins a running cluster (``ray start --head`` on one machine, ``ray start --address=HEAD:6379``
on the others). Each worker is a Ray actor that loads the task once and keeps its model object
and an LRU cache of silo clients between rounds, as a local simulation worker does; the global
model is put in Ray's object store once per round and read by every actor without a copy per
silo; silos are handed out largest first to whichever actor is free. Seeds derive from (seed,
round, silo) and each actor uses one thread, so the same seed gives the same model as the local
engine. Silo data folders must be readable at the same paths on every node (a shared file system).
What silos keep between rounds (top-k residuals, local-DP accountants) is written to the run
folder's ``silo_store/``, which every actor reads: on a cluster of several machines the run folder
(``output:``) must be on the shared file system too, or an actor on another node starts the silo's
residual afresh and its local epsilon from that node's last record.

Ray is the one framework here that pickles: inside a Ray cluster, which is one trust domain (the
experimenter's own machines). Nothing crosses to another party this way.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict, deque
from collections.abc import Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import ray

from fedsilo.errors import ConfigError, FedsiloError
from fedsilo.runtime.baselines import POOLED
from fedsilo.silo.agent import SiloAgent, describe
from fedsilo.silo.store import SiloStore
from fedsilo.wire.instructions import EvaluateInstructions, FitInstructions
from fedsilo.wire.messages import EvaluateIns, EvaluateRes, ExchangeRes, Failure, FitIns, FitRes


class SiloWorker:
    """One Ray actor: the task loaded once, one model object, the silos it served recently."""

    def __init__(self, task_path: str, seed: int, device: str, max_cached_silos: int) -> None:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        from fedsilo.silo.task import TaskModule

        self._task = TaskModule.load(Path(task_path))
        if "torch" in __import__("sys").modules:
            from fedsilo.client.torch import set_threads

            set_threads(1)  # as many actors as CPUs, one thread each (as the local engine does)
        self._model = self._task.build_model(seed)
        self._seed, self._device, self._max = seed, device, max_cached_silos
        self._agents: OrderedDict[str, SiloAgent] = OrderedDict()
        self._stores: dict[str, SiloStore] = {}

    def _agent(self, silo: str, folders: Sequence[str], store_dir: str) -> SiloAgent:
        store = self._stores.setdefault(store_dir, SiloStore(Path(store_dir)))
        agent = self._agents.pop(silo, None) or SiloAgent(
            silo,
            partial(self._task.make_client, [Path(f) for f in folders], self._seed, self._device, model=self._model),
            store,
        )
        self._agents[silo] = agent
        while len(self._agents) > self._max:
            self._agents.popitem(last=False)
        return agent

    def run(
        self, kind: str, silo: str, folders: Sequence[str], params: dict[str, Any], rnd: int, todo: str, store: str
    ) -> FitRes | EvaluateRes | Failure:
        agent = self._agent(silo, folders, store)
        try:  # parsed as a deployed silo parses them: strictly
            if kind == "fit":
                return agent.fit(FitIns(rnd, params, FitInstructions.from_json(todo)))
            return agent.evaluate(EvaluateIns(rnd, params, EvaluateInstructions.from_json(todo)))
        except FedsiloError as exc:
            return Failure(silo, exc.one_line())

    def exchange(self, silo: str, step: str, payload: bytes) -> bytes | Failure:
        """A secure-aggregation step of ``silo``'s session, which lives in this actor since it trained."""
        agent = self._agents.get(silo)
        return agent.exchange(step, payload) if agent else Failure(silo, "its session is not in this Ray worker")


class RayTransport:
    """Silos as work items on a pool of Ray actors; the same Transport interface as every runtime."""

    def __init__(
        self,
        task_path: Path,
        silos: Mapping[str, Sequence[Path]],
        seed: int,
        workers: int | str = "auto",
        device: str = "auto",
        address: str | None = None,
        max_cached_silos: int = 256,
    ) -> None:
        self._silos = {k: tuple(str(p) for p in v) for k, v in silos.items()}
        self._sizes: dict[str, int] = {}
        self._holder: dict[str, int] = {}  # silo -> index of the actor holding its secagg session
        self._lost: set[str] = set()  # silos whose session died with a replaced actor (since their last fit)
        self._own = not ray.is_initialized()
        if self._own:
            local_cpus = workers if isinstance(workers, int) and address is None and workers > 0 else None
            try:
                ray.init(
                    address=address,
                    num_cpus=local_cpus,
                    include_dashboard=False,
                    log_to_driver=False,
                    configure_logging=False,
                )
            except ConnectionError as exc:
                raise ConfigError(
                    f"cannot join the Ray cluster at {address!r}: {exc}",
                    "start it with `ray start --head`, or leave runtime.address unset for a local one",
                ) from None
        count = workers if isinstance(workers, int) and workers > 0 else int(ray.cluster_resources().get("CPU", 1))
        self._actor_class: Any = ray.remote(num_cpus=1)(SiloWorker)  # Ray's stubs do not type actor handles
        self._store_dir = ""
        self._args = (str(task_path), seed, device, max_cached_silos)
        self._actors: list[Any] = [self._actor_class.remote(*self._args) for _ in range(max(1, count))]

    def attach(self, store_dir: Path) -> None:
        """Where silos keep what they carry between rounds: the run folder's store."""
        self._store_dir = str(store_dir)

    def available(self) -> list[str]:
        return [s for s in self._silos if s != POOLED]

    def add_pooled_silo(self) -> str:
        """The pseudo-silo with every silo's data, for the centralized baseline."""
        self._silos[POOLED] = tuple(p for k, v in self._silos.items() if k != POOLED for p in v)
        return POOLED

    def fit(self, silos: Sequence[str], ins: FitIns, timeout: float) -> Iterator[FitRes | Failure]:
        todo = ins.instructions.to_json()
        yield from self._run("fit", silos, ins.round, ins.parameters, todo, timeout)  # type: ignore[misc]

    def evaluate(self, silos: Sequence[str], ins: EvaluateIns, timeout: float) -> Iterator[EvaluateRes | Failure]:
        todo = ins.instructions.to_json()
        yield from self._run("evaluate", silos, ins.round, ins.parameters, todo, timeout)  # type: ignore[misc]

    def _run(
        self, kind: str, silos: Sequence[str], rnd: int, params: Mapping[str, Any], todo: str, timeout: float
    ) -> Iterator[FitRes | EvaluateRes | Failure]:
        unknown = [s for s in silos if s not in self._silos]
        if unknown:
            raise FedsiloError(f"unknown silos {unknown}")
        model = ray.put(dict(params))  # the one broadcast of this call; actors read it from the object store
        pending = deque(sorted(silos, key=lambda s: -self._sizes.get(s, 0)))
        running: dict[Any, tuple[int, str]] = {}
        deadline = time.monotonic() + timeout

        def dispatch(index: int) -> None:
            if pending:
                silo = pending.popleft()
                call = self._actors[index].run.remote(kind, silo, self._silos[silo], model, rnd, todo, self._store_dir)
                running[call] = (index, silo)

        try:
            for index in range(len(self._actors)):
                dispatch(index)
            while running:
                ready, _ = ray.wait(list(running), num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
                if not ready:
                    for index, silo in list(running.values()):
                        yield Failure(silo, f"no reply within the round deadline of {timeout:.0f}s", "timeout")
                        self._replace(index)
                    running.clear()
                    while pending:
                        yield Failure(
                            pending.popleft(), f"not started before the deadline of {timeout:.0f}s", "timeout"
                        )
                    return
                index, silo = running.pop(ready[0])
                try:
                    reply = ray.get(ready[0])
                except ray.exceptions.RayActorError as exc:
                    self._replace(index)
                    reply = Failure(silo, f"its Ray worker died ({type(exc).__name__})", "disconnected")
                except ray.exceptions.RayError as exc:
                    reply = Failure(silo, describe(exc))
                dispatch(index)  # keep the actor busy while the server folds in this reply
                if isinstance(reply, FitRes):
                    self._sizes[silo] = reply.num_examples
                    self._lost.discard(silo)  # a new fit: whatever session it lost is void anyway
                    if not reply.parameters:  # secure aggregation: the update stays in this actor
                        self._holder[silo] = index
                yield reply
        finally:
            for index, _ in list(running.values()):  # the caller stopped early: drop what is still running
                self._replace(index)

    def exchange(
        self, step: str, messages: Mapping[str, bytes], timeout: float, max_reply_bytes: int
    ) -> Iterator[ExchangeRes | Failure]:
        """A protocol step, each silo's message sent to the actor that trained it (an actor runs calls in turn).

        A silo that never kept a session is told so (``error``, as the silo itself says over any
        other transport); one whose session died with its actor is ``disconnected``.
        """
        calls: dict[Any, tuple[int, str]] = {}
        for silo, payload in messages.items():
            if silo in self._lost:
                yield Failure(silo, "its Ray worker was replaced since it trained: the session is gone", "disconnected")
            elif silo not in self._holder:
                yield Failure(silo, f"no secure-aggregation session for step '{step}' (no secagg fit on this silo)")
            else:
                index = self._holder[silo]
                calls[self._actors[index].exchange.remote(silo, step, payload)] = (index, silo)
        deadline = time.monotonic() + timeout
        while calls:
            ready, _ = ray.wait(list(calls), num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                for _, silo in calls.values():
                    yield Failure(silo, f"no reply within the step deadline of {timeout:.0f}s", "timeout")
                for index in {i for i, _ in calls.values()}:
                    self._replace(index)
                return
            index, silo = calls.pop(ready[0])
            try:
                reply = ray.get(ready[0])
            except ray.exceptions.RayError as exc:
                reply = Failure(silo, f"its Ray worker failed ({type(exc).__name__})", "disconnected")
            if isinstance(reply, bytes):
                too_big = len(reply) > max_reply_bytes
                reply = (
                    Failure(silo, f"{step} reply of {len(reply)} bytes is over {max_reply_bytes}", "rejected")
                    if too_big
                    else ExchangeRes(silo, step, reply)
                )
            yield reply

    def _replace(self, index: int) -> None:
        self._lost |= {s for s, i in self._holder.items() if i == index}  # their sessions die with it
        self._holder = {s: i for s, i in self._holder.items() if i != index}
        ray.kill(self._actors[index], no_restart=True)
        self._actors[index] = self._actor_class.remote(*self._args)

    def close(self) -> None:
        for actor in self._actors:
            ray.kill(actor, no_restart=True)
        self._actors = []
        if self._own and ray.is_initialized():
            ray.shutdown()
