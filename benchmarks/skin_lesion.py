"""The skin-lesion example (HAM10000 metadata, four real sites) with FedAvg, FedProx and FedAdam, baselines included.

    python benchmarks/skin_lesion.py [--seeds 0,1,2] [--only fedavg,fedprox,fedadam]

Runs examples/skin_lesion/{experiment,fedprox,fedadam}.yaml as shipped (the sites' folders are made
by their `prepare:` section on the first run), each with `--baselines`, for every seed, in
simulation, writing run folders into a temporary folder. Prints, per run, the table of the
example's README: balanced accuracy and accuracy of the federated model, the centralized (pooled)
model and each site's local-only model, on the union of the sites' held-out lesions ("overall")
and on each site's own held-out lesions; then one line per run comparing the strategies.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from fedsilo.experiment.config import load_config
from fedsilo.runtime.launch import run_experiment

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "skin_lesion"
YAMLS = {"fedavg": "experiment.yaml", "fedprox": "fedprox.yaml", "fedadam": "fedadam.yaml"}
METRICS = ("balanced_accuracy", "accuracy")


def model_rows(summary: dict[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, dict[str, Any]]]]:
    """(model, its server-test metrics, its metrics per site's own test) for every model of a run."""
    base, sites = summary["baselines"], summary["silos"]
    rows = [(f"federated ({summary['name']})", summary["final"], summary["per_silo"])]
    rows.append(("centralized (all sites pooled)", base["centralized"], base["centralized"]["own_test"]))
    rows += [(f"{s} alone", base["local_only"][s], base["local_only"][s]["own_test"]) for s in sites]
    return rows


def table(summary: dict[str, Any], metric: str) -> str:
    sites = summary["silos"]
    lines = [f"| {metric} (tested on ->) | overall | {' | '.join(sites)} |", "| --- " * (len(sites) + 2) + "|"]
    for model, overall, own in model_rows(summary):
        cells = [f"{own[s][metric]:.3f}" if s in own else "" for s in sites]
        lines.append(f"| {model} | {overall[metric]:.3f} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (default: 0)")
    parser.add_argument("--only", default=",".join(YAMLS), help="comma-separated strategies (default: all three)")
    args = parser.parse_args()
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in [int(s) for s in args.seeds.split(",")]:
            for strategy in args.only.split(","):
                config, text = load_config(EXAMPLE / YAMLS[strategy])
                config = config.model_copy(update={"seed": seed, "output": Path(tmp)})
                started = time.perf_counter()
                summary = run_experiment(config, text, baselines=True).summary
                wall = time.perf_counter() - started
                print(f"\n{strategy}, seed {seed}, {config.rounds} rounds, {wall:.1f} s with baselines")
                for metric in METRICS:
                    print(table(summary, metric) + "\n")
                smallest = min(summary["silos"], key=lambda s: summary["per_silo"][s]["num_examples"])
                local = summary["baselines"]["local_only"][smallest]["own_test"][smallest]["balanced_accuracy"]
                lines.append(
                    f"| {strategy} | {seed} | {summary['final']['balanced_accuracy']:.3f} "
                    f"| {summary['final']['accuracy']:.3f} | {summary['per_silo'][smallest]['balanced_accuracy']:.3f} "
                    f"| {local:.3f} | {wall:.1f} |"
                )
    print("| strategy | seed | overall balanced acc. | overall acc. | smallest site: federated | its own model | s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
