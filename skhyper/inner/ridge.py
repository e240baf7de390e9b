"""Ridge regression as the inner problem of hypergradient cross-validation.

On the training part of a fold, with sample weights ``s``, the loss is
scikit-learn's :class:`~sklearn.linear_model.Ridge` loss

    ℓ(W, b; λ) = Σ_i s_i ||y_i - Wᵀx_i - b||² + Σ_j λ_j ||W_j||²,

with the intercept ``b`` unpenalised. Centring on the weighted means eliminates
it, ``b = ȳ - Wᵀx̄``, and leaves the normal equations

    (G + diag λ) W = C,    G = ZᵀZ,    C = Zᵀ√s (Y - 1ȳᵀ),

with ``Z`` the centred, weight-scaled rows (see :mod:`._centring`). The outer
loss of the fold is the weighted validation mean squared error, averaged over
the ``T`` targets as :func:`sklearn.metrics.mean_squared_error` does,

    E(W) = Σ_i s'_i ||y'_i - Wᵀx'_i - b||² / (T Σ_i s'_i).

A single alpha (or one per target) is solved by one eigendecomposition per fold
(:mod:`._ridge_spectral`), which then gives the loss and its exact gradient at
every alpha, at several alphas in one vectorised pass (``evaluate_many``). One
alpha per feature is solved by Cholesky and differentiated by the engine
(:mod:`._ridge_features`). In K-fold CV the folds' Gram matrices can come from
one Gram matrix of the full data (:func:`cv_ridge_moments`).
"""

from dataclasses import dataclass

import numpy as np
import scipy.linalg as la

from ..tuning import FoldResult
from ._centring import (
    centred_kernel,
    centred_rmatmul,
    weighted_offsets,
)
from ._ridge_moments import RidgeMoments, cv_ridge_moments
from ._ridge_spectral import spectral_coefficients, spectral_evaluate, spectrum

__all__ = [
    "MODES",
    "RidgeFoldProblem",
    "RidgeFoldState",
    "RidgeMoments",
    "cv_ridge_moments",
    "fit_ridge",
]

MODES = ("scalar", "per_feature", "per_target")
HYPERGRAD_METHODS = ("cg", "fp", "gmres", "exact", "itd", "itd-forward")


@dataclass(frozen=True)
class RidgeFoldState:
    """Warm-start state of one ridge fold, replaced (never mutated) by ``evaluate``.

    Attributes
    ----------
    theta : ndarray or None
        The log-alphas of the last evaluation.
    factors : object or None
        What the fold computes once and reuses at every alpha: the
        eigendecomposition (scalar and per-target alphas) or the Gram matrix
        and its torch copies (per-feature alphas).
    coef : object or None
        Per-feature alphas: the last inner solution, the warm start of ITD.
    v : object or None
        Per-feature alphas: the last solution of the linear system, the warm
        start of AID.

    Notes
    -----
    A state is returned by :meth:`RidgeFoldProblem.evaluate` and passed back
    to the next call; it travels by value, so folds may run in other
    processes.

    Examples
    --------
    >>> from skhyper.inner.ridge import RidgeFoldState
    >>> RidgeFoldState().factors is None
    True
    """

    theta: object = None
    factors: object = None
    coef: object = None
    v: object = None


class RidgeFoldProblem:
    """One cross-validation fold of ridge regression, for :func:`~skhyper.tuning.tune`.

    Parameters
    ----------
    X_train, X_val : ndarray or sparse matrix of shape (n, n_features)
        Training and validation inputs (float32 or float64); sparse inputs are
        never densified. ``X_train`` may be ``None`` when ``moments`` is
        given: the fold then needs nothing else of it.
    y_train, y_val : ndarray of shape (n,) or (n, n_targets)
    sample_weight_train, sample_weight_val : ndarray of shape (n,), default=None
        Non-negative weights; a weight equals repeating the row.
    fit_intercept : bool, default=True
        Fit an unpenalised intercept.
    mode : {"scalar", "per_feature", "per_target"}, default="scalar"
        One alpha, one per feature, or one per target; ``theta`` holds their
        logarithms.
    hypergrad : {"cg", "fp", "gmres", "exact", "itd", "itd-forward"}, default="cg"
        Hypergradient method of the engine for per-feature alphas. Scalar and
        per-target alphas always use the exact gradient from the
        eigendecomposition, which is cheaper than any iterative method.
    inner_tol, inner_max_iter : float, int
        ITD only: the number of steps ``t`` of the gradient-step map, and the
        relative step size under which the inner problem counts as converged.
    linsys_tol, linsys_max_iter : float, int
        Relative residual tolerance and iteration cap ``k`` of AID's linear
        system.
    device : str, default="auto"
        Torch device of the per-feature computations.
    moments : RidgeMoments, default=None
        The training part's means and centred Gram matrix, when already known
        (:func:`cv_ridge_moments` computes those of all folds together); then
        the fold does not form its Gram matrix itself.

    Notes
    -----
    ``evaluate(theta, state)`` returns the validation loss ``E(W(λ))`` at
    ``λ = exp(theta)`` and its gradient with respect to ``theta``, which is
    ``λ ⊙ ∇_λ E``. The first evaluation computes what every later one reuses
    (the eigendecomposition or the Gram matrix) and stores it in the state.

    Examples
    --------
    >>> import numpy as np
    >>> from skhyper.inner.ridge import RidgeFoldProblem
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(40, 3))
    >>> y = X @ [1.0, -2.0, 0.5] + 0.1 * rng.normal(size=40)
    >>> fold = RidgeFoldProblem(X[:30], y[:30], X[30:], y[30:])
    >>> result = fold.evaluate(np.log([0.1]), fold.initial_state())
    >>> bool(result.loss < 0.05), result.grad.shape
    (True, (1,))
    """

    def __init__(
        self,
        X_train,
        y_train,
        X_val,
        y_val,
        *,
        sample_weight_train=None,
        sample_weight_val=None,
        fit_intercept=True,
        mode="scalar",
        hypergrad="cg",
        inner_tol=1e-8,
        inner_max_iter=100,
        linsys_tol=1e-8,
        linsys_max_iter=200,
        device="auto",
        moments=None,
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if hypergrad not in HYPERGRAD_METHODS:
            raise ValueError(
                f"hypergrad must be one of {HYPERGRAD_METHODS}, got {hypergrad!r}"
            )
        if X_train is None and moments is None:
            raise ValueError("X_train may be None only when moments are given")
        dtype = X_val.dtype
        self.dtype = dtype
        self.n_features = X_val.shape[1]
        self.X_train = X_train
        self.X_val = X_val
        self.single_target = np.ndim(y_train) == 1
        self.Y_train = _as_2d(y_train, dtype)
        self.Y_val = _as_2d(y_val, dtype)
        self.weights_train = _weights(sample_weight_train, len(y_train), dtype)
        self.weights_val = _weights(sample_weight_val, X_val.shape[0], dtype)
        if not self.weights_val.sum() > 0:
            raise ValueError("the validation part of a fold has zero total weight")
        if not self.weights_train.sum() > 0:
            raise ValueError("the training part of a fold has zero total weight")
        self.fit_intercept = fit_intercept
        self.mode = mode
        self.hypergrad = hypergrad
        self.inner_tol = inner_tol
        self.inner_max_iter = inner_max_iter
        self.linsys_tol = linsys_tol
        self.linsys_max_iter = linsys_max_iter
        self.device = device
        self.moments = moments
        if moments is not None:
            self.x_offset, self.y_offset = moments.x_offset, moments.y_offset
        else:
            self.x_offset, self.y_offset = weighted_offsets(
                X_train, self.Y_train, self.weights_train, fit_intercept
            )

    @property
    def n_hyperparameters(self):
        """Length of ``theta``: 1, ``n_features`` or ``n_targets``."""
        if self.mode == "per_feature":
            return self.n_features
        if self.mode == "per_target":
            return self.Y_train.shape[1]
        return 1

    def initial_state(self):
        """Return the empty state: nothing is computed before the first call."""
        return RidgeFoldState()

    def evaluate(self, theta, state):
        """Validation loss and its gradient with respect to ``theta = log λ``.

        Parameters
        ----------
        theta : ndarray of shape (n_hyperparameters,)
        state : RidgeFoldState

        Returns
        -------
        result : FoldResult
        """
        theta = np.asarray(theta, dtype=np.float64).reshape(self.n_hyperparameters)
        if self.mode == "per_feature":
            from ._ridge_features import features_evaluate

            return features_evaluate(self, theta, state)
        return self.evaluate_many(theta[None, :], state)[0]

    def evaluate_many(self, thetas, state):
        """:meth:`evaluate` at several points; one vectorised pass for one alpha.

        Parameters
        ----------
        thetas : array-like of shape (n_points, n_hyperparameters)
        state : RidgeFoldState

        Returns
        -------
        results : list of FoldResult
            One per point, each state following from the previous one.
        """
        thetas = np.asarray(thetas, dtype=np.float64)
        thetas = thetas.reshape(-1, self.n_hyperparameters)
        if self.mode == "per_feature":
            results = []
            for theta in thetas:
                results.append(self.evaluate(theta, state))
                state = results[-1].state
            return results
        factors = state.factors if state.factors is not None else spectrum(self)
        losses, grads, parts = spectral_evaluate(self, factors, np.exp(thetas))
        # One alpha per target: the loss is the mean of the targets' own,
        # each a function of its alpha alone (separable, see FoldResult).
        separable = self.mode == "per_target"
        return [
            FoldResult(
                float(loss),
                grad,
                RidgeFoldState(theta=theta, factors=factors),
                parts=part if separable else None,
            )
            for loss, grad, theta, part in zip(losses, grads, thetas, parts)
        ]

    def coefficients(self, state, theta=None):
        """Coefficients of the fold's training part, in :class:`Ridge`'s shapes.

        Parameters
        ----------
        state : RidgeFoldState
            A state returned by :meth:`evaluate`.
        theta : ndarray of shape (n_hyperparameters,), default=None
            Log-alphas to solve at; ``None`` means those of the last
            evaluation (for ITD, its last iterate).

        Returns
        -------
        coef : ndarray of shape (n_features,) or (n_targets, n_features)
        intercept : float or ndarray of shape (n_targets,)
        """
        if state.factors is None:
            raise ValueError("the fold has not been evaluated yet")
        if theta is None:
            theta = state.theta
        theta = np.asarray(theta, dtype=np.float64).reshape(self.n_hyperparameters)
        if self.mode == "per_feature":
            from ._ridge_features import features_coefficients

            W = features_coefficients(state, theta)
        else:
            W = spectral_coefficients(self, state.factors, np.exp(theta))
        return _ridge_shapes(
            W, self.x_offset, self.y_offset, self.single_target, self.dtype
        )


def fit_ridge(
    X, y, alpha, sample_weight=None, fit_intercept=True, *, mode=None, moments=None
):
    """Fit ridge regression at fixed alphas, as :class:`sklearn.linear_model.Ridge`.

    Parameters
    ----------
    X : ndarray or sparse matrix of shape (n_samples, n_features)
    y : ndarray of shape (n_samples,) or (n_samples, n_targets)
    alpha : float or ndarray
        One alpha, one per target (``mode="per_target"``, the meaning of an
        array in :class:`~sklearn.linear_model.Ridge`) or one per feature
        (``mode="per_feature"``).
    sample_weight : ndarray of shape (n_samples,), default=None
    fit_intercept : bool, default=True
    mode : {"scalar", "per_feature", "per_target"}, default=None
        ``None`` reads a single value as ``"scalar"`` and an array as
        ``"per_target"``.
    moments : RidgeMoments, default=None
        The data's means and centred Gram matrix, when already known (the
        ``full`` output of :func:`cv_ridge_moments`).

    Returns
    -------
    coef : ndarray of shape (n_features,) or (n_targets, n_features)
    intercept : float or ndarray of shape (n_targets,)

    Notes
    -----
    Solves ``(G + diag λ) W = C`` (see the module docstring) by Cholesky when
    ``n_samples >= n_features``, and in the dual form
    ``W = Zᵀ (ZZᵀ + λI)⁻¹ √s (Y - 1ȳᵀ)`` otherwise (one alpha per target or a
    single alpha). A sparse ``X`` is never densified. Float32 inputs form their
    Gram matrix in float32 and solve in float64.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import Ridge
    >>> from skhyper.inner.ridge import fit_ridge
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.normal(size=(20, 4)), rng.normal(size=20)
    >>> coef, intercept = fit_ridge(X, y, 2.0)
    >>> reference = Ridge(alpha=2.0).fit(X, y)
    >>> bool(np.allclose(coef, reference.coef_))
    True
    >>> bool(np.isclose(intercept, reference.intercept_))
    True
    """
    dtype = X.dtype
    single_target = np.ndim(y) == 1
    Y = _as_2d(y, dtype)
    weights = _weights(sample_weight, X.shape[0], dtype)
    alpha = np.asarray(alpha, dtype=np.float64)
    if mode is None:
        mode = "scalar" if alpha.size == 1 else "per_target"
    size = {"scalar": 1, "per_feature": X.shape[1], "per_target": Y.shape[1]}[mode]
    alpha = np.broadcast_to(alpha.ravel(), (size,)) if alpha.size == 1 else alpha
    if alpha.shape != (size,):
        raise ValueError(f"mode={mode!r} needs {size} alphas, got {alpha.shape}")
    n_samples, n_features = X.shape
    if mode != "per_feature" and n_samples < n_features:
        x_offset, y_offset = weighted_offsets(X, Y, weights, fit_intercept)
        W = _dual_solve(X, Y, alpha, weights, x_offset, y_offset)
        return _ridge_shapes(W, x_offset, y_offset, single_target, dtype)
    if moments is None:
        moments = cv_ridge_moments(X, Y, weights, [], fit_intercept)[1]
    if mode == "per_feature":
        W = _spd_solve(moments.gram + np.diag(alpha), moments.rhs)
    else:
        alphas = np.broadcast_to(alpha, (Y.shape[1],))
        W = np.hstack(
            [
                _spd_solve(moments.gram, moments.rhs[:, [k]], shift=a)
                for k, a in enumerate(alphas)
            ]
        )
    return _ridge_shapes(W, moments.x_offset, moments.y_offset, single_target, dtype)


def _dual_solve(X, Y, alpha, weights, x_offset, y_offset):
    kernel = centred_kernel(X, x_offset, weights).astype(np.float64)
    targets = ((Y - y_offset) * np.sqrt(weights)[:, None]).astype(np.float64)
    alphas = np.broadcast_to(alpha, (Y.shape[1],))
    dual = np.hstack(
        [_spd_solve(kernel, targets[:, [k]], shift=a) for k, a in enumerate(alphas)]
    )
    return centred_rmatmul(X, x_offset, weights, dual)


def _spd_solve(matrix, rhs, shift=0.0):
    """Solve ``(matrix + shift I) x = rhs`` by Cholesky, by LU if that fails."""
    if shift:
        matrix = matrix + shift * np.eye(matrix.shape[0])
    try:
        return la.cho_solve(la.cho_factor(matrix, lower=True), rhs)
    except la.LinAlgError:
        # Round-off can make a nearly singular system indefinite.
        return la.lstsq(matrix, rhs)[0]


def _ridge_shapes(W, x_offset, y_offset, single_target, dtype):
    """Turn (n_features, n_targets) weights into Ridge's ``coef_``, ``intercept_``."""
    W = np.asarray(W, dtype=np.float64)
    intercept = y_offset.astype(np.float64) - x_offset.astype(np.float64) @ W
    coef = W.T.astype(dtype)
    intercept = intercept.astype(dtype)
    if single_target:
        return coef[0], intercept[0]
    return coef, intercept


def _as_2d(y, dtype):
    y = np.asarray(y, dtype=dtype)
    return y[:, None] if y.ndim == 1 else y


def _weights(sample_weight, n_samples, dtype):
    if sample_weight is None:
        return np.ones(n_samples, dtype=dtype)
    return np.asarray(sample_weight, dtype=dtype).reshape(n_samples)
