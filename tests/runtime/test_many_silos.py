"""Many silos in the real worker pool: 300 declared in one line, 10 sampled per round, 2 rounds.

An unsampled silo costs its entry in the index only: its data is never opened (its files are not
even valid .npz), and the folders read are exactly the sampled silos' (plus the few the plan
opens and the server's test set).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from fedsilo.experiment.silo_checks import OPENED_SILOS
from fedsilo.server.registry import EVALUATE, FIT, round_rng, sample_silos

TASK = Path(__file__).resolve().parents[1] / "tasks" / "counting_numpy.py"
SILOS, PER_ROUND, ROUNDS, SEED = 300, 10, 2, 3


def sampled(names: list[str], purpose: int) -> dict[int, list[str]]:
    return {r: sample_silos(names, PER_ROUND / SILOS, 1, round_rng(SEED, r, purpose)) for r in range(1, ROUNDS + 1)}


def test_300_silos_10_per_round_read_only_the_sampled_silos(
    tmp_path: Path, cli, write_silo, run_folder, metrics_of
) -> None:
    data = tmp_path / "data"
    names = [f"s{i:03d}" for i in range(SILOS)]
    for i, name in enumerate(names):
        write_silo(data / name, 4 + i % 5, n_test=3, seed=i)
    write_silo(data / "server", 1, n_test=30, seed=999)
    fit, ev = sampled(names, FIT), sampled(names, EVALUATE)
    used = {n for per_round in (*fit.values(), *ev.values()) for n in per_round}
    broken = next(n for n in reversed(names) if n not in used)
    for split in ("train", "test"):
        (data / broken / f"{split}.npz").write_bytes(b"not an npz: reading this fails")
    experiment = tmp_path / "experiment.yaml"
    experiment.write_text(yaml.safe_dump({
        "name": "many", "task": str(TASK), "silos": {"folders": "data/*"},
        "server": {"data": "data/server"}, "rounds": ROUNDS, "seed": SEED,
        "strategy": {"fraction_fit": PER_ROUND / SILOS, "fraction_evaluate": PER_ROUND / SILOS},
        "train": {"batch_size": 4, "lr": 0.5}, "runtime": {"workers": 2}, "output": "runs",
    }))  # fmt: skip

    result = cli("run", experiment, "--quiet")

    assert result.exit_code == 0, result.stderr
    rows = metrics_of(run_folder(tmp_path / "runs"))
    for phase, expected in (("fit", fit), ("evaluate", ev)):
        got = {r: sorted(x["silo"] for x in rows if x["scope"] == "silo" and x["phase"] == phase and x["round"] == r)
               for r in expected}  # fmt: skip
        assert got == expected
    assert not [r for r in rows if "failure" in r]
    reads = {line.split()[0] for line in (data / "reads.log").read_text().splitlines()}
    assert reads == used | set(names[:OPENED_SILOS]) | {"server"}
    assert broken not in reads
