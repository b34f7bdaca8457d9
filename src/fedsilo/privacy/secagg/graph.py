"""Who masks with whom: everyone (SecAgg) or k neighbours on a random Harary graph (SecAgg+).

Bell et al. 2020 show that masking with ``k = O(log n)`` neighbours on a random graph keeps the
server from learning individual inputs (for honest-but-curious servers, up to a failure probability
that shrinks with ``k``) while cutting each silo's work and traffic from O(n) to O(k). The graph is
public: a ring of the silos in a seeded random order, each joined to the ``k/2`` nearest on either
side (the Harary graph H_{k,n}), so every silo has exactly ``k`` neighbours and the graph is connected.
The seed is part of the round's public config, so every party computes the same graph.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedsilo.privacy.secagg.messages import SecAggConfig


def neighbour_graph(silos: Sequence[int], k: int | None, seed: int) -> dict[int, frozenset[int]]:
    """Each silo's neighbours; ``k=None`` (or ``k >= n - 1``) is the complete graph of plain SecAgg."""
    ids = sorted(silos)
    n = len(ids)
    if k is None or k >= n - 1:
        everyone = frozenset(ids)
        return {u: everyone - {u} for u in ids}
    if k < 2 or k % 2:
        raise ValueError(f"neighbours must be an even number >= 2, not {k}")
    order = [ids[i] for i in np.random.default_rng(seed).permutation(n)]
    graph: dict[int, set[int]] = {u: set() for u in ids}
    for i, u in enumerate(order):
        for step in range(1, k // 2 + 1):
            v = order[(i + step) % n]
            graph[u].add(v)
            graph[v].add(u)
    return {u: frozenset(vs) for u, vs in graph.items()}


def holders(graph: dict[int, frozenset[int]], dealer: int) -> tuple[int, ...]:
    """Who holds shares of ``dealer``'s secrets: its neighbours and itself."""
    return tuple(sorted(graph[dealer] | {dealer}))


def graph_of(config: SecAggConfig) -> dict[int, frozenset[int]]:
    return neighbour_graph(config.silos, config.neighbours, config.graph_seed)
