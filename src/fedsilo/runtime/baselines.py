"""Baselines a hospital can judge federating by: every silo alone, and all data pooled in one place.

Each model trains ``rounds x epochs`` epochs from the same initial model (the learning rate follows
the same per-round decay), so it sees each of its examples as often as the federated model did.
Each is scored on the server's test set and on every silo's own test split, which is what tells a
hospital whether federating helps it. A task with a ``samples`` hook also gets each baseline's grid
as ``samples/baseline_<silo>.png`` (``baseline_centralized.png``).

The pooled model trains on a pseudo-silo holding every silo's data (:data:`POOLED`), which only a
simulation can have: the other runtimes refuse ``--baselines``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fedsilo.experiment.plan import Plan
from fedsilo.runtime.silo_folders import POOLED
from fedsilo.server.evaluation import CentralEvaluator
from fedsilo.transport.base import Transport
from fedsilo.wire.arrays import ArrayDict
from fedsilo.wire.instructions import EvaluateInstructions, FitInstructions
from fedsilo.wire.messages import EvaluateIns, EvaluateRes, FitIns, FitRes


def run_baselines(plan: Plan, transport: Transport, evaluator: CentralEvaluator | None) -> dict[str, Any]:
    """Train and score every silo alone and the pooled data, with the federated run's budget."""
    config = plan.config
    if evaluator is None:
        return {"skipped": "baselines need server.data (a server-side test set) to compare models on"}
    train = config.train_settings()
    train = replace(train, epochs=config.rounds * train.epochs, epochs_per_round=train.epochs)
    silos = [s.name for s in config.silos]
    results: dict[str, dict[str, Any]] = {}
    models: dict[str, ArrayDict] = {}
    timeout = config.server.round_timeout_s * config.rounds
    for reply in transport.fit([*silos, POOLED], FitIns(0, plan.initial, FitInstructions(train)), timeout=timeout):
        if isinstance(reply, FitRes):
            name = "centralized" if reply.silo == POOLED else reply.silo
            loss, metrics = evaluator(config.rounds, reply.parameters, f"baseline_{name}")
            results[reply.silo] = {"loss": loss, **metrics, "train_examples": reply.num_examples}
            models[reply.silo] = {k: v.copy() for k, v in reply.parameters.items()}  # replies are views
        else:
            results[reply.silo] = {"failure": reply.reason}
    for name, params in models.items():
        own = silos if name == POOLED else [name]
        ins = EvaluateIns(0, params, EvaluateInstructions(config.seed))
        for ev in transport.evaluate(own, ins, timeout=timeout):
            if isinstance(ev, EvaluateRes):
                results[name].setdefault("own_test", {})[ev.silo] = {"loss": ev.loss, **ev.metrics}
    return {
        "centralized": results.get(POOLED, {}),
        "local_only": {s: results[s] for s in silos if s in results},
        "epochs": train.epochs,
    }
