"""Warm-started solvers for the logistic training objective.

Both solvers take a :class:`~skhyper.inner._logistic_objective.LogisticObjective`
and stop when the largest gradient entry of the mean-scaled objective is at
most ``tol``.

The Newton solver does not form a Hessian at every step: its directions
come from conjugate gradient on exact Hessian-vector products, preconditioned
by the Cholesky factor of a *reference* Hessian formed at some earlier point
(possibly at an earlier outer iteration, or on all the data). Forming a
Hessian costs as much as many Hessian-vector products (:func:`refresh_limit`),
so the reference is refreshed only once conjugate gradient has become slow.
"""

from dataclasses import dataclass

import torch

from ..exceptions import NonFiniteError
from ..hypergrad import conjugate_gradient

__all__ = [
    "InnerSolution",
    "cholesky_factor",
    "lbfgs_solve",
    "newton_cg_solve",
    "preconditioned_cg",
]


@dataclass
class InnerSolution:
    """What an inner solve returns.

    Attributes
    ----------
    W : torch.Tensor
        The weights reached.
    n_iter : int
        Newton or L-BFGS iterations used.
    converged : bool
        Whether the gradient met the tolerance.
    factor : torch.Tensor or None
        Lower Cholesky factor of the reference Hessian (Newton only), to
        precondition the next solves.
    stale : bool
        Whether the last conjugate-gradient solve found the reference slow,
        so that it should be refreshed before its next use.
    decision : torch.Tensor or None
        The decision values ``X̃W`` at ``W`` (Newton only).
    gradient : torch.Tensor or None
        The training gradient ``∇_Wℓ`` at ``W``, what remains of the
        optimality condition.
    data_hessian : torch.Tensor or None
        The Hessian of the data terms behind ``factor``, when this solve
        formed it: a reference that other penalties can reuse.
    """

    W: torch.Tensor
    n_iter: int
    converged: bool
    factor: object = None
    stale: bool = False
    decision: object = None
    gradient: object = None
    data_hessian: object = None


def _check_finite(value, grad):
    if not (bool(torch.isfinite(value)) and bool(torch.isfinite(grad).all())):
        raise NonFiniteError(
            "non-finite value in the logistic training loss or its gradient "
            "(the inner weights w)"
        )


def cholesky_factor(H):
    """Lower Cholesky factor of ``H``, adding the least diagonal shift needed.

    The objective is strictly convex, so a failure is round-off on a nearly
    singular Hessian (very large C); a shift of 1e-12 relative to the mean
    diagonal, grown tenfold per failure, restores positive definiteness.
    """
    factor, info = torch.linalg.cholesky_ex(H)
    if int(info) == 0:
        return factor
    if not bool(torch.isfinite(H).all()):
        raise NonFiniteError("the Hessian of the logistic training loss is not finite")
    scale = float(H.diagonal().abs().mean()) or 1.0
    shift = 1e-12 * scale
    identity = torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
    while True:
        factor, info = torch.linalg.cholesky_ex(H + shift * identity)
        if int(info) == 0:
            return factor
        shift *= 10.0


def refresh_limit(objective):
    """CG iterations in one solve beyond which the reference Hessian is redone.

    A Hessian takes ``K(K+1)/2`` Gram matrices ``n d²`` (``K`` weight rows,
    ``d`` columns) against ``4 n d K`` for a Hessian-vector product, so it is
    worth about ``(K + 1) d / 8`` products. Measured on breast cancer, digits
    and make_classification data (with the fold solves at tolerance 1e-6 and
    their secant warm starts), refreshing once a solve needs an eighth of
    that cost the least (passes over the data and Gram matrices weighted by
    their measured times: 8% less than a quarter, 23% less than a twelfth
    on digits): a fresh factor also shortens the solves that follow.
    """
    return max(2, (objective.n_outputs + 1) * objective.n_columns // 64)


def preconditioned_cg(matvec, rhs, factor, *, tol, max_iter, x0=None):
    """Solve ``H x = rhs`` by conjugate gradient preconditioned by ``L Lᵀ``.

    The engine's :func:`~skhyper.hypergrad.conjugate_gradient` runs on the
    symmetric system ``(L⁻¹ H L⁻ᵀ) u = L⁻¹ rhs`` and ``x = L⁻ᵀ u``; with
    ``factor=None`` it runs on ``H`` itself. ``L Lᵀ`` equal to ``H`` makes the
    system the identity, solved in one iteration.

    Returns
    -------
    x : torch.Tensor
        Flat solution.
    info : SolveInfo
        The engine's diagnostics (residual of the preconditioned system).
    """
    rhs = rhs.reshape(-1)
    x0 = None if x0 is None else x0.reshape(-1)
    if factor is None:
        return conjugate_gradient(
            matvec, rhs, x0=x0, tol=tol, max_iter=max_iter, warn=False
        )

    def lower_solve(x):
        return torch.linalg.solve_triangular(factor, x[:, None], upper=False)[:, 0]

    def upper_solve(x):
        return torch.linalg.solve_triangular(factor.T, x[:, None], upper=True)[:, 0]

    def whitened(u):
        return lower_solve(matvec(upper_solve(u)))

    start = None if x0 is None else factor.T @ x0
    u, info = conjugate_gradient(
        whitened, lower_solve(rhs), x0=start, tol=tol, max_iter=max_iter, warn=False
    )
    return upper_solve(u), info


def _precondition(r, factor):
    if factor is None:
        return r
    # Two triangular solves: on the CPU, several times faster than
    # torch.cholesky_solve for one right-hand side.
    half = torch.linalg.solve_triangular(factor, r.reshape(-1, 1), upper=False)
    solved = torch.linalg.solve_triangular(factor.T, half, upper=True)
    return solved.reshape(r.shape)


def _newton_direction(apply, grad, factor, *, tol, max_iter):
    """Truncated preconditioned CG on ``H d = -∇ℓ``.

    Returns the direction ``d``, its decision values ``X̃d`` and the
    iterations used. Not the engine's solver: a Newton direction needs only
    the accuracy of the forcing term, not the engine's confirmation on the
    true residual, and the decision values gathered from the products spare
    the line search a pass over ``X``.
    """
    direction = torch.zeros_like(grad)
    decision = None
    residual = -grad
    preconditioned = _precondition(residual, factor)
    search = preconditioned
    rz = float((residual * preconditioned).sum())
    target = tol * rz**0.5  # on the preconditioned norm of the residual
    for iteration in range(1, max_iter + 1):
        product_value, product_decision = apply(search)
        curvature = float((search * product_value).sum())
        if not curvature > 0:
            return direction, decision, iteration
        step = rz / curvature
        direction = direction + step * search
        change = step * product_decision
        decision = change if decision is None else decision + change
        residual = residual - step * product_value
        preconditioned = _precondition(residual, factor)
        rz_new = float((residual * preconditioned).sum())
        if rz_new**0.5 <= target:
            return direction, decision, iteration
        search = preconditioned + (rz_new / rz) * search
        rz = rz_new
    return direction, decision, max_iter


def _armijo_step(objective, theta, W, Z, value, grad, direction, decision):
    """Backtracking line search; returns the accepted point and its decision
    values, or ``(None, None)``."""
    slope = float((grad * direction).sum())
    # Near the optimum the decrease is below round-off of the loss value, so
    # the test allows a few ulps of slack rather than rejecting Newton steps.
    slack = 1e-13 * (1.0 + abs(float(value)))
    step = 1.0
    for _ in range(40):
        candidate = W + step * direction
        candidate_decision = Z + step * decision
        trial = float(
            objective.value_from_decision(candidate, theta, candidate_decision)
        )
        if trial <= float(value) + 1e-4 * step * slope + slack:
            return candidate, candidate_decision
        step *= 0.5
    return None, None


def newton_cg_solve(objective, theta, W0, factor, *, tol, max_iter, stale=False):
    """Inexact Newton with preconditioned conjugate-gradient directions.

    Parameters
    ----------
    objective : LogisticObjective
    theta : torch.Tensor
        ``log C``, one value or one per feature.
    W0 : torch.Tensor
        Warm start.
    factor : torch.Tensor or None
        Cholesky factor of a reference Hessian; ``None`` forms one at ``W0``.
    tol : float
        Gradient tolerance (largest absolute entry).
    max_iter : int
        Newton iterations at most.
    stale : bool, default=False
        Refresh ``factor`` before its first use.

    Returns
    -------
    solution : InnerSolution

    Notes
    -----
    Each step solves ``H(W) d = -∇ℓ`` to the relative accuracy
    ``min(0.1, √||∇ℓ||_∞)`` (a forcing term that keeps the convergence
    superlinear), then backtracks along ``d`` until the Armijo condition
    holds. A direction that needed more than :func:`refresh_limit` products
    refreshes the reference Hessian at the current point. The decision values
    ``X̃W`` are updated along with ``W``, so that a Newton step costs one pass
    over ``X`` besides its Hessian-vector products.
    """
    W = W0.detach().clone()
    Z = objective.decision(W)
    limit = refresh_limit(objective)
    stale = stale or factor is None
    data_hessian = None
    for n_iter in range(max_iter + 1):
        value, grad, Z = objective.value_and_gradient(W, theta, Z)
        _check_finite(value, grad)
        size = float(objective.gradient_size(grad))
        if size <= tol:
            return InnerSolution(W, n_iter, True, factor, stale, Z, grad, data_hessian)
        if n_iter == max_iter:
            break
        if stale:
            data_hessian = objective.data_hessian(W, Z)
            factor = cholesky_factor(objective.add_penalty_hessian(data_hessian, theta))
        direction, decision, n_products = _newton_direction(
            objective.hessian_product(W, theta, Z),
            grad,
            factor,
            tol=min(0.1, size**0.5),
            max_iter=4 * limit + 10,
        )
        stale = n_products > limit
        W_next, Z_next = _armijo_step(
            objective, theta, W, Z, value, grad, direction, decision
        )
        if W_next is None:
            break
        W, Z = W_next, Z_next
    return InnerSolution(W, n_iter, False, factor, stale, Z, grad, data_hessian)


def lbfgs_solve(objective, theta, W0, *, tol, max_iter, history_size=20):
    """L-BFGS with a strong-Wolfe line search (``torch.optim.LBFGS``).

    Parameters
    ----------
    objective, theta, W0, tol, max_iter
        As in :func:`newton_cg_solve`; ``max_iter`` counts L-BFGS iterations.
    history_size : int, default=20
        Number of curvature pairs kept.

    Returns
    -------
    solution : InnerSolution
        Without a Hessian factor.
    """
    W = W0.detach().clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [W],
        lr=1.0,
        max_iter=max_iter,
        max_eval=2 * max_iter,
        tolerance_grad=tol,
        tolerance_change=0.0,
        history_size=history_size,
        line_search_fn="strong_wolfe",
    )

    def closure():
        value, grad, _ = objective.value_and_gradient(W.detach(), theta)
        _check_finite(value, grad)
        W.grad = grad
        return value

    optimizer.step(closure)
    n_iter = int(optimizer.state[optimizer._params[0]].get("n_iter", 0))
    W = W.detach()
    value, grad, _ = objective.value_and_gradient(W, theta)
    _check_finite(value, grad)
    converged = float(objective.gradient_size(grad)) <= tol
    return InnerSolution(W, n_iter, converged, gradient=grad)
