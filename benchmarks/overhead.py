"""fedsilo's simulation against plain PyTorch doing the same FedAvg work in one process.

    python benchmarks/overhead.py [--silos 10] [--rounds 3] [--repeats 3] [--json-only]

Both sides train the example CNN of examples/pneumonia on PneumoniaMNIST split IID into
``--silos`` silos (80% train / 20% local test each), 1 local epoch of SGD (lr 0.05, momentum 0.9,
batch 32, the example's class-weighted loss) per round, FedAvg weighted by examples, and evaluate
the global model each round on the official test split and on every silo's test split.

- ``plain``: one Python process, default torch threading, tensors batched by index (no DataLoader).
- ``fedsilo``: ``run_experiment`` on a generated experiment YAML, default runtime (worker pool).
- ``flower`` (with ``--peer flower``): the same work in Flower's simulation engine
  (``flower_peer.py``, run by the Python of ``.bench/flower``, which ``make bench-env`` creates).

Each side runs in its own subprocess, alternating, ``--repeats`` times; wall time is the whole
subprocess as a user experiences it (interpreter start, imports, data loading, training, exit). Peak
memory is the process tree's proportional set size (PSS), sampled every 20 ms. One JSON line per measurement,
then a table and the median ratio fedsilo / plain (target: at most 1.15).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TASK = ROOT / "examples" / "pneumonia" / "task.py"
LR, MOMENTUM, BATCH = 0.05, 0.9, 32
TARGET = 1.15
FLOWER_PYTHON = ROOT / ".bench" / "flower" / "bin" / "python"


def prepare(data: Path, silos: int) -> list[str]:
    from fedsilo.data.split import split_dataset

    names = [f"silo_{i:03d}" for i in range(silos)]
    split_dataset("pneumoniamnist", data, names, method="iid", test_fraction=0.2, seed=0)
    return names


def run_plain(data: Path, names: list[str], rounds: int, seed: int) -> float:
    """FedAvg written plainly: the floor any framework is measured against."""
    import torch

    spec = importlib.util.spec_from_file_location("pneumonia_task", TASK)
    assert spec and spec.loader
    task = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(task)

    def tensors(folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = task.load_data(folder, split)
        return torch.from_numpy(x), torch.from_numpy(y)

    silos = {n: (tensors(data / n, "train"), tensors(data / n, "test")) for n in names}
    server = tensors(data / "server", "test")
    torch.manual_seed(seed)
    model, loss_fn = task.model(), task.loss()
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
        for i, ((x, y), _) in enumerate(silos.values()):
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
        for _, test in silos.values():
            evaluate(*test)
    return accuracy


def run_fedsilo(data: Path, names: list[str], rounds: int, seed: int, out: Path) -> float:
    from fedsilo.experiment.config import parse_config
    from fedsilo.runtime.runner import run_experiment

    raw = {
        "name": "overhead",
        "task": str(TASK),
        "silos": [{"name": n, "data": str(data / n)} for n in names],
        "server": {"data": str(data / "server")},
        "strategy": {"name": "fedavg", "fraction_fit": 1.0, "fraction_evaluate": 1.0},
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


def measure(system: str, data: Path, silos: int, rounds: int) -> dict[str, object]:
    """Run one side in a fresh subprocess; wall time and peak memory of its whole process tree."""
    result = data.parent / f"{system}.json"
    result.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--child", system, "--data", str(data), "--result", str(result),
           "--silos", str(silos), "--rounds", str(rounds)]
    if system == "flower":
        cmd = [str(FLOWER_PYTHON), str(Path(__file__).with_name("flower_peer.py")), "--data", str(data),
               "--result", str(result), "--silos", str(silos), "--rounds", str(rounds)]
    peak = 0.0
    start = time.perf_counter()
    # Timed to the main process's exit, as a shell's `time` sees it (a helper process may still be
    # tearing down after that; no pipe is held open to wait for it).
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_pss_mb(proc.pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    proc.wait()
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{system} run failed with exit code {proc.returncode}")
    accuracy = json.loads(result.read_text())["accuracy"]
    return {"bench": "overhead", "system": system, "silos": silos, "rounds": rounds,
            "wall_s": round(wall, 3), "peak_pss_mb": round(peak, 1), "final_accuracy": round(accuracy, 4)}


def child(system: str, data: Path, result: Path, silos: int, rounds: int) -> None:
    names = [f"silo_{i:03d}" for i in range(silos)]
    if system == "plain":
        accuracy = run_plain(data, names, rounds, seed=0)
    else:
        with tempfile.TemporaryDirectory() as out:
            accuracy = run_fedsilo(data, names, rounds, seed=0, out=Path(out))
    result.write_text(json.dumps({"accuracy": accuracy}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--silos", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json-only", action="store_true")
    parser.add_argument("--peer", choices=["flower"], help="also run the peer framework (see make bench-env)")
    parser.add_argument("--child", choices=["plain", "fedsilo"], help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.data, args.result, args.silos, args.rounds)
        return

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        prepare(data, args.silos)
        systems = ["plain", "fedsilo"] + ([args.peer] if args.peer else [])
        if args.peer and not FLOWER_PYTHON.exists():
            raise SystemExit(f"{FLOWER_PYTHON} not found: run `make bench-env` first")
        rows: dict[str, list[dict[str, object]]] = {s: [] for s in systems}
        for _ in range(args.repeats):
            for system in systems:  # alternate, so drift on a noisy machine hits every system
                row = measure(system, data, args.silos, args.rounds)
                rows[system].append(row)
                print(json.dumps(row), flush=True)

    med = {s: statistics.median(float(r["wall_s"]) for r in rs) for s, rs in rows.items()}  # type: ignore[arg-type]
    ratio = med["fedsilo"] / med["plain"]
    summary = {"bench": "overhead", "silos": args.silos, "rounds": args.rounds, "median_wall_s": med,
               "ratio": round(ratio, 3), "target": TARGET, "met": ratio <= TARGET}
    if args.peer:
        summary[f"{args.peer}_over_fedsilo"] = round(med[args.peer] / med["fedsilo"], 3)
    print(json.dumps(summary))
    if not args.json_only:
        print(f"\n{args.silos} silos, {args.rounds} rounds, example CNN, {args.repeats} alternating runs each")
        print(f"{'system':<10}{'median wall s':>15}  {'runs (s)':<40}{'peak PSS MB':>12}{'accuracy':>10}")
        for system, rs in rows.items():
            runs = ", ".join(f"{r['wall_s']:.2f}" for r in rs)
            peak = max(float(r["peak_pss_mb"]) for r in rs)  # type: ignore[arg-type]
            print(f"{system:<10}{med[system]:>15.2f}  {runs:<40}{peak:>12.0f}{rs[-1]['final_accuracy']:>10}")
        print(f"ratio fedsilo / plain: {ratio:.3f} (target <= {TARGET}: {'met' if ratio <= TARGET else 'MISSED'})")
        if args.peer:
            print(f"{args.peer} / fedsilo: {med[args.peer] / med['fedsilo']:.2f}x the wall time")


if __name__ == "__main__":
    main()
