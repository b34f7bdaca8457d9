"""The server's driver of one secure-aggregation round over a transport (the real-run twin of ``simulate.py``).

The silos that returned a fit reply (without parameters: their update stayed home) form the round's
group, numbered 1..n by sorted name. The server runs the protocol's steps through
:meth:`Transport.exchange <fedsilo.transport.base.Transport.exchange>`: advertise -> share_keys ->
masked_input -> unmask, each step with a deadline of ``step_timeout_s``; a silo that fails, times out,
or sends a malformed reply or one claiming another silo's number is dropped at that step, and the
protocol (:mod:`fedsilo.privacy.secagg.server`) carries on with the others while at least ``t`` are left.

What comes out is the sum of the survivors' weighted deltas, ``sum_S (n_u / N) delta_u`` with ``N``
the group's example count; the mean over the survivors is that times ``N / sum_S n_u``, and the new
model ``global + mean`` goes to the strategy as one pre-averaged update with ``num_examples =
sum_S n_u``, so FedAvg and the FedOpt family work unchanged. With distributed DP the weights are
uniform (``1/n``) and the mean is the sum times ``n / |S|``. Integer arrays (BatchNorm's
``num_batches_tracked``) are summed like the rest and rounded when cast back, as FedAvg rounds them.
Below ``t`` survivors (or fewer than ``min_fit_clients``) the round fails before anything is
unmasked: :class:`RoundFailed`, model unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from fedsilo.errors import FedsiloError, RoundFailed, SecAggError
from fedsilo.tracking.rows import MetricRow, secagg_row
from fedsilo.transport.base import Transport
from fedsilo.wire.arrays import ArrayDict
from fedsilo.wire.deltas import apply
from fedsilo.wire.instructions import DistributedNoise, SecAggRequest
from fedsilo.wire.messages import ExchangeRes, Failure, FitRes

M = TypeVar("M")
SENDER = "secure-aggregation"  # the silo name of the pre-averaged update handed to the strategy
STEP_REPLY_BYTES = 64 * 1024  # fixed part of the reply allowance; per-silo parts are added


@dataclass(frozen=True)
class SecAggSettings:
    """``privacy.secure_aggregation`` as the loop needs it, with the silo-side DP of ``privacy.dp``."""

    threshold: int | None = None
    neighbours: int | None = None
    clip: float = 1024.0
    frac_bits: int = 32
    ring_bits: int = 64
    step_timeout_s: float = 120.0
    dp_noise_multiplier: float | None = None  # distributed DP on when set
    dp_clip_norm: float = 1.0

    def request(self, min_fit_clients: int) -> SecAggRequest:
        """What every silo's fit is told: keep the update, and how to clip and noise it."""
        if self.dp_noise_multiplier is None:
            return SecAggRequest()
        noise = DistributedNoise(float(self.dp_noise_multiplier), float(self.dp_clip_norm), int(min_fit_clients))
        return SecAggRequest(noise)


@dataclass(frozen=True)
class SecureOutcome:
    update: FitRes  # global + mean over the survivors, as one update
    survivors: tuple[str, ...]
    dropped: Mapping[str, tuple[str, Failure]]  # silo -> (step, why)
    sent: Mapping[str, int] = field(default_factory=dict)  # secagg bytes each silo sent the server
    received: Mapping[str, int] = field(default_factory=dict)  # secagg bytes the server sent each silo

    def rows(self, rnd: int) -> list[MetricRow]:
        """One metrics row per silo of the group: bytes exchanged, or at which step it dropped."""
        out = []
        for silo in sorted({*self.survivors, *self.dropped}):
            sent, received = self.sent.get(silo, 0), self.received.get(silo, 0)
            if silo not in self.dropped:
                out.append(secagg_row(rnd, silo, sent, received, None))
                continue
            step, why = self.dropped[silo]
            note = f"dropped at {step}" + (" (its update is in the sum)" if silo in self.survivors else "")
            out.append(secagg_row(rnd, silo, sent, received, why, note))
        return out


class _Round:
    """Bookkeeping of one round: who is still in, who dropped where, bytes each way."""

    def __init__(self, transport: Transport, rnd: int, names: Sequence[str], timeout: float) -> None:
        self.transport, self.rnd, self.timeout = transport, rnd, timeout
        self.number = {name: i + 1 for i, name in enumerate(sorted(names))}
        self.name = {u: name for name, u in self.number.items()}
        self.dropped: dict[str, tuple[str, Failure]] = {}
        self.sent = dict.fromkeys(self.number, 0)
        self.received = dict.fromkeys(self.number, 0)

    def step(self, step: str, bodies: Mapping[int, bytes], expected: type[M], max_reply: int, **extra: int) -> list[M]:
        """Send each silo its message for ``step``; the well-formed replies, each from the silo it names."""
        from fedsilo.privacy.secagg import envelope, wire

        messages = {
            self.name[u]: envelope.pack({"round": self.rnd, "silo": u, "step": step, **extra}, body)
            for u, body in bodies.items()
        }
        for name, data in messages.items():
            self.received[name] += len(data)
        replies: list[M] = []
        answered: set[str] = set()
        for reply in self.transport.exchange(step, messages, self.timeout, max_reply):
            if reply.silo not in messages or reply.silo in answered:
                continue  # not asked, or a second answer: ignored
            answered.add(reply.silo)
            if isinstance(reply, ExchangeRes):
                self.sent[reply.silo] += len(reply.payload)
                try:
                    message = wire.from_bytes(reply.payload, expected)
                    if getattr(message, "silo", None) != self.number[reply.silo]:
                        raise SecAggError(
                            f"the reply claims to come from silo number {getattr(message, 'silo', None)}",
                            "a silo may answer only for itself: this reply is refused",
                        )
                except SecAggError as exc:
                    reply = Failure(reply.silo, exc.message, "rejected")
                else:
                    replies.append(message)
                    continue
            self.dropped[reply.silo] = (step, reply)
        for name in messages.keys() - answered:
            self.dropped[name] = (step, Failure(name, f"no reply within {self.timeout:.0f}s", "timeout"))
        return replies

    def mark_left_out(self, step: str, kept: Sequence[int], why: str) -> None:
        """Silos the protocol left out at ``step`` although they answered (e.g. malformed keys, named suspects)."""
        for name, u in self.number.items():
            if u not in kept and name not in self.dropped:
                self.dropped[name] = (step, Failure(name, why, "rejected"))

    def failed(self, exc: FedsiloError) -> RoundFailed:
        where = "; ".join(f"{n} at {s} ({f.kind})" for n, (s, f) in sorted(self.dropped.items())) or "none"
        return RoundFailed(
            f"round {self.rnd}: secure aggregation failed: {exc.message} (dropped: {where})",
            "bring the silos back (see metrics.jsonl) or lower privacy.secure_aggregation.threshold, then resume",
        )


def secure_mean(
    transport: Transport,
    rnd: int,
    global_params: ArrayDict,
    counts: Mapping[str, int],
    settings: SecAggSettings,
    rng: np.random.Generator,
    min_survivors: int = 1,
) -> SecureOutcome:
    """Run the protocol over the silos in ``counts`` (name -> examples); raises RoundFailed below the threshold."""
    from fedsilo.privacy.secagg import FixedPoint, layout_of, new_round, server, wire  # needs cryptography
    from fedsilo.privacy.secagg.encoding import layout_size
    from fedsilo.privacy.secagg.messages import AdvertiseKeys, MaskedInput, ShareKeys, UnmaskShares

    rd = _Round(transport, rnd, list(counts), settings.step_timeout_s)
    dp = settings.dp_noise_multiplier is not None
    try:
        encoding = FixedPoint(settings.clip, settings.frac_bits, settings.ring_bits)
        layout = layout_of(global_params)
        cfg = new_round(sorted(rd.name), layout, rng, settings.threshold, settings.neighbours, encoding)
        per_silo = STEP_REPLY_BYTES + 4096 * len(counts)
        srv = server.start(cfg)
        cfg_bytes = wire.to_bytes(cfg)
        adverts = rd.step("advertise", dict.fromkeys(cfg.silos, cfg_bytes), AdvertiseKeys, per_silo)
        srv, directory = server.collect_keys(srv, adverts)
        rd.mark_left_out("advertise", list(directory.keys), "malformed keys")
        dir_bytes = wire.to_bytes(directory)
        dealt = rd.step("share_keys", dict.fromkeys(directory.keys, dir_bytes), ShareKeys, per_silo)
        srv, relayed = server.relay_shares(srv, dealt)
        rd.mark_left_out("share_keys", list(relayed), "malformed shares")
        total = len(cfg.silos) if dp else sum(counts.values())
        ring_bytes = layout_size(cfg.layout) * cfg.encoding.ring_bits // 8
        bodies = {u: wire.to_bytes(m) for u, m in relayed.items()}
        masked = rd.step("masked_input", bodies, MaskedInput, ring_bytes + per_silo, total=total)
        srv, request = server.request_unmask(srv, masked)
        rd.mark_left_out("masked_input", request.survivors, "named by a peer for a bad share, or malformed input")
        if len(request.survivors) < min_survivors:
            raise SecAggError(
                f"{len(request.survivors)} survivors, fewer than min_fit_clients={min_survivors}",
                "bring the silos back or lower strategy.min_fit_clients",
            )
        req_bytes = wire.to_bytes(request)
        revealed = rd.step("unmask", dict.fromkeys(request.survivors, req_bytes), UnmaskShares, per_silo)
        result = server.finish(srv, revealed)
    except SecAggError as exc:
        raise rd.failed(exc) from None
    # a survivor that missed the unmask step is still in the sum (its peers revealed its self mask)
    survivors = tuple(rd.name[u] for u in result.survivors)
    examples = sum(counts[s] for s in survivors)
    scale = len(cfg.silos) / len(survivors) if dp else sum(counts.values()) / examples
    update = FitRes(SENDER, apply(global_params, result.total, scale), examples, {})
    return SecureOutcome(update, survivors, rd.dropped, rd.sent, rd.received)
