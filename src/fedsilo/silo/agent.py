"""The silo agent: checks what the server sent, runs the client, and always answers.

Any exception from the user's code becomes a :class:`Failure` reply with one readable line, so
one broken silo never takes a round down. The client is built lazily (on the first message),
which keeps data loading off the start-up path and inside the silo's own process.

The fit instructions say how to train (the agent gives the client the silo's own seed), which
codec the update goes up in (:mod:`fedsilo.silo.uplink`), whether to train with local DP-SGD (a
capability the client has or has not: :class:`~fedsilo.client.base.TrainsPrivately`; the silo's
accountant is kept in its store) and whether to keep the update for secure aggregation: then it
stays in the agent's session for the round (:mod:`fedsilo.silo.secagg_session`), the fit reply
carries no parameters, and the server drives the protocol's steps through :meth:`SiloAgent.exchange`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from fedsilo.client.base import Client, TrainsPrivately, silo_seed
from fedsilo.errors import ConfigError, UpdateRejected, describe
from fedsilo.privacy.accounting import PrivacyAccountant
from fedsilo.silo.store import SiloStore
from fedsilo.silo.uplink import encode_upload
from fedsilo.wire.arrays import ArrayDict, ArraySpec, spec_of
from fedsilo.wire.deltas import delta
from fedsilo.wire.instructions import LocalDP, SecAggRequest, TrainSettings
from fedsilo.wire.messages import (
    EvaluateIns,
    EvaluateRes,
    Failure,
    FitIns,
    FitRes,
    clean_metrics,
    update_problems,
)

ACCOUNTANT = "local_dp_accountant"

if TYPE_CHECKING:
    from fedsilo.silo.secagg_session import SecAggSession


class SiloAgent:
    def __init__(self, name: str, make_client: Callable[[], Client], store: SiloStore | None = None) -> None:
        self.name = name
        self._make_client = make_client
        self._client: Client | None = None
        self._spec: dict[str, ArraySpec] | None = None
        self._secagg: SecAggSession | None = None
        self.store = store if store is not None else SiloStore()

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

    def _check_incoming(self, parameters: ArrayDict) -> None:
        self.client  # noqa: B018 - builds the client and the local model spec on first use
        assert self._spec is not None
        problems = update_problems(parameters, self._spec)
        if problems:
            raise UpdateRejected(
                "the global model from the server does not match this silo's model: " + "; ".join(problems),
                "run the same task module (same model) on the server and on every silo",
            )

    def fit(self, ins: FitIns) -> FitRes | Failure:
        try:
            self._check_incoming(ins.parameters)
            todo = ins.instructions
            store = self.store.scoped(todo.run)
            seed = silo_seed(todo.train.seed, ins.round, self.name)
            settings = replace(todo.train, seed=seed, round=max(ins.round, 1), proximal_mu=todo.strategy.proximal_mu)
            self._secagg = None  # a new round: whatever the last one left behind is void
            if todo.local_dp is None:
                params, n, metrics = self.client.fit(ins.parameters, settings)
            else:
                params, n, metrics = self._fit_private(ins, settings, todo.local_dp, store)
            if todo.secagg is not None:
                self._secagg = self._keep(ins, params, n, seed, todo.secagg)
                params = {}  # the update stays here; only masked bytes will leave
            else:
                params = encode_upload(self.name, ins.round, params, ins.parameters, todo.codec, seed, store)
            return FitRes(self.name, params, n, clean_metrics(metrics))
        except Exception as exc:  # user code may raise anything; the round must go on
            return Failure(self.name, describe(exc))

    def _fit_private(
        self, ins: FitIns, settings: TrainSettings, dp: LocalDP, store: SiloStore
    ) -> tuple[ArrayDict, int, dict[str, float]]:
        """A fit with local DP-SGD, continuing this silo's accountant as it was before this round."""
        client = self.client
        if not isinstance(client, TrainsPrivately):
            raise ConfigError(
                f"privacy.local_dp trains with Opacus, which needs a PyTorch task, not {type(client).__name__}",
                "remove privacy.local_dp, or use privacy.dp (central DP works with every task)",
            )
        saved = store.value(self.name, ACCOUNTANT, before_round=ins.round)
        accountant = PrivacyAccountant.from_dict(saved) if saved else PrivacyAccountant()
        fit = client.fit_private(ins.parameters, settings, dp, accountant)
        store.put_value(self.name, ACCOUNTANT, ins.round, fit.accountant.to_dict())
        return fit.parameters, fit.num_examples, fit.metrics

    def _keep(self, ins: FitIns, params: ArrayDict, n: int, seed: int, request: SecAggRequest) -> SecAggSession:
        """The round's secure-aggregation session, holding the update (trained - global, float64)."""
        from fedsilo.silo.secagg_session import SecAggSession, noise_of  # here: secure aggregation needs cryptography

        assert self._spec is not None
        problems = update_problems(params, self._spec)
        if problems:
            raise UpdateRejected(
                "the trained model does not match the global model: " + "; ".join(problems),
                "make the task's fit return the model it was given (same arrays, shapes and dtypes)",
            )
        # computed now, in the global model's order: the global arrays may be views valid only in this call
        update = delta(params, ins.parameters)
        return SecAggSession(ins.round, update, int(n), noise_of(request), np.random.default_rng([seed, 1]))

    def exchange(self, step: str, payload: bytes) -> bytes | Failure:
        """One secure-aggregation step of this round's session; any problem is a Failure, never a crash."""
        try:
            if self._secagg is None:
                raise UpdateRejected(
                    f"no secure-aggregation session for step '{step}' (no secagg fit this round on this silo)",
                    "the server must send a fit with secagg: true first",
                )
            return self._secagg.step(step, payload)
        except Exception as exc:
            return Failure(self.name, describe(exc))

    def evaluate(self, ins: EvaluateIns) -> EvaluateRes | Failure:
        try:
            self._check_incoming(ins.parameters)
            loss, n, metrics = self.client.evaluate(ins.parameters, ins.instructions)
            return EvaluateRes(self.name, float(loss), int(n), clean_metrics(metrics))
        except Exception as exc:
            return Failure(self.name, describe(exc))
