"""A silo's secure-aggregation session for one round: its update stays here, only masked bytes leave.

After a fit whose instructions carry a secure-aggregation request, the agent keeps the update (trained model - global
model, float64) in a :class:`SecAggSession` instead of sending it. The server then drives the
protocol's four steps (:mod:`fedsilo.privacy.secagg.silo`) through :meth:`SecAggSession.step`, each
step's message wrapped in an envelope (:mod:`fedsilo.privacy.secagg.envelope`) that names the round,
the silo's number in the group and the step; a message for another round, silo or step is refused.

What is masked: ``weight * delta`` with ``weight = n_u / N`` (``N`` = the group's example count, sent
by the server in the ``masked_input`` step), or, with distributed DP, ``(clipped delta + noise) / n``
with uniform weights (:mod:`fedsilo.privacy.distributed_dp`). The silo checks ``0 < n_u <= N``; an
honest-but-curious server (the protocol's threat model) sends the true ``N``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from fedsilo.errors import SecAggError
from fedsilo.privacy.distributed_dp import DistributedDP, noised_update
from fedsilo.privacy.secagg import envelope, silo, wire
from fedsilo.privacy.secagg.messages import KeyDirectory, SecAggConfig, SharesForSilo, UnmaskRequest
from fedsilo.wire.arrays import ArrayDict
from fedsilo.wire.instructions import SecAggRequest


def noise_of(request: SecAggRequest) -> DistributedDP | None:
    """The distributed-DP settings of a secure-aggregation request, or None."""
    noise = request.noise
    return None if noise is None else DistributedDP(noise.noise_multiplier, noise.clip_norm, noise.min_silos)


class SecAggSession:
    """One round's protocol state inside the silo; it never leaves this process."""

    def __init__(
        self, round: int, delta: ArrayDict, num_examples: int, dp: DistributedDP | None, rng: np.random.Generator
    ) -> None:
        self.round = round
        self._delta = delta
        self._count = num_examples
        self._dp = dp
        self._rng = rng
        self._number = 0  # this silo's number in the group, from the advertise step
        self._state: silo.SiloState | None = None
        self._next = "advertise"

    def step(self, step: str, payload: bytes) -> bytes:
        """Answer the server's message for ``step``; raises :class:`SecAggError` on anything unexpected."""
        header, body = envelope.unpack(payload)
        problems = []
        if header["step"] != step:
            problems.append(f"the message is for step '{header['step']}', not '{step}'")
        if step != self._next:
            problems.append(f"step '{step}' out of order (expected '{self._next}')")
        if header["round"] != self.round:
            problems.append(f"the message is for round {header['round']}, this silo trained round {self.round}")
        if step != "advertise" and header["silo"] != self._number:
            problems.append(f"the message is for silo number {header['silo']}, this silo is {self._number}")
        if problems:
            raise SecAggError(
                "secure aggregation: " + "; ".join(problems), "run the same fedsilo version on the server"
            )
        reply = self._answer(step, header, body)
        self._next = envelope.STEPS[envelope.STEPS.index(step) + 1] if step != "unmask" else "done"
        if step == "unmask":
            self._delta, self._state = {}, None  # the round is over for this silo: forget its secrets
        return wire.to_bytes(reply)

    def _answer(self, step: str, header: Mapping[str, Any], body: bytes) -> object:
        if step == "advertise":
            self._number = int(header["silo"])
            self._state, advert = silo.advertise(wire.from_bytes(body, SecAggConfig), self._number)
            return advert
        assert self._state is not None
        if step == "share_keys":
            self._state, dealt = silo.share_keys(self._state, wire.from_bytes(body, KeyDirectory))
            return dealt
        if step == "masked_input":
            shares = wire.from_bytes(body, SharesForSilo)
            self._state, masked = silo.masked_input(self._state, shares, self._weighted(header.get("total")))
            return masked
        self._state, revealed = silo.unmask(self._state, wire.from_bytes(body, UnmaskRequest))
        return revealed

    def _weighted(self, total: object) -> ArrayDict:
        """What this silo puts into the sum (see the module docstring)."""
        assert self._state is not None
        group = len(self._state.config.silos)
        own = 1 if self._dp is not None else self._count
        if not isinstance(total, int) or not 0 < own <= total or (self._dp is not None and total != group):
            raise SecAggError(
                f"secure aggregation: total={total!r} cannot weigh this silo's {own} (group of {group})",
                "the server sent an impossible total: this silo refuses to mask with it",
            )
        update = self._delta
        if self._dp is not None:
            update, _ = noised_update(update, self._dp, self._state.config.threshold, self._rng)
        weight = own / total
        return {k: np.asarray(v, np.float64) * weight for k, v in update.items()}
