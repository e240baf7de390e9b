"""Centred second moments of ridge training sets, shared across the folds of a CV.

The ridge normal equations need of a training set only its weighted means and
its centred second moments

    G = (X - 1x̄ᵀ)ᵀ diag(s) (X - 1x̄ᵀ),    C = (X - 1x̄ᵀ)ᵀ diag(s) (Y - 1ȳᵀ).

In K-fold CV every training part is the full data minus one validation part,
so the uncentred sums of a training part are those of the full data minus
those of its validation part; re-centring on the part's own means is a rank-one
correction. One Gram matrix of the full data (``n d²``) and K small ones of the
validation parts (``n d²`` together) then replace K Gram matrices of the
training parts (``(K - 1) n d²``), and the full one also serves the final
refit. Dense data are first centred on the full data's means, so that the
rank-one corrections are small and cancel nothing; sparse data are not
centred (that would densify them) and take the corrections algebraically.
"""

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

__all__ = ["RidgeMoments", "cv_ridge_moments"]


@dataclass(frozen=True)
class RidgeMoments:
    """Weighted means and centred second moments of one training set.

    Attributes
    ----------
    x_offset : ndarray of shape (n_features,)
    y_offset : ndarray of shape (n_targets,)
    gram : ndarray of shape (n_features, n_features)
        ``G``, in float64.
    rhs : ndarray of shape (n_features, n_targets)
        ``C``, in float64.

    Notes
    -----
    ``G = (X - 1x̄ᵀ)ᵀ diag(s) (X - 1x̄ᵀ)`` and
    ``C = (X - 1x̄ᵀ)ᵀ diag(s) (Y - 1ȳᵀ)``: ridge's normal equations are
    ``(G + diag λ) W = C``.

    Examples
    --------
    >>> import numpy as np
    >>> from skhyper.inner.ridge import cv_ridge_moments
    >>> X, Y = np.eye(3), np.ones((3, 1))
    >>> _, full = cv_ridge_moments(X, Y, np.ones(3), [], False)
    >>> full.gram
    array([[1., 0., 0.],
           [0., 1., 0.],
           [0., 0., 1.]])
    """

    x_offset: np.ndarray
    y_offset: np.ndarray
    gram: np.ndarray
    rhs: np.ndarray


@dataclass(frozen=True)
class _Sums:
    """Uncentred weighted sums of the shifted rows ``√s (x - c)``, ``√s (y - c_y)``."""

    gram: np.ndarray
    rhs: np.ndarray
    x_sum: np.ndarray
    y_sum: np.ndarray
    total: float

    def __sub__(self, other):
        return _Sums(
            self.gram - other.gram,
            self.rhs - other.rhs,
            self.x_sum - other.x_sum,
            self.y_sum - other.y_sum,
            self.total - other.total,
        )


def _sums(Z, Y, root):
    """Sums of one block of shifted, weight-scaled rows ``Z`` and targets ``Y``."""
    gram = Z.T @ Z
    gram = gram.toarray() if sp.issparse(gram) else gram
    return _Sums(
        gram=np.asarray(gram, dtype=np.float64),
        rhs=np.asarray(Z.T @ Y, dtype=np.float64),
        x_sum=np.asarray(Z.T @ root, dtype=np.float64).ravel(),
        y_sum=np.asarray(Y.T @ root, dtype=np.float64).ravel(),
        total=float(root.astype(np.float64) @ root),
    )


def _centre(sums, x_shift, y_shift, fit_intercept, dtype):
    """Re-centre sums on their own weighted means: a rank-one correction."""
    if not fit_intercept:
        n_features, n_targets = sums.rhs.shape
        return RidgeMoments(
            np.zeros(n_features, dtype), np.zeros(n_targets, dtype), sums.gram, sums.rhs
        )
    x_mean = sums.x_sum / sums.total  # the means minus the shifts
    y_mean = sums.y_sum / sums.total
    gram = sums.gram - sums.total * np.outer(x_mean, x_mean)
    rhs = sums.rhs - sums.total * np.outer(x_mean, y_mean)
    return RidgeMoments(
        (x_shift + x_mean).astype(dtype), (y_shift + y_mean).astype(dtype), gram, rhs
    )


def cv_ridge_moments(X, Y, weights, splits, fit_intercept):
    """Moments of every training part of a CV and of the full data.

    Parameters
    ----------
    X : ndarray or sparse matrix of shape (n_samples, n_features)
    Y : ndarray of shape (n_samples, n_targets)
    weights : ndarray of shape (n_samples,)
        Non-negative sample weights.
    splits : list of (train, test) index arrays
        Each training part must be the complement of its validation part.
    fit_intercept : bool

    Returns
    -------
    folds : list of RidgeMoments
        One per split, of its training part.
    full : RidgeMoments
        Of all the data, for the final refit.

    Notes
    -----
    With ``Z = √s (X - 1cᵀ)`` for a fixed shift ``c`` (the full data's mean for
    dense ``X``, zero for sparse), the sums ``S = ZᵀZ``, ``u = Zᵀ√s`` and
    ``σ = Σ s`` of a training part are those of the full data minus those of
    its validation part, and its centred moments are
    ``G = S - σ m mᵀ`` with ``m = u / σ`` (its mean is ``c + m``).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.model_selection import KFold
    >>> from skhyper.inner.ridge import cv_ridge_moments
    >>> rng = np.random.default_rng(0)
    >>> X, Y = rng.normal(size=(40, 3)), rng.normal(size=(40, 1))
    >>> splits = list(KFold(4).split(X))
    >>> folds, full = cv_ridge_moments(X, Y, np.ones(40), splits, True)
    >>> train = splits[0][0]
    >>> centred = X[train] - X[train].mean(axis=0)
    >>> bool(np.allclose(folds[0].gram, centred.T @ centred))
    True
    """
    dtype = X.dtype
    root = np.sqrt(weights).astype(dtype)
    x_shift = np.zeros(X.shape[1])
    y_shift = np.zeros(Y.shape[1])
    if fit_intercept:
        w64 = weights.astype(np.float64)
        y_shift = (Y.T @ w64) / w64.sum()
        if not sp.issparse(X):
            x_shift = np.asarray(X.T @ w64).ravel() / w64.sum()
    if sp.issparse(X):
        Z = sp.csr_matrix(X).multiply(root[:, None]).tocsr()
    else:
        # One copy of X at most (none without intercept and weights).
        weighted = bool(np.any(root != 1))
        if fit_intercept:
            Z = X - x_shift.astype(dtype)
            if weighted:
                Z *= root[:, None]
        else:
            Z = X * root[:, None] if weighted else X
    Y_scaled = (Y - y_shift.astype(dtype)) * root[:, None]
    full = _sums(Z, Y_scaled, root)
    folds = []
    for train, test in splits:
        counts = np.bincount(np.concatenate([train, test]), minlength=X.shape[0])
        if np.any(counts != 1):
            raise ValueError("each training part must be the rest of the data")
        held_out = _sums(Z[test], Y_scaled[test], root[test])
        folds.append(_centre(full - held_out, x_shift, y_shift, fit_intercept, dtype))
    return folds, _centre(full, x_shift, y_shift, fit_intercept, dtype)
