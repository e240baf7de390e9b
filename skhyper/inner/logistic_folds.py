"""All the folds of logistic-regression cross-validation, solved in lockstep.

:class:`~skhyper.inner.logistic.LogisticFoldProblem` solves one fold at a
time; :class:`LogisticFolds` solves every fold together on one copy of ``X``
(see :mod:`skhyper.inner._logistic_lockstep`), which shares each pass over the
data between the folds and one Hessian preconditioner between them all.
"""

from functools import partial

import numpy as np
import torch

from ..tuning import FoldResult
from ..utils import resolve_device, to_numpy
from ._lockstep_solvers import batched_cg, lockstep_newton
from ._logistic_lockstep import LockstepObjective, predict_proba_from_folds
from ._logistic_solvers import cholesky_factor
from .logistic import _as_theta, _predicted, _split

__all__ = ["LogisticFolds"]

# Float32 Hessian-vector products are accurate to about 1e-6 relative: they
# serve the hypergradient's linear systems down to this tolerance.
LOW_PRECISION_TOL = 1e-5


class LogisticFolds:
    """Every cross-validation fold of L2-penalised logistic regression.

    Implements the fold-set protocol of :func:`skhyper.tuning.tune`
    (``initial_states`` and ``evaluate_all``) with ``θ = log C``: each
    evaluation solves every fold's training problem from its previous
    solution, by Newton's method with shared passes over ``X``, and returns
    each fold's validation log loss and its gradient with respect to ``θ``.
    The objectives, the hypergradient and the first-order correction of the
    loss are those of :class:`~skhyper.inner.logistic.LogisticFoldProblem`
    with ``hypergrad="cg"``.

    Parameters
    ----------
    X : {ndarray, sparse matrix} of shape (n_samples, n_features)
        All the data.
    y_encoded : ndarray of shape (n_samples,)
        Class indices in ``0 .. n_classes - 1``.
    n_classes : int
        Number of classes; two gives one weight vector, more the softmax.
    splits : list of (train, test) index arrays
        The folds.
    fit_weight : ndarray of shape (n_samples,), default=None
        Weights of the training losses (class weights folded in).
    val_weight : ndarray of shape (n_samples,), default=None
        Weights of the validation losses.
    fit_intercept : bool, default=True
        Fit an unpenalised intercept.
    per_feature : bool, default=False
        One C per feature instead of one in all.
    low_precision : bool, default=None
        Float32 Hessian-vector products (see
        :class:`~skhyper.inner._logistic_lockstep.LockstepObjective`);
        ``None`` means with one C only: one C per feature asks L-BFGS-B for
        many accurate derivatives, which float32 products would blur at 1e-6.
    inner_tol : float, default=1e-8
        Gradient tolerance (largest entry) of each fold's mean-scaled loss.
    inner_max_iter : int, default=500
        Newton iterations at most per evaluation.
    linsys_tol : float, default=1e-8
        Relative residual tolerance of the hypergradient's linear systems.
    linsys_max_iter : int, default=200
        Conjugate-gradient iterations at most of those systems.
    device : str, default="auto"
        Torch device, see :func:`skhyper.utils.resolve_device`.
    warm_start : dict, default=None
        The state :func:`~skhyper.inner.logistic.fit_logistic` returns on all
        the data: its weights start every fold and its ``data_hessian``
        becomes the first preconditioner.

    Notes
    -----
    Newton's directions and the linear systems ``H_f v_f = ∇E_f`` are solved
    by conjugate gradient preconditioned by one Cholesky factor for all the
    folds: of ``H̄ + diag(μ̄)``, with ``H̄`` the mean of the folds' data
    Hessians at some earlier point and ``μ̄`` their mean penalty at the
    current ``θ``, so that a new C costs a factorisation, not a Hessian. The
    mean Hessian costs as much as one fold's, since each of its blocks is
    ``X̃ᵀ diag(c) X̃`` with ``c`` averaged over the folds; it is formed at
    the start fit's solution, and again only when a Newton direction has
    needed many conjugate-gradient steps.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.model_selection import StratifiedKFold
    >>> from skhyper.inner.logistic_folds import LogisticFolds
    >>> rng = np.random.RandomState(0)
    >>> X = rng.randn(90, 4)
    >>> y = (X[:, 0] + rng.randn(90) > 0).astype(int)
    >>> splits = list(StratifiedKFold(3).split(X, y))
    >>> folds = LogisticFolds(X, y, 2, splits, device="cpu")
    >>> results = folds.evaluate_all(np.array([0.0]), folds.initial_states())
    >>> len(results), results[0].grad.shape
    (3, (1,))
    """

    def __init__(
        self,
        X,
        y_encoded,
        n_classes,
        splits,
        *,
        fit_weight=None,
        val_weight=None,
        fit_intercept=True,
        per_feature=False,
        low_precision=None,
        inner_tol=1e-8,
        inner_max_iter=500,
        linsys_tol=1e-8,
        linsys_max_iter=200,
        device="auto",
        warm_start=None,
    ):
        n_samples = X.shape[0]
        ones = np.ones(n_samples)
        fit_weight = ones if fit_weight is None else np.asarray(fit_weight, float)
        val_weight = ones if val_weight is None else np.asarray(val_weight, float)
        splits = [(np.asarray(train), np.asarray(test)) for train, test in splits]
        _check_folds(splits, y_encoded, fit_weight, val_weight, n_classes)
        self.objective = LockstepObjective(
            X,
            y_encoded,
            n_classes,
            splits,
            fit_weight,
            val_weight,
            fit_intercept,
            resolve_device(device),
            low_precision=not per_feature if low_precision is None else low_precision,
        )
        self.per_feature = bool(per_feature)
        self.inner_tol = float(inner_tol)
        self.inner_max_iter = int(inner_max_iter)
        self.linsys_tol = float(linsys_tol)
        self.linsys_max_iter = int(linsys_max_iter)
        self.warm_start = warm_start
        reference = None if warm_start is None else warm_start.get("data_hessian")
        self._reference = reference
        # (key, Cholesky factor, its float32 copy) of the last use
        self._factor = (None, None, None)

    @property
    def n_folds(self):
        return self.objective.n_folds

    @property
    def n_hyperparameters(self):
        """One, or ``n_features`` with ``per_feature``."""
        return self.objective.data.n_features if self.per_feature else 1

    def initial_states(self):
        """One state per fold: the warm start's weights (or zeros), no ``v``."""
        W = to_numpy(self.objective.data.zeros())
        if self.warm_start is not None:
            W = np.array(self.warm_start["W"], dtype=np.float64)
        return [{"W": W.copy(), "v": None} for _ in range(self.n_folds)]

    def evaluate_all(self, theta, states):
        """Every fold's validation loss and its gradient in ``θ = log C``.

        Parameters
        ----------
        theta : ndarray of shape (n_hyperparameters,)
        states : list of dict
            From :meth:`initial_states` or a previous :meth:`evaluate_all`.

        Returns
        -------
        results : list of FoldResult
            One per fold, in the order of ``splits``.
        """
        objective = self.objective
        device = objective.data.device
        theta = _as_theta(theta, objective.data.n_features).to(device)
        if theta.numel() != self.n_hyperparameters:
            raise ValueError(
                f"expected {self.n_hyperparameters} values of log C, got "
                f"{theta.numel()}"
            )
        W0 = torch.stack([_predicted(theta, s, "W", device) for s in states])
        if "theta" in states[0] and "previous" not in states[0]:
            W0 = self._tangent_step(objective, theta, states, W0)

        # Step 1: every fold's training problem, from the predicted solutions.
        solution = self._newton(objective, theta, W0, self.inner_tol)

        # Step 2: the linear systems H_f v_f = ∇E_f, from the predicted v_f.
        low = objective.low_precision and self.linsys_tol >= LOW_PRECISION_TOL
        losses, rhs = objective.validation(solution.decision, solution.proba, low)
        v0 = [_predicted(theta, s, "v", device) for s in states]
        v, _, _, solved = batched_cg(
            objective.hessian_product(theta, solution.proba, low=low),
            rhs,
            self._preconditioner(objective, theta, low),
            rtol=self.linsys_tol,
            max_iter=self.linsys_max_iter,
            x0=None if any(x is None for x in v0) else torch.stack(v0),
        )

        # Step 3: ∂E_f/∂θ_j = μ_fj Σ_k W_kj v_kj, and E_f corrected to first
        # order for the inexact W_f (see LogisticFoldProblem's Notes).
        n_features = objective.data.n_features
        products = (solution.W * v)[:, :, :n_features].sum(dim=1)
        grads = objective.penalty_scale(theta)[:, 0, :] * products
        if not self.per_feature:
            grads = grads.sum(dim=1, keepdim=True)
        corrected = losses - (v * solution.gradient).flatten(1).sum(dim=1)
        # The correction holds near the minimiser only: not after a solve that
        # stopped early, and never below zero, which no log loss can be.
        valid = solution.converged & (corrected >= 0)
        losses = torch.where(valid, corrected, losses)
        return self._results(theta, states, solution, v, losses, grads, solved)

    def _tangent_step(self, objective, theta, states, W):
        """``W`` moved along an approximate tangent ``dW/dθ`` to ``theta``.

        With one previous point there is no secant; the tangent is
        ``H⁻¹(μ ∘ W)`` per unit of ``θ`` (``μ`` the penalty, zero on the
        intercept), and the preconditioner stands in for ``H⁻¹``.
        """
        previous = torch.as_tensor(states[0]["theta"], device=theta.device)
        if self._reference is None or previous.shape != theta.shape:
            return W
        n_features = objective.data.n_features
        change = torch.zeros_like(W)
        change[:, :, :n_features] = (
            objective.penalty_scale(previous)
            * (theta - previous)
            * W[:, :, :n_features]
        )
        return W + self._preconditioner(objective, theta)(change)

    def start_from(self, W):
        """Start every fold from the weights ``W`` (those of
        :meth:`fit_whole`, say) rather than from the warm start or zeros."""
        self.warm_start = {**(self.warm_start or {}), "W": np.asarray(W)}

    def fit_whole(self, theta, W0=None, tol=None, low=True, prepare=False):
        """Fit the model on all the data (every row, the fit weights) at
        ``θ``, by the folds' Newton solver and preconditioner.

        Parameters
        ----------
        theta : ndarray of shape (n_hyperparameters,)
        W0 : ndarray, default=None
            Starting weights (zeros when ``None``).
        tol : float, default=None
            Gradient tolerance; ``inner_tol`` when ``None``.
        low : bool, default=True
            Newton directions from float32 products. ``False`` gives
            quadratic convergence to the end and one more Newton step once
            the tolerance is met, for a final model that sits well inside it
            even when the Hessian is nearly singular (very large C).
        prepare : bool, default=False
            Form the preconditioner's Hessian again at the solution, for
            folds about to start from it (the one formed on the way, from
            ``W0``, suits them less).

        Returns
        -------
        coef, intercept : ndarray
            In LogisticRegression's shapes.
        W : ndarray
            The weights, a warm start for :meth:`initial_states`.
        converged : bool
        """
        whole = self.objective.whole()
        device = whole.data.device
        theta = _as_theta(theta, whole.data.n_features).to(device)
        start = whole.zeros() if W0 is None else torch.as_tensor(W0, device=device)
        solution = self._newton(
            whole,
            theta,
            start.reshape(whole.shape),
            self.inner_tol if tol is None else tol,
            low=low,
        )
        converged = bool(solution.converged[0])
        if not low:
            solution = self._newton(whole, theta, solution.W, 0.0, low=False, steps=1)
        if prepare:
            self._refresh(whole, solution.decision, solution.proba)
        W = solution.W[0]
        coef, intercept = _split(whole.data, W)
        return coef, intercept, to_numpy(W), converged

    def _newton(self, objective, theta, W0, tol, low=True, steps=None):
        """Newton on ``objective``'s folds from ``W0``, forming the reference
        Hessian first if there is none and again if the solve was slow."""
        if self._reference is None:
            self._refresh(objective, objective.decision(W0))
        low = low and objective.low_precision
        solution = lockstep_newton(
            objective,
            theta,
            W0,
            self._preconditioner(objective, theta, low),
            tol=tol,
            max_iter=self.inner_max_iter if steps is None else steps,
            slow_after=self._slow_after(),
            cg_max_iter=4 * self._slow_after() + 10,
            low=low,
            refresh=partial(self._refreshed, objective, theta, low),
        )
        return solution

    def _refreshed(self, objective, theta, low, proba):
        """A preconditioner from the mean Hessian formed at ``proba``."""
        self._refresh(objective, None, proba)
        return self._preconditioner(objective, theta, low)

    def _results(self, theta, states, solution, v, losses, grads, solved):
        theta_numpy = to_numpy(theta)
        losses, grads = to_numpy(losses), to_numpy(grads)
        W, v = to_numpy(solution.W), to_numpy(v)
        converged = to_numpy(solution.converged)
        solved = to_numpy(solved)
        results = []
        for f, state in enumerate(states):
            new_state = {"W": W[f], "v": v[f], "theta": theta_numpy}
            if "theta" in state:
                new_state["previous"] = {k: state[k] for k in ("theta", "W", "v")}
            results.append(
                FoldResult(
                    loss=float(losses[f]),
                    grad=grads[f],
                    state=new_state,
                    inner_converged=bool(converged[f]),
                    linsys_converged=bool(solved[f]),
                )
            )
        return results

    def _slow_after(self):
        """Products per Newton direction beyond which the mean Hessian is
        formed again (before the next direction).

        It costs about ``(K + 1) d / 4`` products of all the folds
        (``K(K+1)/2`` blocks of ``n d²`` against ``2 n d K`` per fold), but
        a fresh one shortens the solves only so much, since it is a mean and
        the folds differ from it; measured on breast cancer, digits and
        make_classification data, refreshing past twelve products (or a
        sixteenth of that cost, whichever is more) was fastest overall. The
        hypergradient's systems, solved more tightly than Newton's
        directions, never trigger it: on digits they need 10 to 25 products
        whatever the reference, and refreshing after them cost 10% more.
        """
        data = self.objective.data
        return max(12, (data.n_outputs + 1) * data.n_columns // (16 * self.n_folds))

    def _refresh(self, objective, decision, proba=None):
        """Form the mean data Hessian of ``objective``'s folds at their
        current decision values."""
        if proba is None:
            proba = predict_proba_from_folds(decision)
        self._reference = objective.mean_data_hessian(proba)
        self._factor = (None, None, None)

    def _preconditioner(self, objective, theta, low=False):
        """``R -> M⁻¹R`` for a batch, ``M`` the reference plus the mean
        penalty of ``objective``'s folds at ``theta``; with ``low``, the
        triangular solves run in float32 (for the float32 products)."""
        scale = objective.penalty_scale(theta).mean(dim=0)[0]
        key = (tuple(to_numpy(theta).tolist()), objective.n_folds)
        if self._factor[0] != key:
            factor = self._factor_with(scale)
            self._factor = (key, factor, factor.to(torch.float32))
        factor = self._factor[2] if low else self._factor[1]

        def precondition(R):
            flat = R.reshape(R.shape[0], -1).T.to(factor.dtype)
            half = torch.linalg.solve_triangular(factor, flat, upper=False)
            solved = torch.linalg.solve_triangular(factor.T, half, upper=True)
            return solved.T.reshape(R.shape).to(R.dtype)

        return precondition

    def _factor_with(self, scale):
        """Cholesky factor of the reference plus the penalty ``scale`` (one
        value per feature, or one for all) and the symmetry term."""
        data = self.objective.data
        return cholesky_factor(data.add_penalty_hessian(self._reference, None, scale))

    def coefficients(self, state):
        """``(coef, intercept)`` of a fold's state, in LogisticRegression's
        shapes."""
        W = torch.as_tensor(state["W"], device=self.objective.data.device)
        return _split(self.objective.data, W)


def _check_folds(splits, y_encoded, fit_weight, val_weight, n_classes):
    """Refuse a training part missing a class or a part of zero weight."""
    for index, (train, test) in enumerate(splits):
        totals = np.bincount(
            y_encoded[train], weights=fit_weight[train], minlength=n_classes
        )
        missing = np.flatnonzero(totals <= 0)
        if missing.size:
            raise ValueError(
                f"the training part of fold {index} has no sample of class index "
                f"{missing[0]} with a positive weight; logistic regression needs "
                "every class"
            )
        if not val_weight[test].sum() > 0:
            raise ValueError(f"the validation part of fold {index} has zero weight")
