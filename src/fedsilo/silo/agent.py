"""The silo agent: checks what the server sent, runs the client, and always answers.

Any exception from the user's code becomes a :class:`Failure` reply with one readable line, so
one broken silo never takes a round down. The client is built lazily (on the first message),
which keeps data loading off the start-up path and inside the silo's own process.

With secure aggregation (``secagg: true`` in the fit config) the trained update stays in the agent's
session for the round (:mod:`fedsilo.silo.secagg_session`) and the fit reply carries no parameters;
the server then drives the protocol's steps through :meth:`SiloAgent.exchange`.

The server's fit instruction may ask for a codec (the agent then sends its encoded update, see
:mod:`fedsilo.silo.uplink`) and for local DP-SGD (the agent then trains a PyTorch task with
Opacus and reports the silo's own ``epsilon``); what either keeps between rounds is in ``state``.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from fedsilo.arrays import ArrayDict, ArraySpec, spec_of
from fedsilo.client.base import Client, silo_seed
from fedsilo.errors import ConfigError, FedsiloError, UpdateRejected
from fedsilo.messages import (
    EvaluateIns,
    EvaluateRes,
    Failure,
    FitIns,
    FitRes,
    clean_metrics,
    update_problems,
)
from fedsilo.silo.state import SiloStore
from fedsilo.silo.uplink import encode_upload, local_dp_of

ACCOUNTANT = "local_dp_accountant"

if TYPE_CHECKING:
    from fedsilo.silo.secagg_session import SecAggSession


def describe(exc: BaseException) -> str:
    """One line naming the error and where in user code it happened."""
    if isinstance(exc, FedsiloError):
        return exc.one_line()
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    message = " ".join(str(exc).split())  # one line, whatever the exception's text looks like
    return f"{type(exc).__name__}: {message}{where}"


class SiloAgent:
    def __init__(
        self, name: str, make_client: Callable[[], Client], seed: int = 0, state: SiloStore | None = None
    ) -> None:
        self.name = name
        self._make_client = make_client
        self._seed = seed
        self._client: Client | None = None
        self._private: Any = None  # the LocalDPClient over the same model and data, once asked for
        self._spec: dict[str, ArraySpec] | None = None
        self._secagg: SecAggSession | None = None
        self.state = state if state is not None else SiloStore()

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
            self._secagg = None  # a new round: whatever the last one left behind is void
            dp = local_dp_of(ins.config)
            client = self.client if dp is None else self._private_client(dp)
            params, n, metrics = client.fit(ins.parameters, config)
            if dp is not None:
                self.state.put_value(self.name, ACCOUNTANT, self._private.accountant.to_dict())
            if ins.config.get("secagg"):
                self._secagg = self._keep(ins, params, n, seed)
                params = {}  # the update stays here; only masked bytes will leave
            else:
                params = encode_upload(self.name, params, ins.parameters, ins.config, seed, self.state)
            return FitRes(self.name, params, n, clean_metrics(metrics))
        except Exception as exc:  # user code may raise anything; the round must go on
            return Failure(self.name, describe(exc))

    def _keep(self, ins: FitIns, params: ArrayDict, n: int, seed: int) -> SecAggSession:
        """The round's secure-aggregation session, holding the update (trained - global, float64)."""
        from fedsilo.silo.secagg_session import SecAggSession, dp_of  # here: secure aggregation needs cryptography

        assert self._spec is not None
        problems = update_problems(params, self._spec)
        if problems:
            raise UpdateRejected("the trained model does not match the global model: " + "; ".join(problems))
        # computed now, in the global model's order: the global arrays may be views valid only in this call
        delta = {k: np.asarray(params[k], np.float64) - np.asarray(v, np.float64) for k, v in ins.parameters.items()}
        return SecAggSession(ins.round, delta, int(n), dp_of(ins.config), np.random.default_rng([seed, 1]))

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

    def _private_client(self, dp: dict[str, float]) -> Any:
        """The silo's client with DP-SGD, its accountant as this silo left it (any worker may have)."""
        try:
            from fedsilo.client.local_dp import LocalDP, LocalDPClient  # torch and opacus: only now
            from fedsilo.client.torch import TorchClient
            from fedsilo.privacy.accounting import PrivacyAccountant
        except ImportError as exc:
            raise ConfigError(f"privacy.local_dp needs torch and opacus ({exc})", "pip install 'fedsilo[dp]'") from exc
        client = self.client
        if not isinstance(client, TorchClient):
            raise ConfigError(
                f"privacy.local_dp trains with Opacus, which needs a PyTorch task, not {type(client).__name__}",
                "remove privacy.local_dp, or use privacy.dp (central DP works with every task)",
            )
        if self._private is None:
            settings = LocalDP(dp["noise_multiplier"], dp["max_grad_norm"], dp["delta"], bool(dp.get("poisson", 1.0)))
            self._private = LocalDPClient.over(client, settings)
        saved = self.state.value(self.name, ACCOUNTANT)
        self._private.accountant = PrivacyAccountant.from_dict(saved) if saved else PrivacyAccountant()
        return self._private

    def evaluate(self, ins: EvaluateIns) -> EvaluateRes | Failure:
        try:
            self._check_incoming(ins)
            loss, n, metrics = self.client.evaluate(ins.parameters, ins.config)
            return EvaluateRes(self.name, float(loss), int(n), clean_metrics(metrics))
        except Exception as exc:
            return Failure(self.name, describe(exc))
