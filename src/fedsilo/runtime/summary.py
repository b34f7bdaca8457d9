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
from fedsilo.tracking.rows import MetricRow
from fedsilo.tracking.run_dir import RunDir


def summarize(
    config: ExperimentConfig, run: RunDir, duration: float, baselines: Mapping[str, Any] | None
) -> dict[str, Any]:
    rows = run.metrics()
    last = max((r.round for r in rows), default=0)
    # the final model is the last one evaluated (a failed last round kept the model before it)
    evaluated = max((r.round for r in rows if r.phase == "evaluate"), default=0)
    final_rows = [r for r in rows if r.round == evaluated and r.phase == "evaluate"]

    def final(scope: str) -> dict[str, Any] | None:
        found = [r for r in final_rows if r.scope == scope]
        return {"round": found[-1].round, **found[-1].values} if found else None

    per_silo = {str(r.silo): dict(r.values) for r in final_rows if r.scope == "silo" and not r.failed}
    failures = [r for r in rows if r.failed]
    summary: dict[str, Any] = {
        "name": config.name,
        "rounds": last,
        "seed": config.seed,
        "silos": [s.name for s in config.silos],
        "final": final("server"),
        "federated": final("federated"),
        "per_silo": dict(sorted(per_silo.items())),
        "failures": len(failures),
        "failed_rounds": sorted({r.round for r in failures if r.scope == "server"}),
        "duration_s": round(duration, 2),
        "run_dir": str(run.path),
    }
    if baselines is not None:
        summary["baselines"] = baselines
    return summary


def privacy_summary(strategy: Strategy, state: StrategyState, rows: Sequence[MetricRow]) -> dict[str, Any]:
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
        str(r.silo): r.get("epsilon") for r in rows if r.scope == "silo" and r.phase == "fit" and "epsilon" in r.values
    }
    if local:
        privacy["local"] = dict(sorted(local.items()))  # the last round's value: epsilons only grow
    if privacy:
        out["privacy"] = privacy
    fits = [r for r in rows if r.scope == "server" and r.phase == "round" and "upload_bytes" in r.values]
    sent, raw = (
        sum(int(r.number("upload_bytes") or 0) for r in fits),
        sum(int(r.number("upload_bytes_raw") or 0) for r in fits),
    )
    if raw:
        out["upload"] = {"bytes": sent, "bytes_float32": raw, "ratio": round(sent / raw, 4)}
    return out
