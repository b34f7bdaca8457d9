"""The lossy encoders behind the codecs: float16, 8-bit stochastic quantization, top-k sparsification.

Pure functions over ``ArrayDict``s with an injected generator (see :mod:`fedsilo.wire.codecs` for
what each codec is for and how the receiver decodes it). Only floating-point arrays are encoded;
the extra arrays a codec needs travel next to the array they describe, named ``<name>::q8`` or
``<name>::topk``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from fedsilo.errors import ParameterError, UpdateRejected
from fedsilo.wire.arrays import ArrayDict

SEP = "::"
Q8, TOPK = "q8", "topk"
LEVELS = 255  # 8-bit codes 0..255
FLOAT16_MAX = float(np.finfo(np.float16).max)
CHUNK = 1 << 16  # elements quantized at a time


def _is_float(a: np.ndarray) -> bool:
    return np.issubdtype(a.dtype, np.floating)


def _check_input(arrays: Mapping[str, np.ndarray]) -> None:
    """Names must not collide with the codecs' own, and floats must be finite: report all at once."""
    problems = [f"'{k}' contains '{SEP}', which codecs reserve" for k in arrays if SEP in k]
    problems += [f"'{k}' has non-finite values" for k, a in arrays.items() if _is_float(a) and not np.isfinite(a).all()]
    if problems:
        raise UpdateRejected(
            "cannot compress the update: " + "; ".join(problems), "rename the arrays, or check the training for NaN"
        )


def encode_float16(arrays: Mapping[str, np.ndarray]) -> ArrayDict:
    """Float arrays as float16; refuses values float16 cannot hold instead of sending infinities."""
    _check_input(arrays)
    too_big = [k for k, a in arrays.items() if _is_float(a) and a.size and float(np.abs(a).max()) > FLOAT16_MAX]
    if too_big:
        raise UpdateRejected(
            f"cannot send as float16: values beyond +-{FLOAT16_MAX:.0f} in {', '.join(too_big)}",
            "use codec q8, or none",
        )
    return {k: a.astype(np.float16) if _is_float(a) else a for k, a in arrays.items()}


def quantize_q8(a: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One array to uint8 codes and ``[low, step]`` (float64), by unbiased stochastic rounding.

    With ``t = (x - low) / step``, the code is ``floor(t) + 1`` with probability ``t - floor(t)``
    and ``floor(t)`` otherwise, so ``E[low + code * step] = x``.
    """
    x = np.asarray(a)
    low = float(x.min()) if x.size else 0.0
    high = float(x.max()) if x.size else 0.0
    step = (high - low) / LEVELS
    if not math.isfinite(step):
        raise UpdateRejected(
            f"cannot quantize: the range of values ({low:g} .. {high:g}) overflows float64",
            "check the training (the update is out of any sane range), or use codec none",
        )
    if step == 0.0:
        return np.zeros(x.shape, np.uint8), np.array([low, 0.0])
    flat = x.ravel()
    codes = np.empty(flat.size, np.uint8)
    for start in range(0, flat.size, CHUNK):  # chunks stay in cache: ~10x faster than whole-array temporaries
        t = flat[start : start + CHUNK].astype(np.float64)
        t -= low
        t /= step
        floor = np.floor(t)
        t -= floor  # the fractional part: probability of rounding up
        floor += rng.random(t.size) < t
        np.clip(floor, 0, LEVELS, out=floor)
        codes[start : start + CHUNK] = floor
    return codes.reshape(x.shape), np.array([low, step])


def dequantize_q8(codes: np.ndarray, low: float, step: float, dtype: np.dtype) -> np.ndarray:
    """``low + code * step`` in float64, cast to ``dtype``, a chunk at a time."""
    flat = codes.ravel()
    out = np.empty(flat.size, dtype)
    for start in range(0, flat.size, CHUNK):
        values = flat[start : start + CHUNK].astype(np.float64)
        values *= step
        values += low
        out[start : start + CHUNK] = values
    return out.reshape(codes.shape)


def encode_q8(arrays: Mapping[str, np.ndarray], rng: np.random.Generator) -> ArrayDict:
    """Float arrays as 8-bit codes plus ``<name>::q8`` = ``[low, step]``; arrays drawn in order."""
    _check_input(arrays)
    out: ArrayDict = {}
    for k, a in arrays.items():
        if _is_float(a):
            out[k], out[k + SEP + Q8] = quantize_q8(a, rng)
        else:
            out[k] = a
    return out


def _index_dtype(size: int) -> type[np.unsignedinteger]:
    return np.uint32 if size <= np.iinfo(np.uint32).max else np.uint64


def _largest(magnitudes: np.ndarray, keep: int) -> np.ndarray:
    """Increasing indices of the ``keep`` largest values; ties go to the lowest indices (deterministic).

    A partition of the values finds the threshold without the int64 index array argpartition
    builds, about twice as fast on large arrays.
    """
    if keep == 0:
        return np.arange(0)
    threshold = np.partition(magnitudes, magnitudes.size - keep)[magnitudes.size - keep]
    above = np.flatnonzero(magnitudes > threshold)
    ties = np.flatnonzero(magnitudes == threshold)[: keep - above.size]
    return np.sort(np.concatenate([above, ties]))


def encode_topk(
    arrays: Mapping[str, np.ndarray], fraction: float, residual: Mapping[str, np.ndarray] | None = None
) -> tuple[ArrayDict, ArrayDict]:
    """The largest ``fraction`` of each float array's entries (after adding the residual) and the new residual.

    Each float array ``name`` becomes its kept values (same dtype) and ``name::topk``, their flat
    indices in increasing order; at least one entry is kept per non-empty array. The returned
    residual is what was not sent (error feedback): pass it to the next call.
    """
    if not 0.0 < fraction <= 1.0:
        raise ParameterError(f"topk_fraction must be in (0, 1], got {fraction}", "use e.g. 0.01")
    _check_input(arrays)
    floats = [k for k, a in arrays.items() if _is_float(a)]
    if residual is not None:
        bad = sorted(set(residual) ^ set(floats)) + [
            k for k in floats if k in residual and np.shape(residual[k]) != np.shape(arrays[k])
        ]
        if bad:
            raise ParameterError(
                f"the top-k residual does not match the update: {', '.join(bad)}",
                "pass the residual the previous call returned for the same model",
            )
    out: ArrayDict = {}
    new_residual: ArrayDict = {}
    for k, a in arrays.items():
        if not _is_float(a):
            out[k] = a
            continue
        # Our own C-ordered copy (0-d arrays too), so that ``flat`` below is a view into it.
        acc = np.array(a, order="C") if residual is None else np.require(a + residual[k], requirements=["C", "W"])
        flat = acc.reshape(-1)
        keep = min(flat.size, max(1, math.ceil(fraction * flat.size))) if flat.size else 0
        idx = _largest(np.abs(flat), keep)
        values = flat[idx].astype(a.dtype)
        out[k], out[k + SEP + TOPK] = values, idx.astype(_index_dtype(flat.size))
        flat[idx] -= values  # acc is our own copy: it becomes what the receiver will not have
        new_residual[k] = acc
    return out, new_residual
