"""``report.html``: one self-contained page that shows what a run did, round by round.

It is built only from the run folder (``metrics.jsonl``, ``summary.json``, ``config.json``, and
the sample grids under ``samples/`` of a generative task, embedded as ``data:`` URIs), so it
can be rebuilt at any time with ``fedsilo report RUN_DIR``, also for a run that stopped early.
The page has no script and loads nothing: charts are inline SVG (see ``charts.py``), so it opens
offline and can be mailed or archived as one file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from fedsilo.errors import RunDirError
from fedsilo.tracking.charts import Series, bar_chart, line_chart
from fedsilo.tracking.images import sample_grids, samples_section
from fedsilo.tracking.rows import MetricRow
from fedsilo.tracking.run_dir import CONFIG, SUMMARY, RunDir
from fedsilo.wire.files import write_atomic

REPORT = "report.html"
MAX_SILO_LINES = 20  # silos drawn per chart and named in the header
FAILURE_RED = "#d62728"
NOT_METRICS = {"num_examples"}
PREFERRED = ("loss", "accuracy", "balanced_accuracy", "roc_auc")
LABELS = {"loss": "loss", "accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "roc_auc": "ROC AUC"}

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1120px;
color:#222;padding:0 16px}
h1{font-size:22px;margin-bottom:4px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}
.meta{color:#555}.charts{display:flex;flex-wrap:wrap;gap:12px}
.chart{border:1px solid #e3e3e3;border-radius:4px;max-width:100%;height:auto}
.chart .title{font-size:13px;font-weight:600}.chart .tick,.chart .legend{font-size:11px;fill:#444}
.chart .axis-label{font-size:11px;fill:#666}.chart .grid{stroke:#eee}.chart .axis{stroke:#999}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#f6f6f6}
pre{background:#f6f6f6;padding:10px;overflow:auto;font-size:12px}.note{color:#8a6d3b}
figure{margin:0}figure img{image-rendering:pixelated;width:var(--w);border:1px solid #e3e3e3}
figcaption{font-size:12px;color:#555}
"""


def _label(key: str) -> str:
    return LABELS.get(key, key.replace("_", " "))


def _num(value: Any) -> float | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def metric_keys(measures: Iterable[Mapping[str, Any]]) -> list[str]:
    """Numeric metrics the rows' values (or summary entries) carry: loss and the usual first, then by name."""
    found = {k for m in measures for k, v in m.items() if k not in NOT_METRICS and _num(v) is not None}
    found = {k for k in found if not k.startswith("worst_")}
    return [k for k in PREFERRED if k in found] + sorted(found - set(PREFERRED))


def _series(
    label: str, rows: Sequence[MetricRow], key: str, dashed: bool = False, rounds: Sequence[int] | None = None
) -> Series | None:
    """``key`` per round; with ``rounds``, a round without a value is a gap in the line."""
    values = {r.round: r.number(key) for r in rows if r.number(key) is not None}
    if not values:
        return None
    xs = list(rounds) if rounds is not None else sorted(values)
    return Series(label, xs, [values.get(x) for x in xs], dashed)


def _chart(title: str, series: Iterable[Series | None], y_label: str) -> str:
    kept = [s for s in series if s is not None]
    return line_chart(title, kept, y_label) if kept else ""


def _section(title: str, intro: str, charts: Sequence[str]) -> str:
    body = "".join(c for c in charts if c)
    if not body:
        return ""
    return f"<h2>{escape(title)}</h2><p>{intro}</p><div class='charts'>{body}</div>"


def _fmt(value: Any) -> str:
    number = _num(value)
    if number is None:
        return "-" if value is None else escape(str(value))
    return f"{int(value):,}" if isinstance(value, int) else f"{number:.4f}"  # counts whole, metrics to 4 places


def _cell(value: Any) -> str:
    return f"<td class='n'>{_fmt(value)}</td>" if _num(value) is not None else f"<td>{_fmt(value)}</td>"


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def global_section(rows: Sequence[MetricRow]) -> str:
    """The global model per round: on the server's test set, and over the silos' own test sets."""
    server = [r for r in rows if r.scope == "server" and r.phase == "evaluate"]
    fed = [r for r in rows if r.scope == "federated"]
    charts = []
    for key in metric_keys(r.values for r in [*server, *fed]):
        charts.append(
            _chart(
                f"global model: {_label(key)}",
                [
                    _series("server test set", server, key),
                    _series("silos' test sets (weighted mean)", fed, key),
                    _series("worst silo", fed, f"worst_{key}", dashed=True),
                ],
                _label(key),
            )
        )
    intro = (
        "Round 0 is the initial model. <em>Silos' test sets</em> is the mean over the silos' own test "
        "splits weighted by their number of examples; <em>worst silo</em> is the lowest single silo."
    )
    return _section("Global model per round", intro, charts)


def round_section(rows: Sequence[MetricRow]) -> str:
    """What each round spent: epsilon (with DP) and bytes uploaded, from the server's round rows."""
    server = [r for r in rows if r.scope == "server" and r.phase == "round"]
    measured = ("epsilon", "clip_norm", "upload_bytes", "upload_bytes_raw")
    keys = [k for k in measured if any(k in r.values for r in server)]
    charts = [_chart(f"per round: {_label(k)}", [_series("server", server, k)], _label(k)) for k in keys]
    if "epsilon" in keys:
        intro = "Epsilon at the configured delta after each round (DP), and the bytes silos uploaded."
        return _section("Privacy and bytes per round", intro, charts)
    intro = "The bytes silos uploaded in each round, and what the same updates are as plain float32 models."
    return _section("Bytes per round", intro, charts)


#: Bytes on the wire: charted once per round in the bytes section (equal across silos, one line per
#: silo would only draw the same line on top of itself).
WIRE_KEYS = ("upload_bytes", "upload_bytes_raw")


def silo_section(rows: Sequence[MetricRow], silos: Sequence[str], phase: str) -> str:
    """One chart per metric, one line per silo (``evaluate``: own test split; ``fit``: training)."""
    in_phase = [r for r in rows if r.scope == "silo" and r.phase == phase]
    picked = [r for r in in_phase if not r.failed]
    rounds = sorted({r.round for r in in_phase})
    by_silo: dict[str, list[MetricRow]] = {}
    for r in picked:
        by_silo.setdefault(str(r.silo), []).append(r)
    names = [n for n in silos if n in by_silo] + sorted(set(by_silo) - set(silos))
    note = ""
    if len(names) > MAX_SILO_LINES:  # 10,000 sampled silos cannot be 10,000 lines of one chart
        note = f" {len(names):,} silos took part; the first {MAX_SILO_LINES} are drawn (all are in metrics.jsonl)."
        names = names[:MAX_SILO_LINES]
    charts = [
        _chart(
            f"{'each silo' if phase == 'evaluate' else 'training'}: {_label(key)}",
            [_series(name, by_silo[name], key, rounds=rounds) for name in names],
            _label(key),
        )
        for key in metric_keys(r.values for r in picked)
        if key not in WIRE_KEYS
    ]
    if phase == "evaluate":
        intro = "The global model of each round on each silo's test split."
        return _section("Each silo's own test set", intro + note, charts)
    return _section("Training", "What each silo reported from its local training in each round." + note, charts)


def failure_section(rows: Sequence[MetricRow]) -> str:
    failures = [r for r in rows if r.failed]
    rounds = sorted({r.round for r in rows if r.round > 0})
    if not rounds:
        return ""
    if not failures:
        return f"<h2>Failures</h2><p>No failed silo replies in {len(rounds)} rounds.</p>"
    counts = [float(sum(1 for f in failures if f.round == rnd)) for rnd in rounds]
    bars = list(zip(map(str, rounds), counts, strict=True))
    chart = bar_chart("failed silo replies per round", bars, "failures", color=FAILURE_RED)
    table = _table(
        ["round", "silo", "phase", "kind", "reason"],
        ([f.round, f.silo, f.phase, f.failure_kind, f.failure] for f in failures),
    )
    text = f"{len(failures)} failed repl{'y' if len(failures) == 1 else 'ies'} in {len(rounds)} rounds."
    return f"<h2>Failures</h2><p>{text}</p>{chart}{table}"


def baseline_section(summary: Mapping[str, Any]) -> str:
    """The federated model beside the same-budget baselines (each silo alone; all data pooled)."""
    base = summary.get("baselines")
    if not isinstance(base, Mapping):
        return ""
    if "skipped" in base:
        return f"<h2>Baselines</h2><p class='note'>skipped: {escape(str(base['skipped']))}</p>"
    final = summary.get("final") or {}
    models: list[tuple[str, Mapping[str, Any]]] = [("federated", final)]
    models.append(("centralized (pooled)", base.get("centralized") or {}))
    models += [(f"{name} alone", row) for name, row in (base.get("local_only") or {}).items()]
    keys = [k for k in metric_keys([m for _, m in models]) if k != "train_examples"]
    charts = [
        bar_chart(f"server test set: {_label(k)}", [(n, _num(m.get(k)) or math.nan) for n, m in models], _label(k))
        for k in keys
        if k != "loss"
    ]
    table = _table(["model", *map(_label, keys)], ([n, *(m.get(k) for k in keys)] for n, m in models))
    silos = list(summary.get("silos") or [])
    per_silo = summary.get("per_silo") or {}
    own_rows = [["federated", *((per_silo.get(s) or {}).get("accuracy") for s in silos)]]
    own_rows += [[n, *((m.get("own_test") or {}).get(s, {}).get("accuracy") for s in silos)] for n, m in models[1:]]
    intro = f"Each baseline trained {escape(str(base.get('epochs', '?')))} epochs over its own data, the same budget."
    return (
        f"<h2>Baselines</h2><p>{intro}</p><div class='charts'>{''.join(charts)}</div>{table}"
        f"<p>Accuracy on each silo's own test split:</p>{_table(['model', *silos], own_rows)}"
    )


def summary_section(summary: Mapping[str, Any]) -> str:
    if not summary:
        return "<h2>Result</h2><p class='note'>No summary.json: the run did not finish; below are the rounds done.</p>"
    final, fed = summary.get("final") or {}, summary.get("federated") or {}
    keys = metric_keys([final, fed])
    rows = [["server test set", *(final.get(k) for k in keys)], ["silos' test sets", *(fed.get(k) for k in keys)]]
    worst = [
        f"by {what}: <b>{escape(str(fed[silo]))}</b> ({_fmt(fed.get(value))})"
        for what, silo, value in (
            ("accuracy", "worst_silo", "worst_accuracy"),
            ("balanced accuracy", "worst_balanced_silo", "worst_balanced_accuracy"),
        )
        if silo in fed
    ]
    text = f"<p>Worst silo {'; '.join(worst)}.</p>" if worst else ""
    failures = f"<p class='note'>{summary['failures']} failed silo replies.</p>" if summary.get("failures") else ""
    return f"<h2>Result</h2>{_table(['final model', *map(_label, keys)], rows)}{text}{failures}"


def render_report(
    config: Mapping[str, Any],
    rows: Sequence[MetricRow],
    summary: Mapping[str, Any],
    title: str,
    images: Mapping[str, bytes] | None = None,
) -> str:
    """The whole page as one string (pure: no file access; ``images`` maps a grid's path to its PNG)."""
    silos = [s["name"] for s in config.get("silos", []) if isinstance(s, Mapping) and "name" in s]
    last = max((r.round for r in rows), default=0)
    listed = ", ".join(silos[:MAX_SILO_LINES]) + (", ..." if len(silos) > MAX_SILO_LINES else "")
    meta = f"{len(silos):,} silos: {escape(listed)} &middot; {last} rounds"
    if "duration_s" in summary:
        meta += f" &middot; {float(summary['duration_s']):.1f} s"
    body = [
        f"<h1>fedsilo run: {escape(title)}</h1><p class='meta'>{meta}</p>",
        summary_section(summary),
        global_section(rows),
        round_section(rows),
        silo_section(rows, silos, "evaluate"),
        silo_section(rows, silos, "fit"),
        failure_section(rows),
        baseline_section(summary),
        samples_section(sample_grids(rows, summary), images or {}),
        f"<h2>Configuration</h2><pre>{escape(json.dumps(_shortened(config), indent=2))}</pre>",
    ]
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width,initial-scale=1'><title>{escape(title)} - fedsilo report"
        f"</title><style>{CSS}</style></head><body>{''.join(body)}</body></html>\n"
    )


def _shortened(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """The config as shown: a long ``silos`` list keeps its first entries and a count of the rest."""
    silos = config.get("silos")
    if not isinstance(silos, list) or len(silos) <= MAX_SILO_LINES:
        return config
    return {**config, "silos": [*silos[:MAX_SILO_LINES], f"... and {len(silos) - MAX_SILO_LINES:,} more"]}


def write_report(run_dir: Path) -> Path:
    """Write ``report.html`` into a run folder (from its files alone) and return its path."""
    run = RunDir.open(Path(run_dir))
    try:
        config = json.loads((run.path / CONFIG).read_text())
        summary_path = run.path / SUMMARY
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
        rows = run.metrics()
        paths = [path for _, path, _ in sample_grids(rows, summary)]
        images = {p: (run.path / p).read_bytes() for p in paths if (run.path / p).is_file()}
    except (OSError, ValueError) as exc:
        raise RunDirError(
            f"cannot read the run folder {run.path}: {exc}", "check the folder is a complete run"
        ) from None
    return write_atomic(run.path / REPORT, render_report(config, rows, summary, run.path.name, images))
