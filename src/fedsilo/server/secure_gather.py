"""Gathering a round by secure aggregation: the silos keep their updates, the server learns only the sum.

Fit replies carry each silo's example count and metrics but no parameters (one with parameters is
refused); the silos that replied run the protocol (:func:`~fedsilo.server.secure_aggregation.secure_mean`)
and its pre-averaged result goes to the strategy as one update. What crossed the wire instead of
the updates is the protocol's messages, recorded beside the plain models' size.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace

import numpy as np

from fedsilo.errors import UpdateRejected
from fedsilo.server.gather import Gathered, RoundFit, RoundLog, require_updates
from fedsilo.server.secure_aggregation import SecAggSettings, secure_mean
from fedsilo.strategy.base import Aggregation
from fedsilo.tracking.rows import reserved
from fedsilo.transport.base import Transport
from fedsilo.wire.arrays import spec_of, wire_size
from fedsilo.wire.messages import Failure, FitIns, FitRes, check_metrics, check_num_examples


def check_kept(reply: FitRes) -> int:
    """With secure aggregation a silo's update must stay in the silo: a reply with parameters is refused."""
    if reply.parameters:
        raise UpdateRejected(
            f"silo '{reply.silo}' sent its update in the clear although secure aggregation is on",
            "run the same fedsilo version on the silo as on the server",
        )
    check_metrics(reply.silo, reply.metrics, reserved)
    return check_num_examples(reply.silo, reply.num_examples)


@dataclass(frozen=True)
class SecureGatherer:
    transport: Transport
    timeout: float
    settings: SecAggSettings
    min_fit: int

    def gather(self, fit: RoundFit, aggregation: Aggregation, log: RoundLog) -> Gathered:
        rnd, params = fit.round, fit.params
        kept: dict[str, int] = {}  # silo -> examples, updates still in the silos
        instructions = replace(fit.instructions, secagg=self.settings.request(self.min_fit))  # keep the update
        for reply in self.transport.fit(fit.selected, FitIns(rnd, params, instructions), self.timeout):
            if isinstance(reply, FitRes):
                try:
                    kept[reply.silo] = check_kept(reply)
                except UpdateRejected as exc:
                    reply = Failure(reply.silo, exc.message, "rejected")
            log.reply(rnd, "fit", reply)
        require_updates(rnd, len(kept), fit.selected, self.min_fit, log.failures)
        # the session nonce and SecAgg+ graph seed must be unpredictable; the sum does not depend on them
        rng = np.random.default_rng(secrets.randbits(128))
        outcome = secure_mean(self.transport, rnd, params, kept, self.settings, rng, max(self.min_fit, 1))
        for row in outcome.rows(rnd):
            log.row(row)
        aggregation.add(outcome.update)
        raw = wire_size(spec_of(params)) * len(kept)
        return Gathered(len(outcome.survivors), {"upload_bytes": sum(outcome.sent.values()), "upload_bytes_raw": raw})
