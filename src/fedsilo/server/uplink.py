"""Receiving a silo's reply: decode what a codec sent, check it, and count its bytes on the wire.

Every reply is untrusted: a fit's arrays (:func:`~fedsilo.wire.messages.check_update`), example
count and metrics, an evaluation's loss, count and metrics. A bad one becomes a ``rejected``
:class:`~fedsilo.wire.messages.Failure`, the same in every runtime, since this runs in the server loop.

Bytes are the size of the safetensors bytes the update is (or, in a shared-memory simulation,
would be) sent as, next to what the same update sends as the plain model (``upload_bytes_raw``),
so a codec's saving is read off one row. The sizes come from the arrays' specs
(:func:`fedsilo.wire.arrays.wire_size`): nothing is serialized to count them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fedsilo.errors import UpdateRejected
from fedsilo.tracking.rows import reserved
from fedsilo.wire.arrays import ArrayDict, ArraySpec, spec_of, wire_size
from fedsilo.wire.codecs import Codec, decode, model_from
from fedsilo.wire.messages import (
    EvaluateRes,
    Failure,
    FitRes,
    check_loss,
    check_metrics,
    check_num_examples,
    check_update,
)


@dataclass(frozen=True, slots=True)
class Received:
    """An accepted update as the model it stands for (or why it was rejected), and its bytes."""

    result: FitRes | None
    rejected: str | None
    upload_bytes: int
    upload_bytes_raw: int


def receive_fit(
    reply: FitRes, global_parameters: ArrayDict, expected: Mapping[str, ArraySpec], codec: Codec, max_bytes: int
) -> Received:
    """Decode ``reply`` with ``codec`` against the global model, then run the usual checks on it."""
    raw = wire_size(expected)
    arrays = reply.parameters
    arrays_only = all(isinstance(a, np.ndarray) for a in arrays.values())
    size = wire_size(spec_of(arrays)) if arrays_only else raw  # not arrays: check_update names them
    try:
        if codec.name != "none":
            try:
                arrays = model_from(decode(arrays, expected), global_parameters)
            except UpdateRejected as exc:
                raise UpdateRejected(
                    f"update from silo '{reply.silo}' ({codec.name}): {exc.message}",
                    "run the same fedsilo version and task module on the silo as on the server",
                ) from None
        check_update(reply.silo, arrays, expected, max_bytes)
        n = check_num_examples(reply.silo, reply.num_examples)
        metrics = check_metrics(reply.silo, reply.metrics, reserved)
    except UpdateRejected as exc:
        return Received(None, exc.message, size, raw)
    return Received(FitRes(reply.silo, arrays, n, metrics), None, size, raw)


def receive_evaluation(reply: EvaluateRes) -> EvaluateRes | Failure:
    """The evaluation as the server keeps it (finite loss and metrics, a bounded count), or why not."""
    try:
        loss = check_loss(reply.silo, reply.loss)
        n = check_num_examples(reply.silo, reply.num_examples, minimum=0)
        metrics = check_metrics(reply.silo, reply.metrics, reserved)
    except UpdateRejected as exc:
        return Failure(reply.silo, exc.message, "rejected")
    return EvaluateRes(reply.silo, loss, n, metrics)
