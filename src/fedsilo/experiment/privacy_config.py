"""The ``privacy:`` and ``compression:`` sections of the experiment YAML.

Secure aggregation turns on with one line (``privacy: {secure_aggregation: true}``); a mapping
instead of ``true`` sets its parameters. Central DP (``privacy.dp``) is DP-FedAvg with fixed or
adaptive clipping and an accountant; ``privacy.local_dp`` is DP-SGD inside each silo (Opacus, PyTorch
tasks). Checks that involve other sections (a robust strategy with secure aggregation, a lossy codec
with secure aggregation) are in :class:`~fedsilo.experiment.config.ExperimentConfig`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from fedsilo.experiment.bounds import MAX_CLIP_LEARNING_RATE, YAML_MODEL, count_field, wait_field
from fedsilo.experiment.defaults import default_of
from fedsilo.server.secure_aggregation import SecAggSettings
from fedsilo.strategy.central_dp import CentralDP
from fedsilo.wire.codecs import Codec, CodecName
from fedsilo.wire.instructions import LocalDP


class _Strict(BaseModel):
    model_config = YAML_MODEL


class SecureAggregationConfig(_Strict):
    """Bonawitz et al. 2017 (SecAgg), or SecAgg+ (Bell et al. 2020) with ``neighbours``."""

    threshold: int | None = count_field(
        default_of(SecAggSettings, "threshold"),
        ge=2,
        description="Shares needed to rebuild a secret; default: a strict majority of each silo's group.",
    )
    neighbours: int | None = count_field(
        default_of(SecAggSettings, "neighbours"),
        ge=2,
        description="SecAgg+: mask with this many neighbours (even) instead of every other silo.",
    )
    clip: float = Field(
        default_of(SecAggSettings, "clip"), gt=0, description="Each encoded value is clipped to [-clip, clip]."
    )
    frac_bits: int = Field(
        default_of(SecAggSettings, "frac_bits"), ge=1, le=48, description="Fixed-point fractional bits."
    )
    ring_bits: Literal[32, 64] = Field(
        default_of(SecAggSettings, "ring_bits"), description="The ring Z_(2^ring_bits) of the masked sum."
    )
    step_timeout_s: float = wait_field(
        default_of(SecAggSettings, "step_timeout_s"), "How long each protocol step waits for the silos."
    )


class CentralDPConfig(_Strict):
    """DP-FedAvg (McMahan et al. 2018), with adaptive clipping (Andrew et al. 2021) on request."""

    noise_multiplier: float = Field(
        gt=0, description="Noise std on the sum of clipped updates, in units of clip_norm (> 0: 0 gives no privacy)."
    )
    clip_norm: float = Field(1.0, gt=0, description="L2 bound C on each silo's update (the start value if adaptive).")
    delta: float = Field(
        default_of(CentralDP, "delta"), gt=0, lt=1, description="The delta of the reported (epsilon, delta)."
    )
    target_epsilon: float | None = Field(
        default_of(CentralDP, "target_epsilon"), gt=0, description="Stop before a round would take epsilon past this."
    )
    adaptive: bool = Field(
        default_of(CentralDP, "adaptive"), description="Track a quantile of the update norms instead of a fixed C."
    )
    target_quantile: float = Field(
        default_of(CentralDP, "target_quantile"), ge=0, le=1, description="Adaptive clipping: share left unclipped."
    )
    clip_learning_rate: float = Field(
        default_of(CentralDP, "clip_learning_rate"),
        ge=0,
        le=MAX_CLIP_LEARNING_RATE,
        description="Adaptive clipping: geometric step size of C.",
    )
    count_stddev: float | None = Field(
        default_of(CentralDP, "count_stddev"),
        gt=0,
        description="Adaptive clipping: noise on the unclipped count (default: silos per round / 20).",
    )
    accountant: Literal["rdp", "pld"] = default_of(CentralDP, "accountant")


class LocalDPConfig(_Strict):
    """DP-SGD in every silo with Opacus: per-sample clipping and noise (PyTorch tasks)."""

    noise_multiplier: float = Field(ge=0)
    max_grad_norm: float = Field(default_of(LocalDP, "max_grad_norm"), gt=0)
    delta: float = Field(default_of(LocalDP, "delta"), gt=0, lt=1)
    poisson_sampling: bool = default_of(LocalDP, "poisson_sampling")


class PrivacyConfig(_Strict):
    secure_aggregation: SecureAggregationConfig | None = Field(
        None, description="true (defaults) or a mapping of settings; the server then learns only the sum."
    )
    dp: CentralDPConfig | None = None
    local_dp: LocalDPConfig | None = None

    @field_validator("secure_aggregation", mode="before")
    @classmethod
    def _one_line(cls, v: Any) -> Any:
        if v is True:
            return {}
        if v is False:
            return None
        return v


class CompressionConfig(_Strict):
    """How silos encode their update (silo model - global model) on the way up."""

    codec: CodecName = default_of(Codec, "name")
    topk_fraction: float = Field(default_of(Codec, "topk_fraction"), gt=0, le=1)
