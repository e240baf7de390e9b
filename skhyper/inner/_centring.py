"""Weighted centring of a design matrix, dense or sparse, without densifying it.

An unpenalised intercept is eliminated by centring the training data on its
weighted means ``x̄ = Xᵀs / Σs`` and ``ȳ = Yᵀs / Σs``. Every product the inner
problems need is written here in terms of the centred, weight-scaled rows

    Z = diag(√s) (X - 1 x̄ᵀ),

which is formed explicitly for a dense ``X`` (one copy, the fastest for BLAS)
and never formed for a sparse ``X``: the rank-one corrections are added
algebraically, so a sparse matrix stays sparse.
"""

import numpy as np
import scipy.sparse as sp

__all__ = [
    "weighted_offsets",
    "centred_gram",
    "centred_targets",
    "centred_kernel",
    "centred_cross_kernel",
    "centred_rmatmul",
    "centred_matmul",
]


def _dense(matrix):
    return matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix)


def weighted_offsets(X, Y, weights, fit_intercept):
    """Return the weighted means ``(x̄, ȳ)``, zeros without an intercept.

    Parameters
    ----------
    X : ndarray or sparse matrix of shape (n_samples, n_features)
    Y : ndarray of shape (n_samples, n_targets)
    weights : ndarray of shape (n_samples,)
        Non-negative sample weights with a positive sum.
    fit_intercept : bool

    Returns
    -------
    x_offset : ndarray of shape (n_features,)
    y_offset : ndarray of shape (n_targets,)
    """
    if not fit_intercept:
        return np.zeros(X.shape[1], X.dtype), np.zeros(Y.shape[1], Y.dtype)
    # Reductions in float64 guard float32 inputs against cancellation.
    total = float(np.sum(weights, dtype=np.float64))
    w64 = weights.astype(np.float64)
    x_offset = np.asarray(X.T @ w64).ravel() / total
    y_offset = (Y.T @ w64) / total
    return x_offset.astype(X.dtype), y_offset.astype(Y.dtype)


def centred_gram(X, x_offset, weights):
    """Return ``ZᵀZ = (X - 1x̄ᵀ)ᵀ diag(s) (X - 1x̄ᵀ)``, a dense (d, d) array."""
    if sp.issparse(X):
        scaled = sp.csr_matrix(X).multiply(weights[:, None]).tocsr()
        gram = _dense(X.T @ scaled)
        gram -= float(weights.sum()) * np.outer(x_offset, x_offset)
        return gram
    Z = (X - x_offset) * np.sqrt(weights)[:, None]
    # ``Z.T @ Z`` on the same buffer lets numpy call the symmetric rank-k BLAS.
    return Z.T @ Z


def centred_targets(X, Y, x_offset, y_offset, weights):
    """Return ``Zᵀ √s (Y - 1ȳᵀ) = (X - 1x̄ᵀ)ᵀ diag(s) (Y - 1ȳᵀ)``, (d, t)."""
    weighted = (Y - y_offset) * weights[:, None]
    # (X - 1x̄ᵀ)ᵀ diag(s)(Y - 1ȳᵀ) = Xᵀ diag(s)(Y - 1ȳᵀ) - x̄ sᵀ(Y - 1ȳᵀ).
    product = np.asarray(X.T @ weighted)
    return product - np.outer(x_offset, weighted.sum(axis=0))


def centred_kernel(X, x_offset, weights):
    """Return ``ZZᵀ``, the dense (n, n) kernel of the centred scaled rows."""
    root = np.sqrt(weights)
    if sp.issparse(X):
        rows = sp.csr_matrix(X).multiply(root[:, None]).tocsr()
        shift = np.asarray(rows @ x_offset).ravel()
        kernel = _dense(rows @ rows.T)
        kernel -= np.outer(shift, root) + np.outer(root, shift)
        kernel += float(x_offset @ x_offset) * np.outer(root, root)
        return kernel
    Z = (X - x_offset) * root[:, None]
    return Z @ Z.T


def centred_cross_kernel(X_val, X, x_offset, weights):
    """Return ``(X_val - 1x̄ᵀ) Zᵀ``, the dense (n_val, n) cross kernel."""
    root = np.sqrt(weights)
    if sp.issparse(X) or sp.issparse(X_val):
        rows = sp.csr_matrix(X).multiply(root[:, None]).tocsr()
        shift = np.asarray(rows @ x_offset).ravel()
        val_shift = np.asarray(X_val @ x_offset).ravel()
        cross = _dense(X_val @ rows.T)
        cross -= np.outer(val_shift, root) + shift[None, :]
        cross += float(x_offset @ x_offset) * root[None, :]
        return cross
    Z = (X - x_offset) * root[:, None]
    return (X_val - x_offset) @ Z.T


def centred_rmatmul(X, x_offset, weights, A):
    """Return ``ZᵀA = (X - 1x̄ᵀ)ᵀ diag(√s) A`` for a dense (n, k) ``A``."""
    scaled = A * np.sqrt(weights)[:, None]
    return np.asarray(X.T @ scaled) - np.outer(x_offset, scaled.sum(axis=0))


def centred_matmul(X, x_offset, B):
    """Return ``(X - 1x̄ᵀ) B`` for a dense (d, k) ``B``."""
    return np.asarray(X @ B) - x_offset @ B
