"""What the server sends a silo at each step of a real round: a small JSON header, then a protocol message.

The protocol messages (``wire.py``) say nothing about which training round they belong to or which
number the silo has in the round's group; the header does: ``{"round", "silo", "step"}`` and, for
``masked_input``, ``"total"`` (the sum of the group's example counts, which the silo divides its own
count by). The silo checks every field against its own session, so a message from another round,
meant for another silo or for another step is refused rather than acted on. Layout: 8 bytes
little-endian header length, the UTF-8 JSON header, the message bytes. No pickle.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from fedsilo.errors import SecAggError
from fedsilo.privacy.secagg.fixes import SAME_VERSION

MAX_HEADER_BYTES = 64 * 1024
STEPS = ("advertise", "share_keys", "masked_input", "unmask")
HEADER_FIELDS = {"round", "silo", "step", "total"}


def pack(header: Mapping[str, int | str], body: bytes) -> bytes:
    """``header`` (ints and strings) and ``body`` as one byte string."""
    raw = json.dumps(dict(header), separators=(",", ":"), sort_keys=True).encode()
    return len(raw).to_bytes(8, "little") + raw + body


def unpack(data: bytes) -> tuple[dict[str, int | str], bytes]:
    """The header and body of ``pack``'s output; anything malformed is a :class:`SecAggError` naming every problem."""
    if len(data) < 8:
        raise SecAggError(f"secure-aggregation step message of {len(data)} bytes is too short", SAME_VERSION)
    size = int.from_bytes(data[:8], "little")
    if size > MAX_HEADER_BYTES or 8 + size > len(data):
        raise SecAggError(f"secure-aggregation step header of {size} bytes does not fit the message", SAME_VERSION)
    try:
        header = json.loads(bytes(data[8 : 8 + size]))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SecAggError(f"secure-aggregation step header is not JSON: {exc}", SAME_VERSION) from None
    problems = []
    if not isinstance(header, dict):
        raise SecAggError("secure-aggregation step header is not a JSON object", SAME_VERSION)
    if set(header) - HEADER_FIELDS:
        problems.append(f"unexpected fields {sorted(set(header) - HEADER_FIELDS)}")
    for name in ("round", "silo", *(("total",) if "total" in header else ())):
        value = header.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            problems.append(f"{name}={value!r} is not a non-negative integer")
    if header.get("step") not in STEPS:
        problems.append(f"step={header.get('step')!r} is not one of {STEPS}")
    if problems:
        raise SecAggError("malformed secure-aggregation step header: " + "; ".join(problems), SAME_VERSION)
    return header, bytes(data[8 + size :])
