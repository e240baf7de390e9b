"""HypergradRidgeCV: ridge regression with alpha tuned by hypergradient CV.

This module imports neither PyTorch nor the inner problems at import time: a
fitted model unpickles and predicts with numpy alone.
"""

import numbers
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, RegressorMixin

from ..tuning import tune, warn_on_failures
from ._base import (
    LinearPredictorMixin,
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

__all__ = ["HypergradRidgeCV"]

_HYPERGRAD = ("cg", "fp", "gmres", "exact", "itd", "itd-forward")
# The largest dense Gram matrix (in float64) a per-feature fold may form.
_PER_FEATURE_MAX_BYTES = 4 * 2**30


class HypergradRidgeCV(LinearPredictorMixin, RegressorMixin, BaseEstimator):
    """Ridge regression whose penalty is tuned by gradient descent on the CV loss.

    The penalty ``alpha`` (one value, one per feature or one per target) is
    chosen to minimise the K-fold cross-validated mean squared error, by
    L-BFGS-B on ``log alpha`` with exact or implicit hypergradients, then the
    model is refitted on all the data at the best alpha found.

    Parameters
    ----------
    alpha : float or array-like, default=1.0
        Starting value of the penalty: a number, or one value per feature
        (``per_feature=True``) or per target (``alpha_per_target=True``). A
        single alpha (or one per target) starts from the best of this value
        and a coarse scan of ``alpha_bounds``, one point per decade, which is
        cheap since one factorisation per fold serves every alpha. With
        ``per_feature=True`` a number first tunes one shared alpha that way,
        and the per-feature search starts from it (from this value when the
        shared alpha sits on a bound, where the CV loss is flat); an array
        starts it directly.
    per_feature : bool, default=False
        Tune one alpha per feature (automatic relevance determination by
        cross-validation).
    alpha_per_target : bool, default=False
        With a 2-d ``y``, tune one alpha per target.
    alpha_bounds : tuple of float, default=(1e-6, 1e6)
        The search interval of every alpha. A best alpha on one of these
        bounds (single alpha) gives a ``ConvergenceWarning`` naming it.
    fit_intercept : bool, default=True
        Fit an intercept, which is never penalised.
    cv : int, cross-validation generator or iterable, default=None
        The folds, as :func:`sklearn.model_selection.check_cv` reads them;
        ``None`` means 5-fold :class:`~sklearn.model_selection.KFold`.
    hypergrad : {"cg", "fp", "gmres", "exact", "itd", "itd-forward"}, \
            default="cg"
        Hypergradient method for per-feature alphas: AID with conjugate
        gradient, fixed-point iterations or GMRES, a dense solve, or
        iterative differentiation in reverse or forward mode. A single alpha
        or one per target always gets the exact hypergradient from one
        eigendecomposition per fold, which is cheaper than any of these.
    inner_tol : float, default=1e-8
        ``hypergrad="itd"`` only: the relative size of the last step under
        which the ``inner_max_iter`` steps count as converged.
    inner_max_iter : int, default=100
        ``hypergrad="itd"`` only: steps ``t`` of the gradient-step map per
        evaluation, each run from the previous evaluation's weights.
        (Otherwise the inner problem is solved exactly, by Cholesky.)
    linsys_tol : float, default=1e-8
        Relative residual tolerance of AID's linear system.
    linsys_max_iter : int, default=200
        Iteration cap ``k`` of AID's linear system.
    max_iter : int, default=50
        Maximum number of outer (L-BFGS-B) iterations.
    tol : float, default=1e-6
        Outer stopping tolerance on the relative decrease of the CV loss and
        on the projected hypergradient.
    device : str, default="auto"
        Torch device of the per-feature computations (``"auto"``: CUDA when
        available). The single-alpha path runs with numpy and LAPACK.
    n_jobs : int, default=None
        Folds evaluated in parallel through joblib.
    verbose : int, default=0
        ``verbose >= 1`` prints one line per evaluation of the CV loss.
    random_state : int, RandomState instance or None, default=None
        When ``cv`` is an integer (or ``None``) and ``random_state`` is set,
        the rows are shuffled with this seed before the K-fold split.

    Attributes
    ----------
    alpha_ : float or ndarray of shape (n_features,) or (n_targets,)
        The best alpha found.
    coef_ : ndarray of shape (n_features,) or (n_targets, n_features)
        Coefficients of the model refitted on all the data at ``alpha_``.
        For one alpha, or one per target, they equal those of
        ``Ridge(alpha=alpha_)``; :class:`~sklearn.linear_model.Ridge` takes
        no per-feature alpha, so with ``per_feature=True`` they are the ridge
        solution with penalty ``Σ_j alpha_[j] ||W_j||²`` instead.
    intercept_ : float or ndarray of shape (n_targets,)
        Intercept of the refitted model (0 when ``fit_intercept=False``).
    best_score_ : float
        Minus the mean cross-validated MSE at ``alpha_``: the
        ``best_score_`` that ``GridSearchCV(Ridge(), ...,
        scoring="neg_mean_squared_error")`` would report there.
    cv_results_ : dict of ndarray
        One row per evaluation of the CV loss (L-BFGS-B line-search trials
        included): ``iteration``, ``param_alpha``, ``mean_test_loss``,
        ``std_test_loss``, ``split<k>_test_loss``, ``mean_test_score``,
        ``hypergradient_norm`` (of the gradient with respect to
        ``log alpha``) and ``time`` (seconds). ``pandas.DataFrame`` takes it.
    n_iter_ : int
        Outer (L-BFGS-B) iterations run.
    n_features_in_ : int
        Number of features seen during ``fit``.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of the features, when ``X`` has string column names.

    See Also
    --------
    sklearn.linear_model.RidgeCV : Ridge with alpha chosen on a grid.
    sklearn.linear_model.Ridge : Ridge at a fixed alpha.

    Notes
    -----
    On each training part the model minimises scikit-learn's ridge loss
    ``Σ_i s_i ||y_i - Wᵀx_i - b||² + Σ_j λ_j ||W_j||²`` (``s`` the sample
    weights; the intercept ``b`` unpenalised), and the objective is the mean
    over folds of the weighted validation MSE ``E(λ)``. It is minimised over
    ``θ = log λ`` within ``alpha_bounds``, starting from ``alpha``; the best
    finite evaluation is kept.

    For one alpha (or one per target), each fold is factorised once,
    ``G = ZᵀZ = V diag(σ) Vᵀ`` (or the kernel ``ZZᵀ`` when there are fewer
    rows than features); then ``W(λ) = V (R / (σ + λ))`` and
    ``dW/dλ = -V (R / (σ + λ)²)``, so the loss and its exact gradient cost
    ``O(d² + n_val d)`` per alpha. For one alpha per feature, each
    evaluation solves ``(G + diag λ) W = C`` by Cholesky and the engine
    solves the implicit-differentiation system
    ``(G + diag λ) v = ∇_W E`` (AID-CG by default), then
    ``∂E/∂λ_j = -W_j · v_j``.

    Memory: for one alpha (or one per target) each fold holds a
    ``min(n, d) × min(n, d)`` factorisation, and sparse ``X`` is never
    densified. For one alpha per feature each fold holds the dense
    ``d × d`` Gram matrix ``G`` (``8 d²`` bytes, plus its Cholesky factor
    during a solve), whatever ``n`` and even for sparse ``X``, and all folds
    hold theirs at once. ``fit`` refuses ``per_feature=True`` when ``8 d²``
    bytes would exceed 4 GiB (``d`` above 23170).

    References
    ----------
    R. Grazzi, L. Franceschi, M. Pontil and S. Salzo, "On the Iteration
    Complexity of Hypergradient Computation", ICML 2020.

    Examples
    --------
    >>> from sklearn.datasets import load_diabetes
    >>> from skhyper import HypergradRidgeCV
    >>> X, y = load_diabetes(return_X_y=True)
    >>> model = HypergradRidgeCV(cv=5).fit(X, y)
    >>> print(f"{model.alpha_:.1e}")
    4.8e-04
    >>> print(f"{-model.best_score_:.1f}")
    2993.0
    >>> print(model.predict(X[:2]).round(1))
    [206.   68.2]
    """

    def __init__(
        self,
        alpha=1.0,
        *,
        per_feature=False,
        alpha_per_target=False,
        alpha_bounds=(1e-6, 1e6),
        fit_intercept=True,
        cv=None,
        hypergrad="cg",
        inner_tol=1e-8,
        inner_max_iter=100,
        linsys_tol=1e-8,
        linsys_max_iter=200,
        max_iter=50,
        tol=1e-6,
        device="auto",
        n_jobs=None,
        verbose=0,
        random_state=None,
    ):
        self.alpha = alpha
        self.per_feature = per_feature
        self.alpha_per_target = alpha_per_target
        self.alpha_bounds = alpha_bounds
        self.fit_intercept = fit_intercept
        self.cv = cv
        self.hypergrad = hypergrad
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
        """Tune alpha by hypergradient cross-validation, then refit on all data.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Training data; float32 stays float32, sparse stays sparse.
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
            Targets.
        sample_weight : float or array-like of shape (n_samples,), default=None
            Non-negative weights; a weight equals repeating the row (within
            the fold the row falls in).
        groups : array-like of shape (n_samples,), default=None
            Group labels of the rows, for a ``cv`` that splits by group
            (``GroupKFold``, ``LeaveOneGroupOut``), as in GridSearchCV's fit.

        Returns
        -------
        self : HypergradRidgeCV
            The fitted estimator.
        """
        self._check_params()
        X, y = validate_data(
            self,
            X,
            y,
            accept_sparse=("csr", "csc", "coo"),
            dtype=(np.float64, np.float32),
            multi_output=True,
            y_numeric=True,
        )
        if sp.issparse(X):
            X = X.tocsr()
        y = np.asarray(y, dtype=X.dtype)
        weights = check_sample_weight(sample_weight, X.shape[0], X.dtype)
        mode = self._mode(y)
        if mode == "per_feature":
            _check_gram_memory(X.shape[1])
        low, high = check_bounds(self.alpha_bounds, "alpha_bounds")
        n_alphas = {"scalar": 1, "per_feature": X.shape[1]}.get(mode, y.shape[-1])
        theta0 = initial_log_values(self.alpha, n_alphas, "alpha")
        splits = cv_splits(self.cv, X, y, random_state=self.random_state, groups=groups)
        bounds = (np.log(low), np.log(high))
        folds = self._folds(X, y, weights, splits, mode)
        if mode == "per_feature" and np.ndim(self.alpha) == 0:
            # One shared alpha, tuned first by the cheap spectral path, is
            # the start of the per-feature search, unless it sits on a bound:
            # there the CV loss is flat in every log alpha, and the search
            # would stop where it started.
            shared = self._tune(folds, "scalar", theta0[:1], bounds)
            if not (shared.at_lower[0] or shared.at_upper[0]):
                theta0 = np.full(n_alphas, shared.theta[0])
        result = self._tune(folds, mode, theta0, bounds)
        warn_on_failures(
            result,
            hyperparameter="alpha",
            bounds=(low, high),
            inner_hint="increase inner_max_iter",
            linsys_hint="increase linsys_max_iter or relax linsys_tol",
        )

        # Imported here, so that importing and predicting never need torch.
        from ..inner.ridge import fit_ridge

        alphas = np.exp(result.theta)
        self.alpha_ = float(alphas[0]) if mode == "scalar" else alphas
        self.coef_, self.intercept_ = fit_ridge(
            X, y, alphas, weights, self.fit_intercept, mode=mode, moments=folds.full
        )
        if y.ndim == 2 and y.shape[1] == 1:
            # One target given as a column: coefficients of shape (n_features,)
            # and predictions of shape (n_samples,), as Ridge gives since
            # scikit-learn 1.6.
            self.coef_ = self.coef_.reshape(-1)
        self.best_score_ = -float(result.loss)
        self.cv_results_ = cv_results_from_history(
            result.history, "alpha", _shown_alpha(mode)
        )
        self.n_iter_ = int(result.n_iter)
        return self

    def _folds(self, X, y, weights, splits, mode):
        """The data of every fold, with their Gram matrices when they can share.

        When each training part is the rest of the data and has at least as
        many rows as features, all the folds' Gram matrices come from one of
        the full data (see :func:`skhyper.inner.ridge.cv_ridge_moments`),
        which also serves the final refit.
        """
        from ..inner.ridge import cv_ridge_moments

        n_samples, n_features = X.shape
        everything = np.arange(n_samples)
        complements = all(
            np.array_equal(np.sort(np.concatenate([tr, te])), everything)
            for tr, te in splits
        )
        primal = min(len(tr) for tr, _ in splits) >= n_features
        moments, full = [None] * len(splits), None
        if complements and (primal or mode == "per_feature"):
            Y = y.reshape(n_samples, -1)
            moments, full = cv_ridge_moments(X, Y, weights, splits, self.fit_intercept)
        return _Folds(X, y, weights, splits, moments, full)

    def _tune(self, folds, mode, theta0, bounds):
        """Run the outer loop over the folds for one ``mode`` of alphas."""
        from ..inner.ridge import RidgeFoldProblem

        X, y, weights = folds.X, folds.y, folds.weights
        problems = [
            RidgeFoldProblem(
                # With shared moments the fold needs nothing else of X[train].
                X[train] if moments is None else None,
                y[train],
                X[test],
                y[test],
                sample_weight_train=weights[train],
                sample_weight_val=weights[test],
                fit_intercept=self.fit_intercept,
                mode=mode,
                hypergrad=self.hypergrad,
                inner_tol=self.inner_tol,
                inner_max_iter=self.inner_max_iter,
                linsys_tol=self.linsys_tol,
                linsys_max_iter=self.linsys_max_iter,
                device=self.device,
                moments=moments,
            )
            for (train, test), moments in zip(folds.splits, folds.moments)
        ]
        # With one factorisation per fold, a coarse scan of the bounds (one
        # point per decade, one vectorised pass per fold) costs about as much
        # as one L-BFGS-B step and guards the start against plateaus and
        # distant minima.
        decades = (bounds[1] - bounds[0]) / np.log(10.0)
        n_scan = 0 if mode == "per_feature" else int(np.clip(round(decades) + 1, 3, 25))
        return tune(
            problems,
            theta0,
            bounds,
            max_iter=self.max_iter,
            tol=self.tol,
            n_jobs=self.n_jobs,
            verbose=self.verbose,
            names="alpha",
            scan=n_scan,
        )

    def _mode(self, y):
        if self.per_feature and self.alpha_per_target:
            raise ValueError(
                "per_feature=True and alpha_per_target=True cannot be combined"
            )
        if self.per_feature:
            return "per_feature"
        if self.alpha_per_target and y.ndim == 2:
            return "per_target"
        return "scalar"

    def _check_params(self):
        check_choice(self.hypergrad, "hypergrad", _HYPERGRAD)
        check_device(self.device)
        for name in ("inner_tol", "linsys_tol"):
            check_positive(getattr(self, name), name)
        check_positive(self.tol, "tol", include_zero=True)
        for name in ("inner_max_iter", "linsys_max_iter", "max_iter"):
            check_positive(getattr(self, name), name, numbers.Integral)
        check_positive(self.verbose, "verbose", numbers.Integral, include_zero=True)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.target_tags.multi_output = True
        return tags

    def _more_tags(self):  # scikit-learn < 1.6
        return {"multioutput": True}


@dataclass(frozen=True)
class _Folds:
    """The validated data, its splits and, when shared, the folds' moments."""

    X: object
    y: np.ndarray
    weights: np.ndarray
    splits: list
    moments: list
    full: object


def _check_gram_memory(n_features):
    """Refuse a per-feature fit whose dense Gram matrix per fold is too big."""
    n_bytes = 8 * n_features**2
    if n_bytes > _PER_FEATURE_MAX_BYTES:
        raise ValueError(
            f"per_feature=True needs a dense {n_features} x {n_features} Gram "
            f"matrix per fold ({n_bytes:,} bytes each, over the limit of "
            f"{_PER_FEATURE_MAX_BYTES:,} bytes = 4 GiB); reduce the "
            "number of features or use a single alpha (per_feature=False)"
        )


def _shown_alpha(mode):
    if mode == "scalar":
        return lambda theta: float(np.exp(theta[0]))
    return np.exp
