"""One alpha per feature: Cholesky inner solves, hypergradient by the engine.

With ``Λ = diag(λ)`` there is no common eigenbasis for every ``λ``, so each
evaluation solves ``(G + Λ) W = C`` by Cholesky on the fold's Gram matrix
(formed once and kept in the state) and hands the solution to the engine with
the gradient-step map of the (halved) training loss

    ℓ(W, θ) = ½ tr(WᵀGW) - tr(CᵀW) + ½ Σ_j e^{θ_j} ||W_j||²,
    Φ(W, θ) = W - η ∇_W ℓ(W, θ),    η = 1 / (σ_max(G) + max λ),

whose fixed point is the ridge solution and whose Jacobian ``I - η(G + Λ)`` is
symmetric, so AID-CG applies. The engine differentiates with respect to
``θ = log λ`` directly. With ``hypergrad="itd"`` the inner solution is instead
the ``t = inner_max_iter``-th iterate of ``Φ`` from the previous one.
"""

from dataclasses import dataclass, replace

import numpy as np
import scipy.linalg as la
import scipy.sparse as sp
import torch

from ..hypergrad import hypergradient
from ..tuning import FoldResult
from ..utils import resolve_device, to_numpy
from ._centring import centred_gram, centred_targets

__all__ = [
    "features_evaluate",
    "features_coefficients",
    "feature_factors",
    "gradient_step",
    "training_loss",
    "validation_loss",
]


@dataclass(frozen=True)
class _FeatureFactors:
    """Torch copies of what every evaluation of a fold reuses."""

    gram: torch.Tensor
    rhs: torch.Tensor
    largest_eigenvalue: float
    X_val: torch.Tensor
    x_offset: torch.Tensor
    y_offset: torch.Tensor
    Y_val: torch.Tensor
    share_val: torch.Tensor


def _to_torch(array, dtype, device):
    if sp.issparse(array):
        # COO, whose products support autograd and raise no beta warning.
        coo = sp.coo_matrix(array)
        indices = torch.as_tensor(np.vstack([coo.row, coo.col]), dtype=torch.int64)
        values = torch.as_tensor(coo.data, dtype=dtype)
        tensor = torch.sparse_coo_tensor(
            indices, values, coo.shape, check_invariants=False
        )
        return tensor.coalesce().to(device)
    return torch.as_tensor(np.asarray(array), dtype=dtype).to(device)


def feature_factors(problem):
    """Compute, once per fold, what every per-feature evaluation reuses."""
    X, weights = problem.X_train, problem.weights_train
    # Float64 whatever X's precision: with per-feature penalties spanning
    # many decades the linear system is too badly conditioned for float32,
    # whose conjugate gradient stalled above any useful tolerance (measured
    # on diabetes), and d x d float64 is what the memory check allows for.
    dtype = torch.float64
    device = resolve_device(problem.device)
    if problem.moments is not None:
        gram, rhs = problem.moments.gram, problem.moments.rhs
    else:
        gram = centred_gram(X, problem.x_offset, weights)
        rhs = centred_targets(
            X, problem.Y_train, problem.x_offset, problem.y_offset, weights
        )
    # The step size η only needs σ_max(G); float64 keeps it reliable.
    n_features = gram.shape[0]
    largest = float(
        la.eigh(
            gram.astype(np.float64),
            eigvals_only=True,
            subset_by_index=(n_features - 1, n_features - 1),
        )[0]
    )
    share = problem.weights_val.astype(np.float64)
    return _FeatureFactors(
        gram=_to_torch(gram, dtype, device),
        rhs=_to_torch(rhs, dtype, device),
        largest_eigenvalue=max(largest, 0.0),
        X_val=_to_torch(problem.X_val, dtype, device),
        x_offset=_to_torch(problem.x_offset, dtype, device),
        y_offset=_to_torch(problem.y_offset, dtype, device),
        Y_val=_to_torch(problem.Y_val, dtype, device),
        share_val=_to_torch(share / share.sum(), torch.float64, device),
    )


def training_loss(factors):
    """Return the halved training loss ``ℓ(W, θ)`` of the module docstring."""
    gram, rhs = factors.gram, factors.rhs

    def train_loss(W, log_alpha):
        penalty = torch.exp(log_alpha)[:, None] * W**2
        return 0.5 * (W * (gram @ W)).sum() - (rhs * W).sum() + 0.5 * penalty.sum()

    return train_loss


def gradient_step(factors, step):
    """Return ``Φ(W, θ) = W - η ∇_W ℓ(W, θ)`` with the gradient written out.

    Equal to ``gradient_step_map(training_loss(factors), step)``, without the
    double backward pass that differentiating an autograd gradient costs at
    every iteration of the linear system.
    """
    gram, rhs = factors.gram, factors.rhs

    def fp_map(W, log_alpha):
        return W - step * (gram @ W - rhs + torch.exp(log_alpha)[:, None] * W)

    return fp_map


def validation_loss(factors):
    """Return the outer loss ``E(W)``: weighted validation MSE over targets."""
    n_targets = factors.Y_val.shape[1]

    def outer_loss(W, log_alpha):
        if factors.X_val.is_sparse:
            product = torch.sparse.mm(factors.X_val, W)
        else:
            product = factors.X_val @ W
        predictions = product - factors.x_offset @ W + factors.y_offset
        # The sum over validation rows runs in float64 for float32 inputs.
        squared = ((predictions - factors.Y_val) ** 2).to(torch.float64)
        return (factors.share_val @ squared).sum() / n_targets

    return outer_loss


def features_evaluate(problem, theta, state):
    """Validation loss and hypergradient of one fold with per-feature alphas."""
    factors = state.factors if state.factors is not None else feature_factors(problem)
    dtype = factors.gram.dtype
    log_alpha = torch.as_tensor(theta, dtype=dtype, device=factors.gram.device)
    alpha = torch.exp(log_alpha)
    # η = 1/L with L = σ_max(G) + max λ: Φ is then a contraction.
    step = 1.0 / (factors.largest_eigenvalue + float(alpha.max()))
    fp_map = gradient_step(factors, step)
    outer_loss = validation_loss(factors)
    itd = problem.hypergrad.startswith("itd")

    # Step 1: the inner solution, by Cholesky (or t steps of Φ for ITD).
    if itd:
        start = state.coef
        if start is None:
            start = torch.zeros_like(factors.rhs)
    else:
        start = _cholesky_solve(factors.gram, alpha, factors.rhs)

    # Steps 2 and 3: the linear system and the hypergradient, by the engine.
    result = hypergradient(
        fp_map,
        outer_loss,
        start,
        log_alpha,
        method=problem.hypergrad,
        tol=problem.linsys_tol,
        max_iter=problem.linsys_max_iter,
        n_steps=problem.inner_max_iter,
        v0=state.v,
        warn=False,
    )
    inner_converged = (not itd) or result.info.residual <= problem.inner_tol
    new_state = replace(state, theta=theta, factors=factors, coef=result.w, v=result.v)
    return FoldResult(
        loss=result.outer_loss,
        grad=to_numpy(result.grad).astype(np.float64),
        state=new_state,
        inner_converged=bool(inner_converged),
        linsys_converged=bool(itd or result.info.converged),
    )


def _cholesky_solve(gram, alpha, rhs):
    system = gram + torch.diag(alpha)
    factor, info = torch.linalg.cholesky_ex(system)
    if int(info) != 0:
        # Round-off made a nearly singular system indefinite: fall back to LU.
        return torch.linalg.solve(system, rhs)
    return torch.cholesky_solve(rhs, factor)


def features_coefficients(state, theta):
    """Return the (n_features, n_targets) weights at ``theta``.

    The last evaluation's inner solution when ``theta`` is its point (for ITD,
    the last iterate); otherwise a fresh Cholesky solve.
    """
    if np.array_equal(theta, state.theta):
        return to_numpy(state.coef).astype(np.float64)
    factors = state.factors
    alpha = torch.exp(torch.as_tensor(theta, dtype=factors.gram.dtype))
    W = _cholesky_solve(factors.gram, alpha.to(factors.gram.device), factors.rhs)
    return to_numpy(W).astype(np.float64)
