"""All silos and the server of one round in one process: the reference driver of the step functions.

This is what a transport does, minus the network: call each silo's step, hand the messages to the
server's step, and pass the answers back. Silos in ``drop`` stop answering before the named step, as
a silo that crashes or loses its connection would. Tests and ``benchmarks/secagg.py`` use it; the
server loop will drive the same steps over its transport.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from fedsilo.privacy.secagg import server, silo
from fedsilo.privacy.secagg.messages import AdvertiseKeys, SecAggConfig, SecAggResult, payload_bytes
from fedsilo.privacy.secagg.wire import from_bytes, to_bytes

M = TypeVar("M")
STEPS = ("advertise", "share_keys", "masked_input", "unmask")


@dataclass(frozen=True, slots=True)
class Simulated:
    result: SecAggResult
    sent_bytes: Mapping[int, int]  # silo -> bytes it sent this round
    received_bytes: Mapping[int, int]  # silo -> bytes the server sent it this round
    silo_seconds: Mapping[int, float]  # silo -> compute time in its own steps (what it would spend deployed)
    server_seconds: float  # compute time of the server's steps


def simulate_round(
    config: SecAggConfig,
    updates: Mapping[int, Mapping[str, np.ndarray]],
    drop: Mapping[int, str] | None = None,
    wire: bool = False,
) -> Simulated:
    """Run every step for every silo; ``drop[u] = step`` makes silo ``u`` vanish before ``step``.

    With ``wire=True`` every message is serialized and parsed again (``wire.py``) on its way, and the
    byte counts are the real serialized sizes; otherwise they are payload sizes (:func:`payload_bytes`).
    """
    drop = dict(drop or {})
    bad = {u: s for u, s in drop.items() if s not in STEPS}
    if bad:
        raise ValueError(f"unknown steps {bad}; steps are {STEPS}")

    def alive(u: int, step: str) -> bool:
        return u not in drop or STEPS.index(step) < STEPS.index(drop[u])

    sent = dict.fromkeys(config.silos, 0)
    got = dict.fromkeys(config.silos, 0)
    spent = dict.fromkeys(config.silos, 0.0)
    clock = time.perf_counter

    def ship(message: M, counter: dict[int, int], u: int) -> M:
        if not wire:
            counter[u] += payload_bytes(message)
            return message
        data = to_bytes(message)
        counter[u] += len(data)
        return from_bytes(data, type(message))

    srv = server.start(config)
    states: dict[int, silo.SiloState] = {}
    adverts: list[AdvertiseKeys] = []
    for u in config.silos:
        if alive(u, "advertise"):
            t = clock()
            states[u], advert = silo.advertise(config, u)
            spent[u] += clock() - t
            adverts.append(ship(advert, sent, u))
    t = clock()
    srv, directory = server.collect_keys(srv, adverts)
    server_time = clock() - t
    dealt = []
    for u in list(states):
        if alive(u, "share_keys") and u in directory.keys:
            mine = ship(directory, got, u)
            t = clock()
            states[u], dealing = silo.share_keys(states[u], mine)
            spent[u] += clock() - t
            dealt.append(ship(dealing, sent, u))
    t = clock()
    srv, relayed = server.relay_shares(srv, dealt)
    server_time += clock() - t
    masked = []
    for u, shares in relayed.items():
        if alive(u, "masked_input"):
            shares = ship(shares, got, u)
            t = clock()
            states[u], vector = silo.masked_input(states[u], shares, updates[u])
            spent[u] += clock() - t
            masked.append(ship(vector, sent, u))
    t = clock()
    srv, request = server.request_unmask(srv, masked)
    server_time += clock() - t
    replies = []
    for u in request.survivors:
        if alive(u, "unmask"):
            mine_request = ship(request, got, u)
            t = clock()
            states[u], reply = silo.unmask(states[u], mine_request)
            spent[u] += clock() - t
            replies.append(ship(reply, sent, u))
    t = clock()
    result = server.finish(srv, replies)
    server_time += clock() - t
    return Simulated(result, sent, got, spent, server_time)
