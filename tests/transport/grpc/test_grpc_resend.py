"""An assignment lost on a broken link is sent again on the silo's next session (real gRPC on 127.0.0.1).

A silo whose process restarted has lost its work and gets it again; a silo that is still working
on it in the same process (its link broke mid-training) does not train twice.
"""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import numpy as np
from peers import Link, Silo, fit_in_background, until

from fedsilo.experiment.provision import load_kit
from fedsilo.runtime.deploy import tls_of
from fedsilo.transport.grpc import fedsilo_pb2 as pb
from fedsilo.transport.grpc.silo import SiloRunner, SiloSettings
from fedsilo.wire.arrays import to_bytes
from fedsilo.wire.messages import EvaluateIns, EvaluateRes, FitIns, FitRes

PARAMS = {"w": np.arange(4, dtype=np.float32)}


def test_a_silo_that_lost_its_session_gets_its_open_assignment_again(kits: Path, server) -> None:
    first = Silo(kits, "a", server.port)
    assert until(lambda: server.available() == ["a"], 10)
    started = time.monotonic()
    replies = fit_in_background(server, ["a"], PARAMS, timeout=20)
    assert until(lambda: first.tasks, 10)
    task = first.tasks[0]
    first.close()  # the silo process dies with the assignment in hand
    again = Silo(kits, "a", server.port)  # restarted, back within the grace period
    assert until(lambda: again.tasks, 5), "the open assignment was not sent on the new session"
    assert again.tasks[0].assignment_id == task.assignment_id
    update = to_bytes({"w": PARAMS["w"] + 1})
    header = pb.UploadHeader(
        assignment_id=task.assignment_id, total_bytes=len(update), sha256=hashlib.sha256(update).hexdigest()
    )
    ack = again.stub.Upload(iter([pb.UploadPart(header=header), pb.UploadPart(data=update)]), metadata=again.md)
    assert ack.complete
    assert again.stub.Submit(pb.Result(assignment_id=task.assignment_id, num_examples=4), metadata=again.md).accepted
    replies[0].join(20)
    assert isinstance(replies[1], FitRes)
    assert time.monotonic() - started < 8  # not the 20 s deadline
    again.close()


class Blocking:
    """Trains until the test lets it go; counts how often it was asked to."""

    def __init__(self) -> None:
        self.fits = 0
        self.release = threading.Event()

    def fit(self, ins: FitIns) -> FitRes:
        self.fits += 1
        assert self.release.wait(20)
        return FitRes("a", {k: v + 1 for k, v in ins.parameters.items()}, 5)

    def evaluate(self, ins: EvaluateIns) -> EvaluateRes:
        return EvaluateRes("a", 0.0, 1)

    def exchange(self, step: str, payload: bytes) -> bytes:
        return b""


def test_a_silo_whose_link_broke_mid_training_trains_once_and_its_update_arrives(kits: Path, server) -> None:
    link = Link(server.port)
    kit = load_kit(kits / "a")
    endpoint = Blocking()
    runner = SiloRunner(endpoint, SiloSettings(f"127.0.0.1:{link.port}", "a", kit.credential, tls_of(kit)))
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    assert until(lambda: server.available() == ["a"], 10)
    started = time.monotonic()
    replies = fit_in_background(server, ["a"], PARAMS, timeout=20)
    assert until(lambda: endpoint.fits, 10)
    link.cut()  # the hospital's link breaks while the silo trains
    assert until(lambda: link.connections >= 2 and server.available() == ["a"], 10)  # back on a new connection
    time.sleep(0.5)  # the assignment is sent again on the new session meanwhile
    endpoint.release.set()
    replies[0].join(20)
    assert isinstance(replies[1], FitRes) and replies[1].num_examples == 5
    np.testing.assert_array_equal(replies[1].parameters["w"], PARAMS["w"] + 1)
    assert endpoint.fits == 1  # the second copy of the assignment was not trained again
    assert time.monotonic() - started < 10
    server.close()
    thread.join(10)
    link.close()
