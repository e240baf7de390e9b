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
import scipy.sparse as sp

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
    val_centred : ndarray of shape (n_val, d) or None
        Primal form with a dense ``X'``: ``X' - 1x̄ᵀ``, formed once.
    val_targets : ndarray of shape (n_val, n_targets)
        ``Y' - 1ȳᵀ`` in float64.
    val_share : ndarray of shape (n_val,)
        The validation weights divided by their sum, in float64.
    """

    eigenvalues: np.ndarray
    basis: np.ndarray
    projected: np.ndarray
    cross: object = None
    val_centred: object = None
    val_targets: object = None
    val_share: object = None

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
    if problem.moments is not None or len(Y) >= problem.n_features:
        if problem.moments is not None:
            gram, rhs = problem.moments.gram, problem.moments.rhs
        else:
            gram = centred_gram(X, x_offset, weights).astype(np.float64)
            rhs = centred_targets(X, Y, x_offset, y_offset, weights)
        # Divide and conquer ("evd") is the fastest LAPACK driver when all
        # eigenvectors are wanted.
        eigenvalues, basis = la.eigh(
            gram, overwrite_a=problem.moments is None, driver="evd"
        )
        projected = basis.T @ rhs.astype(np.float64)
        cross = None
    else:
        kernel = centred_kernel(X, x_offset, weights).astype(np.float64)
        eigenvalues, basis = la.eigh(kernel, overwrite_a=True, driver="evd")
        targets = (Y - y_offset) * np.sqrt(weights)[:, None]
        projected = basis.T @ targets.astype(np.float64)
        cross = centred_cross_kernel(problem.X_val, X, x_offset, weights)
        cross = cross.astype(np.float64)
    X_val = problem.X_val
    # What every evaluation needs of the validation part, formed once.
    val_centred = None
    if cross is None and not sp.issparse(X_val):
        val_centred = X_val - x_offset
    share = problem.weights_val.astype(np.float64)
    return Spectrum(
        eigenvalues=np.maximum(eigenvalues, 0.0),
        basis=basis,
        projected=projected,
        cross=cross,
        val_centred=val_centred,
        val_targets=(problem.Y_val - y_offset).astype(np.float64),
        val_share=share / share.sum(),
    )


def _validation_predictions(problem, factors, coords):
    """Return ``M Q coords`` (the centred predictions) for (k, m) ``coords``."""
    mapped = factors.basis @ coords
    if factors.dual:
        return factors.cross @ mapped
    # float32 inputs: multiply in their own precision rather than copying X'.
    mapped = mapped.astype(problem.X_val.dtype, copy=False)
    if factors.val_centred is not None:
        return factors.val_centred @ mapped
    return centred_matmul(problem.X_val, problem.x_offset, mapped)


def spectral_evaluate(problem, factors, alphas):
    """Validation losses and their gradients with respect to ``log α``.

    Parameters
    ----------
    problem : RidgeFoldProblem
    factors : Spectrum
    alphas : ndarray of shape (n_points, 1) or (n_points, n_targets)
        One alpha (or one per target) at each of ``n_points`` points, all
        evaluated together.

    Returns
    -------
    losses : ndarray of shape (n_points,)
    grads : ndarray of the shape of ``alphas``
        ``α ⊙ ∂E/∂α`` at each point.
    parts : ndarray of shape (n_points, n_targets)
        Each target's validation loss (``losses`` is their mean).
    """
    n_points = alphas.shape[0]
    n_val, n_targets = factors.val_targets.shape

    # Step 1: the inner solution in the eigenbasis, R / (σ + α), at every
    # point: arrays of shape (k, n_points, n_targets).
    shifted = factors.eigenvalues[:, None, None] + alphas[None, :, :]
    coords = factors.projected[:, None, :] / shifted

    # Step 2: its derivative. (G + αI) dW/dα = -W is diagonal in the
    # eigenbasis, so dW/dα = -Q (R / (σ + α)²) with no linear solve.
    dcoords = -coords / shifted

    # Step 3: the hypergradient, ∂E/∂α_k = 2 Σ_i s'_i r_ik ∂P_ik/∂α_k / (T Σs').
    stacked = np.concatenate([coords, dcoords], axis=1)
    both = _validation_predictions(problem, factors, stacked.reshape(len(coords), -1))
    both = both.astype(np.float64, copy=False).reshape(n_val, 2, n_points, n_targets)
    residual = both[:, 0] - factors.val_targets[:, None, :]
    share = factors.val_share
    losses = (share @ (residual**2).reshape(n_val, -1)).reshape(n_points, n_targets)
    dlosses = share @ (residual * both[:, 1]).reshape(n_val, -1)
    dlosses = 2.0 * dlosses.reshape(n_points, n_targets) / n_targets
    if alphas.shape[1] == 1:
        dlosses = dlosses.sum(axis=1, keepdims=True)
    return losses.sum(axis=1) / n_targets, alphas * dlosses, losses


def spectral_coefficients(problem, factors, alpha):
    """Return the (n_features, n_targets) weights ``W(α)``."""
    coords = factors.projected / (factors.eigenvalues[:, None] + alpha[None, :])
    dual_or_weights = factors.basis @ coords
    if not factors.dual:
        return dual_or_weights
    return centred_rmatmul(
        problem.X_train, problem.x_offset, problem.weights_train, dual_or_weights
    )
