"""What every ``fedsilo`` command shares: the consoles, and turning fedsilo errors into one line.

Every fedsilo error becomes one line on stderr and the exit code its class carries: a user sees
what went wrong and how to fix it, never a traceback (set FEDSILO_DEBUG=1 to see one). The line
is :func:`~fedsilo.wire.text.printable`: it may quote a silo, and no silo writes to the terminal.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fedsilo.errors import FedsiloError
from fedsilo.wire.text import printable

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)
T = TypeVar("T")


def guarded(fn: Callable[[], T]) -> T:
    """Run ``fn``; turn fedsilo errors into one line and an exit code."""
    try:
        return fn()
    except FedsiloError as exc:
        if os.environ.get("FEDSILO_DEBUG"):
            raise
        err.print(f"[red]error:[/red] {escape(printable(exc.one_line()))}", soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        err.print("interrupted; a run can be continued with `fedsilo run --resume RUN_DIR`")
        raise typer.Exit(130) from None


def headline_metric(final: dict[str, Any]) -> str:
    """What the summary compares models by: accuracy, or a task's own (e.g. ``tstr_accuracy``)."""
    if "accuracy" in final:
        return "accuracy"
    own = sorted(k for k, v in final.items() if k.endswith("accuracy") and isinstance(v, int | float))
    return own[0] if own else "accuracy"


def print_summary(summary: dict[str, Any]) -> None:
    final = summary.get("final") or {}
    fed = summary.get("federated") or {}
    key = headline_metric(final)
    if "accuracy" in final:
        balanced = f"  (balanced {final['balanced_accuracy']:.4f})" if "balanced_accuracy" in final else ""
        out.print(f"final test accuracy (server test set): [bold]{final['accuracy']:.4f}[/bold]{balanced}")
    elif key in final:
        out.print(f"final server evaluation: [bold]{key} {final[key]:.4f}[/bold]")
    if "accuracy" in fed:
        worst = f"worst silo {fed.get('worst_silo')} {fed.get('worst_accuracy', 0):.4f}"
        out.print(f"silos' own test sets: accuracy {fed['accuracy']:.4f}, {worst}")
    base = summary.get("baselines") or {}
    if "centralized" in base:
        out.print(_baseline_table(summary))
    elif "skipped" in base:
        out.print(f"[yellow]baselines skipped: {escape(base['skipped'])}[/yellow]")
    central = (summary.get("privacy") or {}).get("central")
    if central:
        out.print(
            f"central DP: epsilon {central['epsilon']:.3f} at delta {central['delta']:g} ({central['rounds']} rounds)"
        )
    upload = summary.get("upload") or {}
    if upload.get("ratio", 1.0) != 1.0:
        out.print(f"uploaded {upload['bytes']:,} bytes, {upload['ratio']:.4f} of float32's {upload['bytes_float32']:,}")
    if summary.get("stopped_early"):
        out.print(f"[yellow]{escape(summary['stopped_early'])}[/yellow]")
    if summary.get("failures"):
        out.print(f"[yellow]{summary['failures']} silo failures during the run (see metrics.jsonl)[/yellow]")
    out.print(f"run folder: {escape(summary['run_dir'])}  ({summary['duration_s']:.1f}s)")
    if summary.get("report"):
        out.print(f"report: {escape(summary['report'])}")


def _baseline_table(summary: dict[str, Any]) -> Table:
    """Accuracy (or the task's headline metric) of each model on the server's test set and each silo's own."""
    silos = summary["silos"]
    base = summary["baselines"]
    key = headline_metric(summary.get("final") or {})
    table = Table(title=f"{key}, same training budget ({base.get('epochs')} epochs over each model's data)")
    table.add_column("model (test set ->)", no_wrap=True)
    for col in ["server", *silos]:
        table.add_column(col, justify="right")

    def acc(row: dict[str, Any] | None) -> str:
        return f"{row[key]:.4f}" if row and key in row else "-"

    per_silo = summary.get("per_silo") or {}
    table.add_row("federated", acc(summary.get("final")), *[acc(per_silo.get(s)) for s in silos])
    central = base["centralized"]
    table.add_row("centralized (pooled)", acc(central), *[acc(central.get("own_test", {}).get(s)) for s in silos])
    for name, row in base["local_only"].items():
        own = row.get("own_test", {})
        table.add_row(f"{name} alone", acc(row), *[acc(own.get(s)) if s == name else "" for s in silos])
    return table
