"""Fixed-point encoding of float arrays into the ring Z_(2^k) (k = 64 or 32), where masked sums are taken.

Masks must be uniform over a finite group for a masked value to hide the value, so updates are
mapped to integers: ``q = round(clip(x, -R, R) * 2^f)`` stored as two's complement in ``uint64``
(or ``uint32``). Sums in numpy unsigned integers wrap modulo 2^k for free, which is exactly the ring
arithmetic masking needs.

Overflow analysis: one encoded value has magnitude at most ``R * 2^f``; the sum of ``n`` of them
has magnitude at most ``n * R * 2^f``. Reading the sum back as a signed integer is correct as long
as that stays below ``2^(k-1)``, so a setting serves at most ``max_summands = floor((2^(k-1) - 1) / (R * 2^f))``
silos. The defaults (``k = 64``, ``R = 1024``, ``f = 32``: resolution 2.3e-10, finer than float32
near 1) allow about two million silos. ``k = 32`` halves the bytes on the wire (a masked update is
then as large as the float32 update): e.g. ``R = 8``, ``f = 16`` (resolution 1.5e-5) serves 4095
silos. :func:`FixedPoint.check_summands` refuses settings that could wrap.

Precision: each value is rounded to the nearest multiple of ``2^-f`` (error at most ``2^-(f+1)``),
so a decoded sum of ``n`` values is within ``n * 2^-(f+1)`` of the float sum of the clipped values;
the sum of the *encoded* values is recovered exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fedsilo.errors import SecAggError
from fedsilo.privacy.secagg.fixes import SAME_VERSION
from fedsilo.wire.arrays import ArrayDict, ArraySpec

RING_BITS = 64


@dataclass(frozen=True, slots=True)
class FixedPoint:
    """How floats become ring elements: values are clipped to ``[-clip, clip]`` and kept to ``frac_bits`` bits."""

    clip: float = 1024.0
    frac_bits: int = 32
    ring_bits: int = 64  # 64 or 32: the ring Z_(2^ring_bits) and the dtype of a masked vector

    def __post_init__(self) -> None:
        problems = []
        if self.ring_bits not in (32, 64):
            problems.append(f"ring_bits={self.ring_bits} must be 32 or 64")
        if not (np.isfinite(self.clip) and self.clip > 0):
            problems.append(f"clip={self.clip} must be a positive finite number")
        if not (0 <= self.frac_bits <= 52):
            problems.append(f"frac_bits={self.frac_bits} must be in 0..52 (float64 keeps 53 significant bits)")
        if not problems and self.max_summands < 1:
            problems.append(
                f"clip * 2^frac_bits = {self.clip * 2.0**self.frac_bits:.3g} does not fit in {self.ring_bits - 1} bits"
            )
        if problems:
            raise SecAggError("fixed-point encoding: " + "; ".join(problems), "use e.g. clip=1024, frac_bits=32")

    @property
    def scale(self) -> float:
        return float(2**self.frac_bits)

    @property
    def max_summands(self) -> int:
        """How many encoded values can be summed before the signed sum could wrap around."""
        largest = int(np.ceil(self.clip * self.scale))
        return (2 ** (self.ring_bits - 1) - 1) // max(largest, 1)

    @property
    def dtype(self) -> type[np.unsignedinteger]:
        """The numpy dtype of ring elements."""
        return np.uint64 if self.ring_bits == 64 else np.uint32

    @property
    def resolution(self) -> float:
        """The step between two representable values."""
        return 1.0 / self.scale

    def check_summands(self, n: int) -> None:
        """Refuse to sum ``n`` values when the sum could wrap around the ring and decode wrongly."""
        if n > self.max_summands:
            raise SecAggError(
                f"{n} silos can overflow the fixed-point sum (at most {self.max_summands} with "
                f"clip={self.clip}, frac_bits={self.frac_bits})",
                "lower frac_bits or clip",
            )


#: The order of an update's values in the masked vector: (name, spec) per array, as silos and server agree.
VectorLayout = tuple[tuple[str, ArraySpec], ...]


def layout_of(arrays: Mapping[str, np.ndarray]) -> VectorLayout:
    """The names, shapes and dtypes of ``arrays``, in order: what silos and server agree on before a round."""
    return tuple((k, ArraySpec(tuple(int(d) for d in v.shape), str(v.dtype))) for k, v in arrays.items())


def layout_size(layout: VectorLayout) -> int:
    return sum(int(np.prod(spec.shape, dtype=np.int64)) for _, spec in layout)


def layout_problems(arrays: Mapping[str, np.ndarray], layout: VectorLayout) -> list[str]:
    """Every way ``arrays`` differs from ``layout`` (names, order, shapes, finiteness); empty when it fits."""
    problems: list[str] = []
    names = [k for k, _ in layout]
    if list(arrays) != names:
        problems.append(f"arrays {list(arrays)} differ from the agreed {names}")
        return problems
    for name, spec in layout:
        arr = np.asarray(arrays[name])
        if tuple(arr.shape) != spec.shape:
            problems.append(f"{name}: shape {tuple(arr.shape)}, expected {spec.shape}")
        elif not np.issubdtype(arr.dtype, np.floating) and not np.issubdtype(arr.dtype, np.integer):
            problems.append(f"{name}: dtype {arr.dtype} is not numeric")
        elif not np.isfinite(arr).all():
            problems.append(f"{name}: {int(arr.size - np.count_nonzero(np.isfinite(arr)))} non-finite values")
    return problems


def encode(arrays: Mapping[str, np.ndarray], layout: VectorLayout, fp: FixedPoint) -> tuple[np.ndarray, int]:
    """Flatten ``arrays`` into one ring vector (``fp.dtype``); also return how many values were clipped."""
    problems = layout_problems(arrays, layout)
    if problems:
        raise SecAggError(
            "update does not fit the secure-aggregation layout: " + "; ".join(problems),
            "run the same task module (same model) on the server and on every silo",
        )
    flat = np.concatenate([np.asarray(arrays[k], dtype=np.float64).ravel() for k, _ in layout]) if layout else None
    if flat is None:
        return np.zeros(0, dtype=fp.dtype), 0
    clipped = int(np.count_nonzero(np.abs(flat) > fp.clip))
    np.clip(flat, -fp.clip, fp.clip, out=flat)
    flat *= fp.scale
    signed = np.rint(flat).astype(np.int64)
    if fp.ring_bits == 32:
        signed = signed.astype(np.int32)  # exact: |value| <= clip * 2^f < 2^31, checked in FixedPoint
    return signed.view(fp.dtype), clipped


def decode(ring: np.ndarray, layout: VectorLayout, fp: FixedPoint) -> ArrayDict:
    """Read a (summed) ring vector back as float64 arrays shaped as ``layout`` (float64 keeps the sum's precision)."""
    if ring.dtype != fp.dtype or ring.ndim != 1 or ring.size != layout_size(layout):
        raise SecAggError(
            f"ring vector of dtype {ring.dtype}, shape {ring.shape} does not match the layout", SAME_VERSION
        )
    values = ring.view(np.int64 if fp.ring_bits == 64 else np.int32).astype(np.float64) / fp.scale
    out: ArrayDict = {}
    pos = 0
    for name, spec in layout:
        size = int(np.prod(spec.shape, dtype=np.int64))
        out[name] = values[pos : pos + size].reshape(spec.shape)
        pos += size
    return out
