"""What secure aggregation costs: one full round in one process, beside a plain FedAvg mean.

    python benchmarks/secagg.py                          # 10, 50, 100 silos; SecAgg and SecAgg+ (k=8)
    python benchmarks/secagg.py --silos 10 --params 1000 --repeats 1   # quick
    python benchmarks/secagg.py --ring-bits 32           # masked updates as small as float32 ones

Each measurement runs every step of privacy/secagg for every silo (key advertisement, encrypted
share distribution, masked inputs, unmasking) on a model of ``--params`` float32 values, with
``--drop`` of the silos vanishing before their masked input (the costly case: the server must rebuild
their mask keys and strip their pairwise masks). Every message is serialized to bytes and parsed
again on its way (``privacy/secagg/wire.py``). Printed, one JSON line per measurement:

- ``round_s``: wall time of the whole round, all silos and the server in this one process;
- ``server_s``: the server's steps alone; ``silo_s_mean`` / ``silo_s_max``: one silo's own steps
  (what each party would spend when deployed, silos working in parallel);
- ``fedavg_s``: ``WeightedSum`` (FedAvg's streaming mean) of the same survivors' updates (no privacy);
- ``sent_bytes_mean`` / ``sent_bytes_max``: serialized bytes one silo sends in the round (keys,
  shares, masked vector, revealed shares), beside ``plain_update_bytes``, the float32 update alone;
- ``max_abs_error``: largest difference between the secure sum and the float64 sum of the updates.

The first line measures the PRG alone: expanding one 32-byte seed into a mask for the model.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from fedsilo.privacy.secagg import FixedPoint, layout_of, new_round, simulate_round
from fedsilo.privacy.secagg.prg import expand
from fedsilo.wire.arrays import WeightedSum


def model_updates(n: int, params: int, seed: int) -> dict[int, dict[str, np.ndarray]]:
    """Three arrays adding up to ``params`` (>= 300) float32 values, different per silo, like a small MLP's delta."""
    rng = np.random.default_rng(seed)
    rows = max(params // 200, 1)
    shapes = {"layer1.weight": (rows, 100), "layer1.bias": (100,)}
    shapes["layer2.weight"] = (params - rows * 100 - 100,)
    return {u: {k: (rng.normal(size=s) * 0.01).astype(np.float32) for k, s in shapes.items()} for u in range(1, n + 1)}


def prg_line(params: int, repeats: int) -> dict[str, object]:
    expand(bytes(32), params)
    times = []
    for _ in range(max(repeats, 5)):
        t = time.perf_counter()
        expand(bytes(32), params)
        times.append(time.perf_counter() - t)
    return {"measure": "prg_mask", "params": params, "ms": round(1000 * statistics.median(times), 3)}


def round_line(
    n: int, params: int, neighbours: int | None, drop_fraction: float, repeats: int, encoding: FixedPoint
) -> dict[str, object]:
    updates = model_updates(n, params, seed=n)
    rng = np.random.default_rng(0)
    dropped = [int(u) for u in rng.choice(np.arange(1, n + 1), size=int(n * drop_fraction), replace=False)]
    runs = []
    for _ in range(repeats):
        config = new_round(range(1, n + 1), layout_of(updates[1]), rng, neighbours=neighbours, encoding=encoding)
        t = time.perf_counter()
        run = simulate_round(config, updates, drop=dict.fromkeys(dropped, "masked_input"), wire=True)
        runs.append((time.perf_counter() - t, run))
    wall, run = sorted(runs, key=lambda x: x[0])[len(runs) // 2]
    survivors = [updates[u] for u in run.result.survivors]
    t = time.perf_counter()
    acc = WeightedSum()
    for update in survivors:
        acc.add(update, 1.0)
    mean = acc.mean(survivors[0])
    fedavg = time.perf_counter() - t
    error = max(
        float(np.abs(run.result.total[k] - sum(u[k].astype(np.float64) for u in survivors)).max()) for k in mean
    )
    senders = [run.sent_bytes[u] for u in run.result.survivors]
    return {
        "measure": "secagg_round",
        "mode": "secagg" if neighbours is None or neighbours >= n - 1 else f"secagg+ k={neighbours}",
        "silos": n,
        "threshold": config.threshold,
        "dropped": len(dropped),
        "params": params,
        "ring_bits": encoding.ring_bits,
        "round_s": round(wall, 3),
        "server_s": round(run.server_seconds, 3),
        "silo_s_mean": round(statistics.mean(run.silo_seconds[u] for u in run.result.survivors), 4),
        "silo_s_max": round(max(run.silo_seconds[u] for u in run.result.survivors), 4),
        "fedavg_s": round(fedavg, 4),
        "sent_bytes_mean": round(statistics.mean(senders)),
        "sent_bytes_max": max(senders),
        "plain_update_bytes": params * 4,
        "max_abs_error": error,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--silos", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--params", type=int, default=100_000)
    parser.add_argument("--neighbours", type=int, default=8, help="k for the SecAgg+ lines (0: SecAgg only)")
    parser.add_argument("--drop", type=float, default=0.1, help="fraction of silos dropping before masked input")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--ring-bits", type=int, default=64, choices=[32, 64])
    parser.add_argument("--clip", type=float, default=None, help="default: 1024 (64-bit ring) or 8 (32-bit)")
    parser.add_argument("--frac-bits", type=int, default=None, help="default: 32 (64-bit ring) or 16 (32-bit)")
    args = parser.parse_args()
    wide = args.ring_bits == 64
    clip = args.clip if args.clip is not None else (1024.0 if wide else 8.0)
    frac = args.frac_bits if args.frac_bits is not None else (32 if wide else 16)
    encoding = FixedPoint(clip=clip, frac_bits=frac, ring_bits=args.ring_bits)
    print(json.dumps(prg_line(args.params, args.repeats)), flush=True)
    for n in args.silos:
        modes: list[int | None] = [None]
        if args.neighbours and args.neighbours < n - 1:
            modes.append(args.neighbours)
        for k in modes:
            print(json.dumps(round_line(n, args.params, k, args.drop, args.repeats, encoding)), flush=True)


if __name__ == "__main__":
    main()
