"""HypergradLogisticCV: logistic regression with C tuned by hypergradient CV.

This module imports neither PyTorch nor the inner problems at import time: a
fitted model unpickles and predicts with numpy alone.
"""

import numbers
import warnings
from functools import partial

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import check_scoring
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets

from ..tuning import tune, warn_on_failures
from ._base import (
    check_bounds,
    check_choice,
    check_device,
    check_positive,
    check_sample_weight,
    cv_results_from_history,
    cv_splits,
    initial_log_values,
    validate_data,
)
from ._classification import LinearClassifierMixin, check_folds_have_classes, label
from ._scored_folds import ScoredFold, ScoredFoldSet

__all__ = ["HypergradLogisticCV"]

_HYPERGRAD = ("cg", "fp", "gmres", "exact", "itd")
_SOLVERS = ("auto", "newton", "lbfgs")
# The final refit is the returned model: solved at least this tightly, so
# that it matches LogisticRegression(C=C_) whatever the folds' tolerance.
REFIT_TOL = 1e-10
# L-BFGS stalls on round-off short of 1e-10: its refits (more than
# NEWTON_MAX_WEIGHTS weights, where Newton is out of reach) stop here.
LBFGS_REFIT_TOL = 1e-9
# Columns of X with a root mean square above this make the training problems
# badly conditioned at the large Cs of the default bounds.
LARGE_SCALE = 1e4
# A single C this close to a bound (in log C, the line search's resolution)
# sits on it.
SHARED_BOUND = 1e-3
# The fit at the starting C only starts the folds, whose own solutions lie
# about this far (in gradient) from it: a tighter one would not help them.
START_TOL = 1e-3


class HypergradLogisticCV(LinearClassifierMixin, ClassifierMixin, BaseEstimator):
    """Logistic regression whose C is tuned by gradient descent on the CV loss.

    Binary or multinomial (softmax) logistic regression with an L2 penalty.
    The inverse regularisation strength ``C`` (one value, or one per feature)
    is chosen to minimise the cross-validated log loss on ``log C``, from
    implicit hypergradients, by a bracketing line search (one C) or L-BFGS-B
    (one C per feature); then the model is refitted on all the data at the
    best C found.

    Parameters
    ----------
    C : float or array-like of shape (n_features,), default=1.0
        Starting value of the inverse regularisation strength, moved into
        ``C_bounds`` if it lies outside. With ``per_feature=True``, a number
        first tunes one shared C from there, and the per-feature search
        starts from it (from this value when the shared C sits on a bound,
        where the CV loss is flat); an array starts it directly.
    per_feature : bool, default=False
        Tune one C per feature (automatic relevance determination by
        cross-validation).
    C_bounds : tuple of float, default=(1e-4, 1e4)
        The search interval of every C. A best C on one of these bounds
        (single C) gives a ``ConvergenceWarning`` naming it.
    fit_intercept : bool, default=True
        Fit an intercept, which is never penalised.
    cv : int, cross-validation generator or iterable, default=None
        The folds, as :func:`sklearn.model_selection.check_cv` reads them;
        ``None`` means 5-fold
        :class:`~sklearn.model_selection.StratifiedKFold`.
    class_weight : dict or "balanced", default=None
        Weights of the classes, folded into the sample weights. ``"balanced"``
        is computed once on the whole ``y``, as ``LogisticRegression`` does.
    scoring : str or callable, default=None
        A scikit-learn scorer. It changes only what is reported
        (``best_score_``, ``cv_results_["mean_test_score"]``) and which
        evaluation counts as best; the optimised objective is always the
        log loss, which is smooth.
    hypergrad : {"cg", "fp", "gmres", "exact", "itd"}, default="cg"
        How the linear system ``H v = ∇_W E`` of the hypergradient is solved:
        conjugate gradient on exact Hessian-vector products (preconditioned
        by the Newton solver's Cholesky factor), fixed-point iterations or
        GMRES (AID), a direct solve, or iterative differentiation (ITD).
    solver : {"auto", "newton", "lbfgs"}, default="auto"
        Inner solver. ``"auto"`` takes Newton (preconditioned by a Cholesky
        factorisation of the Hessian) when there are at most 2000 weights
        (``n_features + 1``, times the number of classes beyond two), and
        L-BFGS otherwise. The final refit uses Newton whenever ``"auto"``
        would, since L-BFGS stalls short of its tolerance.
    inner_tol : float, default=1e-6
        Gradient tolerance (largest entry) of the inner solves, on the
        training loss divided by the total sample weight. The fold losses
        are corrected to first order for it (see Notes); the final refit on
        all the data solves to ``min(inner_tol, 1e-10)``.
    inner_max_iter : int, default=500
        Newton or L-BFGS iterations at most per inner solve.
    linsys_tol : float, default=1e-4
        Relative residual tolerance of AID's linear system: about the relative
        error of the hypergradient, which the outer search tolerates well.
    linsys_max_iter : int, default=200
        Iteration cap ``k`` of AID's linear system (steps ``t`` for ITD).
    max_iter : int, default=50
        Maximum number of outer iterations: L-BFGS-B iterations, or
        evaluations of the line search with one C.
    tol : float, default=1e-5
        Outer stopping tolerance: on the relative decrease of the CV loss and
        the projected hypergradient (L-BFGS-B), or on the relative decrease
        still predicted by the derivatives (line search, one C).
    device : str, default="auto"
        Torch device of the computations (``"auto"``: CUDA when available).
    n_jobs : int, default=None
        Folds evaluated in parallel through joblib when they are solved one
        at a time (``hypergrad`` other than ``"cg"``, or L-BFGS). With Newton
        and conjugate gradient, the default, all folds are solved together
        in one process and PyTorch's threads do the parallel work.
    verbose : int, default=0
        ``verbose >= 1`` prints one line per evaluation of the CV loss.
    random_state : int, RandomState instance or None, default=None
        When ``cv`` is an integer (or ``None``) and ``random_state`` is set,
        the rows are shuffled with this seed before the stratified split.

    Attributes
    ----------
    C_ : float or ndarray of shape (n_features,)
        The best C found.
    classes_ : ndarray of shape (n_classes,)
        The class labels.
    coef_ : ndarray of shape (1, n_features) or (n_classes, n_features)
        Coefficients of the model refitted on all the data at ``C_``, equal
        to those of ``LogisticRegression(C=C_)`` (single C).
    intercept_ : ndarray of shape (1,) or (n_classes,)
        Intercept of the refitted model (zeros when ``fit_intercept=False``).
    best_score_ : float
        The mean fold score at ``C_`` with ``scoring``, else minus the mean
        cross-validated log loss there.
    cv_results_ : dict of ndarray
        One row per evaluation of the CV loss (line-search trials
        included): ``iteration``, ``param_C``, ``mean_test_loss``,
        ``std_test_loss``, ``split<k>_test_loss``, ``mean_test_score``,
        ``hypergradient_norm`` (with respect to ``log C``) and ``time``
        (seconds). ``pandas.DataFrame`` takes it.
    n_iter_ : int
        Outer iterations run (evaluations of the line search with one C).
    n_features_in_ : int
        Number of features seen during ``fit``.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of the features, when ``X`` has string column names.

    See Also
    --------
    sklearn.linear_model.LogisticRegressionCV : C chosen on a grid.
    sklearn.linear_model.LogisticRegression : Logistic regression at a fixed C.

    Notes
    -----
    On each training part the model minimises scikit-learn's objective
    ``C Σ_i s_i l_i + ½ ||W||²`` (``s`` the sample weights times the class
    weights, ``l`` the binomial or multinomial log loss, the intercept
    unpenalised; ``½ Σ_j ||W_{:,j}||² / C_j`` with one C per feature), and
    the CV objective is the mean over folds of the weighted validation log
    loss ``E``. It is minimised over ``θ = log C`` within ``C_bounds``,
    starting from ``C``; the best finite evaluation is kept.

    The hypergradient comes from the implicit function theorem,
    ``∂E/∂θ_j = (e^{-θ_j} / S) Σ_k W_kj v_kj`` with ``H v = ∇_W E``, ``H`` the
    Hessian of the training loss (divided by ``S = Σ_i s_i``) at its
    minimiser. Each inner solve is warm-started from the previous outer
    iteration's solution, and Newton's conjugate-gradient steps are
    preconditioned by the Cholesky factor of a Hessian formed at an earlier
    point, refreshed only when it has become a poor preconditioner; the same
    factor preconditions the hypergradient's linear system. With the default
    ``solver`` and ``hypergrad``, all folds are solved together
    (:class:`skhyper.inner.logistic_folds.LogisticFolds`): they share each
    pass over ``X`` and one preconditioner, the factor of the mean of their
    Hessians plus the penalty at the current C, and Newton's directions and
    the linear systems use float32 products (one C only) while gradients and
    stopping tests stay in float64.

    An inner solution ``W`` with training gradient ``g = ∇_Wℓ(W)`` misses the
    minimiser by about ``-H⁻¹g``, so each fold reports the validation loss
    ``E(W) - vᵀg``, whose error is of the order of ``inner_tol²`` rather
    than ``inner_tol``: the outer line searches see smooth values, and the
    inner solves can stop early (with ``hypergrad="cg"`` or ``"exact"``).

    With one C per feature, the model at ``C_`` is the one that
    ``LogisticRegression(C=1)`` fits on the features scaled by ``√C_j``
    (its coefficients scaled back by ``√C_j``).

    References
    ----------
    R. Grazzi, L. Franceschi, M. Pontil and S. Salzo, "On the Iteration
    Complexity of Hypergradient Computation", ICML 2020.

    Examples
    --------
    >>> from sklearn.datasets import load_breast_cancer
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from skhyper import HypergradLogisticCV
    >>> X, y = load_breast_cancer(return_X_y=True)
    >>> model = make_pipeline(StandardScaler(), HypergradLogisticCV(device="cpu"))
    >>> model = model.fit(X, y)
    >>> round(model[-1].C_, 2)
    0.63
    >>> round(-model[-1].best_score_, 3)
    0.078
    >>> model.predict(X[:3])
    array([0, 0, 0])
    """

    def __init__(
        self,
        C=1.0,
        *,
        per_feature=False,
        C_bounds=(1e-4, 1e4),
        fit_intercept=True,
        cv=None,
        class_weight=None,
        scoring=None,
        hypergrad="cg",
        solver="auto",
        inner_tol=1e-6,
        inner_max_iter=500,
        linsys_tol=1e-4,
        linsys_max_iter=200,
        max_iter=50,
        tol=1e-5,
        device="auto",
        n_jobs=None,
        verbose=0,
        random_state=None,
    ):
        self.C = C
        self.per_feature = per_feature
        self.C_bounds = C_bounds
        self.fit_intercept = fit_intercept
        self.cv = cv
        self.class_weight = class_weight
        self.scoring = scoring
        self.hypergrad = hypergrad
        self.solver = solver
        self.inner_tol = inner_tol
        self.inner_max_iter = inner_max_iter
        self.linsys_tol = linsys_tol
        self.linsys_max_iter = linsys_max_iter
        self.max_iter = max_iter
        self.tol = tol
        self.device = device
        self.n_jobs = n_jobs
        self.verbose = verbose
        self.random_state = random_state

    def fit(self, X, y, sample_weight=None, groups=None):
        """Tune C by hypergradient cross-validation, then refit on all data.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Training data.
        y : array-like of shape (n_samples,)
            Class labels, of any hashable type.
        sample_weight : float or array-like of shape (n_samples,), default=None
            Non-negative weights; a weight equals repeating the row.
        groups : array-like of shape (n_samples,), default=None
            Group labels of the rows, for a ``cv`` that splits by group
            (``GroupKFold``, ``LeaveOneGroupOut``), as in GridSearchCV's fit.

        Returns
        -------
        self : HypergradLogisticCV
            The fitted estimator.
        """
        X, y, y_encoded, weights = self._validate(X, y, sample_weight)
        fit_weights = weights[1]
        low, high = check_bounds(self.C_bounds, "C_bounds")
        n_values = X.shape[1] if self.per_feature else 1
        theta0 = initial_log_values(self.C, n_values, "C")
        splits = cv_splits(
            self.cv,
            X,
            y,
            classifier=True,
            random_state=self.random_state,
            groups=groups,
        )
        check_folds_have_classes(splits, y_encoded, fit_weights, self.classes_)
        if self.per_feature and np.ndim(self.C) == 0:
            theta0 = np.full(
                n_values, self._shared_log_C(X, y, sample_weight, splits, theta0[0])
            )

        tuning = partial(
            tune,
            theta0=theta0,
            bounds=(np.log(low), np.log(high)),
            max_iter=self.max_iter,
            tol=self.tol,
            n_jobs=self.n_jobs,
            verbose=self.verbose,
            use_score=self.scoring is not None,
            names="C",
            method="l-bfgs-b" if self.per_feature else "scalar",
        )
        folds = (X, y, y_encoded, weights, splits, sample_weight is not None)
        if self._lockstep(X):
            result, coef, intercept, failures = self._tune_in_lockstep(tuning, *folds)
        else:
            result, coef, intercept, failures = self._tune_fold_by_fold(tuning, *folds)
        result.n_inner_failures += failures
        warn_on_failures(
            result,
            hyperparameter="C",
            bounds=(low, high),
            inner_hint="increase inner_max_iter or relax inner_tol",
            linsys_hint=self._linsys_hint(X),
            notes=_scale_notes(X),
        )

        self.C_ = _as_C(result.theta)
        self.coef_ = coef.astype(X.dtype, copy=False)
        self.intercept_ = intercept.astype(X.dtype, copy=False)
        self.cv_results_ = cv_results_from_history(result.history, "C", _as_C)
        self.best_score_ = float(self.cv_results_["mean_test_score"][result.best_index])
        self.n_iter_ = int(result.n_iter)
        return self

    def _shared_log_C(self, X, y, sample_weight, splits, theta0):
        """``log`` of the best single C on the same folds: the start of a
        per-feature search, which then can only improve on it. When it sits
        on a bound, ``theta0`` instead: there the CV loss is flat in every
        ``log C``, and the per-feature search would stop where it started.
        """
        params = self.get_params(deep=False)
        params.update(per_feature=False, cv=splits, scoring=None, verbose=0)
        shared = type(self)(**params)
        # In float64 throughout, as the per-feature search: with float32
        # products, weights and repeated rows would start it 1e-6 apart.
        shared._precise = True
        with warnings.catch_warnings():
            # Its warnings (a bound, say) concern a start, not the result.
            warnings.simplefilter("ignore", ConvergenceWarning)
            shared.fit(X, y, sample_weight)
        theta = float(np.log(shared.C_))
        low, high = np.log(check_bounds(self.C_bounds, "C_bounds"))
        return theta0 if min(theta - low, high - theta) < SHARED_BOUND else theta

    def _tune_in_lockstep(self, tuning, X, y, y_encoded, weights, splits, weighted):
        """Tune with all folds solved together; the model on all the data is
        fitted by the same solver, at the starting C (where its weights start
        every fold) and at the best C.

        Returns the tuning result, the refitted ``coef`` and ``intercept``,
        and how many of those two fits missed their tolerance.
        """
        folds = self._fold_problems(X, y, y_encoded, weights, splits, None, weighted)
        theta0 = tuning.keywords["theta0"]
        *_, start, start_converged = folds.fit_whole(
            theta0, tol=max(self.inner_tol, START_TOL), prepare=True
        )
        folds.start_from(start)
        result = tuning(folds)
        mean = np.mean([state["W"] for state in result.states], axis=0)
        coef, intercept, _, converged = folds.fit_whole(
            result.theta, W0=mean, tol=min(self.inner_tol, REFIT_TOL), low=False
        )
        return result, coef, intercept, (not start_converged) + (not converged)

    def _tune_fold_by_fold(self, tuning, X, y, y_encoded, weights, splits, weighted):
        """Tune with one problem per fold, started from the model fitted on
        all the data at the starting C; refit at the best C.

        Returns as :meth:`_tune_in_lockstep` does.
        """
        from ..inner.logistic import fit_logistic

        refit = partial(
            fit_logistic,
            X,
            y_encoded,
            len(self.classes_),
            sample_weight=weights[1],
            fit_intercept=self.fit_intercept,
            tol=self.inner_tol,
            max_iter=self.inner_max_iter,
            device=self.device,
            solver=self.solver,
            return_state=True,
        )
        # Its weights and its Hessian factor start every fold much closer
        # than zero does.
        start = refit(_as_C(tuning.keywords["theta0"]))[2]
        problems = self._fold_problems(
            X, y, y_encoded, weights, splits, start, weighted
        )
        result = tuning(problems)
        # The refit is one solve: Newton whenever the weights allow it, since
        # L-BFGS stalls short of the refit's tolerance.
        from ..inner.logistic import NEWTON_MAX_WEIGHTS

        newton = self.solver == "newton" or self._n_weights(X) <= NEWTON_MAX_WEIGHTS
        coef, intercept, state = refit(
            _as_C(result.theta),
            warm_start=_mean_state(result.states),
            tol=min(self.inner_tol, REFIT_TOL if newton else LBFGS_REFIT_TOL),
            solver="newton" if newton else "lbfgs",
        )
        failures = (not start["converged"]) + (not state["converged"])
        return result, coef, intercept, failures

    def _validate(self, X, y, sample_weight):
        """Check the parameters and the data; set ``classes_``."""
        self._check_params()
        X, y = validate_data(
            self,
            X,
            y,
            accept_sparse=("csr", "csc", "coo"),
            dtype=(np.float64, np.float32),
        )
        if sp.issparse(X):
            X = X.tocsr()
        check_classification_targets(y)
        self.classes_, y_encoded = np.unique(y, return_inverse=True)
        weights = self._sample_weights(y_encoded, sample_weight, X)
        return X, y, y_encoded, weights

    def _check_params(self):
        check_choice(self.hypergrad, "hypergrad", _HYPERGRAD)
        check_device(self.device)
        check_choice(self.solver, "solver", _SOLVERS)
        for name in ("inner_tol", "linsys_tol"):
            check_positive(getattr(self, name), name)
        check_positive(self.tol, "tol", include_zero=True)
        for name in ("inner_max_iter", "linsys_max_iter", "max_iter"):
            check_positive(getattr(self, name), name, numbers.Integral)
        check_positive(self.verbose, "verbose", numbers.Integral, include_zero=True)
        if not isinstance(self.class_weight, (dict, type(None))) and (
            self.class_weight != "balanced"
        ):
            raise ValueError(
                "class_weight must be None, 'balanced' or a dict, got "
                f"{self.class_weight!r}"
            )

    def _sample_weights(self, y_encoded, sample_weight, X):
        """Return the sample weights, and those times the class weights.

        The class weights reweight the training losses only; the validation
        log loss is weighted by the sample weights alone.
        """
        weights = check_sample_weight(sample_weight, X.shape[0], np.float64)
        if self.classes_.size < 2:
            raise ValueError(
                "HypergradLogisticCV needs samples of at least 2 classes in the "
                f"data, but the data contain only one class: "
                f"{label(self.classes_[0])!r}"
            )
        if self.class_weight is not None:
            class_weight = compute_class_weight(
                self.class_weight,
                classes=self.classes_,
                y=self.classes_[y_encoded],
                sample_weight=weights,
            )
            fit_weights = weights * class_weight[y_encoded]
        else:
            fit_weights = weights
        totals = np.bincount(
            y_encoded, weights=fit_weights, minlength=self.classes_.size
        )
        if np.any(totals <= 0):
            missing = label(self.classes_[np.flatnonzero(totals <= 0)[0]])
            raise ValueError(
                f"class {missing!r} has no sample with a positive weight; "
                "logistic regression needs every class of y to be weighted"
            )
        return weights, fit_weights

    def _fold_problems(self, X, y, y_encoded, weights, splits, start, weighted):
        """The folds: one problem per split, or all of them in lockstep.

        ``weighted``: the user gave weights.
        """
        weights, fit_weights = weights
        scorer = None if self.scoring is None else check_scoring(self, self.scoring)
        if self._lockstep(X):
            from ..inner.logistic_folds import LogisticFolds

            folds = LogisticFolds(
                X,
                y_encoded,
                len(self.classes_),
                splits,
                fit_weight=fit_weights,
                val_weight=weights,
                fit_intercept=self.fit_intercept,
                per_feature=self.per_feature,
                low_precision=False if getattr(self, "_precise", False) else None,
                inner_tol=self.inner_tol,
                inner_max_iter=self.inner_max_iter,
                linsys_tol=self.linsys_tol,
                linsys_max_iter=self.linsys_max_iter,
                device=self.device,
                warm_start=start,
            )
            if scorer is None:
                return folds
            weight_val = weights if weighted else None
            return ScoredFoldSet(folds, scorer, X, y, splits, weight_val, self.classes_)
        from ..inner.logistic import LogisticFoldProblem

        problems = []
        for train, test in splits:
            problem = LogisticFoldProblem(
                X[train],
                y_encoded[train],
                X[test],
                y_encoded[test],
                len(self.classes_),
                sample_weight_train=fit_weights[train],
                sample_weight_val=weights[test],
                fit_intercept=self.fit_intercept,
                per_feature=self.per_feature,
                hypergrad=self.hypergrad,
                inner_tol=self.inner_tol,
                inner_max_iter=self.inner_max_iter,
                linsys_tol=self.linsys_tol,
                linsys_max_iter=self.linsys_max_iter,
                device=self.device,
                solver=self.solver,
                warm_start=start,
            )
            if scorer is not None:
                # A scorer gets sample_weight only when the user gave weights,
                # so that a plain scorer(estimator, X, y) works without them.
                weight_val = weights[test] if weighted else None
                problem = ScoredFold(
                    problem, scorer, X[test], y[test], weight_val, self.classes_
                )
            problems.append(problem)
        return problems

    def _linsys_hint(self, X):
        """What to change when the hypergradient's systems stopped early."""
        hint = "increase linsys_max_iter or relax linsys_tol"
        if self.hypergrad in ("fp", "itd") and not self._newton(X):
            # After L-BFGS the map they iterate is a gradient step, whose
            # rate is 1 - (smallest curvature) / (largest): near one.
            hint += (
                "; after L-BFGS, fp and itd iterate a gradient step that "
                "contracts slowly, and hypergrad='cg' converges far faster"
            )
        return hint

    def _newton(self, X):
        """Whether the folds are solved by Newton's method."""
        from ..inner.logistic import NEWTON_MAX_WEIGHTS

        return self.solver == "newton" or (
            self.solver == "auto" and self._n_weights(X) <= NEWTON_MAX_WEIGHTS
        )

    def _n_weights(self, X):
        """Number of weights of the model: (features + intercept) per class
        beyond the first of two."""
        n_outputs = 1 if len(self.classes_) == 2 else len(self.classes_)
        return n_outputs * (X.shape[1] + int(self.fit_intercept))

    def _lockstep(self, X):
        """Whether the folds are solved together (:class:`LogisticFolds`):
        conjugate-gradient hypergradients after Newton solves."""
        return self._newton(X) and self.hypergrad == "cg"

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


def _scale_notes(X):
    """A note for the fit's warning when columns of ``X`` are large."""
    if sp.issparse(X):
        squares = np.asarray(X.multiply(X).mean(axis=0)).ravel()
    else:
        squares = np.mean(np.square(X, dtype=np.float64), axis=0)
    largest = float(np.sqrt(squares.max())) if squares.size else 0.0
    if largest <= LARGE_SCALE:
        return ()
    return (
        f"columns of X reach a root mean square of {largest:.3g}: at large C "
        "the training problems are then badly conditioned and their solutions "
        "inaccurate, and C_bounds mean little regularisation; standardise X "
        "(for example with StandardScaler in a Pipeline)",
    )


def _as_C(theta):
    """C from ``θ = log C``: a float for one value, else an array."""
    theta = np.asarray(theta, dtype=np.float64)
    return float(np.exp(theta[0])) if theta.size == 1 else np.exp(theta)


def _mean_state(states):
    """A warm start for the refit: the folds' mean weights, one fold's factor."""
    return {
        "W": np.mean([state["W"] for state in states], axis=0),
        "factor": states[0].get("factor"),
    }
