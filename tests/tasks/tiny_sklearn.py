"""A scikit-learn task for tests: SGD logistic regression on the 4 features of the test silos."""

from sklearn.linear_model import SGDClassifier

N_FEATURES = 4
CLASSES = [0, 1]


def model() -> SGDClassifier:
    return SGDClassifier(loss="log_loss", learning_rate="constant", eta0=0.1, alpha=1e-4)
