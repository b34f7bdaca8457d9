"""A round driven step by step, so tests can tamper with or withhold any message between two steps."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from fedsilo.privacy.secagg import layout_of, new_round, server, silo
from fedsilo.privacy.secagg.messages import KeyDirectory, SharesForSilo
from fedsilo.wire.arrays import ArrayDict


class Stepper:
    """Silos 1..n with distinct updates, run through the steps by hand."""

    def __init__(self, n: int, threshold: int) -> None:
        rng = np.random.default_rng(n)
        self.updates: dict[int, ArrayDict] = {
            u: {"w": (rng.normal(size=(4, 2)) * u - u).astype(np.float32), "b": np.array([u * 0.5], np.float32)}
            for u in range(1, n + 1)
        }
        self.config = new_round(range(1, n + 1), layout_of(self.updates[1]), rng, threshold=threshold)
        self.server = server.start(self.config)
        self.states: dict[int, silo.SiloState] = {}
        adverts = []
        for u in self.config.silos:
            self.states[u], msg = silo.advertise(self.config, u)
            adverts.append(msg)
        self.server, self.directory = server.collect_keys(self.server, adverts)

    def share(self) -> dict[int, SharesForSilo]:
        dealt = []
        for u in self.config.silos:
            self.states[u], msg = silo.share_keys(self.states[u], self.directory)
            dealt.append(msg)
        self.server, relayed = server.relay_shares(self.server, dealt)
        return relayed

    @property
    def keys(self) -> KeyDirectory:
        return self.directory


@pytest.fixture
def stepper() -> Callable[[int, int], Stepper]:
    return Stepper
