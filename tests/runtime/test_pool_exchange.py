"""WorkerPool.exchange through the real worker pool: each step reaches the worker that trained the silo.

Two workers, three silos: after a secagg fit, every silo's advertise step is answered by its own
session; when one worker's process is killed between the fit and the step (dead before the step
is sent to it), the silos it held are reported as disconnected and the others still answer.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest

from fedsilo.privacy.secagg import envelope, layout_of, new_round
from fedsilo.privacy.secagg.messages import AdvertiseKeys
from fedsilo.privacy.secagg.wire import from_bytes, to_bytes
from fedsilo.silo.task import TaskModule
from fedsilo.wire.instructions import FitInstructions, SecAggRequest, TrainSettings
from fedsilo.wire.messages import ExchangeRes, Failure, FitIns, FitRes
from helpers import attached_pool

pytest.importorskip("cryptography")
NAMES = ("a", "b", "c")


def advertise_messages(params: dict[str, np.ndarray]) -> dict[str, bytes]:
    config = to_bytes(new_round([1, 2, 3], layout_of(params), np.random.default_rng(0)))
    return {s: envelope.pack({"round": 1, "silo": i + 1, "step": "advertise"}, config) for i, s in enumerate(NAMES)}


@pytest.mark.parametrize("kill", [False, True], ids=["all-alive", "one-worker-killed"])
def test_steps_reach_the_worker_holding_each_session(tmp_path: Path, linear_task: Path, write_silo, kill) -> None:
    folders = {name: [write_silo(tmp_path / name, 6 + 3 * i, seed=i)] for i, name in enumerate(NAMES)}
    params = TaskModule.load(linear_task).initial_parameters(0)
    with attached_pool(linear_task, folders, params, tmp_path / "store", seed=0, workers=2, device="cpu") as pool:
        fits = list(
            pool.fit(
                list(NAMES),
                FitIns(1, params, FitInstructions(TrainSettings(seed=0, lr=0.1), secagg=SecAggRequest())),
                timeout=60,
            )
        )
        assert all(isinstance(r, FitRes) and r.parameters == {} for r in fits)
        lost: set[str] = set()
        if kill:
            holders = pool._dispatch.holder
            lost = {s for s, i in holders.items() if i == holders["a"]}
            os.kill(pool._workers.processes[holders["a"]].process.pid, signal.SIGKILL)
            pool._workers.processes[holders["a"]].process.join(10)  # dead before the step is sent: its pipe is broken
        replies = {r.silo: r for r in pool.exchange("advertise", advertise_messages(params), 30, 10_000)}
        assert set(replies) == set(NAMES)
        for i, name in enumerate(NAMES):
            if name in lost:
                assert isinstance(replies[name], Failure) and replies[name].kind == "disconnected"
            else:
                reply = replies[name]
                assert isinstance(reply, ExchangeRes) and from_bytes(reply.payload, AdvertiseKeys).silo == i + 1
        assert isinstance(
            next(iter(pool.fit(["a"], FitIns(2, params, FitInstructions(TrainSettings(seed=0))), timeout=60))), FitRes
        )
