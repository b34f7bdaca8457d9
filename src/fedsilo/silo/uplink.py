"""How a silo's update goes up: encoded with the codec the server asked for, and its size.

The server puts the codec into every fit instruction (``codec``, ``topk_fraction``), so a silo
needs no settings of its own and every runtime behaves the same. The silo encodes its *update*
(trained model - the global model it received; :func:`fedsilo.compression.update_of`), keeps the
top-k residual in its :class:`~fedsilo.silo.state.SiloStore`, and the server decodes against the
global model's spec and adds the global model back. Local DP-SGD settings travel the same way.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedsilo.arrays import ArrayDict, ArraySpec, Layout
from fedsilo.compression import Codec, encode, encoded_spec, update_of
from fedsilo.messages import Config
from fedsilo.silo.state import SiloStore

CODEC, TOPK_FRACTION = "codec", "topk_fraction"
RESIDUAL = "topk_residual"
LOCAL_DP_PREFIX = "local_dp_"


def codec_config(codec: Codec) -> dict[str, str | float]:
    """The fit-config keys that ask silos for ``codec`` (none for no codec)."""
    return {} if codec.name == "none" else {CODEC: codec.name, TOPK_FRACTION: codec.topk_fraction}


def codec_of(config: Config) -> Codec:
    """The codec a fit instruction asks for (``none`` when it names none)."""
    return Codec(str(config.get(CODEC, "none")), float(config.get(TOPK_FRACTION, 0.01)))  # type: ignore[arg-type]


def upload_spec(spec: Mapping[str, ArraySpec], config: Config) -> dict[str, ArraySpec]:
    """What a silo's reply to this fit instruction looks like on the wire."""
    return encoded_spec(spec, codec_of(config))


def upload_layout(layout: Layout, config: Config) -> Layout:
    """Where the encoded reply lies in a shared-memory slot (the model's layout without a codec)."""
    codec = codec_of(config)
    return layout if codec.name == "none" else Layout.of_spec(encoded_spec(layout.spec(), codec))


def encode_upload(
    silo: str, model: ArrayDict, received: ArrayDict, config: Config, seed: int, state: SiloStore
) -> ArrayDict:
    """The silo's reply arrays for this round: ``model`` itself, or its encoded update."""
    codec = codec_of(config)
    if codec.name == "none":
        return model
    update = update_of(model, received)
    residual = state.arrays(silo, RESIDUAL) if codec.name == "topk" else None
    if residual is not None and {k: v.shape for k, v in residual.items()} != {
        k: v.shape for k, v in update.items() if np.issubdtype(v.dtype, np.floating)
    }:
        residual = None  # the model changed shape since: start the error feedback afresh
    encoded, residual = encode(update, codec, np.random.default_rng((seed, 0xC0DEC)), residual)
    if residual is not None:
        state.put_arrays(silo, RESIDUAL, residual)
    return encoded


def local_dp_config(noise_multiplier: float, max_grad_norm: float, delta: float, poisson: bool) -> dict[str, float]:
    """The fit-config keys that make every PyTorch silo train with DP-SGD."""
    values = {"noise_multiplier": noise_multiplier, "max_grad_norm": max_grad_norm, "delta": delta}
    return {**{LOCAL_DP_PREFIX + k: float(v) for k, v in values.items()}, LOCAL_DP_PREFIX + "poisson": float(poisson)}


def local_dp_of(config: Config) -> dict[str, float] | None:
    """The local DP-SGD settings of a fit instruction, or None when it asks for none."""
    found = {k[len(LOCAL_DP_PREFIX) :]: float(v) for k, v in config.items() if k.startswith(LOCAL_DP_PREFIX)}
    return found or None
