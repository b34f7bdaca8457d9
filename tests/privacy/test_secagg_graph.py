"""privacy/secagg/graph.py: SecAgg+ neighbour graphs are k-regular, symmetric, connected and seeded."""

from __future__ import annotations

import pytest

from fedsilo.privacy.secagg.graph import neighbour_graph


def _connected(graph: dict[int, frozenset[int]]) -> bool:
    start = next(iter(graph))
    seen, todo = {start}, [start]
    while todo:
        for v in graph[todo.pop()] - seen:
            seen.add(v)
            todo.append(v)
    return len(seen) == len(graph)


def test_harary_graph_has_k_neighbours_each_symmetric_and_connected() -> None:
    graph = neighbour_graph(range(1, 31), k=6, seed=3)
    assert all(len(vs) == 6 and u not in vs for u, vs in graph.items())
    assert all(u in graph[v] for u, vs in graph.items() for v in vs)
    assert _connected(graph)


def test_the_graph_is_a_function_of_the_seed() -> None:
    assert neighbour_graph(range(1, 21), 4, seed=1) == neighbour_graph(range(1, 21), 4, seed=1)
    assert neighbour_graph(range(1, 21), 4, seed=1) != neighbour_graph(range(1, 21), 4, seed=2)


def test_no_k_or_a_large_k_is_everyone_with_everyone() -> None:
    full = neighbour_graph([2, 5, 9], None, seed=0)
    assert full == {2: frozenset({5, 9}), 5: frozenset({2, 9}), 9: frozenset({2, 5})}
    assert neighbour_graph([2, 5, 9], 4, seed=0) == full


def test_odd_k_is_refused() -> None:
    with pytest.raises(ValueError, match="even"):
        neighbour_graph(range(1, 11), 3, seed=0)
