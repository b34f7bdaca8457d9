"""``summary.json``: what a run ended with, read from its run folder's rows.

The final model's scores (on the server's test set and over the silos' own), each silo's last
evaluation, failures, the privacy spent (central DP's epsilon and settings; each silo's local
epsilon) and the bytes silos uploaded against the plain float32 models; the baselines when asked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fedsilo.experiment.config import ExperimentConfig
from fedsilo.strategy.base import Strategy, StrategyState
from fedsilo.strategy.central_dp import CentralDP
from fedsilo.tracking.run_dir import RunDir

NOT_MEASURES = ("round", "scope", "silo", "phase", "time")
ROW_FIELDS = ("scope", "silo", "phase", "time")  # ``final`` keeps the round it was evaluated in


def summarize(
    config: ExperimentConfig, run: RunDir, duration: float, baselines: Mapping[str, Any] | None
) -> dict[str, Any]:
    rows = run.metrics()
    last = max((r["round"] for r in rows), default=0)
    # the final model is the last one evaluated (a failed last round kept the model before it)
    evaluated = max((r["round"] for r in rows if r.get("phase") == "evaluate"), default=0)

    def final(scope: str) -> dict[str, Any] | None:
        found = [r for r in rows if r["scope"] == scope and r["round"] == evaluated and r.get("phase") == "evaluate"]
        return {k: v for k, v in found[-1].items() if k not in ROW_FIELDS} if found else None

    per_silo = {
        r["silo"]: {k: v for k, v in r.items() if k not in NOT_MEASURES}
        for r in rows
        if r["scope"] == "silo" and r["round"] == evaluated and r.get("phase") == "evaluate" and "failure" not in r
    }
    failures = [r for r in rows if "failure" in r]
    summary: dict[str, Any] = {
        "name": config.name,
        "rounds": last,
        "seed": config.seed,
        "silos": [s.name for s in config.silos],
        "final": final("server"),
        "federated": final("federated"),
        "per_silo": dict(sorted(per_silo.items())),
        "failures": len(failures),
        "failed_rounds": sorted({r["round"] for r in failures if r["scope"] == "server"}),
        "duration_s": round(duration, 2),
        "run_dir": str(run.path),
    }
    if baselines is not None:
        summary["baselines"] = baselines
    return summary


def privacy_summary(strategy: Strategy, state: StrategyState, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``summary.json``'s ``privacy`` (central DP's final epsilon and settings; each silo's local
    epsilon) and ``upload`` (bytes silos sent over the run, against float32) sections."""
    out: dict[str, Any] = {}
    privacy: dict[str, Any] = {}
    if isinstance(strategy, CentralDP):
        privacy["central"] = {**strategy.round_metrics(state), "rounds": strategy.accountant_of(state).steps}
        privacy["central"]["accountant"] = strategy.accountant
        if strategy.adaptive:
            privacy["central"]["target_quantile"] = strategy.target_quantile
    local = {
        r["silo"]: r["epsilon"] for r in rows if r["scope"] == "silo" and r.get("phase") == "fit" and "epsilon" in r
    }
    if local:
        privacy["local"] = dict(sorted(local.items()))  # the last round's value: epsilons only grow
    if privacy:
        out["privacy"] = privacy
    fits = [r for r in rows if r["scope"] == "server" and r.get("phase") == "round" and "upload_bytes" in r]
    sent, raw = sum(r["upload_bytes"] for r in fits), sum(r["upload_bytes_raw"] for r in fits)
    if raw:
        out["upload"] = {"bytes": sent, "bytes_float32": raw, "ratio": round(sent / raw, 4)}
    return out
