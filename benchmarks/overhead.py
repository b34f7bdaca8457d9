"""fedsilo's simulation against plain PyTorch (and Flower) doing the same FedAvg work: benchmarks 1-3.

    python benchmarks/overhead.py [--bench 1|2|3] [--silos N] [--rounds N] [--repeats 3] [--peer flower]

- ``--bench 1`` (default): PneumoniaMNIST split IID into ``--silos`` (10) silos, the example CNN of
  examples/pneumonia (its class-weighted loss), 3 rounds, every silo trains and evaluates each round.
- ``--bench 2``: MNIST split IID into 200 silos, a linear model (``linear_task.py``), 1 round, every silo.
- ``--bench 3``: MNIST split IID into 10,000 silos (5 training and 1 test example each), the linear
  model, 3 rounds, 100 silos sampled per round for training and 100 for evaluation.

Every side: 1 local epoch of SGD (lr 0.05, momentum 0.9, batch 32), FedAvg weighted by examples,
the global model evaluated each round on the official test split (central) and on the sampled
silos' own test splits. The folders are written once by ``fedsilo data split`` (80% train / 20%
local test per silo); each side reads a silo's files only when it first uses that silo.

- ``plain``: one Python process, default torch threading, tensors batched by index (no DataLoader),
  the same seeded sampler as fedsilo (so the same silos train).
- ``fedsilo``: ``run_experiment`` with ``silos: {from_split: DIR}``, default runtime (worker pool).
- ``flower`` (with ``--peer flower``): the same work in Flower's simulation engine
  (``flower_peer.py``, run by the Python of ``.bench/flower``, which ``make bench-env`` creates).

Each side runs in its own subprocess, alternating, ``--repeats`` times; wall time is the whole
subprocess as a user experiences it (interpreter start, imports, data loading, training, exit),
cut off after ``--timeout`` seconds (a peer that times out is not run again). Peak memory is the
process tree's proportional set size (PSS), sampled every 20 ms. One JSON line per measurement,
then a summary line with medians and the targets, and a table.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CNN_TASK = ROOT / "examples" / "pneumonia" / "task.py"
LINEAR_TASK = Path(__file__).resolve().with_name("linear_task.py")
LR, MOMENTUM, BATCH = 0.05, 0.9, 32
FLOWER_PYTHON = ROOT / ".bench" / "flower" / "bin" / "python"


@dataclass(frozen=True)
class Bench:
    dataset: str
    task: Path
    silos: int
    rounds: int
    per_round: int | None  # silos sampled per round; None: all
    max_ratio: float | None  # fedsilo / plain wall time
    min_peer_speedup: float | None  # peer / fedsilo wall time
    max_wall_s: float | None = None
    max_peak_mb: float | None = None
    plain_threads: int | None = None  # torch intra-op threads of the plain side; None: torch's default


BENCHES = {
    1: Bench("pneumoniamnist", CNN_TASK, 10, 3, None, max_ratio=1.15, min_peer_speedup=2.5),
    # A 7,850-parameter model gains nothing from intra-op threads (each op is microseconds, and
    # syncing two threads costs more): one thread is the faster, so the fairer, floor.
    2: Bench("mnist", LINEAR_TASK, 200, 1, None, max_ratio=1.15, min_peer_speedup=5.0, plain_threads=1),
    3: Bench("mnist", LINEAR_TASK, 10_000, 3, 100, None, None, max_wall_s=60.0, max_peak_mb=3000.0, plain_threads=1),
}


def silo_names(data: Path) -> list[str]:
    """The silos ``fedsilo data split`` wrote, in its order (every side maps index -> silo the same way)."""
    return [s["name"] for s in json.loads((data / "split.json").read_text())["silos"]]


def load_task(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_task", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_plain(task_path: Path, data: Path, rounds: int, per_round: int | None, seed: int, threads: int | None) -> float:
    """FedAvg written plainly: the floor any framework is measured against."""
    import torch

    if threads:
        torch.set_num_threads(threads)

    from fedsilo.server.registry import EVALUATE, FIT, round_rng, sample_silos

    task = load_task(task_path)
    names = silo_names(data)
    fraction = 1.0 if per_round is None else per_round / len(names)
    loaded: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}

    def tensors(folder: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        if (folder, split) not in loaded:  # read when first used, kept after (as fedsilo's workers do)
            x, y = task.load_data(data / folder, split)
            loaded[folder, split] = torch.from_numpy(x), torch.from_numpy(y)
        return loaded[folder, split]

    server = tensors("server", "test")
    torch.manual_seed(seed)
    model = task.model()
    loss_fn = task.loss() if hasattr(task, "loss") else torch.nn.CrossEntropyLoss()
    global_state = {k: v.clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def evaluate(x: torch.Tensor, y: torch.Tensor) -> float:
        model.eval()
        correct = 0
        for i in range(0, len(x), 1024):
            out = model(x[i : i + 1024])
            loss_fn(out, y[i : i + 1024])
            correct += int((out.argmax(1) == y[i : i + 1024]).sum())
        return correct / len(x)

    model.load_state_dict(global_state)
    accuracy = evaluate(*server)
    for rnd in range(1, rounds + 1):
        total = {k: torch.zeros_like(v, dtype=torch.float64) for k, v in global_state.items()}
        weight = 0
        for i, name in enumerate(sample_silos(names, fraction, 1, round_rng(seed, rnd, FIT))):
            x, y = tensors(name, "train")
            model.load_state_dict(global_state)
            model.train()
            opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
            gen = torch.Generator().manual_seed(seed * 100_003 + rnd * 1009 + i)
            order = torch.randperm(len(x), generator=gen)
            for b in range(0, len(x), BATCH):
                idx = order[b : b + BATCH]
                opt.zero_grad(set_to_none=True)
                loss_fn(model(x[idx]), y[idx]).backward()
                opt.step()
            for k, v in model.state_dict().items():
                total[k] += v.double() * len(x)
            weight += len(x)
        global_state = {k: (v / weight).to(global_state[k].dtype) for k, v in total.items()}
        model.load_state_dict(global_state)
        accuracy = evaluate(*server)
        for name in sample_silos(names, fraction, 1, round_rng(seed, rnd, EVALUATE)):
            evaluate(*tensors(name, "test"))
    return accuracy


def run_fedsilo(task_path: Path, data: Path, rounds: int, per_round: int | None, seed: int, out: Path) -> float:
    from fedsilo.experiment.config import parse_config
    from fedsilo.runtime.launch import run_experiment

    fraction = 1.0 if per_round is None else per_round / len(silo_names(data))
    raw = {
        "name": "overhead",
        "task": str(task_path),
        "silos": {"from_split": str(data)},
        "server": {"data": str(data / "server")},
        "strategy": {"name": "fedavg", "fraction_fit": fraction, "fraction_evaluate": fraction},
        "rounds": rounds,
        "train": {"epochs": 1, "batch_size": BATCH, "optimizer": "sgd", "lr": LR, "momentum": MOMENTUM},
        "seed": seed,
        "output": str(out),
    }
    result = run_experiment(parse_config(raw, ROOT), json.dumps(raw))
    return float(result.summary["final"]["accuracy"])


def tree_pss_mb(pid: int) -> float:
    """Proportional resident memory (PSS) of ``pid`` and all its descendants, from /proc.

    PSS splits pages shared between processes (forked workers share torch with their parent), so
    the sum is the tree's real footprint; summing plain RSS would count shared pages once per process.
    """
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    stack.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError, StopIteration):
            continue
    return total / 1024


def measure(system: str, bench: int, b: Bench, data: Path, timeout: float) -> dict[str, Any]:
    """Run one side in a fresh subprocess; wall time and peak memory of its whole process tree."""
    result = data.parent / f"{system}.json"
    result.unlink(missing_ok=True)
    args = ["--task", str(b.task), "--data", str(data), "--result", str(result), "--rounds", str(b.rounds)]
    args += ["--per-round", str(b.per_round)] if b.per_round else []
    args += ["--threads", str(b.plain_threads)] if b.plain_threads and system == "plain" else []
    cmd = [sys.executable, __file__, "--child", system, *args]
    if system == "flower":
        cmd = [str(FLOWER_PYTHON), str(Path(__file__).with_name("flower_peer.py")), *args]
    peak = 0.0
    start = time.perf_counter()
    # Timed to the main process's exit, as a shell's `time` sees it (a helper process may still be
    # tearing down after that; no pipe is held open to wait for it).
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_pss_mb(proc.pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        proc.wait(timeout)
        status = "ok" if proc.returncode == 0 else f"failed (exit code {proc.returncode})"
    except subprocess.TimeoutExpired:
        status = f"timeout after {timeout:.0f} s"
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    with_children_stopped(proc)
    accuracy = json.loads(result.read_text())["accuracy"] if status == "ok" else None
    return {"bench": bench, "system": system, "silos": b.silos, "per_round": b.per_round or b.silos,
            "rounds": b.rounds, "status": status, "wall_s": round(wall, 3), "peak_pss_mb": round(peak, 1),
            "final_accuracy": None if accuracy is None else round(accuracy, 4)}  # fmt: skip


def with_children_stopped(proc: subprocess.Popen[bytes]) -> None:
    """Kill what is left of the run's own process group (a timed-out run, a peer's helpers)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def child(
    system: str, task: Path, data: Path, result: Path, rounds: int, per_round: int | None, threads: int | None
) -> None:
    if system == "plain":
        accuracy = run_plain(task, data, rounds, per_round, seed=0, threads=threads)
    else:
        with tempfile.TemporaryDirectory() as out:
            accuracy = run_fedsilo(task, data, rounds, per_round, seed=0, out=Path(out))
    result.write_text(json.dumps({"accuracy": accuracy}))


def summarize(bench: int, b: Bench, rows: dict[str, list[dict[str, Any]]], peer: str | None) -> dict[str, Any]:
    ok = {s: [r for r in rs if r["status"] == "ok"] for s, rs in rows.items()}
    med = {s: round(statistics.median(r["wall_s"] for r in rs), 3) for s, rs in ok.items() if rs}
    peak = {s: max(r["peak_pss_mb"] for r in rs) for s, rs in ok.items() if rs}
    out: dict[str, Any] = {"bench": bench, "silos": b.silos, "per_round": b.per_round or b.silos, "rounds": b.rounds,
                           "median_wall_s": med, "max_peak_pss_mb": peak}  # fmt: skip
    checks: dict[str, bool] = {}
    if "fedsilo" in med and "plain" in med:
        out["ratio_fedsilo_over_plain"] = round(med["fedsilo"] / med["plain"], 3)
        if b.max_ratio:
            checks[f"fedsilo/plain <= {b.max_ratio}"] = out["ratio_fedsilo_over_plain"] <= b.max_ratio
    if peer and peer in med and "fedsilo" in med:
        out[f"{peer}_over_fedsilo_wall"] = round(med[peer] / med["fedsilo"], 2)
        out[f"fedsilo_over_{peer}_peak"] = round(peak["fedsilo"] / peak[peer], 3)
        if b.min_peer_speedup:
            checks[f"{peer}/fedsilo >= {b.min_peer_speedup}"] = out[f"{peer}_over_fedsilo_wall"] >= b.min_peer_speedup
            checks[f"fedsilo peak <= half {peer}'s"] = out[f"fedsilo_over_{peer}_peak"] <= 0.5
    if b.max_wall_s and "fedsilo" in med:
        checks[f"fedsilo < {b.max_wall_s:.0f} s"] = med["fedsilo"] < b.max_wall_s
    if b.max_peak_mb and "fedsilo" in peak:
        checks[f"fedsilo peak < {b.max_peak_mb:.0f} MB"] = peak["fedsilo"] < b.max_peak_mb
    out["targets"] = checks
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=int, choices=sorted(BENCHES), default=1)
    parser.add_argument("--silos", type=int, help="override the benchmark's number of silos")
    parser.add_argument("--rounds", type=int, help="override the benchmark's number of rounds")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds one run may take")
    parser.add_argument("--json-only", action="store_true")
    parser.add_argument("--peer", choices=["flower"], help="also run the peer framework (see make bench-env)")
    parser.add_argument("--child", choices=["plain", "fedsilo"], help=argparse.SUPPRESS)
    parser.add_argument("--task", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--per-round", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.task, args.data, args.result, args.rounds, args.per_round, args.threads)
        return
    if args.peer and not FLOWER_PYTHON.exists():
        raise SystemExit(f"{FLOWER_PYTHON} not found: run `make bench-env` first")
    b = BENCHES[args.bench]
    b = Bench(**{**b.__dict__, "silos": args.silos or b.silos, "rounds": args.rounds or b.rounds})

    from fedsilo.data.split import split_dataset

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        started = time.perf_counter()
        names = [f"silo_{i:05d}" for i in range(b.silos)]
        split_dataset(b.dataset, data, names, method="iid", test_fraction=0.2, seed=0)
        print(json.dumps({"bench": args.bench, "prepare_s": round(time.perf_counter() - started, 1)}), flush=True)
        systems = ["plain", "fedsilo"] + ([args.peer] if args.peer else [])
        rows: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
        for _ in range(args.repeats):
            for system in systems:  # alternate, so drift on a noisy machine hits every system
                if rows[system] and rows[system][-1]["status"].startswith("timeout"):
                    continue  # a peer that timed out once would only time out again
                row = measure(system, args.bench, b, data, args.timeout)
                rows[system].append(row)
                print(json.dumps(row), flush=True)

    summary = summarize(args.bench, b, rows, args.peer)
    print(json.dumps(summary))
    if not args.json_only:
        print_table(args.bench, b, rows, summary)


def print_table(bench: int, b: Bench, rows: dict[str, list[dict[str, Any]]], summary: dict[str, Any]) -> None:
    sampled = f", {b.per_round} sampled per round" if b.per_round else ""
    print(f"\nbenchmark {bench}: {b.silos} silos{sampled}, {b.rounds} rounds, {b.task.name}")
    print(f"{'system':<10}{'median wall s':>15}  {'runs (s)':<40}{'peak PSS MB':>12}{'accuracy':>10}")
    for system, rs in rows.items():
        runs = ", ".join(f"{r['wall_s']:.2f}" if r["status"] == "ok" else r["status"] for r in rs)
        med = summary["median_wall_s"].get(system, float("nan"))
        peak = summary["max_peak_pss_mb"].get(system, float("nan"))
        print(f"{system:<10}{med:>15.2f}  {runs:<40}{peak:>12.0f}{str(rs[-1]['final_accuracy']):>10}")
    for target, met in summary["targets"].items():
        print(f"target {target}: {'met' if met else 'MISSED'}")


if __name__ == "__main__":
    main()
