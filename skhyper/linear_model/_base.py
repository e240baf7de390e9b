"""Helpers shared by the hypergradient-tuned linear estimators.

Everything here is numpy and scikit-learn only: the estimators import the
torch-based inner problems inside ``fit``, so that a fitted model unpickles and
predicts without PyTorch.
"""

import numbers

import numpy as np
import scipy.sparse as sp
from sklearn.model_selection import KFold, StratifiedKFold, check_cv
from sklearn.utils import check_scalar
from sklearn.utils.extmath import safe_sparse_dot
from sklearn.utils.validation import check_is_fitted

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _sklearn_validate_data
except ImportError:  # pragma: no cover - older scikit-learn
    _sklearn_validate_data = None

__all__ = [
    "LinearPredictorMixin",
    "check_bounds",
    "check_choice",
    "check_device",
    "check_positive",
    "check_sample_weight",
    "cv_results_from_history",
    "cv_splits",
    "initial_log_values",
    "validate_data",
]


def validate_data(estimator, X, y="no_validation", *, reset=True, **check_params):
    """Validate ``X`` (and ``y``) and set or check ``n_features_in_``.

    A thin bridge over scikit-learn's ``validate_data`` (1.6 and later) and the
    older ``BaseEstimator._validate_data``; see their documentation.
    """
    if _sklearn_validate_data is not None:
        return _sklearn_validate_data(estimator, X, y, reset=reset, **check_params)
    return estimator._validate_data(X, y, reset=reset, **check_params)


def check_sample_weight(sample_weight, n_samples, dtype):
    """Return validated sample weights as a new array of shape (n_samples,).

    ``None`` gives unit weights and a number gives that weight to every row.
    Weights must be finite and non-negative with a positive sum; a weight
    stands for that many copies of its row.
    """
    if sample_weight is None:
        return np.ones(n_samples, dtype=dtype)
    if isinstance(sample_weight, numbers.Number):
        weights = np.full(n_samples, sample_weight, dtype=dtype)
    else:
        weights = np.array(sample_weight, dtype=dtype)
        if weights.ndim != 1 or weights.shape[0] != n_samples:
            raise ValueError(
                f"sample_weight must have shape ({n_samples},), got {weights.shape}"
            )
    if not np.all(np.isfinite(weights)):
        raise ValueError("sample_weight contains NaN or infinity")
    if np.any(weights < 0):
        raise ValueError("sample_weight must be non-negative")
    if not weights.sum() > 0:
        raise ValueError("sample_weight must not be all zero (their sum is zero)")
    return weights


def check_choice(value, name, options):
    """Raise a ``ValueError`` unless ``value`` is one of ``options``."""
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name} must be one of {tuple(options)}, got {value!r}")
    return value


def check_device(device):
    """Raise a ``ValueError`` unless ``device`` names a usable torch device.

    ``"auto"`` and ``"cpu"`` pass without importing PyTorch; anything else
    goes through :func:`skhyper.utils.resolve_device`, which refuses unknown
    names and a CUDA device on a machine without CUDA.
    """
    if isinstance(device, str) and device in ("auto", "cpu"):
        return device
    from ..utils import resolve_device

    resolve_device(device)
    return device


def check_bounds(bounds, name):
    """Return ``bounds`` as two floats ``0 < low < high < inf``."""
    try:
        low, high = (float(b) for b in bounds)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"{name} must be a pair (low, high) of positive numbers, got {bounds!r}"
        ) from exc
    if not (0 < low < high < np.inf):
        raise ValueError(f"{name} must satisfy 0 < low < high < inf, got {bounds!r}")
    return low, high


def initial_log_values(value, size, name):
    """Return ``log(value)`` broadcast to ``(size,)``, for :func:`skhyper.tuning.tune`.

    ``value`` is a positive number or an array of ``size`` positive numbers.
    """
    values = np.asarray(value, dtype=np.float64)
    if values.size == 1:
        values = np.full(size, float(values.ravel()[0]))
    if values.shape != (size,):
        raise ValueError(
            f"{name} must be a number or an array of shape ({size},), "
            f"got shape {np.shape(value)}"
        )
    if not np.all(np.isfinite(values) & (values > 0)):
        raise ValueError(f"{name} must be positive and finite, got {value!r}")
    return np.log(values)


def cv_splits(cv, X, y, *, classifier=False, random_state=None, groups=None):
    """Return the folds as a list of ``(train, test)`` index arrays.

    ``cv`` is what :func:`sklearn.model_selection.check_cv` takes (``None``
    meaning 5 folds). When ``cv`` is a number and ``random_state`` is not
    ``None``, the rows are shuffled with that seed before splitting.
    ``groups`` goes to the splitter (``GroupKFold`` and the like need it).
    """
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape[:1] != (X.shape[0],):
            raise ValueError(
                f"groups has {groups.shape[0] if groups.ndim else 0} entries for "
                f"{X.shape[0]} samples"
            )
    if cv is None:
        cv = 5
    if isinstance(cv, numbers.Integral) and random_state is not None:
        splitter = StratifiedKFold if classifier else KFold
        cv = splitter(int(cv), shuffle=True, random_state=random_state)
    splitter = check_cv(cv, y, classifier=classifier)
    splits = [
        (np.asarray(tr), np.asarray(te)) for tr, te in splitter.split(X, y, groups)
    ]
    if not splits:
        raise ValueError("cv must give at least one split, got none")
    return splits


def cv_results_from_history(history, hyperparameter, values):
    """Build ``cv_results_``: one row per evaluation of the CV loss.

    Parameters
    ----------
    history : dict of lists
        :attr:`skhyper.tuning.TuningResult.history`.
    hyperparameter : str
        Name of the column of hyperparameter values (``"alpha"``, ``"C"``).
    values : callable
        Maps one row's ``theta`` to the hyperparameter shown (a float for a
        single hyperparameter, else an array).

    Returns
    -------
    cv_results : dict of ndarray
        ``param_<hyperparameter>``, ``mean_test_loss``, ``std_test_loss``,
        ``split<k>_test_loss``, ``mean_test_score`` (the mean fold score, or
        minus the loss when the folds give no score), ``hypergradient_norm``
        (of the mean gradient with respect to the log-hyperparameters) and
        ``time`` (seconds since the tuning started). Non-finite evaluations
        appear with NaN losses. ``pandas.DataFrame(cv_results)`` takes it.
    """
    n_rows = len(history["loss"])
    n_splits = max((len(f) for f in history["fold_losses"]), default=0)
    fold_losses = np.full((n_rows, n_splits), np.nan)
    for row, losses in enumerate(history["fold_losses"]):
        if len(losses):
            fold_losses[row] = losses
    shown = [values(theta) for theta in history["theta"]]
    if all(np.ndim(v) == 0 for v in shown):
        params = np.array(shown, dtype=np.float64)
    else:
        params = np.empty(n_rows, dtype=object)
        params[:] = [np.asarray(v) for v in shown]
    loss = np.array(history["loss"], dtype=np.float64)
    scores = history["score"]
    if n_rows and all(s is not None for s in scores):
        score = np.array(scores, dtype=np.float64)
    else:
        score = -loss
    results = {
        "iteration": np.arange(1, n_rows + 1),
        f"param_{hyperparameter}": params,
        "mean_test_loss": loss,
        "std_test_loss": np.std(fold_losses, axis=1) if n_splits else loss * np.nan,
    }
    for k in range(n_splits):
        results[f"split{k}_test_loss"] = fold_losses[:, k]
    results["mean_test_score"] = score
    results["hypergradient_norm"] = np.array(history["grad_norm"], dtype=np.float64)
    results["time"] = np.array(history["time"], dtype=np.float64)
    return results


class LinearPredictorMixin:
    """Torch-free prediction for fitted linear models: ``X @ coef_.T + intercept_``.

    Needs the fitted attributes ``coef_``, ``intercept_`` and
    ``n_features_in_``.
    """

    def _decision_function(self, X):
        check_is_fitted(self, ("coef_", "intercept_"))
        X = validate_data(
            self,
            X,
            accept_sparse=("csr", "csc", "coo"),
            dtype=(np.float64, np.float32),
            reset=False,
        )
        if sp.issparse(X):
            X = X.tocsr()
        return safe_sparse_dot(X, self.coef_.T, dense_output=True) + self.intercept_

    def predict(self, X):
        """Predict with the fitted linear model.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        y_pred : ndarray of shape (n_samples,) or (n_samples, n_targets)
        """
        return self._decision_function(X)


def check_positive(value, name, target_type=numbers.Real, include_zero=False):
    """Check a positive number with :func:`sklearn.utils.check_scalar`."""
    return check_scalar(
        value,
        name,
        target_type,
        min_val=0,
        include_boundaries="neither" if not include_zero else "left",
    )
