"""Hypergradients of the logistic fold problem from an inner solution.

At the minimiser ``W(θ)`` of the training objective ``ℓ(W, θ)``, the
validation loss ``E(W)`` has the gradient

    ∂E/∂θ_j = -(∂_θ_j ∇_Wℓ)ᵀ v = exp(-θ_j) / S Σ_k W_kj v_kj,
    where  H v = ∇_W E,  H = ∇²_W ℓ,

by the implicit function theorem. :func:`implicit_hypergradient` solves for
``v`` with exact Hessian-vector products (or a Cholesky factor);
:func:`engine_hypergradient` hands a fixed-point map to the engine's other
methods.
"""

import torch

from ..exceptions import NonFiniteError
from ..hypergrad import gradient_step_map, hypergradient
from ..utils import to_numpy
from ._logistic_solvers import cholesky_factor, preconditioned_cg, refresh_limit

__all__ = ["engine_hypergradient", "implicit_hypergradient"]


def _check_finite(value, grad):
    if not (bool(torch.isfinite(value).all()) and bool(torch.isfinite(grad).all())):
        raise NonFiniteError(
            "non-finite value in the validation log loss or the hypergradient"
        )


def implicit_hypergradient(
    objective, validation, solution, theta, v0, *, per_feature, direct, tol, max_iter
):
    """The hypergradient with ``v`` from the Hessian of the training loss.

    Parameters
    ----------
    objective, validation : LogisticObjective
        The training objective and the validation loss (its data terms).
    solution : InnerSolution
        The inner solution; its reference factor is refreshed in place when
        it is stale or when ``direct``.
    theta : torch.Tensor
        ``log C``.
    v0 : ndarray or None
        Warm start of ``v``.
    per_feature : bool
        Return one derivative per feature rather than their sum.
    direct : bool
        Solve ``H v = ∇_W E`` by a Cholesky factor of ``H`` at the solution,
        rather than by the engine's conjugate gradient on Hessian-vector
        products (preconditioned by the solution's factor, if any).
    tol, max_iter : float, int
        Settings of conjugate gradient.

    Returns
    -------
    loss : float
        ``E(W) - vᵀ∇_Wℓ(W)``: the validation loss corrected to first order
        for the inexact inner solution ``W``, so that its error is of the
        order of the squared inner tolerance.
    grad : ndarray
    v : ndarray
    converged : bool
    """
    W = solution.W
    loss, grad_w, _ = validation.data_terms(W)
    _check_finite(loss, grad_w)

    # Step 2: the linear system H v = ∇_W E.
    if solution.factor is not None and (solution.stale or direct):
        hessian = objective.hessian(W, theta, solution.decision)
        solution.factor = cholesky_factor(hessian)
        solution.stale = False
    if direct and solution.factor is not None:
        v = torch.cholesky_solve(grad_w.reshape(-1, 1), solution.factor)
        converged = True
    else:
        if v0 is not None:
            v0 = torch.as_tensor(v0, device=objective.device)
        v, info = preconditioned_cg(
            objective.hessian_operator(W, theta, solution.decision),
            grad_w,
            solution.factor,
            tol=tol,
            max_iter=max_iter,
            x0=v0,
        )
        converged = info.converged
        solution.stale = solution.stale or info.n_iter > refresh_limit(objective)

    # Step 3: ∂E/∂θ_j = exp(-θ_j) / S Σ_k W_kj v_kj.
    v = v.reshape(W.shape)
    if solution.gradient is not None and solution.converged:
        # W misses the minimiser by about -H⁻¹∇_Wℓ, so E there is about
        # E(W) - vᵀ∇_Wℓ: an error second order in the inner tolerance. Not
        # after a solve that stopped early, nor below zero (a log loss).
        corrected = loss - (v * solution.gradient.reshape(W.shape)).sum()
        loss = corrected if float(corrected) >= 0 else loss
    n_features = objective.n_features
    products = (W[:, :n_features] * v[:, :n_features]).sum(dim=0)
    grad = objective.penalty_scale(theta) * products
    if not per_feature:
        grad = grad.sum().reshape(1)
    _check_finite(loss, grad)
    return float(loss), to_numpy(grad), to_numpy(v), converged


def engine_hypergradient(
    objective, validation_loss, solution, theta, *, lipschitz, method, tol, max_iter
):
    """The engine's fixed-point, GMRES, ITD or dense method on a map.

    After a Newton solve (``solution.factor`` set), the map is the Newton map
    in whitened coordinates with a factor refreshed at the solution, nearly
    constant, so that every method converges in a step or two. After
    L-BFGS, it is the gradient step ``W - ∇_Wℓ / lipschitz``.

    Returns
    -------
    loss : float
    grad : ndarray
    v : None
    converged : bool
    """
    if solution.factor is not None:
        hessian = objective.hessian(solution.W, theta, solution.decision)
        solution.factor = cholesky_factor(hessian)
        solution.stale = False
        fp_map, to_weights = _whitened_newton_map(objective, solution.factor)
        start = solution.factor.T @ solution.W.reshape(-1)
        start = start.reshape(solution.W.shape)
    else:
        fp_map = gradient_step_map(objective.value, 1.0 / lipschitz)
        to_weights, start = (lambda W: W), solution.W
    result = hypergradient(
        fp_map,
        lambda U, theta: validation_loss(to_weights(U), theta),
        start,
        theta,
        method=method,
        tol=tol,
        max_iter=max_iter,
        warn=False,
    )
    grad = to_numpy(result.grad).reshape(-1)
    return result.outer_loss, grad, None, result.info.converged


def _whitened_newton_map(objective, factor):
    """The Newton map in the coordinates ``U = LᵀW`` of a Cholesky factor ``L``.

    ``Φ(U, θ) = U - L⁻¹ ∇_Wℓ(L⁻ᵀU, θ)``: its fixed point is the minimiser, and
    its Jacobian ``I - L⁻¹HL⁻ᵀ`` is symmetric, and zero where ``LLᵀ = H``.
    """

    def to_weights(U):
        flat = torch.linalg.solve_triangular(factor.T, U.reshape(-1, 1), upper=True)
        return flat.reshape(objective.n_outputs, objective.n_columns)

    def fp_map(U, theta):
        if not U.requires_grad:
            U = U.detach().requires_grad_(True)
        with torch.enable_grad():
            W = to_weights(U)
            (grad,) = torch.autograd.grad(
                objective.value(W, theta), U, create_graph=True
            )
        return U - grad  # the chain rule through W = L⁻ᵀU applies L⁻¹

    return fp_map, to_weights
