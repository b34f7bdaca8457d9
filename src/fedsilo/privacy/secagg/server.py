"""The server's side of a secure-aggregation round: pure steps that relay, collect, and unmask the sum.

The server sees public keys, ciphertexts it cannot read, share digests, masked vectors that look
uniform, and at the end exactly the shares it needs: ``b`` seeds of survivors (to strip self masks)
and ``s`` keys of dropped silos (to strip the pairwise masks survivors added for them). Every check
that fails for one silo drops that silo; a step raises :class:`SecAggError` only when fewer than ``t``
silos are left, and then the round is void and the model must stay unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fedsilo.errors import SecAggError
from fedsilo.privacy.secagg import keys, prg, shamir
from fedsilo.privacy.secagg.encoding import FixedPoint, VectorLayout, decode, layout_size
from fedsilo.privacy.secagg.fixes import STEP_ORDER
from fedsilo.privacy.secagg.graph import graph_of, holders, neighbour_graph
from fedsilo.privacy.secagg.messages import (
    AdvertiseKeys,
    KeyDirectory,
    MaskedInput,
    SecAggConfig,
    SecAggResult,
    ShareKeys,
    SharesForSilo,
    UnmaskRequest,
    UnmaskShares,
)
from fedsilo.privacy.secagg.silo import context, pairwise_seed


def new_round(
    silos: Sequence[int],
    layout: VectorLayout,
    rng: np.random.Generator,
    threshold: int | None = None,
    neighbours: int | None = None,
    encoding: FixedPoint | None = None,
) -> SecAggConfig:
    """The public settings of one round; every problem with them is reported at once.

    ``threshold`` defaults to a strict majority of each silo's share holders (``n // 2 + 1``, or
    ``k // 2 + 1`` with ``k`` neighbours): a round then survives up to just under half its silos
    dropping. Against a server that may lie about who dropped, use ``t > 2n/3`` (Bonawitz et al.).
    """
    encoding = encoding or FixedPoint()
    ids = tuple(sorted(silos))
    problems = []
    if len(set(ids)) != len(ids) or any(not isinstance(u, int) or u < 1 for u in ids):
        problems.append(f"silos must be distinct integers >= 1, got {list(silos)}")
    if len(ids) < 3:
        problems.append(f"{len(ids)} silos: secure aggregation needs at least 3 (with 2, each learns the other's)")
    if neighbours is not None and (neighbours < 2 or neighbours % 2):
        problems.append(f"neighbours={neighbours} must be an even number >= 2")
    group = len(ids) if neighbours is None or neighbours >= len(ids) - 1 else neighbours + 1
    t = group // 2 + 1 if threshold is None else threshold
    if not 2 <= t <= group:
        problems.append(f"threshold={t} must be in 2..{group} (the share holders of each silo, itself included)")
    if not layout or layout_size(layout) == 0:
        problems.append("the layout names no values to aggregate")
    if len(ids) > encoding.max_summands:
        problems.append(f"{len(ids)} silos can overflow the fixed-point sum (at most {encoding.max_summands})")
    if problems:
        raise SecAggError("secure aggregation settings: " + "; ".join(problems), "fix the secagg settings")
    session = rng.bytes(16)
    graph_seed = int(rng.integers(0, 2**63 - 1))
    return SecAggConfig(session, ids, t, tuple(layout), encoding, neighbours, graph_seed)


@dataclass(frozen=True, slots=True)
class ServerState:
    """What the server remembers between steps (nothing secret: only what it was sent)."""

    config: SecAggConfig
    phase: str  # keys -> shares -> masked -> unmask
    directory: Mapping[int, tuple[bytes, bytes]] = dataclasses.field(default_factory=dict)
    participants: tuple[int, ...] = ()
    digests: Mapping[int, Mapping[int, tuple[bytes, bytes]]] = dataclasses.field(default_factory=dict)
    masked_sum: np.ndarray | None = None
    survivors: tuple[int, ...] = ()
    excluded: tuple[int, ...] = ()


def _enough(count: int, config: SecAggConfig, step: str, who: Iterable[int]) -> None:
    if count < config.threshold:
        raise SecAggError(
            f"secure aggregation failed at {step}: {count} silos left ({sorted(who)}), fewer than "
            f"the threshold t={config.threshold}; the round is void and the model is unchanged",
            "wait for more silos or lower the threshold",
        )


def _expect(state: ServerState, phase: str, step: str) -> None:
    if state.phase != phase:
        raise SecAggError(f"server: {step} called in phase '{state.phase}', expected '{phase}'", STEP_ORDER)


def start(config: SecAggConfig) -> ServerState:
    return ServerState(config, "keys")


def collect_keys(state: ServerState, adverts: Iterable[AdvertiseKeys]) -> tuple[ServerState, KeyDirectory]:
    """Step 0: publish the keys of the silos that advertised (U1); silos with malformed keys are left out."""
    _expect(state, "keys", "collect_keys")
    directory: dict[int, tuple[bytes, bytes]] = {}
    for msg in adverts:
        ok = msg.silo in state.config.silos and msg.silo not in directory
        if ok and len(msg.c_public) == len(msg.s_public) == keys.KEY_BYTES and msg.c_public != msg.s_public:
            directory[msg.silo] = (msg.c_public, msg.s_public)
    _enough(len(directory), state.config, "key advertisement", directory)
    directory = dict(sorted(directory.items()))
    return dataclasses.replace(state, phase="shares", directory=directory), KeyDirectory(directory)


def relay_shares(state: ServerState, messages: Iterable[ShareKeys]) -> tuple[ServerState, dict[int, SharesForSilo]]:
    """Step 1: route each encrypted share to its holder; who sent shares is U2."""
    _expect(state, "shares", "relay_shares")
    graph = graph_of(state.config)
    received: dict[int, ShareKeys] = {}
    for msg in messages:
        if msg.silo in state.directory and msg.silo not in received:
            wanted = {v for v in holders(graph, msg.silo) if v in state.directory}
            if set(msg.digests) == wanted and set(msg.ciphertexts) == wanted - {msg.silo}:
                received[msg.silo] = msg
    participants = tuple(sorted(received))
    _enough(len(participants), state.config, "share distribution", participants)
    out = {
        v: SharesForSilo(
            v,
            participants,
            {u: received[u].ciphertexts[v] for u in participants if v in received[u].ciphertexts},
            {u: received[u].digests[v] for u in participants if v in received[u].ciphertexts},
        )
        for v in participants
    }
    digests = {u: dict(received[u].digests) for u in participants}
    new = dataclasses.replace(state, phase="masked", participants=participants, digests=digests)
    return new, out


def request_unmask(state: ServerState, inputs: Iterable[MaskedInput]) -> tuple[ServerState, UnmaskRequest]:
    """Step 2: sum the masked inputs, leaving out malformed ones and silos that a peer named as suspect.

    The vectors are held until all are in, since a later input may name an earlier sender: the server
    holds one masked vector per silo during this step (streaming it would need a separate suspects step).
    """
    _expect(state, "masked", "request_unmask")
    size = layout_size(state.config.layout)
    accepted: dict[int, np.ndarray] = {}
    suspects: set[int] = set()
    for msg in inputs:
        vec = msg.vector
        well_formed = isinstance(vec, np.ndarray) and vec.dtype == state.config.encoding.dtype and vec.shape == (size,)
        if msg.silo in state.participants and msg.silo not in accepted and well_formed:
            accepted[msg.silo] = vec
            suspects.update(u for u in msg.suspects if u in state.participants)
    excluded = tuple(sorted(suspects))
    survivors = tuple(sorted(set(accepted) - suspects))
    _enough(len(survivors), state.config, "masked input collection", survivors)
    total = np.zeros(size, dtype=state.config.encoding.dtype)
    for u in survivors:
        total += accepted[u]
    dropped = tuple(sorted(set(state.participants) - set(survivors)))
    new = dataclasses.replace(state, phase="unmask", masked_sum=total, survivors=survivors, excluded=excluded)
    return new, UnmaskRequest(survivors, dropped)


def _rebuild(
    state: ServerState, dealer: int, kind: str, revealed: Mapping[int, Mapping[int, bytes]], bad: list[tuple[int, int]]
) -> bytes:
    """The secret of ``dealer`` from the revealed shares that match the dealer's published digests."""
    ctx, digests = context(state.config), state.digests[dealer]
    index = 0 if kind == "b" else 1
    good: dict[int, bytes] = {}
    for holder, shares in revealed.items():
        share = shares.get(dealer)
        if share is None or holder not in digests:
            continue
        if shamir.share_digest(ctx, dealer, holder, kind, share) == digests[holder][index]:
            good[holder] = share
        else:
            bad.append((holder, dealer))
    if len(good) < state.config.threshold:
        raise SecAggError(
            f"secure aggregation failed at unmasking: {len(good)} valid shares of silo {dealer}'s "
            f"{'self-mask seed' if kind == 'b' else 'mask key'}, fewer than t={state.config.threshold}; "
            "the round is void and the model is unchanged",
            "wait for more silos or lower the threshold",
        )
    return shamir.reconstruct(good, state.config.threshold)


def finish(state: ServerState, replies: Iterable[UnmaskShares]) -> SecAggResult:
    """Step 3: rebuild the secrets, strip every remaining mask from the masked sum, and decode it."""
    _expect(state, "unmask", "finish")
    assert state.masked_sum is not None
    cfg = state.config
    survivors = set(state.survivors)
    dropped = sorted(set(state.participants) - survivors)
    replies_by: dict[int, UnmaskShares] = {}
    for msg in replies:
        if msg.silo in survivors and msg.silo not in replies_by:
            replies_by[msg.silo] = msg
    _enough(len(replies_by), cfg, "unmasking", replies_by)
    b_revealed = {h: m.b_shares for h, m in replies_by.items()}
    s_revealed = {h: m.s_shares for h, m in replies_by.items()}
    bad: list[tuple[int, int]] = []
    size = layout_size(cfg.layout)
    total = state.masked_sum.copy()
    for u in sorted(survivors):
        total -= prg.expand(_rebuild(state, u, "b", b_revealed, bad), size, cfg.encoding.dtype)
    graph = neighbour_graph(cfg.silos, cfg.neighbours, cfg.graph_seed)
    for u in dropped:
        masked_with = [v for v in sorted(graph[u]) if v in survivors]
        if not masked_with:
            continue
        s_private = _rebuild(state, u, "s", s_revealed, bad)
        if keys.public_of(s_private) != state.directory[u][1]:
            raise SecAggError(
                f"the rebuilt mask key of silo {u} does not match its advertised key",
                "a silo revealed wrong shares: the round is abandoned, the model is unchanged",
            )
        for v in masked_with:  # v added +PRG(s_uv) if v < u else -PRG(s_uv); take it back out
            mask = prg.expand(pairwise_seed(s_private, state.directory[v][1], cfg), size, cfg.encoding.dtype)
            if v < u:
                total -= mask
            else:
                total += mask
    return SecAggResult(
        total=decode(total, cfg.layout, cfg.encoding),
        survivors=tuple(sorted(survivors)),
        dropped=tuple(dropped),
        excluded=state.excluded,
        bad_shares=tuple(sorted(set(bad))),
    )
