"""Secure aggregation: the server learns the sum of the silos' updates and nothing else.

The protocol is that of Bonawitz et al. 2017, "Practical Secure Aggregation for Privacy-Preserving
Machine Learning" (CCS'17), with the SecAgg+ option of Bell et al. 2020, "Secure Single-Server
Aggregation with (Poly)Logarithmic Overhead" (CCS'20). Each silo ``u`` sends
``y_u = x_u + PRG(b_u) + sum_{v > u} PRG(s_uv) - sum_{v < u} PRG(s_uv)`` over Z_(2^64), where ``x_u``
is its fixed-point update (``encoding.py``), ``b_u`` a fresh self-mask seed, and ``s_uv`` a seed that
``u`` and ``v`` agree on by X25519 (``keys.py``). Pairwise masks cancel in the sum. Before sending,
each silo Shamir-shares ``b_u`` and its mask private key among its peers with threshold ``t``
(``shamir.py``), the shares travelling AES-GCM encrypted through the server. At the end, the
surviving silos reveal shares of ``b_u`` for every silo whose input is in the sum, and of the mask key
of every silo that dropped, so the server can remove exactly the masks that did not cancel.

Steps (each a pure function, state in, new state and messages out; ``simulate.py`` drives them,
``wire.py`` turns the messages into bytes and back):
``silo.advertise`` -> ``server.collect_keys`` -> ``silo.share_keys`` -> ``server.relay_shares`` ->
``silo.masked_input`` -> ``server.request_unmask`` -> ``silo.unmask`` -> ``server.finish``.

Threat model. The server is honest but curious: it follows the protocol and tries to learn from what
it sees. It then learns only the sum of at least ``t`` updates, even colluding with up to ``t - 1``
silos: one masked input alone is uniform over the ring (``b_u`` hides it even if all pairwise masks
were known), and fewer than ``t`` shares of a secret reveal nothing. Silos never learn each other's
updates. What ``t`` means: the fewest silos whose inputs may make up a sum, and how many holders must
survive to rebuild a secret; a round tolerates up to ``n - t`` dropouts and fails cleanly
(:class:`~fedsilo.errors.SecAggError`, no sum, model unchanged) below ``t``. A *malicious* server could
lie about who dropped, sending different survivor lists to different silos to gather both kinds of
share for one silo: each silo refuses to reveal both for one peer, and ``t > 2n/3`` bounds what
inconsistent views can gain; the full defence (signed messages and a consistency-check round of
Bonawitz et al. section 4.4) is not built, nor protection from a server that swaps public keys (a
PKI binding keys to silos, e.g. the deployment kits' certificates, would give it). Tampering in
transit is caught: shares are AES-GCM authenticated and committed by digest, and a dealer whose share
fails is named by its holder and excluded from the sum (so a silo can also get an honest peer left out
of a round by naming it: that costs the peer's contribution, never its privacy, since only the share
of its mask key is then revealed and its self mask still hides it). A silo can still send a wrong but
well-formed update; bounding that is the job of clipping and robust aggregation, not of this protocol.
With SecAgg+ the server draws the neighbour graph's seed; a malicious server could pick a graph that
isolates a silo among colluders, so use it with an honest-but-curious server or a jointly drawn seed.
"""

from __future__ import annotations

from fedsilo.privacy.secagg.encoding import FixedPoint, VectorLayout, decode, encode, layout_of
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
    payload_bytes,
)
from fedsilo.privacy.secagg.server import ServerState, new_round
from fedsilo.privacy.secagg.silo import SiloState
from fedsilo.privacy.secagg.simulate import Simulated, simulate_round

__all__ = [
    "AdvertiseKeys",
    "FixedPoint",
    "KeyDirectory",
    "MaskedInput",
    "SecAggConfig",
    "SecAggResult",
    "ServerState",
    "ShareKeys",
    "SharesForSilo",
    "SiloState",
    "Simulated",
    "UnmaskRequest",
    "UnmaskShares",
    "VectorLayout",
    "decode",
    "encode",
    "layout_of",
    "new_round",
    "payload_bytes",
    "simulate_round",
]
