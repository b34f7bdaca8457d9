"""Model parameters as named numpy arrays, and the one byte format they travel in.

An ``ArrayDict`` is an ordered ``name -> numpy array`` mapping (a plain ``dict``): arrays are
matched by name, never by position. Anything written to disk or sent over a wire is safetensors
bytes (no pickle). Inside one machine, :class:`BufferLayout` places arrays in a flat buffer (shared
memory) so that a model can be broadcast once and read as zero-copy views.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import safetensors.numpy as st

from fedsilo.wire.files import write_atomic

ArrayDict = dict[str, np.ndarray]


ORDER_KEY = "fedsilo.order"  # safetensors sorts tensors by name; the model's own order is kept here
DIGEST_KEY = "fedsilo.digest"  # a file's SHA-256 over its arrays and metadata (see digest)


class Damaged(ValueError):
    """A file's arrays or metadata differ from what its digest says was written."""


def digest(arrays: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> str:
    """SHA-256 of each array's name, dtype, shape and bytes, in order, and of ``metadata``'s items.

    A file written by :func:`save_file` carries it, and :func:`load_file` checks it: one changed
    weight or one flipped bit is found, not trained on.
    """
    h = hashlib.sha256()
    for name, array in arrays.items():
        a = np.require(array, requirements="C")
        if a.dtype.hasobject:
            raise TypeError(f"array {name!r} holds Python objects (dtype object), which no file can hold")
        h.update(json.dumps([name, a.dtype.str, list(a.shape)]).encode())
        h.update(a.reshape(-1).view(np.uint8).data)
    h.update(json.dumps(sorted((metadata or {}).items())).encode())
    return h.hexdigest()


def _prepare(arrays: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None) -> tuple[ArrayDict, dict[str, str]]:
    meta = {**(metadata or {}), ORDER_KEY: json.dumps(list(arrays))}
    return {k: np.require(v, requirements="C") for k, v in arrays.items()}, meta


def _ordered(arrays: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None) -> ArrayDict:
    """``arrays`` in the order recorded at write time (if the record is there and matches)."""
    try:
        order = json.loads((metadata or {}).get(ORDER_KEY, "null"))
    except json.JSONDecodeError:
        order = None
    if isinstance(order, list) and sorted(order) == sorted(arrays):
        return {k: arrays[k] for k in order}
    return dict(arrays)


def to_bytes(arrays: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> bytes:
    """Serialize to safetensors bytes (the wire format)."""
    tensors, meta = _prepare(arrays, metadata)
    return st.save(tensors, metadata=meta)


def _bytes_header_metadata(data: bytes) -> dict[str, str]:
    """The string metadata in safetensors bytes' header (8-byte length, then JSON)."""
    size = int.from_bytes(data[:8], "little")
    header = json.loads(bytes(data[8 : 8 + size]))
    return dict(header.get("__metadata__") or {})


def from_bytes(data: bytes) -> ArrayDict:
    """Parse safetensors bytes, in the order the arrays were written."""
    return _ordered(st.load(data), _bytes_header_metadata(data))


_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_,
}  # fmt: skip
_MAX_HEADER = 100 * 1024 * 1024  # the limit safetensors itself applies


def views_of(buffer: bytes | bytearray | memoryview) -> ArrayDict:
    """Zero-copy arrays over safetensors bytes (a received update is not copied to be read).

    The header is checked as untrusted input: sizes, dtypes, and that every array lies inside the
    buffer with exactly the bytes its shape needs. Raises ValueError naming what is wrong.
    """
    view = memoryview(buffer).cast("B")
    if len(view) < 8:
        raise ValueError("not safetensors: shorter than its header length")
    size = int.from_bytes(view[:8], "little")
    if size > min(_MAX_HEADER, len(view) - 8):
        raise ValueError(f"not safetensors: header of {size} bytes in a buffer of {len(view)}")
    try:
        header = json.loads(bytes(view[8 : 8 + size]))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not safetensors: unreadable header ({exc})") from None
    if not isinstance(header, dict):
        raise ValueError("not safetensors: the header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    data = view[8 + size :]
    arrays: ArrayDict = {}
    for name, entry in header.items():
        try:
            dtype = np.dtype(_DTYPES[entry["dtype"]])
            shape = tuple(int(d) for d in entry["shape"])
            begin, end = (int(o) for o in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"array {name!r}: unsupported or malformed header entry {entry!r}") from None
        count = int(np.prod(shape, dtype=np.int64))
        if min(shape, default=0) < 0 or not 0 <= begin <= end <= len(data) or end - begin != count * dtype.itemsize:
            raise ValueError(f"array {name!r}: offsets {begin}..{end} do not hold {shape} of {dtype}")
        arrays[name] = np.frombuffer(data, dtype=dtype, count=count, offset=begin).reshape(shape)
    return _ordered(arrays, metadata if isinstance(metadata, dict) else {})


def save_file(arrays: Mapping[str, np.ndarray], path: Path, metadata: Mapping[str, str] | None = None) -> None:
    """Write arrays to ``path`` atomically, so that a crash never leaves half a checkpoint.

    The bytes are made in memory and written by Python, so that a full disk is a
    :class:`~fedsilo.errors.DiskFull` (safetensors' own writer reports it only as text).
    """
    meta = {**(metadata or {}), ORDER_KEY: json.dumps(list(arrays))}
    write_atomic(path, to_bytes(arrays, {**meta, DIGEST_KEY: digest(arrays, meta)}))


def load_file(path: Path) -> ArrayDict:
    """Read a safetensors file, in the order the arrays were written; :class:`Damaged` if its
    digest (when it has one: fedsilo wrote it) does not match."""
    meta = _raw_metadata(path)
    arrays = _ordered(st.load_file(str(path)), meta)
    written = meta.pop(DIGEST_KEY, None)
    if written is not None and written != digest(arrays, meta):
        raise Damaged(f"{path}: its arrays or metadata differ from the digest they were written with")
    return arrays


def _raw_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        return dict(f.metadata() or {})


def read_metadata(path: Path) -> dict[str, str]:
    """The string metadata the writer of a safetensors file gave (fedsilo's own key left out)."""
    return {k: v for k, v in _raw_metadata(path).items() if k not in (ORDER_KEY, DIGEST_KEY)}


def written_digest(path: Path) -> str | None:
    """The digest a file was written with (None: not written by fedsilo's :func:`save_file`)."""
    return _raw_metadata(path).get(DIGEST_KEY)


def num_bytes(arrays: Mapping[str, np.ndarray]) -> int:
    return sum(int(a.nbytes) for a in arrays.values())


_CODES = {np.dtype(v): k for k, v in _DTYPES.items()}


def wire_size(spec: Mapping[str, ArraySpec]) -> int:
    """Length of :func:`to_bytes` for arrays of this spec, without serializing them.

    The header is laid out as safetensors writes it (compact JSON, metadata first, tensors by
    descending alignment then name, padded to 8 bytes), so bytes on the wire can be recorded per
    update at no cost; tests check it against ``len(to_bytes(...))``.
    """
    meta = {ORDER_KEY: json.dumps(list(spec))}
    header: dict[str, object] = {"__metadata__": meta}
    offset = 0
    for name in sorted(spec, key=lambda k: (-np.dtype(spec[k].dtype).itemsize, k)):
        s = spec[name]
        size = int(np.prod(s.shape, dtype=np.int64)) * np.dtype(s.dtype).itemsize
        header[name] = {
            "dtype": _CODES[np.dtype(s.dtype)],
            "shape": list(s.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    text = len(json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode())
    return 8 + (text + 7) // 8 * 8 + offset


@dataclass(frozen=True, slots=True)
class ArraySpec:
    """What an array must look like: the contract a received update is checked against."""

    shape: tuple[int, ...]
    dtype: str


def spec_of(arrays: Mapping[str, np.ndarray]) -> dict[str, ArraySpec]:
    return {k: ArraySpec(tuple(int(d) for d in v.shape), str(v.dtype)) for k, v in arrays.items()}


@dataclass(frozen=True, slots=True)
class BufferLayout:
    """Where each named array lives in one flat buffer (offsets aligned to 64 bytes)."""

    names: tuple[str, ...]
    specs: tuple[ArraySpec, ...]
    offsets: tuple[int, ...]
    size: int

    @classmethod
    def of(cls, arrays: Mapping[str, np.ndarray]) -> BufferLayout:
        return cls.of_spec(spec_of(arrays))

    @classmethod
    def of_spec(cls, specs_by_name: Mapping[str, ArraySpec]) -> BufferLayout:
        names, specs, offsets, pos = [], [], [], 0
        for name, spec in specs_by_name.items():
            names.append(name)
            specs.append(spec)
            offsets.append(pos)
            nbytes = int(np.prod(spec.shape, dtype=np.int64)) * np.dtype(spec.dtype).itemsize
            pos += (nbytes + 63) // 64 * 64
        return cls(tuple(names), tuple(specs), tuple(offsets), max(pos, 64))

    def view(self, buffer: memoryview | bytearray) -> ArrayDict:
        """Zero-copy arrays over ``buffer``; they are valid only while the buffer is."""
        out: ArrayDict = {}
        for name, spec, off in zip(self.names, self.specs, self.offsets, strict=True):
            count = int(np.prod(spec.shape, dtype=np.int64))
            out[name] = np.frombuffer(buffer, dtype=spec.dtype, count=count, offset=off).reshape(spec.shape)
        return out

    def write(self, arrays: Mapping[str, np.ndarray], buffer: memoryview | bytearray) -> None:
        """Copy ``arrays`` into ``buffer``; the caller has already checked them against the specs."""
        for name, dst in self.view(buffer).items():
            np.copyto(dst, arrays[name], casting="no")

    def spec(self) -> dict[str, ArraySpec]:
        return dict(zip(self.names, self.specs, strict=True))


class WeightedSum:
    """Running weighted sum of ArrayDicts, in float64, so updates are folded in as they arrive.

    Memory is one model (plus the float64 widening) whatever the number of silos. Integer weights
    make each product exact in float64, so the result barely depends on arrival order.
    """

    def __init__(self) -> None:
        self._sum: ArrayDict | None = None
        self.total_weight = 0.0
        self.count = 0

    def add(self, arrays: Mapping[str, np.ndarray], weight: float) -> None:
        if weight < 0:
            raise ValueError("weights must be non-negative")
        if self._sum is None:
            self._sum = {k: np.zeros(np.shape(v), np.float64) for k, v in arrays.items()}
        for k, acc in self._sum.items():
            acc += np.multiply(arrays[k], weight, dtype=np.float64)  # in place, 0-d arrays too
        self.total_weight += weight
        self.count += 1

    def mean(self, like: Mapping[str, np.ndarray]) -> ArrayDict:
        """The weighted mean, cast back to the dtypes of ``like``."""
        if self._sum is None or self.total_weight <= 0:
            raise ValueError("no weighted updates to average")
        out: ArrayDict = {}
        for k, ref in like.items():
            mean = np.asarray(self._sum[k] / self.total_weight)  # 0-d arrays would become scalars
            if np.issubdtype(ref.dtype, np.integer):
                mean = np.rint(mean)
            out[k] = np.asarray(mean, dtype=ref.dtype)
        return out
