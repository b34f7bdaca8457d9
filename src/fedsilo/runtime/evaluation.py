"""The server's evaluator of an experiment, assembled from its plan (see :mod:`fedsilo.server.evaluation`)."""

from __future__ import annotations

from fedsilo.experiment.plan import Plan
from fedsilo.server.evaluation import CentralEvaluator
from fedsilo.tracking.run_dir import RunDir


def central_evaluator(plan: Plan, run: RunDir | None = None) -> CentralEvaluator | None:
    """The evaluator for the plan's server-side data, or None when the experiment has none.

    A task with ``server_evaluate``/``samples`` hooks is scored by them (the plan has checked that
    it is a PyTorch task); any other by its own client on the server's test split.
    """
    config, task = plan.config, plan.task
    data = config.server.data
    if data is None or task is None:
        return None
    device, seed = config.train.device, config.seed
    evaluate, samples = task.hook("server_evaluate"), task.hook("samples")
    if evaluate is None and samples is None:
        return CentralEvaluator(client=task.make_client([data], seed, device))
    from fedsilo.client.torch.hooks import TorchServerHooks

    model = task.build_model(seed)
    hooks = TorchServerHooks(model, lambda: task.load_data([data], "test"), evaluate, samples, seed, device)
    return CentralEvaluator(hooks=hooks, run=run)
