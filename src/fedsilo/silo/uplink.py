"""How a silo's update goes up: encoded with the codec the server asked for.

The server puts the codec into every fit instruction, so a silo needs no settings of its own and
every runtime behaves the same. The silo encodes its *update* (trained model - the global model it
received; :func:`fedsilo.wire.codecs.update_of`), keeps the top-k residual in its
:class:`~fedsilo.silo.store.SiloStore`, and the server decodes against the global model's spec
and adds the global model back.
"""

from __future__ import annotations

import numpy as np

from fedsilo.silo.store import SiloStore
from fedsilo.wire.arrays import ArrayDict
from fedsilo.wire.codecs import Codec, encode, update_of

RESIDUAL = "topk_residual"


def encode_upload(
    silo: str, round: int, model: ArrayDict, received: ArrayDict, codec: Codec, seed: int, store: SiloStore
) -> ArrayDict:
    """The silo's reply arrays for this round: ``model`` itself, or its encoded update."""
    if codec.name == "none":
        return model
    update = update_of(model, received)
    residual = store.arrays(silo, RESIDUAL, before_round=round) if codec.name == "topk" else None
    if residual is not None and {k: v.shape for k, v in residual.items()} != {
        k: v.shape for k, v in update.items() if np.issubdtype(v.dtype, np.floating)
    }:
        residual = None  # the model changed shape since: start the error feedback afresh
    encoded, residual = encode(update, codec, np.random.default_rng((seed, 0xC0DEC)), residual)
    if residual is not None:
        store.put_arrays(silo, RESIDUAL, round, residual)
    return encoded
