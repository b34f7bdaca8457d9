"""The ``privacy:`` and ``compression:`` sections of the experiment YAML.

Secure aggregation turns on with one line (``privacy: {secure_aggregation: true}``); a mapping
instead of ``true`` sets its parameters. Central DP (``privacy.dp``) is DP-FedAvg with fixed or
adaptive clipping and an accountant; ``privacy.local_dp`` is DP-SGD inside each silo (Opacus, PyTorch
tasks). Checks that involve other sections (a robust strategy with secure aggregation, a lossy codec
with secure aggregation) are in :class:`~fedsilo.experiment.config.ExperimentConfig`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecureAggregationConfig(_Strict):
    """Bonawitz et al. 2017 (SecAgg), or SecAgg+ (Bell et al. 2020) with ``neighbours``."""

    threshold: int | None = Field(
        None, ge=2, description="Shares needed to rebuild a secret; default: a strict majority of each silo's group."
    )
    neighbours: int | None = Field(
        None, ge=2, description="SecAgg+: mask with this many neighbours (even) instead of every other silo."
    )
    clip: float = Field(1024.0, gt=0, description="Each encoded value is clipped to [-clip, clip].")
    frac_bits: int = Field(32, ge=1, le=48, description="Fixed-point fractional bits.")
    ring_bits: Literal[32, 64] = Field(64, description="The ring Z_(2^ring_bits) of the masked sum.")
    step_timeout_s: float = Field(120.0, gt=0, description="How long each protocol step waits for the silos.")


class CentralDPConfig(_Strict):
    """DP-FedAvg (McMahan et al. 2018), with adaptive clipping (Andrew et al. 2021) on request."""

    noise_multiplier: float = Field(
        gt=0, description="Noise std on the sum of clipped updates, in units of clip_norm (> 0: 0 gives no privacy)."
    )
    clip_norm: float = Field(1.0, gt=0, description="L2 bound C on each silo's update (the start value if adaptive).")
    delta: float = Field(1e-5, gt=0, lt=1, description="The delta of the reported (epsilon, delta).")
    target_epsilon: float | None = Field(
        None, gt=0, description="Stop before a round would take epsilon past this value."
    )
    adaptive: bool = Field(False, description="Track a quantile of the update norms instead of a fixed clip_norm.")
    target_quantile: float = Field(0.5, ge=0, le=1, description="Adaptive clipping: share of updates left unclipped.")
    clip_learning_rate: float = Field(0.2, ge=0, description="Adaptive clipping: geometric step size of C.")
    count_stddev: float | None = Field(
        None, gt=0, description="Adaptive clipping: noise on the unclipped count (default: silos per round / 20)."
    )
    accountant: Literal["rdp", "pld"] = "rdp"


class LocalDPConfig(_Strict):
    """DP-SGD in every silo with Opacus: per-sample clipping and noise (PyTorch tasks)."""

    noise_multiplier: float = Field(ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    delta: float = Field(1e-5, gt=0, lt=1)
    poisson_sampling: bool = True


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

    codec: Literal["none", "float16", "q8", "topk"] = "none"
    topk_fraction: float = Field(0.01, gt=0, le=1)
