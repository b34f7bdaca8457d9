"""The deployment commands: ``provision``, ``server``, ``silo`` and ``doctor``.

A deployment is a server on one machine and each silo on its own; the silos connect out to the
server over gRPC with mutual TLS, with the kits ``provision`` made. See the README's deployment
section for the steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from fedsilo.cli.io import err, guarded, out, print_summary
from fedsilo.errors import ConfigError
from fedsilo.experiment.bounds import MAX_COUNT
from fedsilo.transport.timing import CONNECT_TIMEOUT_S, STALL_TIMEOUT_S
from fedsilo.wire.text import printable

deploy_app = typer.Typer()

Insecure = Annotated[bool, typer.Option("--insecure", help="No TLS (debugging on one machine only): prints a warning.")]


@deploy_app.command()
def provision(
    experiment: Annotated[Path, typer.Argument(help="The experiment YAML.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write the CA and the kits into.")] = Path("kits"),
    server_address: Annotated[
        str | None, typer.Option(help="HOST:PORT the silos will connect to (default: server.address in the YAML).")
    ] = None,
    add_silo: Annotated[
        str | None, typer.Option(help="Issue a kit for one more silo with the existing CA; others are untouched.")
    ] = None,
    days: Annotated[int, typer.Option(min=1, help="Validity of the certificates, in days.")] = 365,
) -> None:
    """Make a certificate authority, a server kit and one kit per silo (keys owner-only; nothing overwritten)."""
    from fedsilo.experiment import provision as prov
    from fedsilo.experiment.config import load_config

    def go() -> None:
        config, _ = load_config(experiment)
        if add_silo is not None:
            path = prov.add_silo(config, out_dir, add_silo, days)
            out.print(f"kit for silo '{escape(add_silo)}': {escape(str(path))}")
            out.print("the running server accepts it without a restart; add it to the YAML's silos to list it")
            return
        report = prov.provision(config, out_dir, server_address, days)
        table = Table(title=f"kits for experiment '{escape(config.name)}' (valid until {report.expires:%Y-%m-%d})")
        table.add_column("party")
        table.add_column("kit")
        table.add_column("copy it to")
        for kit in report.kits:
            where = "the server machine" if kit.name == prov.SERVER else f"silo {kit.name}'s machine"
            table.add_row(kit.name, escape(str(kit)), where)
        out.print(table)
        out.print(f"silos will connect to {escape(report.server_address)}")
        out.print(f"keep {escape(str(out_dir / prov.CA_DIR))} offline: its key signs new kits (--add-silo)")

    guarded(go)


@deploy_app.command()
def server(
    experiment: Annotated[Path | None, typer.Argument(help="The experiment YAML (omit with --resume).")] = None,
    kit: Annotated[Path, typer.Option(help="The server's kit folder.")] = Path("kits/server"),
    listen: Annotated[
        str | None, typer.Option(help="HOST:PORT to listen on (default: the address in the kit).")
    ] = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue the run in this run folder from its last checkpoint.")
    ] = None,
    rounds: Annotated[int | None, typer.Option(min=1, max=MAX_COUNT, help="Override the number of rounds.")] = None,
    insecure: Insecure = False,
    quiet: Annotated[bool, typer.Option(help="Print round lines and failures only.")] = False,
) -> None:
    """Run the orchestrator: wait for the silos, run the rounds, write the run folder."""
    from fedsilo.experiment.config import load_config
    from fedsilo.experiment.plan import build_plan
    from fedsilo.runtime.deploy import INSECURE_WARNING, DeploymentRuntime
    from fedsilo.runtime.run import load_run_config, run
    from fedsilo.tracking.console import ConsoleProgress
    from fedsilo.transport.grpc.server import GrpcServerTransport

    def go() -> None:
        if resume is not None:
            config, text = load_run_config(resume, rounds)
        elif experiment is None:
            raise ConfigError("no experiment given", "fedsilo server EXPERIMENT.yaml --kit KITS/server")
        else:
            config, text = load_config(experiment)
            if rounds is not None:
                config = config.model_copy(update={"rounds": rounds})
        if insecure:
            err.print(f"[bold red]{INSECURE_WARNING}[/bold red]")

        def notify(message: str) -> None:
            err.print(f"[cyan]{escape(printable(message))}[/cyan]")

        def serving(transport: GrpcServerTransport) -> None:
            where = listen or "the kit's address"
            err.print(
                f"serving experiment '{escape(config.name)}' on {escape(where)} (port {transport.port}); "
                f"waiting up to {config.server.wait_timeout_s:.0f}s for "
                f"{config.strategy.min_available_clients} silo(s)"
            )

        runtime = DeploymentRuntime(config, kit, insecure, listen, notify, on_listen=serving)
        plan = build_plan(config, silo_data=False)
        progress = ConsoleProgress(config.rounds, err, verbose=not quiet)
        print_summary(run(plan, runtime, [progress], text, resume).summary)

    guarded(go)


@deploy_app.command()
def silo(
    kit: Annotated[Path, typer.Option(help="This silo's kit folder.")],
    data: Annotated[Path, typer.Option(help="This silo's own data folder (nothing else is read).")],
    task: Annotated[Path | None, typer.Option(help="The task module (default: the kit's task.py).")] = None,
    server: Annotated[str | None, typer.Option(help="HOST:PORT of the server (default: the kit's).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    threads: Annotated[int, typer.Option(min=0, help="Torch threads (0: as many as cores).")] = 0,
    connect_timeout: Annotated[
        float, typer.Option(help="Seconds to keep trying to reach the server before giving up.")
    ] = CONNECT_TIMEOUT_S,
    stall_timeout: Annotated[
        float, typer.Option(help="Give a transfer up after this many seconds without progress.")
    ] = STALL_TIMEOUT_S,
    state: Annotated[
        Path | None, typer.Option(help="Folder for what the silo keeps between rounds (default: KIT/state).")
    ] = None,
    insecure: Insecure = False,
) -> None:
    """Serve one silo: connect out to the server and train on this silo's data when asked."""
    from fedsilo.runtime.deploy import INSECURE_WARNING, SiloOptions, run_silo
    from fedsilo.runtime.processes import die_with_parent

    def go() -> None:
        die_with_parent()
        if insecure:
            err.print(f"[bold red]{INSECURE_WARNING}[/bold red]")
        options = SiloOptions(kit, data, task, server, device, insecure, connect_timeout, stall_timeout, threads, state)
        reason = run_silo(options, log=lambda m: err.print(escape(m)))
        err.print(f"server closed the run: {escape(reason)}")

    guarded(go)


@deploy_app.command()
def doctor(
    kit: Annotated[Path, typer.Option(help="This silo's kit folder.")],
    data: Annotated[Path | None, typer.Option(help="This silo's data folder, to check it exists.")] = None,
    server: Annotated[str | None, typer.Option(help="HOST:PORT of the server (default: the kit's).")] = None,
    insecure: Insecure = False,
) -> None:
    """Check, from a silo's machine, the kit, the certificates, the server's reachability and the clocks."""
    from fedsilo.runtime.deploy import SiloOptions
    from fedsilo.runtime.deploy import doctor as run_doctor

    def go() -> None:
        checks = run_doctor(SiloOptions(kit, data or Path("."), server=server, insecure=insecure))
        for name, ok, detail in checks:
            mark = "[green]ok[/green]  " if ok else "[red]FAIL[/red]"
            out.print(f"{mark} {name}: {escape(detail)}")
        if not all(ok for _, ok, _ in checks):
            raise typer.Exit(1)

    guarded(go)
