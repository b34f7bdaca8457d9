"""The ``fedsilo`` command: running and checking experiments, preparing data.

The deployment commands (provision, server, silo, doctor) are in ``cli.deploy``; errors become
one line and an exit code through ``cli.io.guarded``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from fedsilo.cli.deploy import deploy_app
from fedsilo.cli.io import err, out, print_summary
from fedsilo.cli.io import guarded as _guarded
from fedsilo.errors import ConfigError
from fedsilo.experiment.bounds import MAX_COUNT, MAX_SEED
from fedsilo.wire.text import printable

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="fedsilo: federated learning across trust boundaries."
)
SHOWN_SILOS = 20  # rows of a silo table; 10,000 silos get a count, not 10,000 lines
data_app = typer.Typer(
    no_args_is_help=True, help="Prepare datasets: find, verify and split them into per-silo folders."
)
app.add_typer(data_app, name="data")
app.add_typer(deploy_app)


def _csv(value: str | None, cast: Callable[[str], Any] = str) -> list[Any] | None:
    if value is None:
        return None
    try:
        return [cast(v.strip()) for v in value.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"cannot read {value!r} as a comma-separated list", "e.g. --sizes 2,10,20") from None


@app.command()
def validate(experiment: Annotated[Path, typer.Argument(help="The experiment YAML.")]) -> None:
    """Build and check the whole plan offline (task, model, every silo's data, strategy minimums)."""
    from fedsilo.experiment.config import load_config
    from fedsilo.experiment.plan import build_plan
    from fedsilo.experiment.strategy_config import UserStrategyConfig, strategy_params

    def go() -> None:
        config, _ = load_config(experiment)
        plan = build_plan(config)
        table = Table(title=f"experiment '{config.name}': {len(config.silos)} silos, {config.rounds} rounds")
        for col in ("silo", "data", "train", "test", "note"):
            table.add_column(col)
        for s in plan.silos[:SHOWN_SILOS]:
            table.add_row(s.name, escape(_short(s.folder)), _n(s.train_examples), _n(s.test_examples), escape(s.note))
        if len(plan.silos) > SHOWN_SILOS:
            rest = plan.silos[SHOWN_SILOS:]
            notes = Counter(s.note or "opened" for s in rest)
            table.add_row(f"... {len(rest):,} more", "", "", "", ", ".join(f"{n:,} {k}" for k, n in notes.items()))
        out.print(table)
        model = f"{plan.num_parameters:,} parameters, {plan.num_arrays} arrays"
        out.print(f"task {escape(_short(config.task))} ({plan.framework}): {model}")
        rounds = f"{plan.fit_per_round} silos train, {plan.evaluate_per_round} evaluate per round"
        st = config.strategy
        name = f"{_short(st.location()[0])}:{st.location()[1]}" if isinstance(st, UserStrategyConfig) else st.name
        params = ", ".join(f"{k}={v}" for k, v in strategy_params(st).items())
        out.print(escape(f"strategy {name}" + (f" ({params})" if params else "") + f": {rounds}"))
        server = _short(config.server.data) if config.server.data else "none (no central evaluation)"
        out.print(f"server test data: {escape(server)} ({_n(plan.server_test_examples)} examples)")
        sa = config.privacy.secure_aggregation
        if sa is not None:
            mode = f"SecAgg+ with {sa.neighbours} neighbours" if sa.neighbours else "SecAgg"
            t = sa.threshold or "a strict majority"
            out.print(f"secure aggregation: {mode}, threshold {t}, {sa.ring_bits}-bit ring: the server sees only sums")
        if plan.epsilon is not None and config.privacy.dp is not None:
            d = config.privacy.dp
            epsilon, allowed = plan.epsilon
            stop = "" if allowed >= config.rounds else f"; target_epsilon={d.target_epsilon:g} stops it after {allowed}"
            kind = "distributed DP (the silos add the noise)" if sa is not None else "central DP"
            out.print(f"{kind}: epsilon {epsilon:.3f} at delta {d.delta:g} after {config.rounds} rounds{stop}")
        plan.raise_if_invalid()
        out.print("[green]valid[/green]")

    _guarded(go)


def _short(path: Path) -> str:
    """A path relative to the current folder when it is below it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _n(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


@app.command()
def run(
    experiment: Annotated[Path | None, typer.Argument(help="The experiment YAML (omit with --resume).")] = None,
    rounds: Annotated[int | None, typer.Option(min=1, max=MAX_COUNT, help="Override the number of rounds.")] = None,
    seed: Annotated[int | None, typer.Option(min=0, max=MAX_SEED, help="Override the seed.")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Folder under which the run folder is made.")] = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue the run in this run folder from its last checkpoint.")
    ] = None,
    baselines: Annotated[
        bool, typer.Option(help="Also train local-only and centralized models with the same budget.")
    ] = False,
    quiet: Annotated[bool, typer.Option(help="Print round lines and failures only, not a line per silo.")] = False,
    runtime: Annotated[
        str | None,
        typer.Option(
            help="simulation (worker pool), processes (one process per silo, gRPC + mTLS on 127.0.0.1) "
            "or ray (the worker pool on a Ray cluster)."
        ),
    ] = None,
) -> None:
    """Run an experiment (in simulation by default); writes a run folder with metrics, checkpoints and the model."""
    from fedsilo.experiment.config import load_config
    from fedsilo.runtime.launch import RUNTIMES, run_experiment
    from fedsilo.runtime.prepare import prepare_data
    from fedsilo.runtime.run import load_run_config
    from fedsilo.tracking.console import ConsoleProgress

    def go() -> None:
        if resume is not None:
            if experiment is not None or seed is not None or out_dir is not None:
                raise ConfigError(
                    "--resume continues a run with its own config",
                    "pass only --resume RUN_DIR (and optionally --rounds)",
                )
            config, text = load_run_config(resume, rounds)
        elif experiment is None:
            raise ConfigError("no experiment given", "fedsilo run EXPERIMENT.yaml, or fedsilo run --resume RUN_DIR")
        else:
            config, text = load_config(experiment)
            updates = {k: v for k, v in (("rounds", rounds), ("seed", seed), ("output", out_dir)) if v is not None}
            config = config.model_copy(update=updates)
            report = prepare_data(config)
            if report is not None:
                print_split(report)
        if runtime is not None:
            if runtime not in RUNTIMES:
                raise ConfigError(f"unknown runtime {runtime!r}", f"use --runtime {', '.join(RUNTIMES)}")
            config = config.model_copy(update={"runtime": config.runtime.model_copy(update={"kind": runtime})})
        progress = ConsoleProgress(config.rounds, err, verbose=not quiet)
        notify = None if quiet else (lambda m: err.print(f"[dim]{escape(printable(m))}[/dim]"))
        result = run_experiment(config, text, [progress], resume, baselines, notify)
        print_summary(result.summary)

    _guarded(go)


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="A run folder, as `fedsilo run` printed it.")]) -> None:
    """Write report.html into a run folder: metrics per round, per silo, failures and baselines, as plots."""
    from fedsilo.tracking.report import write_report

    _guarded(lambda: out.print(f"report: {escape(str(write_report(run_dir)))}"))


@data_app.command("split")
def data_split(
    source: Annotated[
        str,
        typer.Argument(
            help="A known dataset name (e.g. pneumoniamnist), an .npz file, or (--method column) a .csv "
            "table or the HAM10000 image release folder."
        ),
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write one sub-folder per silo into.")],
    silos: Annotated[str | None, typer.Option(help="Comma-separated silo names, e.g. hospital_a,hospital_b.")] = None,
    num_silos: Annotated[
        int | None, typer.Option(help="Instead of --silos: N silos named silo_00000, silo_00001, ...", min=1)
    ] = None,
    method: Annotated[
        str,
        typer.Option(help="iid, dirichlet (label skew), group (by patient/group id) or column (a table's site)."),
    ] = "iid",
    alpha: Annotated[float, typer.Option(help="Dirichlet concentration: small = strong label skew.")] = 0.5,
    sizes: Annotated[str | None, typer.Option(help="Relative silo sizes, e.g. 2,10,20.")] = None,
    groups_key: Annotated[
        str | None,
        typer.Option(
            help="With --method group: the npz key suffix of group ids (train_<key>); with column: the group column."
        ),
    ] = None,
    column: Annotated[str | None, typer.Option(help="With --method column: the column naming each row's silo.")] = None,
    label_column: Annotated[
        str | None, typer.Option(help="With --method column: the label column (dx for HAM10000).")
    ] = None,
    image_size: Annotated[
        int, typer.Option(help="With --method column on an image release: pixels per side of the saved images.")
    ] = 28,
    test_fraction: Annotated[
        float, typer.Option(help="Share of each silo's data held out as its local test set.")
    ] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed of the split.")] = 0,
    force: Annotated[bool, typer.Option(help="Rewrite an existing split made with other settings.")] = False,
    data_dir: Annotated[
        list[Path] | None, typer.Option(help="Extra folder to look for datasets in (repeatable).")
    ] = None,
    download: Annotated[bool, typer.Option(help="Download the dataset from its official source if missing.")] = False,
) -> None:
    """Write per-silo data folders from a dataset and report what each silo received."""
    from fedsilo.data.split import split_dataset

    def go() -> None:
        report = split_dataset(
            source,
            out_dir,
            _silo_names(silos, num_silos),
            method=method,
            alpha=alpha,
            sizes=_csv(sizes, float),
            groups_key=groups_key,
            test_fraction=test_fraction,
            seed=seed,
            force=force,
            data_dirs=_search_dirs(data_dir),
            download=download,
            column=column,
            label_column=label_column,
            image_size=image_size,
        )
        print_split(report)

    _guarded(go)


def _silo_names(silos: str | None, count: int | None) -> list[str]:
    if (silos is None) == (count is None):
        raise ConfigError("give either --silos a,b,c or --num-silos N", "e.g. --silos hospital_a,hospital_b")
    if count is not None:
        width = max(5, len(str(count - 1)))
        return [f"silo_{i:0{width}d}" for i in range(count)]
    return _csv(silos) or []


def _search_dirs(extra: list[Path] | None) -> list[Path] | None:
    """``--data-dir`` folders are searched first, then the usual places (not instead of them)."""
    from fedsilo.data.datasets import data_dirs

    return data_dirs(extra) if extra else None


def print_split(report: Any) -> None:
    from fedsilo.data.split import format_report

    rows = format_report(report)
    existing = "existing " if report.already_existed else ""
    table = Table(title=escape(f"{existing}split of {Path(str(report.source)).name} in {report.out}"))
    for col in rows[0]:
        table.add_column(str(col))
    silo_rows, totals = rows[1:-2], rows[-2:]
    for row in silo_rows[:SHOWN_SILOS]:
        table.add_row(*[escape(str(c)) for c in row])
    if len(silo_rows) > SHOWN_SILOS:
        table.add_row(f"... {len(silo_rows) - SHOWN_SILOS:,} more", *("" for _ in rows[0][1:]))
    for row in totals:
        table.add_row(*[escape(str(c)) for c in row])
    out.print(table)


@data_app.command("fetch")
def data_fetch(
    name: Annotated[str, typer.Argument(help="A known dataset name, e.g. pneumoniamnist.")],
    download: Annotated[bool, typer.Option(help="Download it from its official source if missing.")] = False,
    data_dir: Annotated[list[Path] | None, typer.Option(help="Extra folder to look in (repeatable).")] = None,
) -> None:
    """Find a dataset in the data directories, verify its checksum, and print its path."""
    from fedsilo.data.datasets import find_dataset

    _guarded(lambda: out.print(escape(str(find_dataset(name, data_dirs=_search_dirs(data_dir), download=download)))))


def main() -> None:
    app(prog_name="fedsilo")


if __name__ == "__main__":  # pragma: no cover
    main()
