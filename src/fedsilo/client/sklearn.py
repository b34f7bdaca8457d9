"""The scikit-learn client: federated linear models (LogisticRegression, SGDClassifier, SGDRegressor,
LinearRegression, Ridge, Lasso, ...).

A linear model is two named arrays, ``coef`` of shape (K, d) and ``intercept`` of shape (K,),
with d input features and K = 1 for a binary classifier or a regressor, else the number of
classes. Those are exactly what FedAvg can average, so nothing else of the estimator crosses the
wire (never the pickled estimator).

scikit-learn estimators have no parameters before their first ``fit``, but the server must start
the run from a model without seeing data. So the task states the shape: ``N_FEATURES`` (input
columns) and, for classifiers, ``CLASSES`` (every label of the whole federation, since a silo may
lack some); the initial model is all zeros, which is also where scikit-learn's own solvers start.

Local training starts from the global parameters, on a fresh ``clone`` of the task's estimator
(so nothing left over from another silo or round leaks into a fit), for ``train.epochs``:

- SGD estimators (SGDClassifier, SGDRegressor): ``epochs`` passes of ``partial_fit`` over the
  silo's data with the full class list, shuffled with the round's seed.
- Estimators with ``warm_start`` (LogisticRegression with lbfgs/newton-cg/sag/saga, Lasso,
  ElasticNet): ``warm_start=True`` and ``max_iter=epochs`` solver iterations. Stopping the
  solver early is the point here, so its ConvergenceWarning is silenced.
- Closed-form estimators (LinearRegression, Ridge): a full local fit; the global parameters
  cannot steer it, so federating them is one-shot averaging of local solutions.

Evaluation reports log loss as the loss of a classifier with ``predict_proba`` (else the error
rate), with accuracy and balanced accuracy; a regressor reports mean squared error and MAE.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sklearn.base import clone, is_classifier
from sklearn.exceptions import ConvergenceWarning

from fedsilo.client.base import nbytes_of
from fedsilo.client.metrics import classification_metrics
from fedsilo.errors import ConfigError, DataError, TaskError
from fedsilo.wire.arrays import ArrayDict
from fedsilo.wire.instructions import EvaluateInstructions, TrainSettings
from fedsilo.wire.messages import clean_metrics

_EPS = 1e-15
Classes = Sequence[Any] | np.ndarray | None  # every label of the federation; None for regressors


def _is_sgd(est: Any) -> bool:
    return hasattr(est, "partial_fit") and "coef_init" in inspect.signature(est.fit).parameters


def class_list(classes: Classes) -> np.ndarray | None:
    """The task's CLASSES as scikit-learn keeps them (sorted); a TaskError if a label repeats."""
    if classes is None:
        return None
    if isinstance(classes, str | bytes) or not hasattr(classes, "__len__"):
        raise TaskError(f"CLASSES must be a list of labels, got {classes!r}", "write e.g. `CLASSES = [0, 1]`")
    given = np.asarray(classes)
    ordered = np.unique(given)
    if ordered.size != given.size:
        raise TaskError(f"CLASSES repeats a label: {given.tolist()}", "list each label once")
    return ordered


def check_estimator(est: Any, classes: Classes) -> None:
    """A TaskError unless ``est`` is a linear model this client can federate."""
    name = type(est).__name__
    if not hasattr(est, "fit") or not hasattr(est, "predict") or "fit_intercept" not in est.get_params():
        raise TaskError(
            f"{name} is not a linear scikit-learn model",
            "return a linear model from model(), e.g. LogisticRegression, SGDClassifier or Ridge",
        )
    classes = class_list(classes)
    if is_classifier(est) and (classes is None or len(classes) < 2):
        raise TaskError(
            f"the task's {name} needs CLASSES: every label of the federation",
            "add e.g. `CLASSES = [0, 1]` to the task module",
        )
    if est.get_params().get("solver") == "liblinear":
        raise TaskError(
            f"{name}(solver='liblinear') cannot start from the global model (no warm start)",
            "use the default solver (lbfgs), or newton-cg, sag or saga",
        )
    if est.get_params().get("average"):
        raise TaskError(f"{name}(average=...) is not supported", "leave `average` at its default (False)")


def initial_parameters(est: Any, n_features: int, classes: Classes) -> ArrayDict:
    """The all-zero model of ``est``'s shape: where the federation starts, without any data."""
    check_estimator(est, classes)
    classes = class_list(classes)
    k = len(classes) if is_classifier(est) and classes is not None and len(classes) > 2 else 1
    return {"coef": np.zeros((k, int(n_features))), "intercept": np.zeros(k)}


def get_parameters(est: Any) -> ArrayDict:
    """A fitted estimator's ``coef`` (K, d) and ``intercept`` (K,), as float64 copies."""
    coef = np.array(est.coef_, dtype=np.float64, copy=True)
    coef = coef.reshape(1, -1) if coef.ndim == 1 else coef
    intercept = np.array(est.intercept_, dtype=np.float64, copy=True).reshape(-1)
    if intercept.size == 1 and coef.shape[0] > 1:
        raise TaskError(f"{type(est).__name__} has multi-output targets", "federate one target per model")
    return {"coef": coef, "intercept": np.broadcast_to(intercept, (coef.shape[0],)).copy()}


def set_parameters(est: Any, params: ArrayDict, classes: Classes) -> None:
    """Install named arrays into ``est`` so it predicts (and warm-starts) from them."""
    coef = np.array(params["coef"], dtype=np.float64, copy=True)
    intercept = np.array(params["intercept"], dtype=np.float64, copy=True).reshape(-1)
    if is_classifier(est):
        est.classes_ = np.asarray(classes)
        est.coef_, est.intercept_ = coef, intercept
    else:
        est.coef_, est.intercept_ = coef.reshape(-1), intercept  # single-target regressors keep (d,)
    est.n_features_in_ = coef.shape[1]


def _xy(data: Any, n_features: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    if not (isinstance(data, tuple | list) and len(data) == 2):
        raise DataError(f"{where}: load_data must return (x, y) arrays", "return (x, y) from load_data")
    x = np.asarray(data[0], dtype=np.float64)
    y = np.asarray(data[1]).reshape(-1)
    x = x.reshape(len(x), -1) if x.ndim != 2 else x
    if x.shape[1] != n_features:
        raise DataError(
            f"{where}: x has {x.shape[1]} features but the task's N_FEATURES is {n_features}",
            "make load_data return one row of N_FEATURES numbers per sample",
        )
    if len(x) != len(y):
        raise DataError(f"{where}: x has {len(x)} samples but y has {len(y)}", "return one label per sample")
    return x, y


def _check_labels(y: np.ndarray, classes: np.ndarray, where: str) -> None:
    unknown = np.setdiff1d(np.unique(y), classes)
    if unknown.size:
        raise DataError(
            f"{where}: labels {unknown.tolist()} are not in the task's CLASSES {classes.tolist()}",
            "list every label of the federation in CLASSES",
        )


def train_estimator(
    template: Any,
    params: ArrayDict,
    x: np.ndarray,
    y: np.ndarray,
    settings: TrainSettings,
    classes: Classes,
) -> Any:
    """A clone of ``template`` trained from ``params`` on (x, y) for ``settings.epochs`` (see module doc)."""
    est = clone(template)
    has = est.get_params()
    if "random_state" in has:
        est.set_params(random_state=settings.seed)
    if _is_sgd(est):
        set_parameters(est, params, classes)
        fit_classes = {"classes": np.asarray(classes)} if is_classifier(est) else {}
        for _ in range(settings.epochs):
            est.partial_fit(x, y, **fit_classes)
        return est
    if "warm_start" in has:
        if is_classifier(est) and np.unique(y).size < len(np.asarray(classes)):
            raise DataError(
                f"this silo's training data has labels {np.unique(y).tolist()}, not all of CLASSES "
                f"{np.asarray(classes).tolist()}, and {type(est).__name__} cannot warm-start from that",
                "use SGDClassifier (it trains with the full class list), or give every silo every class",
            )
        set_parameters(est, params, classes)
        est.set_params(warm_start=True, max_iter=settings.epochs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # few iterations per round is intended
        est.fit(x, y)
    return est


def evaluate_estimator(est: Any, x: np.ndarray, y: np.ndarray) -> tuple[float, dict[str, float]]:
    """Loss and metrics of ``est`` on (x, y): log loss + accuracies, or MSE + MAE (see module doc)."""
    pred = est.predict(x)
    if not is_classifier(est):
        err = np.asarray(pred, dtype=np.float64).reshape(-1) - y.astype(np.float64)
        return float(np.mean(err**2)), {"mae": float(np.mean(np.abs(err)))}
    try:
        proba = est.predict_proba(x)
    except AttributeError:  # e.g. SGDClassifier(loss="hinge") has no probabilities
        metrics = classification_metrics(y, pred)
        return 1.0 - metrics.get("accuracy", 0.0), metrics
    binary01 = np.array_equal(est.classes_, [0, 1])
    # ROC AUC from the positive-class probability, for 0/1 labels
    metrics = classification_metrics(y, pred, scores=proba[:, 1] if binary01 else None)
    picked = proba[np.arange(len(y)), np.searchsorted(est.classes_, y)]
    return float(-np.mean(np.log(np.clip(picked, _EPS, 1.0)))), metrics


class SklearnClient:
    """One silo's scikit-learn linear model; the estimator given is a template, never fitted in place."""

    def __init__(
        self,
        estimator: Any,
        train_data: Callable[[], Any],
        test_data: Callable[[], Any],
        n_features: int,
        classes: Classes = None,
    ) -> None:
        check_estimator(estimator, classes)
        self.template = estimator
        self.n_features = int(n_features)
        self.classes = class_list(classes)
        self._params = initial_parameters(estimator, self.n_features, classes)
        self._train_fn, self._test_fn = train_data, test_data
        self._train: tuple[np.ndarray, np.ndarray] | None = None
        self._test: tuple[np.ndarray, np.ndarray] | None = None

    def _data(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        if split == "train" and self._train is None:
            self._train = self._checked(self._train_fn(), "training data")
        if split == "test" and self._test is None:
            self._test = self._checked(self._test_fn(), "test data")
        data = self._train if split == "train" else self._test
        assert data is not None
        return data

    def _checked(self, data: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
        x, y = _xy(data, self.n_features, where)
        if self.classes is not None:
            _check_labels(y, self.classes, where)
        return x, y

    def model(self, parameters: ArrayDict) -> Any:
        """A clone of the template holding ``parameters``, ready to predict."""
        est = clone(self.template)
        set_parameters(est, parameters, self.classes)
        return est

    def data_bytes(self) -> int:
        return nbytes_of(self._train, self._test)

    def get_parameters(self) -> ArrayDict:
        return self._params

    def fit(self, parameters: ArrayDict, settings: TrainSettings) -> tuple[ArrayDict, int, dict[str, float]]:
        if settings.proximal_mu > 0:  # `fedsilo validate` refuses the combination; never train FedAvg silently
            raise ConfigError(
                "strategy fedprox adds a proximal term to local training, which scikit-learn estimators cannot",
                "use strategy fedavg (or fedadam, fedyogi, ...) with a scikit-learn task",
            )
        x, y = self._data("train")
        est = train_estimator(self.template, parameters, x, y, settings, self.classes)
        self._params = get_parameters(est)
        loss, _ = evaluate_estimator(est, x, y)
        return self._params, len(y), clean_metrics({"train_loss": loss})

    def evaluate(
        self, parameters: ArrayDict, instructions: EvaluateInstructions
    ) -> tuple[float, int, dict[str, float]]:
        x, y = self._data("test")
        loss, metrics = evaluate_estimator(self.model(parameters), x, y)
        return loss, len(y), clean_metrics(metrics)
