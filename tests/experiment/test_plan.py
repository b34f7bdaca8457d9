"""experiment/plan.py: the job graph, built offline, with every problem collected at once."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from fedsilo.errors import PlanError
from fedsilo.experiment.config import load_config
from fedsilo.experiment.plan import build_plan, make_strategy

TASKS = Path(__file__).resolve().parents[1] / "tasks"


def plan_of(path: Path):
    config, _ = load_config(path)
    return build_plan(config)


def test_a_valid_numpy_experiment(make_experiment) -> None:
    plan = plan_of(make_experiment(extra={"strategy": {"fraction_fit": 0.5, "min_fit_clients": 1}}))
    assert plan.problems == ()
    plan.raise_if_invalid()
    assert plan.framework == "numpy"
    assert (plan.num_parameters, plan.num_arrays) == (4 * 2 + 2, 2)
    assert [(s.name, s.train_examples, s.test_examples) for s in plan.silos] == [
        ("a", 12, 8),
        ("b", 24, 10),
        ("c", 36, 12),
    ]
    assert plan.server_test_examples == 40
    assert (plan.fit_per_round, plan.evaluate_per_round) == (2, 3)  # ceil(0.5 * 3) = 2


def test_a_valid_torch_experiment_without_load_data(make_experiment, torch_task: Path) -> None:
    plan = plan_of(make_experiment(task=torch_task, server=False))
    assert plan.problems == ()
    assert plan.framework == "torch"
    assert (plan.num_parameters, plan.num_arrays) == (10, 2)
    assert plan.server_test_examples is None


def test_every_problem_is_collected(make_experiment) -> None:
    path = make_experiment(extra={"strategy": {"min_fit_clients": 4}})
    shutil.rmtree(path.parent / "data" / "a")
    shutil.rmtree(path.parent / "data" / "c")
    plan = plan_of(path)
    assert len(plan.problems) == 3, plan.problems
    text = " | ".join(plan.problems)
    assert "strategy.min_fit_clients=4 but the experiment has 3 silos" in text
    assert "silo 'a'" in text and "silo 'c'" in text and "silo 'b'" not in text
    assert [s.note for s in plan.silos] == ["unreadable", "", "unreadable"]
    with pytest.raises(PlanError, match="3 problems") as info:
        plan.raise_if_invalid()
    assert info.value.exit_code == 5 and "\n" not in info.value.one_line()


def test_a_silo_with_no_samples(make_experiment, torch_task: Path) -> None:
    # Once through the task's own load_data, once through the default header-only count.
    for task in (None, torch_task):
        path = make_experiment(folder=f"exp_{task is None}", **({"task": task} if task else {}))
        np.savez(path.parent / "data" / "b" / "train.npz", x=np.zeros((0, 4), np.float32), y=np.zeros(0, np.int64))
        plan = plan_of(path)
        assert len(plan.problems) == 1, plan.problems
        assert "silo 'b'" in plan.problems[0]
        assert re.search(r"has no (training )?samples", plan.problems[0])


def test_strategy_minimums_against_the_number_of_silos(make_experiment) -> None:
    path = make_experiment(
        extra={"strategy": {"min_fit_clients": 4, "min_available_clients": 5, "min_evaluate_clients": 6}}
    )
    problems = plan_of(path).problems
    assert len(problems) == 3
    assert any("min_available_clients=5" in p for p in problems)
    assert any("min_evaluate_clients=6" in p for p in problems)


def test_min_evaluate_clients_does_not_matter_without_evaluation(make_experiment) -> None:
    path = make_experiment(extra={"strategy": {"fraction_evaluate": 0, "min_evaluate_clients": 9}})
    plan = plan_of(path)
    assert plan.problems == ()
    assert plan.evaluate_per_round == 0
    assert all(s.test_examples is None for s in plan.silos)


def test_a_task_that_does_not_exist(make_experiment, tmp_path: Path) -> None:
    plan = plan_of(make_experiment(task=tmp_path / "nope.py"))
    assert len(plan.problems) == 1 and "task module" in plan.problems[0] and "does not exist" in plan.problems[0]


def test_a_broken_task_does_not_hide_the_other_problems(make_experiment, tmp_path: Path) -> None:
    path = make_experiment(task=tmp_path / "nope.py", extra={"strategy": {"min_fit_clients": 4}})
    shutil.rmtree(path.parent / "data" / "b")
    text = " | ".join(plan_of(path).problems)
    assert "nope.py" in text
    assert "min_fit_clients=4" in text
    assert "silo 'b'" in text  # the missing folder is found without the task


def test_a_missing_server_test_set(make_experiment) -> None:
    path = make_experiment()
    shutil.rmtree(path.parent / "data" / "server")
    problems = plan_of(path).problems
    assert len(problems) == 1 and problems[0].startswith("server.data:")


def test_make_strategy_carries_the_sampling(make_experiment) -> None:
    config, _ = load_config(
        make_experiment(extra={"strategy": {"fraction_fit": 0.5, "min_fit_clients": 2, "min_available_clients": 3}})
    )
    strategy = make_strategy(config)
    assert strategy.name == "fedavg"
    assert (strategy.sampling.fraction_fit, strategy.sampling.min_fit_clients) == (0.5, 2)
    assert strategy.sampling.min_available_clients == 3


def test_server_hooks_without_server_data_are_a_problem(make_experiment) -> None:
    pytest.importorskip("torch")
    gan = Path(__file__).resolve().parents[1] / "tasks" / "tiny_gan.py"
    plan = plan_of(make_experiment(task=gan, server=False))
    assert plan.problems == (
        "the task defines server_evaluate() and samples(), which the server runs on server.data, "
        "but server.data is not set -> set server.data to a folder with a test split",
    )
    assert plan_of(make_experiment(folder="with_server", task=gan)).problems == ()


def test_with_many_silos_only_the_first_few_are_opened(make_experiment) -> None:
    from fedsilo.experiment.silo_checks import FULL_CHECK_SILOS, NOT_OPENED, OPENED_SILOS

    silos = {f"s{i:03d}": 3 for i in range(FULL_CHECK_SILOS + 1)}
    path = make_experiment(silos=silos)
    data = path.parent / "data"
    (data / "s050" / "train.npz").write_bytes(b"garbage")  # past the opened ones: left for the run
    shutil.rmtree(data / "s060")
    shutil.rmtree(data / "s070")
    plan = plan_of(path)
    assert plan.problems == ("2 silos' data folders do not exist (s060, s070; see the plan's notes) -> "
                             "run `fedsilo data split` or fix `silos:` in the YAML",)  # fmt: skip
    assert [s.train_examples for s in plan.silos[:OPENED_SILOS]] == [3] * OPENED_SILOS
    notes = [s.note for s in plan.silos[OPENED_SILOS:]]
    assert notes.count(NOT_OPENED) == len(silos) - OPENED_SILOS - 2 and notes.count("missing") == 2


def test_a_bad_file_among_the_first_silos_is_still_found(make_experiment, torch_task: Path) -> None:
    from fedsilo.experiment.silo_checks import FULL_CHECK_SILOS

    path = make_experiment(silos={f"s{i:03d}": 3 for i in range(FULL_CHECK_SILOS + 1)}, task=torch_task)
    (path.parent / "data" / "s002" / "train.npz").write_bytes(b"garbage")
    (problem,) = plan_of(path).problems
    assert problem.startswith("silo 's002': ")


# --- defects of issue 12: combinations that passed `validate` and then failed (or silently changed) the run ---


def test_fedprox_with_a_scikit_learn_task_is_refused_not_trained_as_fedavg(cli, make_experiment) -> None:
    path = make_experiment(task=TASKS / "tiny_sklearn.py", extra={"strategy": {"name": "fedprox", "mu": 0.1}})
    (problem,) = plan_of(path).problems
    assert problem.startswith("strategy fedprox (strategy.mu=0.1) adds a proximal term to local training")
    assert "-> use strategy fedavg" in problem
    result = cli("validate", path)
    assert result.exit_code == 5 and "scikit-learn estimator cannot" in result.stderr


def test_fedprox_with_local_dp_is_refused_offline_naming_the_yaml_keys(make_experiment, torch_task: Path) -> None:
    extra = {"strategy": {"name": "fedprox", "mu": 0.2}, "privacy": {"local_dp": {"noise_multiplier": 1.0}}}
    (problem,) = plan_of(make_experiment(task=torch_task, extra=extra)).problems
    assert "strategy fedprox (strategy.mu=0.2) cannot be combined with privacy.local_dp" in problem
    assert "proximal_mu" not in problem  # a key the user cannot set


def test_a_missing_extra_is_found_by_validate(make_experiment, torch_task: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "opacus", None)  # as if `pip install fedsilo[dp]` had not been run
    path = make_experiment(task=torch_task, extra={"privacy": {"local_dp": {"noise_multiplier": 1.0}}})
    (problem,) = plan_of(path).problems
    assert problem == (
        "privacy.local_dp needs opacus, which is not installed on this machine -> pip install 'fedsilo[dp]'"
    )


def test_a_deployed_server_does_not_need_what_only_the_silos_use(
    make_experiment, torch_task: Path, monkeypatch
) -> None:
    monkeypatch.setitem(sys.modules, "opacus", None)
    config, _ = load_config(
        make_experiment(task=torch_task, extra={"privacy": {"local_dp": {"noise_multiplier": 1.0}}})
    )
    assert build_plan(config, silo_data=False).problems == ()


def test_a_missing_folder_outside_the_prepare_output_is_a_problem_not_a_promise(make_experiment) -> None:
    prepare = {"dataset": "pneumoniamnist", "method": "iid", "out": "data/split"}
    path = make_experiment(write_data=False, extra={"prepare": prepare})  # silos read data/a, data/b, data/c
    plan = plan_of(path)
    assert not any("on first run" in s.note for s in plan.silos)
    missing = [p for p in plan.problems if "data folder" in p and "does not exist" in p]
    assert [p.split(":")[0] for p in missing] == ["silo 'a'", "silo 'b'", "silo 'c'", "server.data"], plan.problems


def test_a_missing_folder_inside_the_prepare_output_will_be_split_on_the_first_run(make_experiment) -> None:
    path = make_experiment(
        write_data=False, server=False, extra={"prepare": {"dataset": "pneumoniamnist", "out": "data"}}
    )
    plan = plan_of(path)
    assert [s.note for s in plan.silos] == ["split from pneumoniamnist.npz on first run"] * 3, plan.problems
