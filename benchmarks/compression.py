"""Bytes on the wire and encode/decode time of fedsilo's update codecs, against float32.

    python benchmarks/compression.py [--params 100000 25000000] [--repeats 3]

For each size, a model-shaped update (float32, N(0, 0.01), split into a few arrays like an MLP)
is encoded with each codec and decoded back; bytes are the safetensors bytes the transport would
send (header included), as a ratio to the plain float32 update. Times are the median of
``--repeats`` runs on this machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from fedsilo.wire.arrays import spec_of, wire_size
from fedsilo.wire.codecs import Codec, decode, encode


def update_of(params: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """~``params`` float32 values in four arrays (two weight matrices, two biases)."""
    hidden = 128
    inputs = max(1, (params - 10 * hidden - hidden - 10) // hidden)
    shapes = {"fc1.weight": (hidden, inputs), "fc1.bias": (hidden,), "fc2.weight": (10, hidden), "fc2.bias": (10,)}
    return {k: rng.normal(0, 0.01, size=s).astype(np.float32) for k, s in shapes.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=int, nargs="+", default=[100_000, 25_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'parameters':>12} {'codec':>10} {'bytes / float32':>16} {'encode ms':>10} {'decode ms':>10}")
    for params in args.params:
        update = update_of(params, rng)
        spec = spec_of(update)
        float32 = wire_size(spec_of(update))
        count = sum(a.size for a in update.values())
        for codec in (Codec("float16"), Codec("q8"), Codec("topk", 0.01), Codec("topk", 0.1)):
            enc_times, dec_times = [], []
            for _ in range(args.repeats):
                start = time.perf_counter()
                encoded, _ = encode(update, codec, rng)
                enc_times.append(time.perf_counter() - start)
                start = time.perf_counter()
                decode(encoded, spec)
                dec_times.append(time.perf_counter() - start)
            label = codec.name if codec.name != "topk" else f"topk {codec.topk_fraction:g}"
            ratio = wire_size(spec_of(encoded)) / float32
            enc_ms, dec_ms = statistics.median(enc_times) * 1e3, statistics.median(dec_times) * 1e3
            print(f"{count:>12,} {label:>10} {ratio:>16.4f} {enc_ms:>10.1f} {dec_ms:>10.1f}")


if __name__ == "__main__":
    main()
