"""The Ray runtime: the simulation's work spread over a Ray cluster, for experiments that outgrow one machine.

``runtime: {kind: ray}`` starts a local Ray instance; ``runtime: {kind: ray, address: auto}``
joins a running cluster (``ray start --head`` on one machine, ``ray start --address=HEAD:6379``
on the others). Each worker is a Ray actor around a :class:`~fedsilo.silo.host.SiloHost`, as a
local simulation worker is: the task loaded once, one model object, an LRU cache of silo agents
between rounds. The global model is put in Ray's object store once per round and read by every
actor without a copy per silo; jobs go out through the local pool's dispatcher
(:mod:`fedsilo.runtime.dispatch`: largest silo first to whichever actor is free, one deadline).
Seeds derive from (seed, round, silo) and each actor uses one thread, so the same seed gives the
same model as the local engine. Silo data folders must be readable at the same paths on every
node (a shared file system). What silos keep between rounds (top-k residuals, local-DP
accountants) is written to the run folder's ``silo_store/``, which every actor reads: on a cluster
of several machines the run folder (``output:``) must be on the shared file system too, or an
actor on another node starts the silo's residual afresh and its local epsilon from that node's
last record.

Ray is the one framework here that pickles: inside a Ray cluster, which is one trust domain (the
experimenter's own machines). Nothing crosses to another party this way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import ray

from fedsilo.errors import ConfigError, FedsiloError
from fedsilo.runtime.dispatch import Dispatcher, Job, Reply, WorkerDied
from fedsilo.runtime.silo_folders import SiloFolders
from fedsilo.silo.agent import describe
from fedsilo.silo.host import AgentCache, SiloHost, load_task
from fedsilo.silo.store import SiloStore
from fedsilo.wire.arrays import ArrayDict
from fedsilo.wire.messages import EvaluateIns, EvaluateRes, ExchangeRes, Failure, FitIns, FitRes

#: A job for an actor: how to call it (it returns the call's object ref).
RayCall = Callable[[Any], Any]


class SiloWorker:
    """One Ray actor: a silo host, attached to the run's silo store before its first job."""

    def __init__(self, task_path: str, seed: int, device: str, max_cached_silos: int, max_cached_bytes: int) -> None:
        task, model = load_task(Path(task_path), seed, threads=1)  # as many actors as CPUs, one thread each
        self._host = SiloHost(task, model, seed, device, AgentCache(max_cached_silos, max_cached_bytes))

    def attach(self, store_dir: str) -> None:
        self._host.attach(SiloStore(Path(store_dir)))

    def fit(self, silo: str, folders: Sequence[str], params: ArrayDict, rnd: int, todo: str) -> FitRes | Failure:
        return self._host.fit(silo, folders, rnd, params, todo, upload=None)  # the update goes back in the reply

    def evaluate(
        self, silo: str, folders: Sequence[str], params: ArrayDict, rnd: int, todo: str
    ) -> EvaluateRes | Failure:
        return self._host.evaluate(silo, folders, rnd, params, todo)

    def exchange(self, silo: str, step: str, payload: bytes) -> ExchangeRes | Failure:
        return self._host.exchange(silo, step, payload)


def _call(method: str, *args: Any) -> RayCall:
    return lambda actor: getattr(actor, method).remote(*args)


class RayActors:
    """The actors behind the dispatcher's :class:`~fedsilo.runtime.dispatch.Backend` protocol."""

    def __init__(self, args: tuple[Any, ...], count: int) -> None:
        self._class: Any = ray.remote(num_cpus=1)(SiloWorker)  # Ray's stubs do not type actor handles
        self._args = args
        self._store_dir: str | None = None
        self.actors: list[Any] = [self._class.remote(*args) for _ in range(max(1, count))]

    def attach(self, store_dir: Path) -> None:
        self._store_dir = str(store_dir)
        for actor in self.actors:
            actor.attach.remote(self._store_dir)  # an actor runs its calls in order: this one comes first

    def workers(self) -> int:
        return len(self.actors)

    def start(self, index: int, work: RayCall) -> Any:
        if self._store_dir is None:
            raise FedsiloError(
                "the Ray transport was used before attach(store_dir)", "call RayTransport.attach(store_dir) first"
            )
        return work(self.actors[index])

    def wait(self, running: Sequence[Any], timeout: float) -> Sequence[Any]:
        ready, _ = ray.wait(list(running), num_returns=1, timeout=timeout)
        return ready

    def reply(self, index: int, handle: Any, silo: str) -> Reply:
        try:
            return cast(Reply, ray.get(handle))
        except ray.exceptions.RayActorError as exc:
            raise WorkerDied(f"its Ray worker died ({type(exc).__name__})") from None
        except ray.exceptions.RayError as exc:
            return Failure(silo, describe(exc))

    def replace(self, index: int) -> None:
        ray.kill(self.actors[index], no_restart=True)
        self.actors[index] = self._class.remote(*self._args)
        if self._store_dir is not None:
            self.actors[index].attach.remote(self._store_dir)

    def close(self) -> None:
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors = []


class RayTransport(SiloFolders):
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
        cache_bytes: int = 64 << 20,
    ) -> None:
        super().__init__(silos)
        self._own = not ray.is_initialized()
        if self._own:
            _start_ray(workers, address)
        count = workers if isinstance(workers, int) and workers > 0 else int(ray.cluster_resources().get("CPU", 1))
        per_actor = cache_bytes // max(1, count)  # the budget is for all actors together
        self._actors = RayActors((str(task_path), seed, device, max_cached_silos, per_actor), count)
        self._dispatch: Dispatcher[RayCall, Any] = Dispatcher(self._actors)

    def attach(self, store_dir: Path) -> None:
        """Where silos keep what they carry between rounds: the run folder's store."""
        self._actors.attach(store_dir)

    def fit(self, silos: Sequence[str], ins: FitIns, timeout: float) -> Iterator[FitRes | Failure]:
        folders, todo = self.folders_of(silos), ins.instructions.to_json()
        model = ray.put(dict(ins.parameters))  # the one broadcast of this call; actors read it from the object store
        jobs = [Job(s, _call("fit", s, folders[s], model, ins.round, todo)) for s in silos]
        yield from cast(Iterator[FitRes | Failure], self._dispatch.run(jobs, timeout))

    def evaluate(self, silos: Sequence[str], ins: EvaluateIns, timeout: float) -> Iterator[EvaluateRes | Failure]:
        folders, todo = self.folders_of(silos), ins.instructions.to_json()
        model = ray.put(dict(ins.parameters))
        jobs = [Job(s, _call("evaluate", s, folders[s], model, ins.round, todo)) for s in silos]
        yield from cast(Iterator[EvaluateRes | Failure], self._dispatch.run(jobs, timeout))

    def exchange(
        self, step: str, messages: Mapping[str, bytes], timeout: float, max_reply_bytes: int
    ) -> Iterator[ExchangeRes | Failure]:
        """A protocol step, each silo's message sent to the actor that trained it this round."""
        yield from self._dispatch.exchange(
            step, messages, timeout, max_reply_bytes, lambda silo, payload: _call("exchange", silo, step, payload)
        )

    def close(self) -> None:
        self._actors.close()
        if self._own and ray.is_initialized():
            ray.shutdown()


def _start_ray(workers: int | str, address: str | None) -> None:
    """A local Ray instance with ``workers`` CPUs, or the running cluster at ``address``."""
    local_cpus = workers if isinstance(workers, int) and address is None and workers > 0 else None
    try:
        ray.init(
            address=address, num_cpus=local_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False
        )
    except ConnectionError as exc:
        raise ConfigError(
            f"cannot join the Ray cluster at {address!r}: {exc}",
            "start it with `ray start --head`, or leave runtime.address unset for a local one",
        ) from None
