"""The peer: the same FedAvg work in Flower's simulation engine (Message API, Ray backend).

Run by ``overhead.py --peer flower`` with the Python of a separate virtual environment that has
Flower (``make bench-env`` makes it: ``.bench/flower``), never imported by fedsilo. It trains what
``overhead.py``'s plain and fedsilo sides train: the task module it is given (the example CNN or
the linear model), the silos' folders written by ``fedsilo data split``, 1 local epoch of SGD
(lr 0.05, momentum 0.9, batch 32, the task's loss), FedAvg weighted by examples, central
evaluation on the official test split each round and federated evaluation on the sampled silos'
test splits (``--per-round`` of them; all without it). Written the way Flower's own PyTorch
quickstart does it, with one CPU per virtual client.

    .bench/flower/bin/python benchmarks/flower_peer.py --task T.py --data DIR --rounds 3 --result out.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
from pathlib import Path
from types import ModuleType

LR, MOMENTUM, BATCH = 0.05, 0.9, 32


def load_task(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_task", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tensors(task: ModuleType, folder: Path, split: str):  # type: ignore[no-untyped-def]
    import torch

    x, y = task.load_data(folder, split)
    return torch.from_numpy(x), torch.from_numpy(y)


def evaluate(task: ModuleType, model, x, y) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    import torch

    model.eval()
    loss_fn, total, correct = loss_of(task), 0.0, 0
    with torch.no_grad():
        for i in range(0, len(x), 1024):
            out = model(x[i : i + 1024])
            total += float(loss_fn(out, y[i : i + 1024])) * len(out)
            correct += int((out.argmax(1) == y[i : i + 1024]).sum())
    return total / len(x), correct / len(x)


def loss_of(task: ModuleType):  # type: ignore[no-untyped-def]
    import torch

    return task.loss() if hasattr(task, "loss") else torch.nn.CrossEntropyLoss()


def build_apps(task_path: Path, data: Path, names: list[str], rounds: int, per_round: int, result: Path):  # type: ignore[no-untyped-def]
    import torch
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg

    client_app = ClientApp()

    @client_app.train()
    def train(msg: Message, context: Context) -> Message:
        task = load_task(task_path)
        torch.set_num_threads(1)
        folder = data / names[int(context.node_config["partition-id"])]
        x, y = tensors(task, folder, "train")
        model, loss_fn = task.model(), loss_of(task)
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
        order = torch.randperm(len(x))
        for b in range(0, len(x), BATCH):
            idx = order[b : b + BATCH]
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x[idx]), y[idx]).backward()
            opt.step()
        content = RecordDict(
            {"arrays": ArrayRecord(model.state_dict()), "metrics": MetricRecord({"num-examples": len(x)})}
        )
        return Message(content=content, reply_to=msg)

    @client_app.evaluate()
    def evaluate_silo(msg: Message, context: Context) -> Message:
        task = load_task(task_path)
        torch.set_num_threads(1)
        folder = data / names[int(context.node_config["partition-id"])]
        x, y = tensors(task, folder, "test")
        model = task.model()
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        loss, accuracy = evaluate(task, model, x, y)
        metrics = MetricRecord({"eval_loss": loss, "eval_acc": accuracy, "num-examples": len(x)})
        return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)

    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        task = load_task(task_path)
        torch.manual_seed(0)
        model = task.model()
        server_x, server_y = tensors(task, data / "server", "test")
        final: dict[str, float] = {}

        def central(server_round: int, arrays: ArrayRecord) -> MetricRecord:
            model.load_state_dict(arrays.to_torch_state_dict())
            loss, accuracy = evaluate(task, model, server_x, server_y)
            final["accuracy"] = accuracy
            return MetricRecord({"loss": loss, "accuracy": accuracy})

        n = len(names)
        strategy = FedAvg(
            fraction_train=per_round / n,
            fraction_evaluate=per_round / n,
            min_train_nodes=per_round,
            min_evaluate_nodes=per_round,
            min_available_nodes=n,
        )
        strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord(model.state_dict()),
            num_rounds=rounds,
            train_config=ConfigRecord({"lr": LR}),
            evaluate_fn=central,
        )
        result.write_text(json.dumps({"accuracy": final["accuracy"]}))

    return server_app, client_app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--per-round", type=int, help="silos sampled per round (default: all)")
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args()
    from flwr.simulation import run_simulation

    names = [s["name"] for s in json.loads((args.data / "split.json").read_text())["silos"]]
    server_app, client_app = build_apps(
        args.task.resolve(), args.data, names, args.rounds, args.per_round or len(names), args.result
    )
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=len(names),
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
    )


if __name__ == "__main__":
    main()
