"""A host of many silos in one process: a simulation's worker process, or a Ray actor.

A host loads the user's task once and builds one model object, which every silo it serves trains
in turn (only parameters move). Each silo's :class:`~fedsilo.silo.agent.SiloAgent` (its client,
so its loaded data) is kept in an LRU cache between rounds, bounded by count and by bytes of loaded
data, so a silo that is not sampled again soon costs nothing once it has been evicted; what a silo
must carry between rounds is in the :class:`~fedsilo.silo.store.SiloStore`, not in the cache.

Instructions arrive as the JSON a deployed silo receives and are parsed as strictly; one that does
not parse is a :class:`Failure` reply, like any other problem of the silo's.
"""

from __future__ import annotations

import os
import sys
from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from fedsilo.errors import FedsiloError
from fedsilo.silo.agent import SiloAgent
from fedsilo.silo.store import SiloStore
from fedsilo.silo.task import TaskModule
from fedsilo.wire.arrays import ArrayDict
from fedsilo.wire.codecs import Codec
from fedsilo.wire.instructions import EvaluateInstructions, FitInstructions
from fedsilo.wire.messages import EvaluateIns, EvaluateRes, ExchangeRes, Failure, FitIns, FitRes

#: How a host hands a fit's update on (the local pool writes it into shared memory): the reply to send.
Upload = Callable[[FitRes, Codec], FitRes | Failure]


def load_task(task_path: Path, seed: int, threads: int) -> tuple[TaskModule, Any]:
    """Import the task and build its model once, computing on ``threads`` threads."""
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))  # before the task imports its libraries
    task = TaskModule.load(task_path)
    if "torch" in sys.modules:
        from fedsilo.client.torch import set_threads

        set_threads(threads)
    return task, task.build_model(seed)


class AgentCache:
    """Silos' agents, least recently used first, bounded by count and by bytes of loaded data."""

    def __init__(self, max_silos: int, max_bytes: int) -> None:
        self.max_silos, self.max_bytes = max_silos, max_bytes
        self._agents: OrderedDict[str, SiloAgent] = OrderedDict()
        self._held: dict[str, int] = {}  # bytes of data each cached silo held when it was last served

    def silos(self) -> list[str]:
        """The cached silos, least recently used first."""
        return list(self._agents)

    def get(self, silo: str) -> SiloAgent | None:
        return self._agents.get(silo)

    def use(self, silo: str, build: Callable[[], SiloAgent]) -> SiloAgent:
        """``silo``'s agent (built if it is not cached), now the most recently used."""
        agent = self._agents.pop(silo, None) or build()
        self._agents[silo] = agent
        return agent

    def settle(self, silo: str) -> None:
        """Count what ``silo``'s agent holds now that it was served, then evict until both bounds hold.

        The least recently used silos go first; ``silo`` itself always stays, even over the budget.
        """
        self._held[silo] = self._agents[silo].data_bytes()
        total = sum(self._held.values())
        while len(self._agents) > 1 and (len(self._agents) > self.max_silos or total > self.max_bytes):
            evicted, _ = self._agents.popitem(last=False)
            total -= self._held.pop(evicted, 0)


class SiloHost:
    """Serves any silo's jobs over one shared model object; :meth:`attach` the silos' store first."""

    def __init__(self, task: TaskModule, model: Any, seed: int, device: str, cache: AgentCache) -> None:
        self.task, self.model, self.seed, self.device, self.cache = task, model, seed, device, cache
        self.store: SiloStore | None = None

    def attach(self, store: SiloStore) -> None:
        """Where silos keep what they carry between rounds (a silo may run on another host next round)."""
        self.store = store

    def fit(
        self, silo: str, folders: Sequence[str], rnd: int, params: ArrayDict, instructions: str, upload: Upload | None
    ) -> FitRes | Failure:
        """Train ``silo``; its update is handed to ``upload``, or returned in the reply if ``None``.

        A secure-aggregation update stays in the silo's agent (the reply has no parameters).
        """
        try:
            todo = FitInstructions.from_json(instructions)
        except FedsiloError as exc:
            return Failure(silo, exc.one_line())
        res = self._agent(silo, folders).fit(FitIns(rnd, params, todo))
        self.cache.settle(silo)
        if upload is None or not isinstance(res, FitRes) or todo.secagg is not None:
            return res
        return upload(res, todo.codec)

    def evaluate(
        self, silo: str, folders: Sequence[str], rnd: int, params: ArrayDict, instructions: str
    ) -> EvaluateRes | Failure:
        try:
            todo = EvaluateInstructions.from_json(instructions)
        except FedsiloError as exc:
            return Failure(silo, exc.one_line())
        res = self._agent(silo, folders).evaluate(EvaluateIns(rnd, params, todo))
        self.cache.settle(silo)
        return res

    def exchange(self, silo: str, step: str, payload: bytes) -> ExchangeRes | Failure:
        """One protocol step of the session ``silo``'s agent holds since it trained here this round."""
        agent = self.cache.get(silo)
        if agent is None:
            return Failure(silo, "its session is not in this worker")
        reply = agent.exchange(step, payload)
        return reply if isinstance(reply, Failure) else ExchangeRes(silo, step, reply)

    def _agent(self, silo: str, folders: Sequence[str]) -> SiloAgent:
        if self.store is None:
            raise FedsiloError("a silo host was used before attach(store)", "call SiloHost.attach(store) first")
        store = self.store
        make = partial(self.task.make_client, [Path(f) for f in folders], self.seed, self.device, model=self.model)
        return self.cache.use(silo, lambda: SiloAgent(silo, make, store))
