"""Scalar and per-target alphas: one eigendecomposition per fold serves every alpha.

With ``n`` training rows and ``d`` features (notation of :mod:`.ridge`):

- primal form (``n >= d``): ``G = V diag(σ) Vᵀ`` and ``R = VᵀC``, so that
  ``W(α) = V (R / (σ + α))``; the validation predictions are
  ``P(α) = (X' - 1x̄ᵀ) W(α) + 1ȳᵀ``;
- dual form (``n < d``): ``ZZᵀ = U diag(σ) Uᵀ`` and ``R = Uᵀ√s (Y - 1ȳᵀ)``, so
  that ``W(α) = ZᵀU (R / (σ + α))``; the predictions need only the cross
  kernel ``K' = (X' - 1x̄ᵀ)Zᵀ``: ``P(α) = K'U (R / (σ + α)) + 1ȳᵀ``.

Both read ``P(α) = M Q (R / (σ + α)) + 1ȳᵀ`` with ``(M, Q) = (X' - 1x̄ᵀ, V)`` or
``(K', U)``. After the factorisation (``O(nd² + d³)`` or ``O(n²d + n³)`` once)
each alpha costs one product by ``Q`` and one by ``M``: ``O(d² + n'd)`` or
``O(n² + n'n)``, for the loss and its exact gradient together.
"""

from dataclasses import dataclass

import numpy as np
import scipy.linalg as la

from ._centring import (
    centred_cross_kernel,
    centred_gram,
    centred_kernel,
    centred_matmul,
    centred_rmatmul,
    centred_targets,
)

__all__ = ["Spectrum", "spectrum", "spectral_evaluate", "spectral_coefficients"]


@dataclass(frozen=True)
class Spectrum:
    """The per-fold factorisation that serves every alpha.

    Attributes
    ----------
    eigenvalues : ndarray of shape (k,)
        ``σ``, clipped at zero (round-off can make them slightly negative).
    basis : ndarray of shape (d, k) or (n, k)
        ``Q``: the eigenvectors ``V`` of the Gram matrix, or ``U`` of the
        kernel matrix in the dual form.
    projected : ndarray of shape (k, n_targets)
        ``R``, the centred targets in the eigenbasis.
    cross : ndarray of shape (n_val, n) or None
        Dual form only: the cross kernel ``K'``.
    """

    eigenvalues: np.ndarray
    basis: np.ndarray
    projected: np.ndarray
    cross: object = None

    @property
    def dual(self):
        return self.cross is not None


def spectrum(problem):
    """Factorise a fold once: the eigendecomposition of its Gram or kernel matrix.

    Float32 inputs form the Gram matrix in float32 (no float64 copy of ``X``)
    and decompose it in float64, where round-off would otherwise swamp small
    alphas.
    """
    X, Y, weights = problem.X_train, problem.Y_train, problem.weights_train
    x_offset, y_offset = problem.x_offset, problem.y_offset
    n_samples, n_features = X.shape
    if n_samples >= n_features:
        gram = centred_gram(X, x_offset, weights).astype(np.float64)
        eigenvalues, basis = la.eigh(gram, overwrite_a=True)
        rhs = centred_targets(X, Y, x_offset, y_offset, weights)
        projected = basis.T @ rhs.astype(np.float64)
        cross = None
    else:
        kernel = centred_kernel(X, x_offset, weights).astype(np.float64)
        eigenvalues, basis = la.eigh(kernel, overwrite_a=True)
        targets = (Y - y_offset) * np.sqrt(weights)[:, None]
        projected = basis.T @ targets.astype(np.float64)
        cross = centred_cross_kernel(problem.X_val, X, x_offset, weights)
        cross = cross.astype(np.float64)
    return Spectrum(np.maximum(eigenvalues, 0.0), basis, projected, cross)


def _validation_predictions(problem, factors, coords):
    """Return ``M Q coords`` (the centred predictions) for (k, m) ``coords``."""
    mapped = factors.basis @ coords
    if factors.dual:
        return factors.cross @ mapped
    # float32 inputs: multiply in their own precision rather than copying X'.
    mapped = mapped.astype(problem.X_val.dtype, copy=False)
    return centred_matmul(problem.X_val, problem.x_offset, mapped)


def spectral_evaluate(problem, factors, alpha):
    """Validation loss and its gradient with respect to ``log α``.

    Parameters
    ----------
    problem : RidgeFoldProblem
    factors : Spectrum
    alpha : ndarray of shape (1,) or (n_targets,)

    Returns
    -------
    loss : float
    grad : ndarray of the shape of ``alpha``
        ``α ⊙ ∂E/∂α``.
    """
    n_targets = problem.Y_val.shape[1]

    # Step 1: the inner solution in the eigenbasis, R / (σ + α).
    shifted = factors.eigenvalues[:, None] + alpha[None, :]
    coords = factors.projected / shifted

    # Step 2: its derivative. (G + αI) dW/dα = -W is diagonal in the
    # eigenbasis, so dW/dα = -Q (R / (σ + α)²) with no linear solve.
    dcoords = -coords / shifted

    # Step 3: the hypergradient, ∂E/∂α_k = 2 Σ_i s'_i r_ik ∂P_ik/∂α_k / (T Σs').
    both = _validation_predictions(problem, factors, np.hstack([coords, dcoords]))
    both = both.astype(np.float64, copy=False)
    residual = both[:, :n_targets] + problem.y_offset - problem.Y_val
    dpredictions = both[:, n_targets:]
    share = problem.weights_val.astype(np.float64)
    share = share / share.sum()
    loss = float(share @ (residual**2).sum(axis=1)) / n_targets
    dloss = 2.0 * (share @ (residual * dpredictions)) / n_targets
    if alpha.size == 1:
        return loss, alpha * dloss.sum(keepdims=True)
    return loss, alpha * dloss


def spectral_coefficients(problem, factors, alpha):
    """Return the (n_features, n_targets) weights ``W(α)``."""
    coords = factors.projected / (factors.eigenvalues[:, None] + alpha[None, :])
    dual_or_weights = factors.basis @ coords
    if not factors.dual:
        return dual_or_weights
    return centred_rmatmul(
        problem.X_train, problem.x_offset, problem.weights_train, dual_or_weights
    )
