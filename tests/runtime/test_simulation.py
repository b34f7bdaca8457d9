"""runtime/simulation.py: the pool of real worker processes (2 workers, the NumPy test task).

A silo misbehaves through marker files in its folder (see tests/tasks/linear_numpy.py): it sleeps
past the round deadline once, or its worker process dies once. The round must go on with the
others, the pool must replace the worker, and the next round must work again.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from fedsilo.errors import FedsiloError
from fedsilo.runtime.silo_folders import POOLED
from fedsilo.silo.agent import SiloAgent
from fedsilo.silo.task import TaskModule
from fedsilo.wire.arrays import load_file
from fedsilo.wire.instructions import FitInstructions, TrainSettings
from fedsilo.wire.messages import EvaluateIns, EvaluateRes, Failure, FitIns, FitRes
from helpers import attached_pool


def no_workers_left() -> bool:
    return not [p for p in multiprocessing.active_children() if p.name.startswith("fedsilo-worker")]


def run_ok(cli, path: Path) -> None:
    result = cli("run", path, "--quiet")
    assert result.exit_code == 0, result.stderr


def fit_rows(rows: list[dict]) -> dict[tuple[int, str], dict]:
    return {(r["round"], r["silo"]): r for r in rows if r["scope"] == "silo" and r["phase"] == "fit"}


def test_the_pool_gives_the_in_process_result(cli, make_experiment, run_folder, metrics_of) -> None:
    in_process = make_experiment(folder="inproc", workers=0, rounds=2, seed=5)
    pooled = make_experiment(folder="pooled", workers=2, rounds=2, seed=5)
    run_ok(cli, in_process)
    run_ok(cli, pooled)
    assert no_workers_left()
    a, b = run_folder(in_process.parent / "runs"), run_folder(pooled.parent / "runs")
    model_a, model_b = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    for name in model_a:
        np.testing.assert_allclose(model_b[name], model_a[name], rtol=0, atol=1e-6)
    rows_a, rows_b = fit_rows(metrics_of(a)), fit_rows(metrics_of(b))
    assert set(rows_a) == set(rows_b)
    for key, row in rows_a.items():
        assert rows_b[key]["num_examples"] == row["num_examples"]
        assert rows_b[key]["train_loss"] == pytest.approx(row["train_loss"], abs=1e-6)


def test_pool_replies_match_a_silo_agent_and_it_cleans_up(tmp_path: Path, linear_task: Path, write_silo) -> None:
    sizes = {"a": 6, "b": 9, "c": 4}
    folders = {name: [write_silo(tmp_path / name, n, seed=i)] for i, (name, n) in enumerate(sizes.items())}
    (tmp_path / "b" / "NAN").write_text("")
    task = TaskModule.load(linear_task)
    params = task.initial_parameters(0)
    config = FitInstructions(TrainSettings(seed=3, lr=0.5, batch_size=4))
    with attached_pool(linear_task, folders, params, tmp_path / "store", seed=0, workers=2, device="cpu") as pool:
        assert pool.available() == ["a", "b", "c"]
        replies = {}
        for reply in pool.fit(["a", "b", "c"], FitIns(1, params, config), timeout=60):
            if isinstance(reply, FitRes):  # parameters are views into shared memory: copy now
                reply = FitRes(reply.silo, {k: v.copy() for k, v in reply.parameters.items()}, reply.num_examples)
            replies[reply.silo] = reply
        assert isinstance(replies["b"], Failure) and replies["b"].kind == "rejected"
        assert "non-finite" in replies["b"].reason
        for name in ("a", "c"):
            agent = SiloAgent(name, partial(task.make_client, folders[name], 0, "cpu"))
            expected = agent.fit(FitIns(1, params, config))
            assert isinstance(expected, FitRes) and isinstance(replies[name], FitRes)
            assert replies[name].num_examples == expected.num_examples
            for key in params:
                np.testing.assert_array_equal(replies[name].parameters[key], expected.parameters[key])

        evaluations = list(pool.evaluate(["a", "c"], EvaluateIns(1, params), timeout=60))
        assert sorted(e.silo for e in evaluations) == ["a", "c"]
        assert all(isinstance(e, EvaluateRes) and e.num_examples == 10 for e in evaluations)

        assert pool.add_pooled_silo() == POOLED
        assert POOLED not in pool.available()
        (pooled,) = list(pool.fit([POOLED], FitIns(0, params, config), timeout=60))
        assert isinstance(pooled, FitRes) and pooled.num_examples == 6 + 9 + 4
        del pooled  # its parameters are views into the pool's shared memory

        with pytest.raises(FedsiloError, match="unknown silos"):
            list(pool.fit(["nope"], FitIns(1, params, config), timeout=60))
    assert no_workers_left()
    pool.close()  # safe to call twice


def test_a_silo_past_the_deadline_times_out_and_the_next_round_works(
    cli, make_experiment, run_folder, metrics_of
) -> None:
    path = make_experiment(workers=2, rounds=2, extra={"server": {"round_timeout_s": 2}})
    (path.parent / "data" / "a" / "SLEEP_ONCE").write_text("60")
    started = time.monotonic()
    run_ok(cli, path)
    assert time.monotonic() - started < 30  # the sleeping worker was not waited for
    assert no_workers_left()
    run = run_folder(path.parent / "runs")
    rows = fit_rows(metrics_of(run))
    assert rows[(1, "a")]["failure_kind"] == "timeout"
    assert "deadline of 2s" in rows[(1, "a")]["failure"]
    assert rows[(2, "a")]["num_examples"] == 12  # its replacement worker serves it in round 2
    for key in ((1, "b"), (1, "c"), (2, "b"), (2, "c")):
        assert "failure" not in rows[key]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["failures"] == 1 and summary["rounds"] == 2


def test_a_dead_worker_is_a_disconnect_and_the_round_goes_on(cli, make_experiment, run_folder, metrics_of) -> None:
    path = make_experiment(workers=2, rounds=2)
    (path.parent / "data" / "b" / "DIE_ONCE").write_text("")
    run_ok(cli, path)
    assert no_workers_left()
    run = run_folder(path.parent / "runs")
    rows = fit_rows(metrics_of(run))
    assert rows[(1, "b")]["failure_kind"] == "disconnected"
    assert "its worker process died" in rows[(1, "b")]["failure"]
    assert rows[(2, "b")]["num_examples"] == 24
    for key in ((1, "a"), (1, "c"), (2, "a"), (2, "c")):
        assert "failure" not in rows[key]
    server = [r for r in metrics_of(run) if r["scope"] == "server" and r["phase"] == "evaluate"]
    assert [r["round"] for r in server] == [0, 1, 2]


def test_a_dead_workers_failure_names_its_exit_code(tmp_path: Path, linear_task: Path, write_silo) -> None:
    # The reason promises the worker's exit code; with two busy workers it must still be the real one.
    folders = {name: [write_silo(tmp_path / name, 5, seed=i)] for i, name in enumerate(("a", "b", "c"))}
    for name in ("a", "b"):
        (tmp_path / name / "DIE_ONCE").write_text("")  # the task calls os._exit(17)
    params = TaskModule.load(linear_task).initial_parameters(0)
    with attached_pool(linear_task, folders, params, tmp_path / "store", 0, 2, "cpu") as pool:
        replies = {
            r.silo: r
            for r in pool.fit(["a", "b", "c"], FitIns(1, params, FitInstructions(TrainSettings(seed=1))), timeout=60)
        }
        assert isinstance(replies["c"], FitRes)
        del replies["c"]  # a view into the pool's shared memory
    for name in ("a", "b"):
        reply = replies[name]
        assert isinstance(reply, Failure) and reply.kind == "disconnected"
        assert reply.reason == "its worker process died (exit code 17)"
    assert no_workers_left()


def test_a_worker_killed_between_calls_is_a_disconnect_and_the_pool_goes_on(
    tmp_path: Path, linear_task: Path, write_silo
) -> None:
    # Dead before the next call is sent to it (its pipe is broken): that call must not raise.
    folders = {name: [write_silo(tmp_path / name, 5, seed=i)] for i, name in enumerate(("a", "b", "c"))}
    params = TaskModule.load(linear_task).initial_parameters(0)
    ins = FitIns(1, params, FitInstructions(TrainSettings(seed=1)))
    with attached_pool(linear_task, folders, params, tmp_path / "store", 0, 2, "cpu") as pool:
        assert all(isinstance(r, FitRes) for r in pool.fit(["a", "b", "c"], ins, timeout=60))
        pool._workers.processes[0].process.kill()
        pool._workers.processes[0].process.join(10)
        kinds = sorted(getattr(r, "kind", "ok") for r in pool.fit(["a", "b", "c"], ins, timeout=60))
        assert kinds == ["disconnected", "ok", "ok"]  # the silo sent to the dead worker; it was replaced
        assert all(isinstance(r, FitRes) for r in pool.fit(["a", "b", "c"], ins, timeout=60))
    assert no_workers_left()


def test_closing_while_a_reply_view_is_still_held_is_quiet(tmp_path: Path, linear_task: Path, write_silo) -> None:
    # close() means to tolerate a caller that still holds a reply (its arrays are views into the
    # pool's shared memory): "it goes when they do". That must not surface later as an exception
    # raised inside SharedMemory.__del__ (which pytest reports as an unraisable-exception warning).
    params = TaskModule.load(linear_task).initial_parameters(0)
    pool = attached_pool(linear_task, {"a": [write_silo(tmp_path / "a", 5)]}, params, tmp_path / "store", 0, 1, "cpu")
    (reply,) = list(pool.fit(["a"], FitIns(1, params, FitInstructions(TrainSettings(seed=1))), timeout=60))
    assert isinstance(reply, FitRes)
    pool.close()
    assert no_workers_left()
    assert reply.parameters["w"].shape == (4, 2)
    del reply


def test_a_task_that_cannot_load_in_a_worker_is_one_error(tmp_path: Path) -> None:
    task = tmp_path / "task.py"
    task.write_text("raise RuntimeError('no such model weights')\n")
    params = {"w": np.zeros(2, np.float32)}
    with pytest.raises(FedsiloError, match="could not load the task: .*no such model weights"):
        attached_pool(task, {"a": [tmp_path]}, params, tmp_path / "store", seed=0, workers=1, device="cpu")
    assert no_workers_left()
