"""HypergradSearchCV: GridSearchCV's interface, hypergradients instead of a grid."""

import math
import numbers
import time
from functools import partial

import numpy as np
from scipy.stats import rankdata
from sklearn.base import BaseEstimator, MetaEstimatorMixin, clone, is_classifier
from sklearn.metrics import check_scoring, log_loss
from sklearn.model_selection import check_cv
from sklearn.pipeline import Pipeline
from sklearn.utils import check_array, indexable
from sklearn.utils._indexing import _safe_indexing
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from ..linear_model._base import check_device, check_positive, check_sample_weight
from ._adapters import adapter_for

__all__ = ["HypergradSearchCV"]


def _delegate(method):
    """Expose ``method`` only when the refitted estimator has it."""

    def check(self):
        if not self.refit:
            raise AttributeError(f"{method} is available only with refit=True")
        target = getattr(self, "best_estimator_", self.estimator)
        getattr(target, method)  # raises AttributeError when absent
        return True

    return check


class HypergradSearchCV(MetaEstimatorMixin, BaseEstimator):
    """Search continuous hyperparameters of an estimator by hypergradient
    descent on the cross-validation loss.

    A drop-in replacement for :class:`~sklearn.model_selection.GridSearchCV`
    when the hyperparameters are continuous: instead of fitting every point
    of a grid, it follows the gradient of the mean validation loss with
    respect to the logarithms of the hyperparameters.

    Parameters
    ----------
    estimator : estimator or Pipeline
        A :class:`~sklearn.linear_model.Ridge`,
        :class:`~sklearn.linear_model.LogisticRegression` (L2 penalty) or
        :class:`~sklearn.kernel_ridge.KernelRidge` (``"linear"``, ``"rbf"`` or
        ``"laplacian"`` kernel), or a :class:`~sklearn.pipeline.Pipeline`
        ending in one. Its other parameters are honoured.
    param_bounds : dict
        Maps parameter names, as :meth:`set_params` spells them
        (``"ridge__alpha"``, ``"logisticregression__C"``,
        ``"kernelridge__gamma"``), to ``(low, high)`` ranges; the search runs
        on a log scale inside them.
    init : dict, default=None
        Starting values; by default the estimator's own values, moved inside
        the bounds.
    cv : int, cross-validation generator or iterable, default=5
        As in :func:`~sklearn.model_selection.check_cv` (stratified for
        classifiers).
    scoring : str or callable, default=None
        Scorer reported in ``cv_results_`` and used to choose the best
        iterate. ``None`` means the estimator's ``score`` for regressors
        (R²) and ``"neg_log_loss"`` for classifiers: their ``score``,
        accuracy, is piecewise constant in the hyperparameters and would
        keep an arbitrary iterate (often the start) among those the search
        visits. The optimised objective is always the smooth validation loss
        (squared error, log loss).
    refit : bool, default=True
        Refit a plain scikit-learn estimator on the whole data with the best
        parameters.
    max_iter : int, default=30
        Maximum number of outer (L-BFGS-B) iterations.
    tol : float, default=1e-6
        Stopping tolerance of the outer loop.
    hypergrad : {"cg", "fp", "gmres", "exact", "itd"}, default="cg"
        Hypergradient method (see :mod:`skhyper.hypergrad`).
    linsys_tol : float, default=1e-8
        Relative tolerance of the hypergradient's linear system.
    linsys_max_iter : int, default=200
        Iteration cap of that linear system.
    device : str, default="auto"
        Torch device: ``"auto"`` uses CUDA when available.
    n_jobs : int, default=None
        Folds evaluated in parallel through joblib; honours the active
        :func:`joblib.parallel_config` backend.
    verbose : int, default=0
        ``verbose >= 1`` prints one line per evaluation.

    Attributes
    ----------
    best_params_ : dict
        Parameters of the best iterate.
    best_score_ : float
        Mean cross-validated score of the best iterate.
    best_index_ : int
        Row of ``cv_results_`` holding the best iterate.
    best_estimator_ : estimator
        The estimator refitted on all data with ``best_params_`` (a plain
        scikit-learn object); present when ``refit=True``.
    cv_results_ : dict of numpy arrays
        One row per evaluation of the CV objective, with GridSearchCV's keys
        (``params``, ``param_<name>``, ``mean_test_score``,
        ``std_test_score``, ``split<i>_test_score``, ``rank_test_score``,
        ``mean_fit_time``, ``std_fit_time``) and ``mean_cv_loss``, the
        optimised validation loss.
    n_splits_ : int
        Number of CV folds.
    refit_time_ : float
        Seconds spent refitting the best estimator.
    scorer_ : callable
        The scorer used.
    n_iter_ : int
        Outer iterations performed.
    classes_ : ndarray
        Class labels (classifiers, with ``refit=True``).
    n_features_in_ : int
        Number of features seen during :meth:`fit`.

    See Also
    --------
    sklearn.model_selection.GridSearchCV : exhaustive search over a grid.
    skhyper.HypergradRidgeCV : ridge regression with its own tuned alpha.

    Notes
    -----
    With ``θ = log λ`` and folds ``k = 1..K``, the searched objective is
    ``F(θ) = (1/K) Σ_k E_k(w_k(θ))``, the mean over folds of the validation
    loss of the model trained on the other folds. Its gradient is
    ``∇F = (1/K) Σ_k ∇_θ E_k``, each term obtained by implicit
    differentiation of the inner training problem (see
    :mod:`skhyper.hypergrad`). The steps of a Pipeline before the last are
    fitted on each training fold only, so nothing leaks from validation data.

    Examples
    --------
    >>> from sklearn.datasets import load_diabetes
    >>> from sklearn.linear_model import Ridge
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from skhyper import HypergradSearchCV
    >>> X, y = load_diabetes(return_X_y=True)
    >>> pipe = make_pipeline(StandardScaler(), Ridge())
    >>> search = HypergradSearchCV(pipe, {"ridge__alpha": (1e-3, 1e3)}, cv=5)
    >>> search = search.fit(X, y)
    >>> 0.01 < search.best_params_["ridge__alpha"] < 10
    True
    """

    def __init__(
        self,
        estimator,
        param_bounds,
        *,
        init=None,
        cv=5,
        scoring=None,
        refit=True,
        max_iter=30,
        tol=1e-6,
        hypergrad="cg",
        linsys_tol=1e-8,
        linsys_max_iter=200,
        device="auto",
        n_jobs=None,
        verbose=0,
    ):
        self.estimator = estimator
        self.param_bounds = param_bounds
        self.init = init
        self.cv = cv
        self.scoring = scoring
        self.refit = refit
        self.max_iter = max_iter
        self.tol = tol
        self.hypergrad = hypergrad
        self.linsys_tol = linsys_tol
        self.linsys_max_iter = linsys_max_iter
        self.device = device
        self.n_jobs = n_jobs
        self.verbose = verbose

    # ------------------------------------------------------------------
    # Validation of the search's own parameters.

    def _final_step(self):
        if isinstance(self.estimator, Pipeline):
            name, final = self.estimator.steps[-1]
            return f"{name}__", final
        return "", self.estimator

    def _check_params(self, n_features):
        """Return the adapter, tuned names, bounds and start, or raise."""
        prefix, final = self._final_step()
        adapter = adapter_for(final)
        tunable = adapter.tunable_for(final)
        if not isinstance(self.param_bounds, dict) or not self.param_bounds:
            raise ValueError("param_bounds must be a non-empty dict")
        init = dict(self.init or {})
        unknown = sorted(set(init) - set(self.param_bounds))
        if unknown:
            raise ValueError(
                f"init names parameters that are not searched: {unknown}; the "
                f"searched ones are {sorted(self.param_bounds)}"
            )
        tuned, lower, upper, start = [], [], [], []
        for full_name, bounds in self.param_bounds.items():
            short = full_name[len(prefix) :] if full_name.startswith(prefix) else None
            if short not in tunable:
                allowed = ", ".join(prefix + t for t in tunable)
                raise ValueError(
                    f"cannot tune {full_name!r}: for {type(final).__name__} the "
                    f"continuous hyperparameters supported are: {allowed}"
                )
            low, high = _check_bounds(full_name, bounds)
            value = init.get(full_name)
            if value is None:
                value = adapter.default_value(final, short, n_features)
            if not (isinstance(value, numbers.Real) and value > 0):
                raise ValueError(
                    f"the starting value of {full_name!r} must be a positive "
                    f"number, got {value!r}"
                )
            value = min(max(float(value), low), high)
            tuned.append(short)
            lower.append(math.log(low))
            upper.append(math.log(high))
            start.append(math.log(value))
        adapter.check(final, tuned)
        for name in ("max_iter", "linsys_max_iter"):
            check_positive(getattr(self, name), name, numbers.Integral)
        check_positive(self.linsys_tol, "linsys_tol")
        check_positive(self.tol, "tol", include_zero=True)
        check_positive(self.verbose, "verbose", numbers.Integral, include_zero=True)
        check_device(self.device)
        if not isinstance(self.refit, bool):
            raise ValueError(
                "refit must be True or False; HypergradSearchCV has a single "
                f"metric, so refit={self.refit!r} is not supported"
            )
        if not (self.scoring is None or isinstance(self.scoring, str)) and not (
            callable(self.scoring)
        ):
            raise ValueError(
                "scoring must be None, a scorer name or a callable; multi-metric "
                f"scoring is not supported (got {type(self.scoring).__name__})"
            )
        return adapter, prefix, final, tuned, (np.array(lower), np.array(upper)), start

    # ------------------------------------------------------------------
    # Folds: fit the Pipeline's first steps on each training part.

    def _make_folds(self, X, y, y_scored, splits, sample_weight, extra):
        folds = []
        for index, (train, val) in enumerate(splits):
            X_train, X_val = _safe_indexing(X, train), _safe_indexing(X, val)
            y_train, y_val = _safe_indexing(y, train), _safe_indexing(y, val)
            if isinstance(self.estimator, Pipeline) and len(self.estimator) > 1:
                prefix = clone(self.estimator[:-1])
                X_train = prefix.fit_transform(X_train, y_train)
                X_val = prefix.transform(X_val)
            check = {"accept_sparse": "csr", "dtype": [np.float64, np.float32]}
            fold = {
                "index": index,
                "X_train": check_array(X_train, **check),
                "X_val": check_array(X_val, **check),
                "y_train": np.asarray(y_train),
                "y_val": np.asarray(y_val),
                # Scorers see the user's labels, not the encoded ones.
                "y_val_score": np.asarray(_safe_indexing(y_scored, val)),
                "sw_train": None if sample_weight is None else sample_weight[train],
                "sw_val": None if sample_weight is None else sample_weight[val],
                **extra,
            }
            folds.append(fold)
        return folds

    def fit(self, X, y=None, *, groups=None, sample_weight=None):
        """Search the hyperparameters, then refit on all data.

        Parameters
        ----------
        X : array-like or sparse matrix of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
        groups : array-like, default=None
            Group labels for group-aware splitters.
        sample_weight : array-like of shape (n_samples,), default=None
            Weights of the final step's training loss and of the validation
            losses; passed to the final step when refitting.

        Returns
        -------
        self : HypergradSearchCV
        """
        from ..tuning import tune, warn_on_failures

        if y is None:
            raise ValueError("HypergradSearchCV needs targets y")
        # Records n_features_in_ and feature_names_in_ as sklearn does, and
        # leaves X as given: the Pipeline's first steps may need it raw.
        validate_data(self, X, reset=True, skip_check_array=True)
        X, y, groups = indexable(X, y, groups)
        n_features = getattr(self, "n_features_in_", None)
        adapter, prefix, final, tuned, bounds, start = self._check_params(
            n_features or 1
        )
        _check_targets(y, is_classifier(final))
        if sample_weight is not None:
            sample_weight = check_sample_weight(sample_weight, len(y), np.float64)

        # Step 1: the folds, with the Pipeline's first steps fitted on each.
        cv = check_cv(self.cv, y, classifier=is_classifier(self.estimator))
        splits = list(cv.split(X, y, groups))
        self.n_splits_ = len(splits)
        y_encoded, extra = adapter.prepare_targets(np.asarray(y))
        folds = self._make_folds(X, y_encoded, y, splits, sample_weight, extra)
        if prefix:
            # Defaults that depend on the number of features (gamma=None is
            # 1 / n_features) count those the first steps pass on.
            *_, start = self._check_params(folds[0]["X_train"].shape[1])
        self.scorer_ = self._scorer(final if prefix else self.estimator, y)
        settings = {
            "hypergrad": self.hypergrad,
            "linsys_tol": self.linsys_tol,
            "linsys_max_iter": self.linsys_max_iter,
            "device": self.device,
        }
        fixed = {
            name: adapter.default_value(final, name, folds[0]["X_train"].shape[1])
            for name in adapter.tunable_for(final)
            if name not in tuned
        }
        problems = [
            _ScoredFold(
                adapter.make_problem(final, fold, tuned, fixed, settings),
                adapter,
                final,
                fold,
                tuned,
                self.scorer_,
            )
            for fold in folds
        ]

        # Step 2: the outer loop on log-hyperparameters.
        result = tune(
            problems,
            start,
            bounds,
            max_iter=self.max_iter,
            tol=self.tol,
            n_jobs=self.n_jobs,
            verbose=self.verbose,
            use_score=True,
            names=list(tuned),
        )
        warn_on_failures(
            result,
            hyperparameter=[prefix + t for t in tuned],
            bounds=[(math.exp(lo), math.exp(hi)) for lo, hi in zip(*bounds)],
            inner_hint="relax the bounds or scale the features",
            linsys_hint="increase linsys_max_iter",
        )
        self.n_iter_ = result.n_iter
        self._store_results(result, [prefix + t for t in tuned])

        # Step 3: refit a plain scikit-learn estimator on all data.
        if self.refit:
            params = {**self.best_params_}
            fit_params = {}
            if sample_weight is not None:
                fit_params[prefix + "sample_weight"] = sample_weight
            start_time = time.perf_counter()
            self.best_estimator_ = clone(self.estimator).set_params(**params)
            self.best_estimator_.fit(X, y, **fit_params)
            self.refit_time_ = time.perf_counter() - start_time
        return self

    def _store_results(self, result, names):
        history = result.history
        finite = [i for i, v in enumerate(history["loss"]) if math.isfinite(v)]
        rows = len(history["loss"])
        params = [
            {n: float(v) for n, v in zip(names, np.exp(history["theta"][i]))}
            for i in range(rows)
        ]
        split_scores = np.full((rows, self.n_splits_), np.nan)
        for i in finite:
            split_scores[i] = np.asarray(history["fold_scores"][i], dtype=float)
        times = np.diff(np.concatenate([[0.0], history["time"]]))
        mean_scores = split_scores.mean(axis=1)
        # Ties share the lowest rank and non-finite rows come last, as in
        # GridSearchCV.
        finite_scores = np.where(np.isnan(mean_scores), -np.inf, mean_scores)
        ranks = rankdata(-finite_scores, method="min").astype(np.int32)
        results = {
            "params": params,
            "mean_fit_time": times / self.n_splits_,
            "std_fit_time": np.zeros(rows),
            "mean_test_score": mean_scores,
            "std_test_score": split_scores.std(axis=1),
            "rank_test_score": ranks,
            "mean_cv_loss": np.asarray(history["loss"], dtype=float),
        }
        for name in names:
            results[f"param_{name}"] = np.array([p[name] for p in params])
        for k in range(self.n_splits_):
            results[f"split{k}_test_score"] = split_scores[:, k]
        self.cv_results_ = results
        self.best_index_ = int(result.best_index)
        self.best_params_ = dict(params[self.best_index_])
        self.best_score_ = float(mean_scores[self.best_index_])

    # ------------------------------------------------------------------
    # Delegation to the refitted estimator, as GridSearchCV does.

    @property
    def classes_(self):
        check_is_fitted(self, "best_estimator_")
        return self.best_estimator_.classes_

    @available_if(_delegate("predict"))
    def predict(self, X):
        """Predict with ``best_estimator_``."""
        check_is_fitted(self, "best_estimator_")
        return self.best_estimator_.predict(X)

    @available_if(_delegate("predict_proba"))
    def predict_proba(self, X):
        """Class probabilities from ``best_estimator_``."""
        check_is_fitted(self, "best_estimator_")
        return self.best_estimator_.predict_proba(X)

    @available_if(_delegate("predict_log_proba"))
    def predict_log_proba(self, X):
        """Log class probabilities from ``best_estimator_``."""
        check_is_fitted(self, "best_estimator_")
        return self.best_estimator_.predict_log_proba(X)

    @available_if(_delegate("decision_function"))
    def decision_function(self, X):
        """Decision function of ``best_estimator_``."""
        check_is_fitted(self, "best_estimator_")
        return self.best_estimator_.decision_function(X)

    @available_if(_delegate("transform"))
    def transform(self, X):
        """Transform with ``best_estimator_``."""
        check_is_fitted(self, "best_estimator_")
        return self.best_estimator_.transform(X)

    def _scorer(self, estimator, y):
        """The scorer of the iterates (see ``scoring``); a classifier's log
        loss knows every class of ``y``, which a validation part may miss."""
        if self.scoring is None and is_classifier(estimator):
            return partial(_neg_log_loss, labels=np.unique(y))
        return check_scoring(estimator, self.scoring)

    def score(self, X, y=None):
        """Score of ``best_estimator_`` on ``(X, y)``: with ``scoring``'s
        scorer when one was given, else by its own ``score`` method, as
        GridSearchCV does."""
        check_is_fitted(self, "best_estimator_")
        if self.scoring is None:
            return self.best_estimator_.score(X, y)
        return self.scorer_(self.best_estimator_, X, y)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        sub = self.estimator.__sklearn_tags__()
        tags.estimator_type = sub.estimator_type
        tags.input_tags.sparse = sub.input_tags.sparse
        tags.classifier_tags = sub.classifier_tags
        tags.regressor_tags = sub.regressor_tags
        return tags


class _ScoredFold:
    """A fold problem that also scores each evaluation with a sklearn scorer."""

    def __init__(self, problem, adapter, final, fold, tuned, scorer):
        self.problem = problem
        self.adapter = adapter
        self.final = final
        self.fold = fold
        self.tuned = tuned
        self.scorer = scorer

    def initial_state(self):
        return self.problem.initial_state()

    def evaluate(self, theta, state):
        result = self.problem.evaluate(theta, state)
        values = {n: float(v) for n, v in zip(self.tuned, np.exp(theta))}
        model = self.adapter.fitted(
            self.final, self.problem, result.state, values, self.fold
        )
        # Weighted fits are judged by weighted scores, as their loss is.
        weights = self.fold["sw_val"]
        kwargs = {} if weights is None else {"sample_weight": weights}
        score = self.scorer(
            model, self.fold["X_val"], self.fold["y_val_score"], **kwargs
        )
        result.score = float(score)
        return result


def _check_bounds(name, bounds):
    try:
        low, high = (float(b) for b in bounds)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"param_bounds[{name!r}] must be a (low, high) pair, got {bounds!r}"
        ) from exc
    if not (0 < low <= high and math.isfinite(high)):
        raise ValueError(
            f"param_bounds[{name!r}] must satisfy 0 < low <= high < inf, got {bounds!r}"
        )
    return low, high


def _check_targets(y, classifier):
    """Refuse targets the final step cannot learn from, with scikit-learn's
    own messages: labels of a continuous type for a classifier, NaN or
    infinity for a regressor."""
    if classifier:
        check_classification_targets(y)
    else:
        check_array(y, ensure_2d=False, dtype="numeric", input_name="y")


def _neg_log_loss(estimator, X, y, sample_weight=None, *, labels):
    """The negated log loss of ``estimator`` on ``(X, y)`` over all
    ``labels`` (a scorer, as ``"neg_log_loss"``, for any scikit-learn)."""
    proba = estimator.predict_proba(X)
    return -log_loss(y, proba, sample_weight=sample_weight, labels=labels)
