"""Reversible codecs for model updates: float16, 8-bit stochastic quantization, top-k with error feedback.

A codec turns an ``ArrayDict`` into another ``ArrayDict`` (so the transport still sends plain
safetensors, never pickle) and :func:`decode` turns it back, given the spec the receiver expects
anyway (the global model's names, shapes and dtypes). Only floating-point arrays are compressed;
integer and boolean arrays pass through unchanged. Extra arrays a codec needs travel next to the
array they describe, named ``<name>::q8`` or ``<name>::topk``; ``decode`` reports every problem
(missing, unexpected, mis-shaped, out of range) at once as :class:`~fedsilo.errors.UpdateRejected`.

* ``float16``: halves the bytes; exact for values float16 can hold. Values beyond +-65504 are
  refused rather than silently turned into infinities.
* ``q8`` (stochastic 8-bit quantization, as in QSGD, Alistarh et al. 2017, with per-array min/max
  levels): each value becomes one of 256 evenly spaced levels between the array's min and max,
  rounded up or down at random with the probabilities that make the dequantized value equal the
  input *in expectation*, so averaging many silos' updates stays unbiased. About a quarter of
  float32's bytes.
* ``topk`` (sparsification with error feedback, Stich et al. 2018, "Sparsified SGD with Memory"):
  only the ``fraction`` of entries largest in magnitude are sent (values and flat indices); what
  was not sent is kept by the silo as a residual and added to its next update, so nothing is lost,
  only delayed. The residual is explicit state: passed in, returned, and the caller keeps it.

Lossy codecs (``q8``, ``topk``) are meant for *updates* (silo model - global model), whose entries
are small and centred; ``float16`` suits whole models too. None of them is linear across silos, so
they do not combine with secure aggregation's masked sums. Randomness comes from a passed-in
generator.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from fedsilo.arrays import ArrayDict, ArraySpec, to_bytes
from fedsilo.errors import ConfigError, UpdateRejected

CodecName = Literal["none", "float16", "q8", "topk"]
CODECS: tuple[str, ...] = ("none", "float16", "q8", "topk")
SEP = "::"
Q8, TOPK = "q8", "topk"
LEVELS = 255  # 8-bit codes 0..255
FLOAT16_MAX = float(np.finfo(np.float16).max)
CHUNK = 1 << 16  # elements quantized at a time


@dataclass(frozen=True, slots=True)
class Codec:
    """Which codec a silo applies to its update (read from the experiment's config)."""

    name: CodecName = "none"
    topk_fraction: float = 0.01

    def __post_init__(self) -> None:
        if self.name not in CODECS:
            raise ConfigError(f"unknown compression codec '{self.name}'", f"use one of {', '.join(CODECS)}")
        if not 0.0 < self.topk_fraction <= 1.0:
            raise ConfigError(f"topk_fraction must be in (0, 1], got {self.topk_fraction}")


def _is_float(a: np.ndarray) -> bool:
    return np.issubdtype(a.dtype, np.floating)


def _check_input(arrays: Mapping[str, np.ndarray]) -> None:
    """Names must not collide with the codecs' own, and floats must be finite: report all at once."""
    problems = [f"'{k}' contains '{SEP}', which codecs reserve" for k in arrays if SEP in k]
    problems += [f"'{k}' has non-finite values" for k, a in arrays.items() if _is_float(a) and not np.isfinite(a).all()]
    if problems:
        raise UpdateRejected("cannot compress the update: " + "; ".join(problems))


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
        raise UpdateRejected(f"cannot quantize: the range of values ({low:g} .. {high:g}) overflows float64")
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
    Codec("topk", fraction)  # validates the fraction
    _check_input(arrays)
    floats = [k for k, a in arrays.items() if _is_float(a)]
    if residual is not None:
        bad = sorted(set(residual) ^ set(floats)) + [
            k for k in floats if k in residual and np.shape(residual[k]) != np.shape(arrays[k])
        ]
        if bad:
            raise ConfigError(f"the top-k residual does not match the update: {', '.join(bad)}")
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


def encode(
    arrays: Mapping[str, np.ndarray],
    codec: Codec,
    rng: np.random.Generator,
    residual: Mapping[str, np.ndarray] | None = None,
) -> tuple[ArrayDict, ArrayDict | None]:
    """Apply ``codec``; returns the encoded arrays and the residual to keep (top-k only, else None)."""
    if codec.name == "float16":
        return encode_float16(arrays), None
    if codec.name == "q8":
        return encode_q8(arrays, rng), None
    if codec.name == "topk":
        return encode_topk(arrays, codec.topk_fraction, residual)
    _check_input(arrays)
    return dict(arrays), None


def decode(encoded: Mapping[str, np.ndarray], spec: Mapping[str, ArraySpec]) -> ArrayDict:
    """Rebuild arrays matching ``spec`` exactly (names, order, shapes, dtypes) from any codec's output."""
    problems: list[str] = []
    for k in encoded:
        base, _, tag = k.rpartition(SEP)
        if k in spec:
            continue
        if base not in spec or tag not in (Q8, TOPK):
            problems.append(f"unexpected array '{k}'")
        elif not np.issubdtype(np.dtype(spec[base].dtype), np.floating):
            problems.append(f"'{base}' is {spec[base].dtype}, which codecs send unchanged, yet '{k}' came with it")
        elif tag == TOPK and base + SEP + Q8 in encoded:
            problems.append(f"'{base}' came both quantized and sparsified")
    out: ArrayDict = {}
    for name, s in spec.items():
        if name not in encoded:
            problems.append(f"missing array '{name}'")
            continue
        try:
            out[name] = _decode_one(name, encoded, s)
        except ValueError as e:
            problems.append(str(e))
    if problems:
        raise UpdateRejected("compressed update rejected: " + "; ".join(problems))
    return out


def _decode_one(name: str, encoded: Mapping[str, np.ndarray], s: ArraySpec) -> np.ndarray:
    a = np.asarray(encoded[name])
    dtype = np.dtype(s.dtype)
    size = int(np.prod(s.shape, dtype=np.int64))
    if name + SEP + Q8 in encoded:
        levels = np.asarray(encoded[name + SEP + Q8])
        if a.dtype != np.uint8 or a.shape != s.shape:
            raise ValueError(f"'{name}': q8 codes must be uint8 of shape {s.shape}, got {a.dtype} {a.shape}")
        if levels.shape != (2,) or not np.isfinite(levels).all() or levels[1] < 0:
            raise ValueError(f"'{name}': q8 levels must be finite [low, step >= 0]")
        return dequantize_q8(a, float(levels[0]), float(levels[1]), dtype)
    if name + SEP + TOPK in encoded:
        idx = np.asarray(encoded[name + SEP + TOPK])
        if not np.issubdtype(idx.dtype, np.integer) or idx.ndim != 1 or a.shape != idx.shape:
            raise ValueError(
                f"'{name}': top-k needs 1-d integer indices and as many values, got {idx.shape}, {a.shape}"
            )
        if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= size or not (np.diff(idx) > 0).all()):
            raise ValueError(f"'{name}': top-k indices must be increasing and within 0..{size - 1}")
        if not np.isfinite(a).all():
            raise ValueError(f"'{name}': non-finite values")
        dense = np.zeros(size, dtype)
        dense[idx.astype(np.int64)] = a
        return dense.reshape(s.shape)
    if a.shape != s.shape:
        raise ValueError(f"'{name}': shape {a.shape}, expected {s.shape}")
    if a.dtype == dtype:
        return a
    if a.dtype == np.float16 and np.issubdtype(dtype, np.floating):
        return a.astype(dtype)
    raise ValueError(f"'{name}': dtype {a.dtype}, expected {dtype}")


def wire_bytes(arrays: Mapping[str, np.ndarray]) -> int:
    """Size of ``arrays`` as the safetensors bytes the transport sends (header included)."""
    return len(to_bytes(arrays))


# --- updates in runs: what a silo encodes and the server adds back ---------------------------------


def update_of(model: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> ArrayDict:
    """What a silo encodes: ``model - reference`` for float arrays (small, centred), others as they are.

    Integer and boolean arrays (e.g. a step counter) are sent whole, since codecs pass them through
    unchanged and a difference of counters means nothing to the receiver.
    """
    return {k: np.subtract(a, reference[k], dtype=a.dtype) if _is_float(a) else a for k, a in model.items()}


def model_from(update: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> ArrayDict:
    """The inverse of :func:`update_of`: ``reference + update`` for float arrays, others as received."""
    return {k: np.add(reference[k], a, dtype=a.dtype) if _is_float(a) else a for k, a in update.items()}


def encoded_spec(spec: Mapping[str, ArraySpec], codec: Codec) -> dict[str, ArraySpec]:
    """The names, shapes and dtypes ``encode`` produces for arrays of ``spec``: known in advance.

    Every codec's output size depends only on the spec (top-k keeps ``ceil(fraction * size)``
    entries, at least one), so a buffer for encoded updates can be sized before any silo trains.
    """
    out: dict[str, ArraySpec] = {}
    for name, s in spec.items():
        if not np.issubdtype(np.dtype(s.dtype), np.floating) or codec.name == "none":
            out[name] = s
        elif codec.name == "float16":
            out[name] = ArraySpec(s.shape, "float16")
        elif codec.name == "q8":
            out[name] = ArraySpec(s.shape, "uint8")
            out[name + SEP + Q8] = ArraySpec((2,), "float64")
        else:
            size = int(np.prod(s.shape, dtype=np.int64))
            keep = min(size, max(1, math.ceil(codec.topk_fraction * size))) if size else 0
            out[name] = ArraySpec((keep,), s.dtype)
            out[name + SEP + TOPK] = ArraySpec((keep,), np.dtype(_index_dtype(size)).name)
    return out
