"""A silo's assignments, done one at a time in a thread of their own while the session stays served.

Each assignment is downloaded (never more bytes than the silo's own model needs, whatever the
server announces), answered by the silo endpoint (the user's training), uploaded and submitted.
One the server cancelled is dropped wherever it is: not started, its transfers ended, or its
result thrown away when the training comes back, and nothing is uploaded for it.

Training runs in this thread and cannot be interrupted from outside: a task stuck in user code
keeps the thread, and once the run is over the silo exits after a grace without it (see
:meth:`Worker.stop`). Enforcing a limit on a job's code belongs to a child process of the silo's,
as the standing federation will run it; this transport does not.
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
from collections.abc import Callable

from fedsilo.errors import ProtocolError
from fedsilo.transport.base import SiloEndpoint
from fedsilo.transport.grpc import fedsilo_pb2 as pb
from fedsilo.transport.grpc.transfers import AssignmentGone, SiloTransfers
from fedsilo.transport.grpc.wire import MAX_STEP_BYTES
from fedsilo.wire.arrays import ArrayDict, to_bytes, views_of
from fedsilo.wire.instructions import EvaluateInstructions, FitInstructions
from fedsilo.wire.messages import EvaluateIns, EvaluateRes, Failure, FitIns, FitRes

Log = Callable[[str], None]


class Worker:
    """Does ``endpoint``'s assignments in order, in a daemon thread; ``gone(id)``: dropped by the server."""

    def __init__(
        self,
        name: str,
        endpoint: SiloEndpoint,
        transfers: SiloTransfers,
        max_model_bytes: int | None,
        gone: Callable[[str], bool],
        log: Log,
    ) -> None:
        self.name, self.endpoint, self.transfers, self.log = name, endpoint, transfers, log
        self.max_model_bytes, self._gone = max_model_bytes, gone
        self._queue: queue.Queue[pb.Assignment | None] = queue.Queue()
        self.current: pb.Assignment | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True, name="fedsilo-work")
        self._thread.start()

    def put(self, job: pb.Assignment) -> None:
        self._queue.put(job)

    def stop(self, grace: float) -> bool:
        """No more assignments; wait ``grace`` seconds for the one in hand. False if it is still running."""
        self._queue.put(None)
        self._thread.join(grace)
        return not self._thread.is_alive()

    def _serve(self) -> None:
        while (job := self._queue.get()) is not None:
            if self._gone(job.assignment_id) or self.transfers.over.is_set():
                continue  # cancelled before it started, or the run is over
            self.current = job
            try:
                self._step(job) if job.kind == "secagg" else self._handle(job)
            finally:
                self.current = None

    def _bound(self, job: pb.Assignment) -> str:
        """Why the announced download is refused before anything is allocated for it, or ''."""
        bound = MAX_STEP_BYTES if job.kind == "secagg" else self.max_model_bytes
        if bound is None or job.model_bytes <= bound:
            return ""
        return (
            f"the server announced {job.model_bytes} bytes to download, more than this silo's model needs "
            f"({bound} bytes): do the server and this silo run the same task?"
        )

    def _refuse(self, job: pb.Assignment, reason: str) -> None:
        """Tell the server this silo cannot do ``job``, and why (the round records a failure)."""
        self.log(f"round {job.round}: {job.step or job.kind} failed on this silo ({reason})")
        with contextlib.suppress(AssignmentGone):
            self.transfers.submit(pb.Result(assignment_id=job.assignment_id, failure=reason))

    def _handle(self, job: pb.Assignment) -> None:
        if too_big := self._bound(job):
            self._refuse(job, too_big)
            return
        try:
            params = views_of(self.transfers.download(job))
            reply = self._answer(job, params)
            del params
            if self._gone(job.assignment_id):
                raise AssignmentGone("cancelled by the server while it ran; its result is dropped")
            self.log(summary(job, reply))
            if isinstance(reply, FitRes):
                self.transfers.upload(job, to_bytes(reply.parameters))
                result = pb.Result(num_examples=reply.num_examples, metrics_json=json.dumps(dict(reply.metrics)))
            elif isinstance(reply, EvaluateRes):
                result = pb.Result(
                    num_examples=reply.num_examples, loss=reply.loss, metrics_json=json.dumps(dict(reply.metrics))
                )
            else:
                result = pb.Result(failure=reply.reason)
            result.assignment_id = job.assignment_id
            self.transfers.submit(result)
        except AssignmentGone as exc:
            self.log(f"round {job.round}: {job.kind} abandoned, {exc}: dropped")
        except Exception as exc:  # e.g. an update that cannot be serialized: say so, and stay up for the next round
            self._refuse(job, f"{type(exc).__name__}: {' '.join(str(exc).split())}")

    def _answer(self, job: pb.Assignment, params: ArrayDict) -> FitRes | EvaluateRes | Failure:
        """The endpoint's reply, after parsing the server's instructions strictly (a typo is a failure)."""
        try:
            if job.kind == "fit":
                return self.endpoint.fit(FitIns(job.round, params, FitInstructions.from_json(job.config_json)))
            return self.endpoint.evaluate(
                EvaluateIns(job.round, params, EvaluateInstructions.from_json(job.config_json))
            )
        except ProtocolError as exc:
            return Failure(self.name, exc.one_line())

    def _step(self, job: pb.Assignment) -> None:
        """A secure-aggregation step: download the server's message, answer it, upload the answer."""
        if too_big := self._bound(job):
            self._refuse(job, too_big)
            return
        try:
            reply = self.endpoint.exchange(job.step, bytes(self.transfers.download(job)))
            if isinstance(reply, Failure):
                self.log(f"secure aggregation {job.step} failed: {reply.reason}")
                self.transfers.submit(pb.Result(assignment_id=job.assignment_id, failure=reply.reason))
                return
            if self._gone(job.assignment_id):
                raise AssignmentGone("cancelled by the server while it ran; its reply is dropped")
            self.transfers.upload(job, reply)
            self.transfers.submit(pb.Result(assignment_id=job.assignment_id))
        except AssignmentGone as exc:
            self.log(f"secure aggregation {job.step} abandoned, {exc}: dropped")
        except Exception as exc:  # a transfer error: the server drops this silo from the step
            self.log(f"secure aggregation {job.step} failed on this silo ({type(exc).__name__}: {exc})")


def summary(job: pb.Assignment, reply: FitRes | EvaluateRes | Failure) -> str:
    if isinstance(reply, Failure):
        return f"round {job.round}: {job.kind} failed: {reply.reason}"
    metrics = " ".join(f"{k}={v:.4g}" for k, v in sorted(reply.metrics.items())[:4])
    return f"round {job.round}: {job.kind} on {reply.num_examples} examples {metrics}".rstrip()
