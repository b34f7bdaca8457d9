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

from fedsilo.errors import ParameterError, UpdateRejected
from fedsilo.wire.arrays import ArrayDict, ArraySpec, BufferLayout
from fedsilo.wire.deltas import apply, delta
from fedsilo.wire.lossy import (
    Q8,
    SEP,
    TOPK,
    _check_input,
    _index_dtype,
    _is_float,
    dequantize_q8,
    encode_float16,
    encode_q8,
    encode_topk,
)

CodecName = Literal["none", "float16", "q8", "topk"]
CODECS: tuple[str, ...] = ("none", "float16", "q8", "topk")


@dataclass(frozen=True, slots=True)
class Codec:
    """Which codec a silo applies to its update (read from the experiment's config)."""

    name: CodecName = "none"
    topk_fraction: float = 0.01

    def __post_init__(self) -> None:
        if self.name not in CODECS:
            raise ParameterError(f"unknown compression codec '{self.name}'", f"use one of {', '.join(CODECS)}")
        if not 0.0 < self.topk_fraction <= 1.0:
            raise ParameterError(f"topk_fraction must be in (0, 1], got {self.topk_fraction}", "use e.g. 0.01")


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
        raise UpdateRejected(
            "compressed update rejected: " + "; ".join(problems),
            "run the same fedsilo version and task module on the silo as on the server",
        )
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


# --- updates in runs: what a silo encodes and the server adds back ---------------------------------


def update_of(model: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> ArrayDict:
    """What a silo encodes: ``model - reference`` for float arrays (small, centred), others as they are.

    Integer and boolean arrays (e.g. a step counter) are sent whole, since codecs pass them through
    unchanged and a difference of counters means nothing to the receiver.
    """
    diffs = delta(model, {k: reference[k] for k, a in model.items() if _is_float(a)}, dtype=None)
    return {k: diffs.get(k, a) for k, a in model.items()}


def model_from(update: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> ArrayDict:
    """The inverse of :func:`update_of`: ``reference + update`` for float arrays, others as received."""
    models = apply({k: reference[k] for k, a in update.items() if _is_float(a)}, update)
    return {k: models.get(k, a) for k, a in update.items()}


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


def encoded_layout(layout: BufferLayout, codec: Codec) -> BufferLayout:
    """Where an update encoded with ``codec`` lies in a shared-memory slot (the model's own layout without one)."""
    return layout if codec.name == "none" else BufferLayout.of_spec(encoded_spec(layout.spec(), codec))
