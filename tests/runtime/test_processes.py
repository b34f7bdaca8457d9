"""The processes runtime: one OS process per silo over gRPC + mutual TLS on 127.0.0.1, as deployed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from fedsilo.errors import RoundFailed
from fedsilo.experiment.config import load_config
from fedsilo.runtime.launch import run_experiment
from fedsilo.wire.arrays import load_file, spec_of, wire_size
from fedsilo.wire.codecs import Codec, encoded_spec
from helpers import run_in_processes

TASKS = Path(__file__).resolve().parents[1] / "tasks"


def silo_pids(kits: Path) -> dict[str, int]:
    """Running ``fedsilo silo`` processes of these kits, by silo name (read from /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if "silo" in args and "--kit" in args:
            kit = Path(args[args.index("--kit") + 1])
            if kit.parent == kits:
                found[kit.name] = int(entry.name)
    return found


def test_processes_give_the_same_model_as_simulation(make_experiment, torch_task) -> None:
    config, text = load_config(make_experiment(task=torch_task, workers=2, extra={"server": {"heartbeat_s": 0.5}}))
    simulated = run_experiment(config, text)
    processes = run_in_processes(config.model_copy(update={"output": config.output.parent / "runs_p"}), text)
    assert list(simulated.parameters) == list(processes.parameters)
    for name, value in simulated.parameters.items():
        np.testing.assert_allclose(processes.parameters[name], value, rtol=0, atol=1e-6)
    assert processes.summary["failures"] == 0
    run = processes.run_dir
    assert sorted(p.name for p in (run / "kits").iterdir()) == ["a", "b", "c", "ca", "server"]
    assert "round 2: fit" in (run / "logs" / "a.log").read_text()
    assert silo_pids(run / "kits") == {}  # every silo process has exited


def test_killing_one_of_three_silos_mid_round_completes_the_round_with_two(make_experiment, metrics_of) -> None:
    exp = make_experiment(
        task=TASKS / "slow_c_torch.py",
        extra={
            "strategy": {"min_fit_clients": 2, "min_available_clients": 2},
            "server": {"heartbeat_s": 0.5, "round_timeout_s": 60},
        },
    )
    config, text = load_config(exp)

    class KillC:
        def on_round_start(self, rnd: int, silos) -> None:
            if rnd == 1:
                threading.Thread(target=self._kill, daemon=True).start()

        def _kill(self) -> None:
            time.sleep(1.5)  # c is loading its data (4 s) inside round 1's fit
            kits = next(config.output.iterdir()) / "kits"
            os.kill(silo_pids(kits)["c"], signal.SIGKILL)

        def on_reply(self, *a) -> None: ...
        def on_metrics(self, row) -> None: ...
        def on_round_end(self, *a) -> None: ...

    result = run_in_processes(config, text, observers=[KillC()])
    rows = metrics_of(result.run_dir)
    round1 = {r["silo"]: r for r in rows if r["round"] == 1 and r["scope"] == "silo" and r["phase"] == "fit"}
    assert round1["c"]["failure_kind"] == "disconnected"
    assert "failure" not in round1["a"] and "failure" not in round1["b"]
    assert result.summary["rounds"] == 2  # round 2 ran with the two left
    fits2 = [r for r in rows if r["round"] == 2 and r["phase"] == "fit"]
    assert sorted(r["silo"] for r in fits2) == ["a", "b"]


def test_a_killed_server_resumes_from_its_checkpoint_and_leaves_no_silo_behind(make_experiment, torch_task) -> None:
    exp = make_experiment(task=torch_task, rounds=4, extra={"server": {"heartbeat_s": 0.5}})
    config, text = load_config(exp)
    env = {**os.environ, "FEDSILO_DEBUG": ""}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedsilo", "run", str(exp), "--runtime", "processes", "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            ckpts = list(config.output.glob("*/checkpoints/round_0002.safetensors"))
            if ckpts:
                break
            time.sleep(0.05)
        assert ckpts, "no checkpoint of round 2 appeared"
        run_dir = ckpts[0].parents[1]
        proc.send_signal(signal.SIGKILL)  # the server crashes
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    kits = run_dir / "kits"
    deadline = time.monotonic() + 20
    while silo_pids(kits) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert silo_pids(kits) == {}  # silos die with the run
    resumed = subprocess.run(
        [sys.executable, "-m", "fedsilo", "run", "--resume", str(run_dir), "--runtime", "processes", "--quiet"],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert resumed.returncode == 0, resumed.stderr
    straight = run_experiment(config.model_copy(update={"output": config.output.parent / "straight"}), text)
    final = load_file(run_dir / "model.safetensors")
    for name, value in straight.parameters.items():
        np.testing.assert_allclose(final[name], value, rtol=0, atol=1e-6)


def test_a_failed_run_tells_each_silo_process_why_it_ended(make_experiment) -> None:
    exp = make_experiment(extra={"server": {"heartbeat_s": 0.5}})
    for name in "abc":
        (exp.parent / "data" / name / "RAISE").write_text("")  # every fit fails: the run stops at round 1
    config, text = load_config(exp)
    with pytest.raises(RoundFailed):
        run_in_processes(config, text)
    logs = next(config.output.iterdir()) / "logs"
    for name in "abc":
        log = " ".join((logs / f"{name}.log").read_text().split())
        assert "error: the server ended the run: the run failed on the server" in log and "RoundFailed" in log
        assert "server closed the run" not in log  # it used to say the run was over, and exit 0


@pytest.mark.parametrize("insecure", [False, True])
def test_server_silo_and_doctor_commands_run_a_deployment(cli, make_experiment, tmp_path: Path, insecure) -> None:
    exp = make_experiment(
        extra={"server": {"heartbeat_s": 0.5, "wait_timeout_s": 60}, "strategy": {"min_available_clients": 3}}
    )
    port = 20000 + os.getpid() % 20000 + (1 if insecure else 0)
    assert cli("provision", exp, "--out", tmp_path / "kits", "--server-address", f"127.0.0.1:{port}").exit_code == 0
    flag = ["--insecure"] if insecure else []
    down = cli("doctor", "--kit", tmp_path / "kits" / "a", *flag)
    assert down.exit_code == 1 and "FAIL server" in down.stdout and "ok   certificates" in down.stdout
    fedsilo = [sys.executable, "-m", "fedsilo"]
    server = subprocess.Popen(
        [*fedsilo, "server", str(exp), "--kit", str(tmp_path / "kits" / "server"), "--quiet", *flag],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    silos = []
    try:
        deadline = time.monotonic() + 60  # the server process needs a moment to start listening
        up = cli("doctor", "--kit", tmp_path / "kits" / "a", *flag)
        while up.exit_code != 0 and time.monotonic() < deadline and server.poll() is None:
            time.sleep(0.5)
            up = cli("doctor", "--kit", tmp_path / "kits" / "a", *flag)
        assert up.exit_code == 0, up.stdout
        assert "sees 'a'" in up.stdout and "ok   clock" in up.stdout
        for name in ("a", "b", "c"):
            silos.append(
                subprocess.Popen(
                    [
                        *fedsilo,
                        "silo",
                        "--kit",
                        str(tmp_path / "kits" / name),
                        "--data",
                        str(exp.parent / "data" / name),
                        *flag,
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        out, err = server.communicate(timeout=120)
        assert server.returncode == 0, err
        assert "silo a connected" in err and "final test accuracy" in out
        assert ("WARNING: --insecure" in err) == insecure
        for s in silos:
            assert s.wait(30) == 0
    finally:
        for p in (server, *silos):
            if p.poll() is None:
                p.kill()
                p.wait()
        for stream in (server.stdout, server.stderr):
            if stream is not None:
                stream.close()


def test_silos_outlive_a_server_crash_and_finish_the_run_with_the_resumed_server(
    cli, make_experiment, tmp_path: Path
) -> None:
    exp = make_experiment(
        rounds=5,
        task=torch_task_path(),
        extra={"server": {"heartbeat_s": 0.5}, "strategy": {"min_available_clients": 3}},
    )
    port = 20000 + (os.getpid() + 7) % 20000
    kits = tmp_path / "kits"
    assert cli("provision", exp, "--out", kits, "--server-address", f"127.0.0.1:{port}").exit_code == 0
    fedsilo = [sys.executable, "-m", "fedsilo"]
    server_cmd = [*fedsilo, "server", "--kit", str(kits / "server"), "--quiet"]
    server = subprocess.Popen(
        [*server_cmd[:4], str(exp), *server_cmd[4:]], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    silos = [
        subprocess.Popen(
            [*fedsilo, "silo", "--kit", str(kits / n), "--data", str(exp.parent / "data" / n), "--stall-timeout", "5"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for n in ("a", "b", "c")
    ]
    restarted = None
    try:
        output = exp.parent / "runs"
        deadline = time.monotonic() + 120
        while not list(output.glob("*/checkpoints/round_0002.safetensors")) and time.monotonic() < deadline:
            time.sleep(0.05)
        run_dir = next(output.glob("*/checkpoints/round_0002.safetensors")).parents[1]
        server.kill()
        server.wait(10)
        time.sleep(1.0)
        assert all(s.poll() is None for s in silos)  # the silos wait for the server to come back
        restarted = subprocess.run([*server_cmd, "--resume", str(run_dir)], capture_output=True, text=True, timeout=180)
        assert restarted.returncode == 0, restarted.stderr
        assert "silo a connected" in restarted.stderr
        assert '"rounds": 5' in (run_dir / "summary.json").read_text()
        for s in silos:
            assert s.wait(30) == 0
    finally:
        for p in (server, *silos):
            if p.poll() is None:
                p.kill()
                p.wait()


def torch_task_path() -> Path:
    return TASKS / "tiny_torch.py"


def test_a_server_whose_silos_do_not_come_names_them_and_exits_non_zero(cli, make_experiment, tmp_path: Path) -> None:
    exp = make_experiment(extra={"server": {"wait_timeout_s": 1}, "strategy": {"min_available_clients": 2}})
    port = 20000 + (os.getpid() + 13) % 20000
    assert cli("provision", exp, "--out", tmp_path / "kits", "--server-address", f"127.0.0.1:{port}").exit_code == 0
    result = cli("server", exp, "--kit", tmp_path / "kits" / "server")
    assert result.exit_code == 7
    assert "missing: a, b, c" in result.stderr and "min_available_clients=2" in result.stderr
    wrong = cli("server", exp, "--kit", tmp_path / "kits" / "a")
    assert wrong.exit_code == 9 and "not the server's" in wrong.stderr


def test_codecs_and_central_dp_over_grpc_give_the_simulations_model(make_experiment, metrics_of) -> None:
    """q8 updates and DP-FedAvg through real silo processes (gRPC + mTLS on 127.0.0.1) and the pool."""
    extra = {
        "server": {"heartbeat_s": 0.5},
        "compression": {"codec": "q8"},
        "privacy": {"dp": {"noise_multiplier": 1.0, "clip_norm": 1.0}},
    }
    config, text = load_config(make_experiment(workers=2, extra=extra))
    simulated = run_experiment(config, text)
    processes = run_in_processes(config.model_copy(update={"output": config.output.parent / "runs_p"}), text)
    for name, value in simulated.parameters.items():
        np.testing.assert_allclose(processes.parameters[name], value, rtol=0, atol=1e-6)
    assert processes.summary["failures"] == 0
    assert processes.summary["privacy"] == simulated.summary["privacy"]
    fits = [r for r in metrics_of(processes.run_dir) if r["scope"] == "silo" and r["phase"] == "fit"]
    q8 = wire_size(encoded_spec(spec_of(simulated.parameters), Codec("q8")))  # a tiny model: headers dominate
    assert len(fits) == 6 and all(r["upload_bytes"] == q8 for r in fits)
    assert processes.summary["upload"] == simulated.summary["upload"]
