"""The silo agent: checks what the server sent, runs the client, and always answers.

Any exception from the user's code becomes a :class:`Failure` reply with one readable line, so
one broken silo never takes a round down. The client is built lazily (on the first message),
which keeps data loading off the start-up path and inside the silo's own process.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable

from fedsilo.arrays import ArraySpec, spec_of
from fedsilo.client.base import Client, silo_seed
from fedsilo.errors import FedsiloError, UpdateRejected
from fedsilo.messages import (
    EvaluateIns,
    EvaluateRes,
    Failure,
    FitIns,
    FitRes,
    clean_metrics,
    update_problems,
)


def describe(exc: BaseException) -> str:
    """One line naming the error and where in user code it happened."""
    if isinstance(exc, FedsiloError):
        return exc.one_line()
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    message = " ".join(str(exc).split())  # one line, whatever the exception's text looks like
    return f"{type(exc).__name__}: {message}{where}"


class SiloAgent:
    def __init__(self, name: str, make_client: Callable[[], Client], seed: int = 0) -> None:
        self.name = name
        self._make_client = make_client
        self._seed = seed
        self._client: Client | None = None
        self._spec: dict[str, ArraySpec] | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = self._make_client()
            self._spec = spec_of(self._client.get_parameters())
        return self._client

    def data_bytes(self) -> int:
        """Bytes of data this silo's client holds (0 before it has loaded any, or if it cannot tell)."""
        size = getattr(self._client, "data_bytes", None)
        return int(size()) if callable(size) else 0

    def _check_incoming(self, ins: FitIns | EvaluateIns) -> None:
        client = self.client  # builds the client and the local model spec on first use
        assert self._spec is not None and client is not None
        problems = update_problems(ins.parameters, self._spec)
        if problems:
            raise UpdateRejected(
                "the global model from the server does not match this silo's model: " + "; ".join(problems),
                "run the same task module (same model) on the server and on every silo",
            )

    def fit(self, ins: FitIns) -> FitRes | Failure:
        try:
            self._check_incoming(ins)
            seed = silo_seed(int(ins.config.get("seed", self._seed)), ins.round, self.name)
            config = {**ins.config, "seed": seed, "round": max(ins.round, 1)}
            params, n, metrics = self.client.fit(ins.parameters, config)
            return FitRes(self.name, params, n, clean_metrics(metrics))
        except Exception as exc:  # user code may raise anything; the round must go on
            return Failure(self.name, describe(exc))

    def evaluate(self, ins: EvaluateIns) -> EvaluateRes | Failure:
        try:
            self._check_incoming(ins)
            loss, n, metrics = self.client.evaluate(ins.parameters, ins.config)
            return EvaluateRes(self.name, float(loss), int(n), clean_metrics(metrics))
        except Exception as exc:
            return Failure(self.name, describe(exc))
