"""L2-penalised logistic regression as an inner problem: binary and multinomial.

The training objective on one fold, in scikit-learn's scaling, is

    C Σ_i s_i l(y_i, x_i·W + b) + ½ ||W||²

(the intercept ``b`` is not penalised; with one C per feature the penalty is
``½ Σ_j ||W_{:,j}||² / C_j``). It is solved in the equivalent mean-scaled form

    ℓ(W, θ) = Σ_i ŝ_i l_i + ½ Σ_j exp(-θ_j) ||W_{:,j}||² / S,

with ``ŝ = s / S``, ``S = Σ_i s_i`` and ``θ = log C``, whose minimiser is the
same but whose gradient has a scale that does not grow with the sample size.
The loss ``l`` is the binomial log loss with one weight vector (two classes)
or the multinomial (softmax) log loss with one row per class.
"""

import numpy as np
import torch

from ..tuning import FoldResult
from ..utils import resolve_device, to_numpy
from ._logistic_hypergrad import engine_hypergradient, implicit_hypergradient
from ._logistic_objective import LogisticObjective, pointwise_log_loss
from ._logistic_solvers import lbfgs_solve, newton_cg_solve

__all__ = ["LogisticFoldProblem", "fit_logistic", "NEWTON_MAX_WEIGHTS"]

# Above this many weights a Hessian and its Cholesky factor cost too much
# memory and time to serve as Newton's preconditioner; L-BFGS takes over.
NEWTON_MAX_WEIGHTS = 2000

HYPERGRAD_METHODS = ("cg", "fp", "gmres", "exact", "itd")
SOLVERS = ("auto", "newton", "lbfgs")


def _as_theta(theta, n_features):
    """``θ = log C`` as a flat float64 tensor of 1 or ``n_features`` values."""
    theta = torch.as_tensor(np.asarray(theta, dtype=np.float64)).reshape(-1)
    if theta.numel() not in (1, n_features):
        raise ValueError(
            f"expected 1 or {n_features} values of log C, got {theta.numel()}"
        )
    return theta


def _use_newton(objective, solver):
    """Newton for a moderate number of weights, else L-BFGS."""
    if solver == "auto":
        return objective.n_weights <= NEWTON_MAX_WEIGHTS
    return solver == "newton"


def _split(objective, W):
    """Return numpy ``(coef, intercept)`` in LogisticRegression's shapes."""
    coef = to_numpy(W[:, : objective.n_features]).copy()
    if not objective.fit_intercept:
        return coef, np.zeros(objective.n_outputs)
    intercept = to_numpy(W[:, objective.n_features]).copy()
    if objective.n_outputs > 1:
        intercept -= intercept.mean()
    return coef, intercept


class LogisticFoldProblem:
    """One cross-validation fold of L2-penalised logistic regression.

    Implements the fold-problem protocol of :func:`skhyper.tuning.tune` with
    ``θ = log C``: each evaluation solves the training problem from the
    previous solution and returns the validation log loss and its gradient
    with respect to ``θ``.

    Parameters
    ----------
    X_train, X_val : {ndarray, sparse matrix} of shape (n, n_features)
        Training and validation parts of the fold.
    y_train_encoded, y_val_encoded : ndarray of shape (n,)
        Class indices in ``0 .. n_classes - 1``.
    n_classes : int
        Number of classes; two gives one weight vector, more the softmax.
    sample_weight_train, sample_weight_val : ndarray, default=None
        Per-sample weights (class weights already folded in).
    fit_intercept : bool, default=True
        Fit an unpenalised intercept.
    per_feature : bool, default=False
        One C per feature instead of one in all.
    hypergrad : {"cg", "fp", "gmres", "exact", "itd"}, default="cg"
        How the linear system ``H v = ∇_W E`` is solved: the engine's
        conjugate gradient on exact Hessian-vector products (preconditioned
        by the Newton solver's Cholesky factor, when there is one), a direct
        solve, or the engine's fixed-point, GMRES or ITD on a fixed-point map
        (see Notes).
    inner_tol : float, default=1e-8
        Gradient tolerance (largest entry) of the mean-scaled training loss.
    inner_max_iter : int, default=500
        Newton or L-BFGS iterations at most per solve.
    linsys_tol : float, default=1e-8
        Relative residual tolerance of the linear system.
    linsys_max_iter : int, default=200
        Iterations at most of the linear system (steps for ITD).
    device : str, default="auto"
        Torch device, see :func:`skhyper.utils.resolve_device`.
    solver : {"auto", "newton", "lbfgs"}, default="auto"
        Inner solver; ``"auto"`` takes Newton for at most
        ``NEWTON_MAX_WEIGHTS`` weights, L-BFGS otherwise.
    warm_start : dict, default=None
        The first evaluation's starting state instead of zero weights: for
        example the state :func:`fit_logistic` returns for the whole data at
        the first C, whose weights and Hessian factor suit every fold.

    Notes
    -----
    The fold's training objective is ``ℓ(W, θ) = Σ_i ŝ_i l_i + ½ Σ_j
    exp(-θ_j) ||W_{:,j}||² / S`` (module docstring) and its validation loss
    ``E(W) = Σ_i ŝ'_i l(y'_i, x'_i W)``, the weighted mean log loss. By the
    implicit function theorem, at the minimiser ``W(θ)``,

        ∂E/∂θ_j = -(∂_θ_j ∇_Wℓ)ᵀ v = exp(-θ_j) / S Σ_k W_kj v_kj,
        where  H v = ∇_W E,  H = ∇²_W ℓ.

    The Newton solver keeps the Cholesky factor ``L`` of a reference Hessian
    across outer iterations; ``hypergrad="cg"`` solves for ``v`` by the
    engine's conjugate gradient on ``L⁻¹HL⁻ᵀ`` (a few iterations when the
    reference is recent). The engine's other methods use the map
    ``Φ(U, θ) = U - L⁻¹∇_Wℓ(L⁻ᵀU, θ)`` with ``L`` refreshed at the solution
    (so that ``∂_UΦ`` is nearly zero), or, after L-BFGS, the gradient step
    ``Φ(W, θ) = W - ∇_Wℓ / L`` with ``L`` a bound on the Hessian.

    Examples
    --------
    >>> import numpy as np
    >>> from skhyper.inner.logistic import LogisticFoldProblem
    >>> rng = np.random.RandomState(0)
    >>> X = rng.randn(80, 4)
    >>> y = (X[:, 0] + rng.randn(80) > 0).astype(int)
    >>> fold = LogisticFoldProblem(X[:60], y[:60], X[60:], y[60:], 2, device="cpu")
    >>> result = fold.evaluate(np.array([0.0]), fold.initial_state())
    >>> result.grad.shape, bool(result.inner_converged)
    ((1,), True)
    """

    def __init__(
        self,
        X_train,
        y_train_encoded,
        X_val,
        y_val_encoded,
        n_classes,
        *,
        sample_weight_train=None,
        sample_weight_val=None,
        fit_intercept=True,
        per_feature=False,
        hypergrad="cg",
        inner_tol=1e-8,
        inner_max_iter=500,
        linsys_tol=1e-8,
        linsys_max_iter=200,
        device="auto",
        solver="auto",
        warm_start=None,
    ):
        if hypergrad not in HYPERGRAD_METHODS:
            raise ValueError(
                f"hypergrad must be one of {HYPERGRAD_METHODS}, got {hypergrad!r}"
            )
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
        _check_classes_present(y_train_encoded, sample_weight_train, n_classes)
        device = resolve_device(device)
        self.objective = LogisticObjective(
            X_train,
            y_train_encoded,
            n_classes,
            sample_weight_train,
            fit_intercept,
            device,
        )
        self.validation = LogisticObjective(
            X_val, y_val_encoded, n_classes, sample_weight_val, fit_intercept, device
        )
        self.newton = _use_newton(self.objective, solver)
        self.per_feature = bool(per_feature)
        self.hypergrad = hypergrad
        self.inner_tol = float(inner_tol)
        self.inner_max_iter = int(inner_max_iter)
        self.linsys_tol = float(linsys_tol)
        self.linsys_max_iter = int(linsys_max_iter)
        self.warm_start = warm_start
        self._curvature = None

    @property
    def n_hyperparameters(self):
        """One, or ``n_features`` with ``per_feature``."""
        return self.objective.n_features if self.per_feature else 1

    def initial_state(self):
        """``warm_start``, or zero weights and no reference Hessian."""
        if self.warm_start is not None:
            return {
                "W": np.array(self.warm_start["W"], dtype=np.float64),
                "v": None,
                "factor": self.warm_start.get("factor"),
                "stale": False,
            }
        return {"W": to_numpy(self.objective.zeros()), "v": None, "factor": None}

    def validation_loss(self, W, theta):
        """``E(W)``: the weighted mean log loss on the validation part."""
        Z = self.validation.decision(W)
        losses = pointwise_log_loss(Z, self.validation.target)
        return torch.dot(self.validation.weight, losses)

    def evaluate(self, theta, state):
        """Validation loss and its gradient with respect to ``θ = log C``.

        Parameters
        ----------
        theta : ndarray of shape (n_hyperparameters,)
        state : dict
            From :meth:`initial_state` or a previous :meth:`evaluate`.

        Returns
        -------
        result : FoldResult
        """
        objective = self.objective
        theta = _as_theta(theta, objective.n_features).to(objective.device)
        if theta.numel() != self.n_hyperparameters:
            raise ValueError(
                f"expected {self.n_hyperparameters} values of log C, got "
                f"{theta.numel()}"
            )
        W0 = _predicted(theta, state, "W", objective.device)

        # Step 1: the inner problem, warm-started from the previous solutions.
        if self.newton:
            solution = newton_cg_solve(
                objective,
                theta,
                W0,
                state["factor"],
                tol=self.inner_tol,
                max_iter=self.inner_max_iter,
                stale=state.get("stale", False),
            )
        else:
            solution = lbfgs_solve(
                objective, theta, W0, tol=self.inner_tol, max_iter=self.inner_max_iter
            )

        # Steps 2 and 3: the linear system H v = ∇_W E, then the gradient.
        if self.hypergrad == "cg" or (self.hypergrad == "exact" and self.newton):
            loss, grad, v, linsys_converged = self._implicit_gradient(
                solution, theta, _predicted(theta, state, "v", objective.device)
            )
        else:
            loss, grad, v, linsys_converged = self._engine_gradient(solution, theta)
        new_state = _state(solution, v)
        new_state["theta"] = to_numpy(theta)
        if "theta" in state:
            new_state["previous"] = {key: state[key] for key in ("theta", "W", "v")}
        return FoldResult(
            loss=loss,
            grad=grad,
            state=new_state,
            inner_converged=solution.converged,
            linsys_converged=linsys_converged,
        )

    def _implicit_gradient(self, solution, theta, v0):
        return implicit_hypergradient(
            self.objective,
            self.validation,
            solution,
            theta,
            v0,
            per_feature=self.per_feature,
            direct=self.hypergrad == "exact",
            tol=self.linsys_tol,
            max_iter=self.linsys_max_iter,
        )

    def _engine_gradient(self, solution, theta):
        lipschitz = None
        if not self.newton:
            if self._curvature is None:
                self._curvature = self.objective.curvature_bound()
            scale = float(self.objective.penalty_scale(theta).max())
            lipschitz = self._curvature + scale
        return engine_hypergradient(
            self.objective,
            self.validation_loss,
            solution,
            theta,
            lipschitz=lipschitz,
            method=self.hypergrad,
            tol=self.linsys_tol,
            max_iter=self.linsys_max_iter,
        )

    def coefficients(self, state):
        """``(coef, intercept)`` of a state, in LogisticRegression's shapes."""
        W = torch.as_tensor(state["W"], device=self.objective.device)
        return _split(self.objective, W)


def _predicted(theta, state, key, device):
    """The warm start of ``state[key]`` (``"W"`` or ``"v"``) at ``theta``: the
    last value, moved along the secant through the last two when there is one
    hyperparameter.

    ``W(θ)`` and ``v(θ)`` are smooth, so ``W_k + r (W_k - W_{k-1})`` with
    ``r = (θ - θ_k) / (θ_k - θ_{k-1})`` is first-order accurate where
    ``W_k`` alone is zeroth-order; ``r`` is kept in ``[-1, 2]``, beyond which
    a line through two points is a poor guess of a curve.
    """
    value = state[key]
    if value is None:
        return None
    value = torch.as_tensor(value, device=device)
    previous = state.get("previous")
    if previous is None or theta.numel() != 1 or previous[key] is None:
        return value
    theta_k = float(state["theta"][0])
    span = theta_k - float(previous["theta"][0])
    if abs(span) < 1e-12:
        return value
    ratio = min(2.0, max(-1.0, (float(theta[0]) - theta_k) / span))
    return value + ratio * (value - torch.as_tensor(previous[key], device=device))


def _check_classes_present(y_encoded, sample_weight, n_classes):
    weight = np.ones(len(y_encoded)) if sample_weight is None else sample_weight
    totals = np.bincount(y_encoded, weights=weight, minlength=n_classes)
    missing = np.flatnonzero(totals <= 0)
    if missing.size:
        raise ValueError(
            f"the training data has no sample of class index {missing[0]} with a "
            "positive weight; logistic regression needs every class"
        )


def fit_logistic(
    X,
    y_encoded,
    n_classes,
    C,
    sample_weight=None,
    fit_intercept=True,
    *,
    tol=1e-10,
    max_iter=1000,
    device="auto",
    solver="auto",
    warm_start=None,
    return_state=False,
):
    """Fit L2-penalised logistic regression at a given C, as scikit-learn does.

    Parameters
    ----------
    X : {ndarray, sparse matrix} of shape (n_samples, n_features)
        Training data.
    y_encoded : ndarray of shape (n_samples,)
        Class indices in ``0 .. n_classes - 1``.
    n_classes : int
        Number of classes (two gives a single weight vector).
    C : float or ndarray of shape (n_features,)
        Inverse regularisation strength, one value or one per feature.
    sample_weight : ndarray of shape (n_samples,), default=None
        Per-sample weights (class weights already folded in).
    fit_intercept : bool, default=True
        Whether to fit an unpenalised intercept.
    tol : float, default=1e-10
        Gradient tolerance of the mean-scaled objective.
    max_iter : int, default=1000
        Solver iterations at most.
    device : str, default="auto"
        Torch device, see :func:`skhyper.utils.resolve_device`.
    solver : {"auto", "newton", "lbfgs"}, default="auto"
        Inner solver, as in :class:`LogisticFoldProblem`.
    warm_start : dict, default=None
        A state of :class:`LogisticFoldProblem` (or one returned here) to
        start from: its weights and its reference Hessian factor.
    return_state : bool, default=False
        Also return the solver's state, a warm start for fold problems (their
        ``warm_start``) or for another fit, with ``state["converged"]``
        telling whether the solver met ``tol`` and ``state["data_hessian"]``
        the Hessian of the data terms it formed (``None`` if it formed none).

    Returns
    -------
    coef : ndarray of shape (1, n_features) or (n_classes, n_features)
    intercept : ndarray of shape (1,) or (n_classes,)
    state : dict
        Only with ``return_state=True``.

    Notes
    -----
    Minimises ``C Σ_i s_i l_i + ½ ||W||²`` (``½ Σ_j ||W_{:,j}||² / C_j`` per
    feature), the objective of ``LogisticRegression(C=C)``. The multinomial
    intercept is returned centred (summing to zero), scikit-learn's convention.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> from skhyper.inner.logistic import fit_logistic
    >>> rng = np.random.RandomState(0)
    >>> X = rng.randn(60, 3)
    >>> y = (X[:, 0] + 0.5 * rng.randn(60) > 0).astype(int)
    >>> coef, intercept = fit_logistic(X, y, 2, C=0.5, device="cpu")
    >>> reference = LogisticRegression(C=0.5, tol=1e-10).fit(X, y)
    >>> bool(np.allclose(coef, reference.coef_, atol=1e-6))
    True
    """
    objective = LogisticObjective(
        X, y_encoded, n_classes, sample_weight, fit_intercept, resolve_device(device)
    )
    _check_classes_present(y_encoded, sample_weight, n_classes)
    theta = _as_theta(np.log(np.asarray(C, dtype=np.float64)), objective.n_features)
    theta = theta.to(objective.device)
    W0, factor = objective.zeros(), None
    if warm_start is not None:
        W0 = torch.as_tensor(warm_start["W"], device=objective.device)
        factor = warm_start.get("factor")
    if _use_newton(objective, solver):
        solution = newton_cg_solve(
            objective, theta, W0, factor, tol=tol, max_iter=max_iter
        )
    else:
        solution = lbfgs_solve(objective, theta, W0, tol=tol, max_iter=max_iter)
    coef, intercept = _split(objective, solution.W)
    if not return_state:
        return coef, intercept
    state = _state(solution, None)
    state["converged"] = solution.converged
    state["data_hessian"] = solution.data_hessian
    return coef, intercept, state


def _state(solution, v):
    """The warm-start state of a fold problem after ``solution``."""
    return {
        "W": to_numpy(solution.W),
        "v": v,
        "factor": solution.factor,
        "stale": solution.stale,
    }
