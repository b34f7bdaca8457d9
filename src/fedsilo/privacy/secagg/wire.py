"""Protocol messages as bytes: safetensors with the message's fields as JSON in the header. No pickle.

A transport sends ``to_bytes(message)`` and the receiver calls ``from_bytes(data, ExpectedType)``.
The one array a message may carry (the masked vector) is a safetensors tensor; every other field is
JSON (bytes as base64, silo numbers as ints). Parsing is strict, as for anything crossing a trust
boundary: the kind must be the expected one, every field present with the right type, and every
problem is reported at once in one :class:`SecAggError`.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import fields
from typing import Any, TypeVar

import numpy as np

from fedsilo.errors import SecAggError
from fedsilo.privacy.secagg.encoding import FixedPoint
from fedsilo.privacy.secagg.fixes import SAME_VERSION
from fedsilo.privacy.secagg.messages import (
    AdvertiseKeys,
    KeyDirectory,
    MaskedInput,
    SecAggConfig,
    ShareKeys,
    SharesForSilo,
    UnmaskRequest,
    UnmaskShares,
)
from fedsilo.wire.arrays import ArraySpec
from fedsilo.wire.arrays import from_bytes as arrays_from_bytes
from fedsilo.wire.arrays import to_bytes as arrays_to_bytes

META_KEY = "fedsilo.secagg"
MAX_HEADER_BYTES = 256 * 1024**2  # far above any message of 100 silos; refuses absurd headers outright

_SCHEMA: dict[type, dict[str, str]] = {
    SecAggConfig: {
        "session": "bytes",
        "silos": "ints",
        "threshold": "int",
        "layout": "layout",
        "encoding": "encoding",
        "neighbours": "opt_int",
        "graph_seed": "int",
    },
    AdvertiseKeys: {"silo": "int", "c_public": "bytes", "s_public": "bytes"},
    KeyDirectory: {"keys": "map_pair"},
    ShareKeys: {"silo": "int", "ciphertexts": "map_bytes", "digests": "map_pair"},
    SharesForSilo: {"silo": "int", "participants": "ints", "ciphertexts": "map_bytes", "digests": "map_pair"},
    MaskedInput: {"silo": "int", "vector": "array", "suspects": "ints"},
    UnmaskRequest: {"survivors": "ints", "dropped": "ints"},
    UnmaskShares: {"silo": "int", "b_shares": "map_bytes", "s_shares": "map_bytes"},
}
T = TypeVar("T")


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _dump(kind: str, value: Any) -> Any:
    if kind == "bytes":
        return _b64(value)
    if kind in ("int", "opt_int"):
        return None if value is None else int(value)
    if kind == "ints":
        return [int(v) for v in value]
    if kind == "map_bytes":
        return {str(k): _b64(v) for k, v in value.items()}
    if kind == "map_pair":
        return {str(k): [_b64(a), _b64(b)] for k, (a, b) in value.items()}
    if kind == "layout":
        return [[name, list(spec.shape), spec.dtype] for name, spec in value]
    if kind == "encoding":
        return {"clip": value.clip, "frac_bits": value.frac_bits, "ring_bits": value.ring_bits}
    raise AssertionError(kind)


def to_bytes(message: object) -> bytes:
    """Serialize a protocol message or a round config (safetensors bytes, JSON fields in the header)."""
    schema = _SCHEMA.get(type(message))
    if schema is None:
        raise TypeError(f"{type(message).__name__} is not a secure-aggregation message")
    body = {"kind": type(message).__name__, "fields": {}}
    tensors: dict[str, np.ndarray] = {}
    for name, kind in schema.items():
        if kind == "array":
            tensors[name] = getattr(message, name)
        else:
            body["fields"][name] = _dump(kind, getattr(message, name))  # type: ignore[index]
    return arrays_to_bytes(tensors, {META_KEY: json.dumps(body, separators=(",", ":"))})


class _Reader:
    """Parses one field at a time and collects every problem instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def read_int(self, name: str, v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            self.problems.append(f"{name}: not an integer")
            return 0
        return v

    def read_bytes(self, name: str, v: Any) -> bytes:
        try:
            return base64.b64decode(v, validate=True) if isinstance(v, str) else self._bad(name, b"")
        except (binascii.Error, ValueError):
            return self._bad(name, b"")

    def _bad(self, name: str, default: Any) -> Any:
        self.problems.append(f"{name}: not base64 bytes")
        return default

    def key(self, name: str, k: str) -> int:
        if not (isinstance(k, str) and k.isdigit()):
            self.problems.append(f"{name}: key {k!r} is not a silo number")
            return 0
        return int(k)

    def load(self, name: str, kind: str, v: Any) -> Any:
        if kind == "int":
            return self.read_int(name, v)
        if kind == "opt_int":
            return None if v is None else self.read_int(name, v)
        if kind == "bytes":
            return self.read_bytes(name, v)
        if kind == "ints":
            if not isinstance(v, list):
                self.problems.append(f"{name}: not a list")
                return ()
            return tuple(self.read_int(f"{name}[{i}]", x) for i, x in enumerate(v))
        if kind in ("map_bytes", "map_pair"):
            if not isinstance(v, dict):
                self.problems.append(f"{name}: not a mapping")
                return {}
            if kind == "map_bytes":
                return {self.key(name, k): self.read_bytes(f"{name}[{k}]", x) for k, x in v.items()}
            out = {}
            for k, pair in v.items():
                if not (isinstance(pair, list) and len(pair) == 2):
                    self.problems.append(f"{name}[{k}]: not a pair")
                    continue
                out[self.key(name, k)] = (
                    self.read_bytes(f"{name}[{k}]", pair[0]),
                    self.read_bytes(f"{name}[{k}]", pair[1]),
                )
            return out
        if kind == "layout":
            ok = isinstance(v, list) and all(
                isinstance(e, list)
                and len(e) == 3
                and isinstance(e[0], str)
                and isinstance(e[1], list)
                and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in e[1])
                and isinstance(e[2], str)
                for e in v
            )
            if not ok:
                self.problems.append(f"{name}: not a list of [name, shape, dtype]")
                return ()
            return tuple((e[0], ArraySpec(tuple(e[1]), e[2])) for e in v)
        if kind == "encoding":
            if not (isinstance(v, dict) and set(v) == {"clip", "frac_bits", "ring_bits"}):
                self.problems.append(f"{name}: not {{clip, frac_bits, ring_bits}}")
                return FixedPoint()
            if isinstance(v["clip"], bool) or not isinstance(v["clip"], int | float):
                self.problems.append(f"{name}.clip: not a number")
                return FixedPoint()
            bits = (
                self.read_int(f"{name}.frac_bits", v["frac_bits"]),
                self.read_int(f"{name}.ring_bits", v["ring_bits"]),
            )
            return FixedPoint(float(v["clip"]), *bits) if not self.problems else FixedPoint()
        raise AssertionError(kind)


def from_bytes(data: bytes, expected: type[T]) -> T:
    """Parse bytes from :func:`to_bytes` into an ``expected`` message, or raise naming every problem."""
    schema = _SCHEMA[expected]
    try:
        size = int.from_bytes(data[:8], "little")
        if size > MAX_HEADER_BYTES:
            raise ValueError(f"header of {size} bytes")
        meta = json.loads(bytes(data[8 : 8 + size])).get("__metadata__") or {}
        body = json.loads(meta[META_KEY])
        tensors = arrays_from_bytes(data)
    except Exception as exc:  # anything unparsable is bad input, reported as one line
        raise SecAggError(f"malformed secure-aggregation message: {type(exc).__name__}: {exc}", SAME_VERSION) from None
    if not isinstance(body, dict) or body.get("kind") != expected.__name__ or not isinstance(body.get("fields"), dict):
        got = body.get("kind") if isinstance(body, dict) else None
        raise SecAggError(f"expected a {expected.__name__} message, got {got!r}", SAME_VERSION)
    raw, reader, values = body["fields"], _Reader(), {}
    for name, kind in schema.items():
        if kind == "array":
            if set(tensors) != {name}:
                reader.problems.append(f"{name}: expected exactly one tensor '{name}', got {sorted(tensors)}")
            values[name] = tensors.get(name, np.zeros(0, np.uint64))
        elif name not in raw:
            reader.problems.append(f"{name}: missing")
        else:
            values[name] = reader.load(name, kind, raw[name])
    extra = set(raw) - set(schema)
    if extra:
        reader.problems.append(f"unexpected fields {sorted(extra)}")
    if reader.problems:
        raise SecAggError(f"malformed {expected.__name__} message: " + "; ".join(reader.problems), SAME_VERSION)
    return expected(**{f.name: values[f.name] for f in fields(expected)})  # type: ignore[arg-type]
