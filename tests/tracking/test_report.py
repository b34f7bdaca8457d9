"""tracking/report.py and `fedsilo report`: what the page shows, from a hand-built run folder."""

from __future__ import annotations

import json
import re
from pathlib import Path

from fedsilo.tracking.report import metric_keys, render_report, write_report
from fedsilo.tracking.rows import MetricRow


def charts(html: str) -> dict[str, list[tuple[str, int]]]:
    """Each chart's title -> the (label, number of points) of each line it draws."""
    out = {}
    for svg in re.findall(r"<svg.*?</svg>", html, flags=re.S):
        title = re.search(r"<title>(.*?)</title>", svg)
        assert title is not None
        lines = re.findall(r'<path class="series" data-label="([^"]*)" data-points="(\d+)"', svg)
        out[title.group(1)] = [(label, int(n)) for label, n in lines]
    return out


def test_the_report_draws_global_silo_training_and_baseline_charts(hand_run: Path) -> None:
    path = write_report(hand_run)
    assert path == hand_run / "report.html"
    html = path.read_text()
    got = charts(html)
    # the server scores rounds 0-3; the federated rows (and their worst silo) rounds 1-3
    assert got["global model: loss"] == [("server test set", 4), ("silos&#x27; test sets (weighted mean)", 3)]
    assert got["global model: accuracy"] == [
        ("server test set", 4),
        ("silos&#x27; test sets (weighted mean)", 3),
        ("worst silo", 3),
    ]
    assert got["global model: balanced accuracy"] == [("silos&#x27; test sets (weighted mean)", 3), ("worst silo", 3)]
    assert got["each silo: ROC AUC"] == [("north", 3), ("south", 3)]
    assert got["training: train loss"] == [("north", 3), ("south", 2)]  # south failed its round-2 fit
    assert "failed silo replies per round" in got
    assert "server test set: accuracy" in got  # baselines as bars
    bars = re.findall(r'<rect class="bar" data-label="([^"]*)"', html)
    assert bars[-4:] == ["federated", "centralized (pooled)", "north alone", "south alone"]
    assert "timed out after 5s" in html and "Worst silo by accuracy: <b>south</b>" in html
    # loss and accuracy on the server's test set
    assert "<td>south alone</td><td class='n'>0.9000</td><td class='n'>0.6100</td>" in html
    south_training = re.search(r'<path class="series" data-label="south" data-points="2" d="([^"]*)"', html)
    assert south_training and south_training.group(1).count("M") == 2  # round 2 failed: a gap, not a bridge
    assert "1 failed reply in 3 rounds" in html


def test_the_report_loads_nothing_from_outside(hand_run: Path) -> None:
    html = write_report(hand_run).read_text()
    assert "<script" not in html and "<link" not in html and "src=" not in html
    assert set(re.findall(r"https?://[^\s\"'<]+", html)) == {"http://www.w3.org/2000/svg"}  # the SVG namespace


def test_a_run_without_summary_still_gets_its_charts(tmp_path: Path, write_hand_run) -> None:
    run = write_hand_run(tmp_path / "stopped", summary=None)
    html = write_report(run).read_text()
    assert "the run did not finish" in html
    assert "global model: loss" in charts(html)
    assert "Baselines" not in html


def test_text_from_silos_is_escaped() -> None:
    rows = [MetricRow(1, "silo", "fit", "a", {}, "<script>x</script>", "error")]
    html = render_report({"silos": [{"name": "a"}]}, rows, {"baselines": {"skipped": "<i>no</i>"}}, "<t>")
    assert "<script" not in html and "&lt;script&gt;x&lt;/script&gt;" in html
    assert "<i>" not in html and "<t>" not in html


def test_metric_keys_put_the_usual_metrics_first() -> None:
    values = [{"zeta": 1.0, "roc_auc": 0.5, "loss": 1.0, "worst_accuracy": 0.1, "name": "s", "num_examples": 3}]
    assert metric_keys(values) == ["loss", "roc_auc", "zeta"]


def test_fedsilo_report_command(cli, hand_run: Path, tmp_path: Path) -> None:
    result = cli("report", hand_run)
    assert result.exit_code == 0, result.stderr
    assert "report.html" in result.stdout.replace("\n", "")
    assert (hand_run / "report.html").is_file()
    missing = cli("report", tmp_path / "nope")
    assert missing.exit_code == 8
    assert missing.stderr.startswith("error:") and "not a fedsilo run folder" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1


def test_every_run_writes_its_report(cli, make_experiment, run_folder) -> None:
    path = make_experiment(rounds=2)
    result = cli("run", path, "--quiet")
    assert result.exit_code == 0, result.stderr
    run = run_folder(path.parent / "runs")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["report"] == str(run / "report.html")
    assert f"report: {run / 'report.html'}" in result.stdout.replace("\n", "")
    got = charts((run / "report.html").read_text())
    assert ("server test set", 3) in got["global model: loss"]  # rounds 0, 1, 2
    assert [label for label, _ in got["each silo: loss"]] == ["a", "b", "c"]
