"""The silo's side of a secure-aggregation round: four pure steps, state in, new state and a message out.

A silo never hands out both kinds of share for one peer: for a survivor it reveals the share of its
self-mask seed ``b``, for a dropped silo the share of its mask key ``s``, and it answers one unmask
request per round only (the consistency checks of Bonawitz et al. 2017, section 4). Shares that fail
to decrypt (AES-GCM tag) or to match the digest their dealer published are discarded and the dealer
is named in ``suspects``, so the server excludes it instead of summing it.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fedsilo.errors import SecAggError
from fedsilo.privacy.secagg import keys, prg, shamir
from fedsilo.privacy.secagg.encoding import encode, layout_size
from fedsilo.privacy.secagg.fixes import REFUSED, SAME_VERSION, STEP_ORDER
from fedsilo.privacy.secagg.graph import graph_of, holders
from fedsilo.privacy.secagg.messages import (
    AdvertiseKeys,
    KeyDirectory,
    MaskedInput,
    SecAggConfig,
    ShareKeys,
    SharesForSilo,
    UnmaskRequest,
    UnmaskShares,
)

MASK_PURPOSE = b"fedsilo-secagg pairwise mask"
SHARE_PURPOSE = b"fedsilo-secagg share encryption"


@dataclass(frozen=True, slots=True)
class SiloState:
    """What one silo remembers between steps (secret: it never leaves the silo)."""

    config: SecAggConfig
    silo: int
    phase: str  # advertised -> shared -> masked -> revealed
    c_private: bytes
    s_private: bytes
    directory: Mapping[int, tuple[bytes, bytes]] = dataclasses.field(default_factory=dict)
    self_seed: bytes = b""
    participants: tuple[int, ...] = ()
    held: Mapping[int, tuple[bytes, bytes]] = dataclasses.field(default_factory=dict)  # dealer -> (b, s) shares
    clipped: int = 0  # values of this silo's update that the encoding clipped (for the silo's own log)


def context(config: SecAggConfig) -> bytes:
    """Bytes that bind keys, shares and ciphertexts to one round."""
    return b"fedsilo-secagg-v1|" + config.session


def _expect(state: SiloState, phase: str, step: str) -> None:
    if state.phase != phase:
        raise SecAggError(f"silo {state.silo}: {step} called in phase '{state.phase}', expected '{phase}'", STEP_ORDER)


def _share_aad(config: SecAggConfig, dealer: int, holder: int) -> bytes:
    return context(config) + f"|share|{dealer}->{holder}".encode()


def advertise(config: SecAggConfig, silo: int) -> tuple[SiloState, AdvertiseKeys]:
    """Step 0: make this round's two key pairs and publish their public halves."""
    if silo not in config.silos:
        raise SecAggError(f"silo {silo} is not in this round's silos {list(config.silos)}", SAME_VERSION)
    c_private, c_public = keys.generate_keypair()
    s_private, s_public = keys.generate_keypair()
    state = SiloState(config, silo, "advertised", c_private, s_private)
    return state, AdvertiseKeys(silo, c_public, s_public)


def share_keys(state: SiloState, directory: KeyDirectory) -> tuple[SiloState, ShareKeys]:
    """Step 1: check the key directory, draw the self-mask seed, and deal shares of it and of the mask key."""
    _expect(state, "advertised", "share_keys")
    cfg, me = state.config, state.silo
    mine = (keys.public_of(state.c_private), keys.public_of(state.s_private))
    problems = []
    if tuple(directory.keys.get(me, ())) != mine:
        problems.append("the directory does not carry this silo's own keys")
    if not set(directory.keys) <= set(cfg.silos):
        problems.append(f"the directory names silos outside the round: {sorted(set(directory.keys) - set(cfg.silos))}")
    publics = [k for pair in directory.keys.values() for k in pair]
    if len(set(publics)) != len(publics):
        problems.append("two public keys in the directory are equal")
    graph = graph_of(cfg)
    dealt_to = tuple(v for v in holders(graph, me) if v in directory.keys)
    if len(dealt_to) < cfg.threshold:
        problems.append(f"only {len(dealt_to)} of its share holders advertised keys, fewer than t={cfg.threshold}")
    if problems:
        raise SecAggError(f"silo {me} refuses to share keys: " + "; ".join(problems), REFUSED)
    self_seed = secrets.token_bytes(prg.SEED_BYTES)
    b_shares = shamir.split(self_seed, dealt_to, cfg.threshold)
    s_shares = shamir.split(state.s_private, dealt_to, cfg.threshold)
    ctx = context(cfg)
    ciphertexts: dict[int, bytes] = {}
    digests: dict[int, tuple[bytes, bytes]] = {}
    for v in dealt_to:
        digests[v] = (
            shamir.share_digest(ctx, me, v, "b", b_shares[v]),
            shamir.share_digest(ctx, me, v, "s", s_shares[v]),
        )
        if v != me:
            key = keys.agree(state.c_private, directory.keys[v][0], ctx, SHARE_PURPOSE)
            plaintext = me.to_bytes(4, "big") + v.to_bytes(4, "big") + b_shares[v] + s_shares[v]
            ciphertexts[v] = keys.seal(key, plaintext, _share_aad(cfg, me, v))
    held = {me: (b_shares[me], s_shares[me])}
    new = dataclasses.replace(state, phase="shared", directory=dict(directory.keys), self_seed=self_seed, held=held)
    return new, ShareKeys(me, ciphertexts, digests)


def _open_share(
    state: SiloState, dealer: int, sealed: bytes | None, digest: tuple[bytes, bytes] | None
) -> tuple[bytes, bytes] | None:
    """The (b, s) shares from ``dealer``, or None when missing, tampered with, or not matching the digests."""
    cfg, me = state.config, state.silo
    if sealed is None or digest is None or dealer not in state.directory:
        return None
    ctx = context(cfg)
    key = keys.agree(state.c_private, state.directory[dealer][0], ctx, SHARE_PURPOSE)
    plain = keys.open_sealed(key, sealed, _share_aad(cfg, dealer, me))
    if plain is None or len(plain) != 8 + 2 * shamir.SHARE_BYTES:
        return None
    if int.from_bytes(plain[:4], "big") != dealer or int.from_bytes(plain[4:8], "big") != me:
        return None
    b, s = plain[8 : 8 + shamir.SHARE_BYTES], plain[8 + shamir.SHARE_BYTES :]
    if (shamir.share_digest(ctx, dealer, me, "b", b), shamir.share_digest(ctx, dealer, me, "s", s)) != tuple(digest):
        return None
    return b, s


def pairwise_seed(s_private: bytes, peer_s_public: bytes, config: SecAggConfig) -> bytes:
    """The mask seed two silos share (and the server can recompute from a dropped silo's rebuilt key)."""
    return keys.agree(s_private, peer_s_public, context(config), MASK_PURPOSE)


def masked_input(
    state: SiloState, shares: SharesForSilo, update: Mapping[str, np.ndarray]
) -> tuple[SiloState, MaskedInput]:
    """Step 2: keep the shares that verify, then send ``encode(update) + PRG(b) + sum of +-PRG(s_uv)``."""
    _expect(state, "shared", "masked_input")
    cfg, me = state.config, state.silo
    participants = tuple(sorted(shares.participants))
    problems = []
    if shares.silo != me:
        problems.append(f"the shares are addressed to silo {shares.silo}")
    if me not in participants:
        problems.append("this silo is not among the participants")
    if not set(participants) <= set(state.directory):
        problems.append(f"participants {sorted(set(participants) - set(state.directory))} never advertised keys")
    if len(participants) < cfg.threshold:
        problems.append(f"only {len(participants)} silos dealt shares, fewer than t={cfg.threshold}")
    if problems:
        raise SecAggError(f"silo {me} refuses to send its masked input: " + "; ".join(problems), REFUSED)
    graph = graph_of(cfg)
    peers = [v for v in sorted(graph[me]) if v in participants]
    held = dict(state.held)
    suspects = []
    for dealer in peers:
        opened = _open_share(state, dealer, shares.ciphertexts.get(dealer), shares.digests.get(dealer))
        if opened is None:
            suspects.append(dealer)
        else:
            held[dealer] = opened
    n = layout_size(cfg.layout)
    vector, clipped = encode(update, cfg.layout, cfg.encoding)
    dtype = cfg.encoding.dtype
    vector += prg.expand(state.self_seed, n, dtype)
    for v in peers:
        mask = prg.expand(pairwise_seed(state.s_private, state.directory[v][1], cfg), n, dtype)
        if me < v:
            vector += mask
        else:
            vector -= mask
    new = dataclasses.replace(state, phase="masked", participants=participants, held=held, clipped=clipped)
    return new, MaskedInput(me, vector, tuple(suspects))


def unmask(state: SiloState, request: UnmaskRequest) -> tuple[SiloState, UnmaskShares]:
    """Step 3: after the consistency checks, reveal b shares of survivors and s shares of dropped silos."""
    _expect(state, "masked", "unmask")
    cfg, me = state.config, state.silo
    survivors, dropped = set(request.survivors), set(request.dropped)
    problems = []
    if survivors & dropped:
        problems.append(f"silos {sorted(survivors & dropped)} are named both survivor and dropped")
    if me not in survivors:
        problems.append("this silo is not among the survivors")
    if survivors | dropped != set(state.participants):
        problems.append("survivors and dropped silos do not add up to the participants of step 1")
    if len(survivors) < cfg.threshold:
        problems.append(f"only {len(survivors)} survivors, fewer than t={cfg.threshold}")
    if problems:
        raise SecAggError(f"silo {me} refuses to unmask: " + "; ".join(problems), REFUSED)
    b_shares = {u: pair[0] for u, pair in state.held.items() if u in survivors}
    s_shares = {u: pair[1] for u, pair in state.held.items() if u in dropped}
    return dataclasses.replace(state, phase="revealed"), UnmaskShares(me, b_shares, s_shares)
