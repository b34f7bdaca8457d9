"""The transport contract: in-process, the worker pool, Ray and gRPC give the same replies and failure kinds.

Each transport is built once for this module over the same silo folders (the NumPy task of
tests/tasks/linear_numpy.py, whose marker files make a silo raise, sleep, die or send a bad
update) and is asked the same calls. Every reply is compared with what a :class:`SiloAgent`
called directly gives, so the four agree with each other: the same examples, parameters (to
1e-6) and metrics, and the same :class:`Failure` kind for the same misbehaviour.

Where the contract is stated: at what the round records. For a plain fit that is the transport's
reply passed through the server's own check of an update (``server/uplink.py`` ``receive_fit``,
as the plain gatherer applies it to every ``FitRes``); for everything else it is the transport's
reply itself. The two differ only for an invalid update (NaN, wrong shape, unexpected arrays):
the pool must check it in the worker, because it writes the update into a shared-memory slot
of the model's layout, and replies ``Failure("rejected")``; in-process and Ray carry the update
as it is and the server's check rejects it. gRPC refuses an update larger than the model plus
an allowance on the upload's header (the server decides; the round does not wait for its
deadline), and carries any other update to the server's check. Either way the round records
``rejected``.

One case does not apply to one transport: a silo whose process dies, in-process, where the silo
runs in the test's own process (an exiting silo would end the test run, so there is no silo
process to lose; what a silo's code does wrong is the ``error`` case).

gRPC is the processes runtime: one real ``fedsilo silo`` process per silo over mutual TLS on
127.0.0.1, with heartbeats of 0.5 s (so a dead silo is noticed within about 2 s).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from fedsilo.server.uplink import receive_fit
from fedsilo.silo.agent import SiloAgent
from fedsilo.silo.task import TaskModule
from fedsilo.wire.arrays import spec_of
from fedsilo.wire.codecs import Codec
from fedsilo.wire.instructions import FitInstructions, SecAggRequest, TrainSettings
from fedsilo.wire.messages import (
    DEFAULT_MAX_UPDATE_BYTES,
    EvaluateIns,
    EvaluateRes,
    ExchangeRes,
    Failure,
    FitIns,
    FitRes,
)
from helpers import LINEAR_TASK, attached_pool, write_silo_folder

SIZES = {"a": 12, "b": 20, "c": 16, "odd": 10, "doomed": 8}  # odd misbehaves on cue; doomed dies once
GOOD = ("a", "b", "c")  # also the secure-aggregation group
TRANSPORTS = ("inproc", "pool", "ray", "grpc")
INSTRUCTIONS = FitInstructions(TrainSettings(seed=3, lr=0.5, batch_size=4))
SLOW_S, DEADLINE_S = 3.0, 1.5  # a slow silo sleeps longer than the deadline
PATIENT_S = 30.0  # a deadline no well-behaved reply comes near


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("contract")
    return {
        name: write_silo_folder(root / "data" / name, n, n_test=6 + i, seed=300 + i)
        for i, (name, n) in enumerate(SIZES.items())
    }


@pytest.fixture(scope="module")
def params() -> dict[str, np.ndarray]:
    return TaskModule.load(LINEAR_TASK).initial_parameters(0)


def agent(name: str, folder: Path) -> SiloAgent:
    return SiloAgent(name, partial(TaskModule.load(LINEAR_TASK).make_client, [folder], 0, "cpu"))


@pytest.fixture(scope="module", params=TRANSPORTS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def transport(kind: str, folders: dict[str, Path], params: Any) -> Iterator[Any]:
    """One transport of ``kind`` over all the silos, built once for the module."""
    root = folders["a"].parents[1] / kind
    root.mkdir()
    built = _build(kind, folders, params, root)
    try:
        assert sorted(built.available()) == sorted(SIZES)
        yield built
    finally:
        built.close()


def _build(kind: str, folders: dict[str, Path], params: Any, root: Path) -> Any:
    if kind == "inproc":
        from fedsilo.transport.inproc import InProcessTransport

        return InProcessTransport({name: agent(name, f) for name, f in folders.items()})
    if kind == "pool":
        silos = {name: [f] for name, f in folders.items()}
        return attached_pool(LINEAR_TASK, silos, params, root / "store", seed=0, workers=2, device="cpu")
    if kind == "ray":
        pytest.importorskip("ray", reason="the ray extra is not installed")
        from fedsilo.runtime.ray import RayTransport

        ray_transport = RayTransport(LINEAR_TASK, {n: [f] for n, f in folders.items()}, 0, workers=2, device="cpu")
        ray_transport.attach(root / "store")
        return ray_transport
    pytest.importorskip("grpc", reason="the deploy extra is not installed")
    from fedsilo.experiment.config import load_config
    from fedsilo.runtime.processes import start_processes
    from fedsilo.tracking.run_dir import RunDir

    spec = {
        "name": "contract",
        "task": str(LINEAR_TASK),
        "silos": [{"name": name, "data": str(f)} for name, f in folders.items()],
        "rounds": 1,
        "train": {"device": "cpu"},
        "output": str(root / "runs"),
        "server": {"heartbeat_s": 0.5, "wait_timeout_s": 60, "stall_timeout_s": 10},
    }
    (root / "experiment.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    config, _ = load_config(root / "experiment.yaml")
    (root / "run").mkdir()
    return start_processes(config, RunDir(root / "run"))


@contextmanager
def misbehaving(folder: Path, marker: str, text: str = "") -> Iterator[None]:
    """``folder``'s silo misbehaves as ``marker`` says (tests/tasks/linear_numpy.py) inside the block."""
    (folder / marker).write_text(text)
    try:
        yield
    finally:
        (folder / marker).unlink(missing_ok=True)


def settled(reply: Any) -> Any:
    """A reply whose arrays are the caller's own (the pool's are views into its shared memory)."""
    if isinstance(reply, FitRes):
        return FitRes(
            reply.silo, {k: np.array(v) for k, v in reply.parameters.items()}, reply.num_examples, reply.metrics
        )
    return reply


def recorded(reply: FitRes | Failure, params: Any) -> FitRes | Failure:
    """What the round records for a plain fit's reply: the server's own check of an update, as the gatherer runs it."""
    if not isinstance(reply, FitRes):
        return reply
    got = receive_fit(reply, params, spec_of(params), Codec(), DEFAULT_MAX_UPDATE_BYTES)
    return got.result if got.result is not None else Failure(reply.silo, got.rejected or "", "rejected")


def fit(transport: Any, silos: Sequence[str], params: Any, timeout: float, ins: FitInstructions = INSTRUCTIONS) -> dict:
    """Round 1's fit replies by silo (one per silo, whatever happened to it)."""
    replies = [settled(r) for r in transport.fit(list(silos), FitIns(1, params, ins), timeout)]
    assert sorted(r.silo for r in replies) == sorted(silos), "one reply per silo"
    return {r.silo: r for r in replies}


def assert_same_fit(reply: Any, expected: FitRes | Failure) -> None:
    assert isinstance(expected, FitRes) and isinstance(reply, FitRes), reply
    assert reply.num_examples == expected.num_examples
    assert list(reply.parameters) == list(expected.parameters)
    for key, value in expected.parameters.items():
        np.testing.assert_allclose(reply.parameters[key], value, rtol=0, atol=1e-6)
    assert reply.metrics.keys() == expected.metrics.keys()
    for key, value in expected.metrics.items():
        assert reply.metrics[key] == pytest.approx(value, abs=1e-6)


def advertise(silos: Iterable[str], rnd: int, params: Any) -> dict[str, bytes]:
    """The advertise step's envelope for each silo (numbers 1..n in ``GOOD``'s order; 1 for another)."""
    pytest.importorskip("cryptography", reason="secure aggregation needs the deploy extra")
    from fedsilo.privacy.secagg import envelope, layout_of, new_round
    from fedsilo.privacy.secagg.wire import to_bytes

    config = to_bytes(new_round(list(range(1, len(GOOD) + 1)), layout_of(params), np.random.default_rng(rnd)))
    number = {s: i for i, s in enumerate(GOOD, start=1)}
    return {s: envelope.pack({"round": rnd, "silo": number.get(s, 1), "step": "advertise"}, config) for s in silos}


def secagg_fit(transport: Any, rnd: int, params: Any, folders: dict[str, Path]) -> None:
    """A fit that keeps each update in its silo's session (and replies with examples only)."""
    pytest.importorskip("cryptography", reason="secure aggregation needs the deploy extra")
    ins = FitInstructions(INSTRUCTIONS.train, secagg=SecAggRequest())
    replies = [settled(r) for r in transport.fit(list(GOOD), FitIns(rnd, params, ins), PATIENT_S)]
    for reply in replies:
        expected = agent(reply.silo, folders[reply.silo]).fit(FitIns(rnd, params, ins))
        assert isinstance(reply, FitRes) and isinstance(expected, FitRes), reply
        assert (reply.parameters, reply.num_examples) == ({}, expected.num_examples)


# --- the contract ------------------------------------------------------------------------------


def test_fit_replies_are_the_silos_own(transport, folders, params) -> None:
    replies = fit(transport, GOOD, params, PATIENT_S)
    for name in GOOD:
        expected = agent(name, folders[name]).fit(FitIns(1, params, INSTRUCTIONS))
        assert_same_fit(recorded(replies[name], params), expected)


def test_evaluate_replies_are_the_silos_own(transport, folders, params) -> None:
    replies = {r.silo: r for r in transport.evaluate(list(GOOD), EvaluateIns(1, params), PATIENT_S)}
    assert sorted(replies) == sorted(GOOD)
    for name in GOOD:
        expected = agent(name, folders[name]).evaluate(EvaluateIns(1, params))
        reply = replies[name]
        assert isinstance(expected, EvaluateRes) and isinstance(reply, EvaluateRes), reply
        assert reply.num_examples == expected.num_examples
        assert reply.loss == pytest.approx(expected.loss, abs=1e-6)
        assert reply.metrics == pytest.approx(expected.metrics, abs=1e-6)


def test_an_exchange_step_reaches_the_session_of_each_silo(transport, folders, params) -> None:
    from fedsilo.privacy.secagg.messages import AdvertiseKeys
    from fedsilo.privacy.secagg.wire import from_bytes

    secagg_fit(transport, 2, params, folders)
    replies = {r.silo: r for r in transport.exchange("advertise", advertise(GOOD, 2, params), PATIENT_S, 10_000)}
    assert sorted(replies) == sorted(GOOD)
    for number, name in enumerate(GOOD, start=1):
        reply = replies[name]
        assert isinstance(reply, ExchangeRes) and reply.step == "advertise", reply
        assert from_bytes(reply.payload, AdvertiseKeys).silo == number


def test_an_exchange_reply_over_the_size_limit_is_rejected(transport, folders, params) -> None:
    secagg_fit(transport, 3, params, folders)
    started = time.monotonic()
    replies = list(transport.exchange("advertise", advertise(GOOD, 3, params), PATIENT_S, 16))
    assert time.monotonic() - started < PATIENT_S / 3  # decided when the reply came, not at the deadline
    assert sorted(r.silo for r in replies) == sorted(GOOD)
    for reply in replies:
        assert isinstance(reply, Failure) and reply.kind == "rejected", reply
        assert re.fullmatch(r"advertise reply of \d+ bytes is over 16", reply.reason), reply.reason


def test_an_exchange_with_a_silo_that_has_no_session_is_its_error(transport, params) -> None:
    [reply] = transport.exchange("advertise", advertise(["odd"], 3, params), PATIENT_S, 10_000)
    assert isinstance(reply, Failure) and reply.kind == "error", reply
    assert reply.silo == "odd" and "no secure-aggregation session" in reply.reason


def test_a_silo_whose_code_raises_is_an_error(transport, folders, params) -> None:
    with misbehaving(folders["odd"], "RAISE"):
        replies = fit(transport, ["odd"], params, PATIENT_S)
    reply = recorded(replies["odd"], params)
    assert isinstance(reply, Failure) and reply.kind == "error", reply
    assert "RuntimeError: training crashed in odd" in reply.reason


@pytest.mark.parametrize("marker", ["NAN", "BAD_SHAPE", "HUGE"])
def test_an_invalid_or_oversize_update_is_rejected(kind, transport, folders, params, marker) -> None:
    started = time.monotonic()
    with misbehaving(folders["odd"], marker):
        replies = fit(transport, ["odd"], params, PATIENT_S)
    assert time.monotonic() - started < PATIENT_S / 3  # decided when the update came, not at the deadline
    reply = recorded(replies["odd"], params)
    assert isinstance(reply, Failure) and reply.kind == "rejected", reply
    if kind in ("pool", "grpc") and marker == "HUGE":  # refused before it reached the server's check
        assert replies["odd"].kind == "rejected"


def test_a_silo_slower_than_the_deadline_times_out_and_the_others_answer(kind, transport, folders, params) -> None:
    started, arrived = time.monotonic(), {}
    with misbehaving(folders["odd"], "SLEEP_ONCE", str(SLOW_S)):
        replies = {}
        for reply in transport.fit(["a", "odd"], FitIns(1, params, INSTRUCTIONS), DEADLINE_S):
            replies[reply.silo], arrived[reply.silo] = settled(reply), time.monotonic() - started
    assert sorted(replies) == ["a", "odd"]
    assert_same_fit(recorded(replies["a"], params), agent("a", folders["a"]).fit(FitIns(1, params, INSTRUCTIONS)))
    assert isinstance(replies["odd"], Failure) and replies["odd"].kind == "timeout", replies["odd"]
    if kind != "inproc":  # in-process calls cannot be interrupted: a late reply becomes a timeout
        assert arrived["odd"] < SLOW_S - 0.5  # given at the deadline, not when the silo got round to it


def test_a_silo_whose_process_dies_is_disconnected(kind, transport, folders, params) -> None:
    if kind == "inproc":
        pytest.skip(
            "does not apply in-process: the silo runs in the test's own process, so a silo that exits would "
            "end the test run; there is no silo process to lose"
        )
    with misbehaving(folders["doomed"], "DIE_ONCE"):
        replies = fit(transport, ["a", "doomed"], params, PATIENT_S)
    assert_same_fit(recorded(replies["a"], params), agent("a", folders["a"]).fit(FitIns(1, params, INSTRUCTIONS)))
    assert isinstance(replies["doomed"], Failure) and replies["doomed"].kind == "disconnected", replies["doomed"]
