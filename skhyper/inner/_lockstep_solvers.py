"""Newton and conjugate gradient run on every fold at once.

Each fold keeps its own iterates and scalars (step sizes, residual norms,
stopping decisions); only the products with the Hessians are shared, one pass
over ``X`` for all folds. A fold that has stopped takes zero steps while the
others go on. Tensors carry the folds on their first axis.
"""

from dataclasses import dataclass

import torch

__all__ = ["LockstepSolution", "batched_cg", "lockstep_newton"]

# With float32 products, gradients (in the units of the stopping test) are
# computed in float32 while every fold's is at least this large: their
# error, about 1e-7 of the column scale times the decision values, is then a
# few per cent at most, harmless to a Newton direction.
FAR = 1e-4


def _dot(A, B):
    """Per-fold inner products of two batches, shape ``(n_folds,)``."""
    return (A * B).flatten(1).sum(dim=1)


def _per_fold(values, like):
    """Broadcast a ``(n_folds,)`` tensor against a batch shaped like ``like``."""
    return values.reshape((-1,) + (1,) * (like.dim() - 1))


def _per_fold_decision(values):
    """Broadcast a ``(n_folds,)`` tensor against decision values, shaped
    ``(n_samples, n_folds, n_outputs)``."""
    return values[None, :, None]


def batched_cg(apply, rhs, precondition, *, rtol, max_iter, x0=None):
    """Preconditioned conjugate gradient on ``H_f x_f = b_f`` for every fold.

    Parameters
    ----------
    apply : callable
        ``U -> (H U, decision values of U)`` on a batch.
    rhs : torch.Tensor
        The right-hand sides ``b``, folds first.
    precondition : callable
        ``R -> M⁻¹ R`` on a batch, ``M`` symmetric positive definite.
    rtol : torch.Tensor or float
        Per-fold tolerance on the residual in the ``M⁻¹``-norm, relative to
        that of ``b``.
    max_iter : int
        Products at most.
    x0 : torch.Tensor, default=None
        Starting point (costs one product); zero when ``None``.

    Returns
    -------
    x : torch.Tensor
    decision : torch.Tensor or None
        Decision values of ``x``, gathered from the products (``None`` when
        ``x0`` is given).
    n_iter : torch.Tensor
        Products each fold used.
    converged : torch.Tensor of bool
        Which folds met their tolerance.
    """
    n_folds = rhs.shape[0]
    rtol = torch.as_tensor(rtol, dtype=rhs.dtype, device=rhs.device)
    preconditioned = precondition(rhs)
    target = rtol * _dot(rhs, preconditioned).clamp(min=0.0).sqrt()
    if x0 is None:
        x, residual, decision = torch.zeros_like(rhs), rhs.clone(), None
    else:
        product, _ = apply(x0)
        x, residual, decision = x0.clone(), rhs - product, None
        preconditioned = precondition(residual)
    rz = _dot(residual, preconditioned)
    done = rz.clamp(min=0.0).sqrt() <= target
    search = preconditioned
    n_iter = torch.zeros(n_folds, dtype=torch.int64, device=rhs.device)
    for _ in range(max_iter):
        if bool(done.all()):
            break
        product, product_decision = apply(search)
        curvature = _dot(search, product)
        # A fold that has stopped, or found no positive curvature (round-off
        # on a converged system), takes no step.
        moving = ~done & (curvature > 0)
        step = torch.where(moving, rz / torch.where(moving, curvature, 1.0), 0.0)
        x = x + _per_fold(step, x) * search
        if x0 is None:
            change = _per_fold_decision(step) * product_decision
            decision = change if decision is None else decision + change
        residual = residual - _per_fold(step, residual) * product
        n_iter += moving
        preconditioned = precondition(residual)
        rz_new = _dot(residual, preconditioned)
        done = done | ~moving | (rz_new.clamp(min=0.0).sqrt() <= target)
        ratio = torch.where(done, 0.0, rz_new / torch.where(rz > 0, rz, 1.0))
        search = preconditioned + _per_fold(ratio, search) * search
        rz = rz_new
    return x, decision, n_iter, done


@dataclass
class LockstepSolution:
    """What :func:`lockstep_newton` returns.

    Attributes
    ----------
    W : torch.Tensor
        Weights of every fold.
    decision : torch.Tensor
        Their decision values.
    proba : torch.Tensor
        Their probabilities.
    gradient : torch.Tensor
        The training gradients at ``W``.
    converged : torch.Tensor of bool
        Which folds met the tolerance.
    n_iter : int
        Newton iterations.
    """

    W: torch.Tensor
    decision: torch.Tensor
    proba: torch.Tensor
    gradient: torch.Tensor
    converged: torch.Tensor
    n_iter: int


def _armijo_steps(objective, theta, W, Z, values, grads, direction, decision, active):
    """Per-fold backtracking: the largest ``2⁻ʲ`` meeting Armijo's condition
    (zero for inactive folds, or where forty halvings fail). No pass over
    ``X``: the decision values move along ``decision``."""
    slope = _dot(grads, direction)
    slack = 1e-13 * (1.0 + values.abs())
    steps = torch.ones_like(values)
    accepted = ~active
    for _ in range(40):
        trial = objective.values(
            W + _per_fold(steps, W) * direction,
            theta,
            Z + _per_fold_decision(steps) * decision,
        )
        accepted = accepted | (trial <= values + 1e-4 * steps * slope + slack)
        if bool(accepted.all()):
            break
        steps = torch.where(accepted, steps, 0.5 * steps)
    return torch.where(active & accepted, steps, 0.0)


def lockstep_newton(
    objective,
    theta,
    W0,
    precondition,
    *,
    tol,
    max_iter,
    slow_after,
    cg_max_iter,
    low=False,
    refresh=None,
):
    """Inexact Newton on every fold, with shared Hessian-vector products.

    Parameters
    ----------
    objective : LockstepObjective
    theta : torch.Tensor
        ``log C``, one value or one per feature, shared by the folds.
    W0 : torch.Tensor
        Warm starts of every fold.
    precondition : callable
        ``R -> M⁻¹ R`` on a batch.
    tol : float
        Gradient tolerance of every fold (its largest entry, in the units of
        :meth:`LogisticObjective.gradient_size`).
    max_iter : int
        Newton iterations at most.
    slow_after : int
        A direction needing more products calls ``refresh`` before the next
        one.
    cg_max_iter : int
        Products at most per direction.
    low : bool, default=False
        Directions from float32 Hessian-vector products
        (:meth:`LockstepObjective.hessian_product`), and, while every
        fold's gradient is above ``FAR``, float32 gradients and decision
        values moved along the directions'; near the tolerance both are
        computed again in float64, so that the stopping test and the
        solution returned keep full precision.
    refresh : callable, default=None
        ``proba -> precondition``: a new preconditioner at the current point.

    Returns
    -------
    solution : LockstepSolution

    Notes
    -----
    Each fold's direction solves ``H_f d_f = -∇ℓ_f`` to the relative accuracy
    ``min(0.1, √||∇ℓ_f||_∞)``, then its own backtracking line search runs
    on decision values updated along ``X̃d_f``, so that one iteration costs
    two passes over ``X`` for the gradients plus two per product.
    """
    W = W0.clone()
    Z = objective.decision(W)
    precise, slow = True, False  # precise: Z and the gradients in float64

    def measure(precise):
        values, grads, proba = objective.values_and_gradients(
            W, theta, Z, low=not precise
        )
        sizes = (grads / objective.data.gradient_scale).abs().flatten(1).amax(dim=1)
        return values, grads, proba, sizes

    for n_iter in range(max_iter + 1):
        values, grads, proba, sizes = measure(precise)
        active = sizes > tol
        if not precise and not bool((sizes >= FAR).all()):
            # Near the tolerance, decide on exact decision values and gradients.
            Z, precise = objective.decision(W), True
            values, grads, proba, sizes = measure(precise)
            active = sizes > tol
        if not bool(active.any()) or n_iter == max_iter:
            break
        if slow and refresh is not None:
            precondition, slow = refresh(proba), False
        rhs = -grads * _per_fold(active.to(grads.dtype), grads)
        direction, decision, used, _ = batched_cg(
            objective.hessian_product(theta, proba, low=low),
            rhs,
            precondition,
            rtol=sizes.sqrt().clamp(max=0.1),
            max_iter=cg_max_iter,
        )
        slow = slow or int(used.max()) > slow_after
        if decision is None:  # no product was needed
            decision = torch.zeros_like(Z)
        steps = _armijo_steps(
            objective, theta, W, Z, values, grads, direction, decision, active
        )
        if not bool((steps[active] > 0).any()):
            break
        W = W + _per_fold(steps, W) * direction
        # The decision values move along the direction's (float32 with low):
        # off by about 1e-7 relative, which matters only near the tolerance.
        Z = Z + _per_fold_decision(steps) * decision
        precise = not low
    if not precise:
        Z = objective.decision(W)
        values, grads, proba, sizes = measure(True)
        active = sizes > tol
    return LockstepSolution(W, Z, proba, grads, ~active, n_iter)
