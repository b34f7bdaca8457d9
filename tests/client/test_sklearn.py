"""client/sklearn.py: scikit-learn linear models as federated clients, checked against hand math."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.linear_model import LinearRegression, LogisticRegression, SGDClassifier, SGDRegressor  # noqa: E402
from sklearn.tree import DecisionTreeClassifier  # noqa: E402

from fedsilo.client.sklearn import (  # noqa: E402
    SklearnClient,
    get_parameters,
    initial_parameters,
    set_parameters,
)
from fedsilo.errors import DataError, TaskError  # noqa: E402
from fedsilo.silo.task import TaskModule  # noqa: E402
from fedsilo.wire.instructions import EvaluateInstructions, TrainSettings  # noqa: E402


def blobs(n: int, seed: int, classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Separable-ish clusters: class c centred at (2c, -c) in 2-D."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = np.stack([2.0 * y, -1.0 * y], axis=1) + rng.normal(0, 0.7, (n, 2))
    return x, y


def client_for(est, data, classes=(0, 1), n_features=2) -> SklearnClient:
    return SklearnClient(est, lambda: data, lambda: data, n_features, None if classes is None else list(classes))


def test_initial_parameters_are_zeros_of_the_stated_shape() -> None:
    binary = initial_parameters(LogisticRegression(), 5, [0, 1])
    assert binary["coef"].shape == (1, 5) and binary["intercept"].shape == (1,)
    three = initial_parameters(SGDClassifier(), 4, ["a", "b", "c"])
    assert three["coef"].shape == (3, 4) and three["intercept"].shape == (3,)
    reg = initial_parameters(SGDRegressor(), 3, None)
    assert reg["coef"].shape == (1, 3) and reg["intercept"].shape == (1,)
    assert all(not a.any() for p in (binary, three, reg) for a in p.values())


@pytest.mark.parametrize(
    ("est", "classes", "k"),
    [(LogisticRegression(), [0, 1], 1), (SGDClassifier(), [0, 1, 2], 3), (SGDRegressor(), None, 1)],
)
def test_parameters_round_trip_through_the_estimator(est, classes, k: int) -> None:
    params = {"coef": np.arange(k * 3, dtype=np.float64).reshape(k, 3) - 2.5, "intercept": np.arange(k) + 0.25}
    set_parameters(est, params, classes)
    back = get_parameters(est)
    assert set(back) == {"coef", "intercept"}
    for name in params:
        np.testing.assert_array_equal(back[name], params[name])
        assert back[name].dtype == np.float64


def test_installed_parameters_predict_as_computed_by_hand() -> None:
    est = LogisticRegression()
    set_parameters(est, {"coef": np.array([[1.0, -2.0]]), "intercept": np.array([0.5])}, [0, 1])
    x = np.array([[1.0, 1.0], [3.0, 0.0]])
    # z = x @ w + b = [-0.5, 3.5]; P(class 1) = sigmoid(z)
    np.testing.assert_allclose(est.predict_proba(x)[:, 1], 1 / (1 + np.exp(-np.array([-0.5, 3.5]))))
    np.testing.assert_array_equal(est.predict(x), [0, 1])


def test_evaluate_reports_log_loss_and_accuracy_by_hand() -> None:
    x, y = np.array([[1.0, 1.0], [3.0, 0.0], [0.0, 0.0]]), np.array([0, 0, 1])
    client = client_for(LogisticRegression(), (x, y))
    loss, n, metrics = client.evaluate(
        {"coef": np.array([[1.0, -2.0]]), "intercept": np.array([0.5])}, EvaluateInstructions()
    )
    p1 = 1 / (1 + np.exp(-np.array([-0.5, 3.5, 0.5])))  # predictions 0, 1, 1: two of three right
    expected = -np.mean(np.log([1 - p1[0], 1 - p1[1], p1[2]]))
    assert n == 3
    assert loss == pytest.approx(expected)
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    assert metrics["balanced_accuracy"] == pytest.approx((1 / 2 + 1) / 2)


def test_one_sgd_step_from_the_given_parameters_matches_the_hand_update() -> None:
    """Warm start, pinned: one epoch on one sample is one step w - eta * (w.x + b - y) * x."""
    est = SGDRegressor(learning_rate="constant", eta0=0.1, alpha=0.0)
    x, y = np.array([[1.0, 2.0]]), np.array([3.0])
    client = client_for(est, (x, y), classes=None)
    start = {"coef": np.array([[0.5, -1.0]]), "intercept": np.array([0.25])}
    new, n, metrics = client.fit(start, TrainSettings(epochs=1, seed=0))
    residual = 0.5 * 1.0 + (-1.0) * 2.0 + 0.25 - 3.0  # -4.25
    np.testing.assert_allclose(new["coef"], [[0.5 - 0.1 * residual * 1.0, -1.0 - 0.1 * residual * 2.0]])
    np.testing.assert_allclose(new["intercept"], [0.25 - 0.1 * residual])
    np.testing.assert_array_equal(start["coef"], [[0.5, -1.0]])  # the caller's arrays are untouched
    assert n == 1
    p = new["coef"][0] @ x[0] + new["intercept"][0]
    assert metrics["train_loss"] == pytest.approx((p - 3.0) ** 2)


def test_logistic_regression_warm_starts_from_the_global_model() -> None:
    """From the optimum, one more lbfgs iteration stays there; from zeros it lands far away."""
    data = blobs(200, seed=1)
    optimum = get_parameters(LogisticRegression(C=1.0, max_iter=1000).fit(*data))
    client = client_for(LogisticRegression(C=1.0), data)
    from_optimum, _, _ = client.fit(optimum, TrainSettings(epochs=1))
    from_zero, _, _ = client.fit(initial_parameters(LogisticRegression(), 2, [0, 1]), TrainSettings(epochs=1))
    np.testing.assert_allclose(from_optimum["coef"], optimum["coef"], atol=1e-3)
    assert np.abs(from_zero["coef"] - optimum["coef"]).max() > 0.1


@pytest.mark.parametrize(
    "est", [LogisticRegression(), SGDClassifier(loss="log_loss", learning_rate="constant", eta0=0.05)]
)
def test_fit_improves_on_the_initial_model_and_generalises(est) -> None:
    client = SklearnClient(est, lambda: blobs(300, seed=2), lambda: blobs(200, seed=3), 2, [0, 1])
    params = client.get_parameters()
    before, _, _ = client.evaluate(params, EvaluateInstructions())
    assert before == pytest.approx(np.log(2))  # the zero model says 1/2 for everything
    losses = []
    for rnd in range(1, 4):
        params, n, metrics = client.fit(params, TrainSettings(epochs=2, seed=rnd))
        losses.append(metrics["train_loss"])
        assert n == 300
    after, n, metrics = client.evaluate(params, EvaluateInstructions())
    assert after < before / 2 and n == 200
    assert metrics["accuracy"] > 0.9
    assert losses[-1] < np.log(2)


def test_sgd_is_reproducible_from_its_seed_and_depends_on_it() -> None:
    est = SGDClassifier(loss="log_loss")
    client = client_for(est, blobs(100, seed=4))
    start = client.get_parameters()
    a, _, _ = client.fit(start, TrainSettings(epochs=2, seed=7))
    b, _, _ = client.fit(start, TrainSettings(epochs=2, seed=7))
    c, _, _ = client.fit(start, TrainSettings(epochs=2, seed=8))
    np.testing.assert_array_equal(a["coef"], b["coef"])
    assert not np.array_equal(a["coef"], c["coef"])


def test_sgd_classifier_keeps_every_class_when_a_silo_lacks_one() -> None:
    x, y = blobs(90, seed=5, classes=3)
    keep = y != 2
    client = client_for(SGDClassifier(), (x[keep], y[keep]), classes=(0, 1, 2))
    new, _, _ = client.fit(client.get_parameters(), TrainSettings(epochs=1))
    assert new["coef"].shape == (3, 2) and new["intercept"].shape == (3,)


def test_linear_regression_fits_in_closed_form() -> None:
    x = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    y = 2 * x[:, 0] - 3 * x[:, 1] + 1
    client = client_for(LinearRegression(), (x, y), classes=None)
    new, _, metrics = client.fit(client.get_parameters(), TrainSettings(epochs=1))
    np.testing.assert_allclose(new["coef"], [[2.0, -3.0]], atol=1e-12)
    np.testing.assert_allclose(new["intercept"], [1.0], atol=1e-12)
    loss, _, ev = client.evaluate(new, EvaluateInstructions())
    assert loss == pytest.approx(0.0, abs=1e-20) and ev["mae"] == pytest.approx(0.0, abs=1e-10)


def test_problems_are_one_line_errors_with_a_fix() -> None:
    data = blobs(20, seed=6)
    with pytest.raises(TaskError, match="CLASSES"):
        SklearnClient(LogisticRegression(), lambda: data, lambda: data, 2, None)
    with pytest.raises(TaskError, match="liblinear"):
        SklearnClient(LogisticRegression(solver="liblinear"), lambda: data, lambda: data, 2, [0, 1])
    with pytest.raises(TaskError, match="not a linear"):
        SklearnClient(DecisionTreeClassifier(), lambda: data, lambda: data, 2, [0, 1])
    with pytest.raises(DataError, match="3 features but the task's N_FEATURES is 2"):
        client_for(LogisticRegression(), (np.zeros((4, 3)), np.array([0, 1, 0, 1]))).evaluate(
            initial_parameters(LogisticRegression(), 2, [0, 1]), EvaluateInstructions()
        )
    with pytest.raises(DataError, match=r"labels \[7\] are not in the task's CLASSES"):
        client_for(LogisticRegression(), (np.zeros((2, 2)), np.array([0, 7]))).fit(
            initial_parameters(LogisticRegression(), 2, [0, 1]), TrainSettings()
        )
    one_class = (np.ones((4, 2)), np.zeros(4, dtype=int))
    with pytest.raises(DataError, match=r"has labels \[0\], not all of CLASSES \[0, 1\]") as info:
        client_for(LogisticRegression(), one_class).fit(
            initial_parameters(LogisticRegression(), 2, [0, 1]), TrainSettings()
        )
    assert "SGDClassifier" in info.value.fix


SKLEARN_TASK = """
from sklearn.linear_model import LogisticRegression
{shape}

def model():
    return LogisticRegression()
"""


def test_task_recognises_an_estimator_and_builds_its_model_without_data(tmp_path: Path) -> None:
    path = tmp_path / "task.py"
    path.write_text(SKLEARN_TASK.format(shape="N_FEATURES = 4\nCLASSES = [0, 1, 2]"))
    task = TaskModule.load(path)
    model = task.build_model(0)
    assert task.framework_of(model) == "sklearn"
    params = task.initial_parameters(0)
    assert params["coef"].shape == (3, 4) and not params["coef"].any()
    client = task.make_client([tmp_path], 0, model=model)
    assert isinstance(client, SklearnClient)

    bad = tmp_path / "bad" / "task.py"
    bad.parent.mkdir()
    bad.write_text(SKLEARN_TASK.format(shape="CLASSES = [0, 1]"))
    with pytest.raises(TaskError, match="needs N_FEATURES"):
        TaskModule.load(bad).initial_parameters(0)


def test_other_tasks_do_not_import_sklearn() -> None:
    task = Path(__file__).resolve().parents[1] / "tasks" / "linear_numpy.py"
    code = (
        "import json, sys; from fedsilo.silo.task import TaskModule; "
        f"t = TaskModule.load({str(task)!r}); t.framework_of(t.build_model(0)); t.initial_parameters(0); "
        "print(json.dumps('sklearn' in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(out.stdout) is False


def test_binary_probabilities_give_roc_auc() -> None:
    x, y = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [3.0, 0.0]]), np.array([0, 1, 0, 1])
    client = client_for(LogisticRegression(), (x, y))
    _, _, metrics = client.evaluate(
        {"coef": np.array([[1.0, 0.0]]), "intercept": np.array([-1.5])}, EvaluateInstructions()
    )
    # P(1) rises with x1, so the ranking is 0 < 1 < 0 < 1: 3 of the 4 positive-negative pairs are right.
    assert metrics["roc_auc"] == pytest.approx(3 / 4)


def test_classes_are_kept_sorted_and_must_not_repeat() -> None:
    x, y = blobs(60, seed=7, classes=3)
    labels = np.array(["a", "b", "c"])[y]
    client = client_for(SGDClassifier(), (x, labels), classes=("c", "a", "b"))
    new, _, _ = client.fit(client.get_parameters(), TrainSettings(epochs=2))
    assert client.model(new).classes_.tolist() == ["a", "b", "c"]
    _, _, metrics = client.evaluate(new, EvaluateInstructions())
    assert metrics["accuracy"] > 0.5
    with pytest.raises(TaskError, match="repeats a label"):
        client_for(SGDClassifier(), (x, labels), classes=("a", "b", "a"))
    with pytest.raises(TaskError, match="must be a list of labels"):
        SklearnClient(SGDClassifier(), lambda: (x, labels), lambda: (x, labels), 2, 3)  # type: ignore[arg-type]
