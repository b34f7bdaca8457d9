"""Server-side cost of one round's aggregation, per strategy: 10 silos, float32 models.

    python benchmarks/aggregation.py [--silos 10] [--params 105000,5000000] [--repeats 3]

Times ``begin`` + ``add`` of every update + ``finish`` (the work the server loop does after the
updates have arrived) on random models of four arrays, and prints the median of ``--repeats``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from fedsilo.strategy.base import Strategy
from fedsilo.strategy.fedavg import FedAvg
from fedsilo.strategy.fedopt import FedOpt
from fedsilo.strategy.fedprox import FedProx
from fedsilo.strategy.robust import Robust
from fedsilo.wire.arrays import ArrayDict
from fedsilo.wire.messages import FitRes

STRATEGIES: list[Strategy] = [
    FedAvg(),
    FedProx(),
    FedOpt("fedavgm"),
    FedOpt("fedadam"),
    FedOpt("fedyogi"),
    FedOpt("fedadagrad"),
    Robust("median"),
    Robust("trimmed_mean", beta=0.2),
    Robust("krum", byzantine=1),
    Robust("multi_krum", byzantine=1),
]


def model(params: int, rng: np.random.Generator) -> ArrayDict:
    """Most parameters in one matrix, as in a CNN's first dense layer, plus three small arrays."""
    return {
        "conv": rng.normal(size=1000).astype(np.float32),
        "dense": rng.normal(size=params - 3000).astype(np.float32),
        "bias": rng.normal(size=1000).astype(np.float32),
        "out": rng.normal(size=1000).astype(np.float32),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--silos", type=int, default=10)
    parser.add_argument("--params", default="105000,5000000")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for params in (int(p) for p in args.params.split(",")):
        rng = np.random.default_rng(0)
        global_model = model(params, rng)
        updates = [FitRes(f"s{i}", model(params, rng), 100 + i) for i in range(args.silos)]
        for strategy in STRATEGIES:
            state = strategy.initial_state(global_model)
            times = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                aggregation = strategy.begin(1, global_model, state)
                for update in updates:
                    aggregation.add(update)
                aggregation.finish()
                times.append(time.perf_counter() - started)
            print(f"{params:>10,} parameters  {strategy.name:<13} {1000 * sorted(times)[len(times) // 2]:8.1f} ms")


if __name__ == "__main__":
    main()
