"""The logistic training objective of one fold, with its derivatives.

See :mod:`skhyper.inner.logistic` for the objective in scikit-learn's scaling
and the mean-scaled form computed here.
"""

import warnings

import numpy as np
import scipy.sparse as sp
import torch

from ..utils import as_tensor

__all__ = [
    "LogisticObjective",
    "assemble_hessian",
    "pointwise_log_loss",
    "predict_proba_from",
]


class LogisticObjective:
    """The mean-scaled training objective of one fold, with its derivatives.

    Weights are a tensor ``W`` of shape ``(n_outputs, n_columns)``: one row per
    class (a single row for two classes) and one column per feature, plus a
    last column for the intercept when ``fit_intercept``; the layout of
    scikit-learn's ``coef_`` with ``intercept_`` appended.
    """

    def __init__(self, X, y, n_classes, sample_weight, fit_intercept, device):
        self.dtype = torch.float64
        self.device = device
        self.sparse = sp.issparse(X)
        self.n_samples, self.n_features = X.shape
        self.n_classes = int(n_classes)
        self.n_outputs = 1 if self.n_classes == 2 else self.n_classes
        self.fit_intercept = bool(fit_intercept)
        self.n_columns = self.n_features + int(self.fit_intercept)
        # Float64 throughout: Newton's Cholesky and the tight gradient
        # tolerance that the hypergradient needs are out of float32's reach.
        self.X = _to_tensor(X, device)
        # Sparse CSR tensors cannot be transposed in place; keep Xᵀ as well.
        self.XT = (
            _to_tensor(sp.csr_matrix(X).T.tocsr(), device) if self.sparse else None
        )
        self._augmented = None  # [X, 1], formed on the first Hessian
        weight = np.ones(self.n_samples) if sample_weight is None else sample_weight
        weight = np.asarray(weight, dtype=np.float64)
        self.weight_sum = float(weight.sum())
        self.weight = torch.as_tensor(weight / self.weight_sum, device=device)
        self.gradient_scale = _gradient_scale(X, weight / self.weight_sum, device)
        if self.fit_intercept:
            ones = torch.ones(1, dtype=self.dtype, device=device)
            self.gradient_scale = torch.cat([self.gradient_scale, ones])
        y = torch.as_tensor(np.asarray(y, dtype=np.int64), device=device)
        if self.n_outputs == 1:
            self.target = y.to(self.dtype).reshape(-1, 1)
        else:
            self.target = torch.nn.functional.one_hot(y, self.n_classes).to(self.dtype)
        # The softmax is unchanged when a constant is added to every class's
        # intercept; ½ μ (Σ_k b_k)² removes that direction without moving the
        # minimiser off scikit-learn's symmetric one (Σ_k b_k = 0).
        self.symmetry_weight = (
            0.25 / self.n_classes if self.n_outputs > 1 and self.fit_intercept else 0.0
        )

    def gradient_size(self, grad):
        """The stopping measure of a gradient: its largest entry, each column
        divided by :attr:`gradient_scale` (the root mean square of that column
        of ``X``, when above one), which makes the tolerance the same for
        data and for the data with some columns scaled up."""
        return (grad / self.gradient_scale).abs().max()

    @property
    def n_weights(self):
        return self.n_outputs * self.n_columns

    def zeros(self):
        return torch.zeros(
            self.n_outputs, self.n_columns, dtype=self.dtype, device=self.device
        )

    def decision(self, W):
        """Decision values ``X W_coefᵀ + b`` of shape ``(n, n_outputs)``."""
        Z = self.X @ W[:, : self.n_features].T
        return Z + W[:, self.n_features] if self.fit_intercept else Z

    def data_terms(self, W, Z=None):
        """The weighted mean log loss ``Σ_i ŝ_i l_i``, its gradient in ``W`` and
        the decision values ``Z`` (computed unless given)."""
        Z = self.decision(W) if Z is None else Z
        value = torch.dot(self.weight, pointwise_log_loss(Z, self.target))
        residual = self.weight[:, None] * (predict_proba_from(Z) - self.target)
        return value, self._transposed_product(residual), Z

    def penalty_scale(self, theta):
        """``exp(-θ) / S``, broadcast over the rows of the coefficients."""
        return torch.exp(-theta) / self.weight_sum

    def value(self, W, theta):
        """The objective ``ℓ(W, θ)``; differentiable in both arguments."""
        data = torch.dot(self.weight, pointwise_log_loss(self.decision(W), self.target))
        coef = W[:, : self.n_features]
        penalty = 0.5 * (self.penalty_scale(theta) * coef**2).sum()
        if self.symmetry_weight:
            penalty = penalty + 0.5 * self.symmetry_weight * W[:, -1].sum() ** 2
        return data + penalty

    def _penalty_diagonal(self, theta):
        """``exp(-θ) / S`` on the coefficient columns, zero on the intercept."""
        scale = self.penalty_scale(theta).expand(self.n_features)
        if not self.fit_intercept:
            return scale
        return torch.cat([scale, scale.new_zeros(1)])

    def _penalty_terms(self, W, theta, diagonal=None):
        """Value and gradient of the penalty and of the intercept symmetry term
        (``diagonal``: :meth:`_penalty_diagonal` at ``theta``, if known)."""
        if diagonal is None:
            diagonal = self._penalty_diagonal(theta)
        grad = diagonal * W
        value = 0.5 * (grad * W).sum()
        if self.symmetry_weight:
            total = W[:, -1].sum()
            value = value + 0.5 * self.symmetry_weight * total**2
            grad[:, -1] += self.symmetry_weight * total
        return value, grad

    def value_and_gradient(self, W, theta, Z=None):
        """Return ``ℓ(W, θ)``, ``∇_Wℓ`` and the decision values ``Z``."""
        value, grad, Z = self.data_terms(W, Z)
        penalty, penalty_grad = self._penalty_terms(W, theta)
        return value + penalty, grad + penalty_grad, Z

    def value_from_decision(self, W, theta, Z):
        """``ℓ(W, θ)`` from decision values ``Z = decision(W)`` already known."""
        data = torch.dot(self.weight, pointwise_log_loss(Z, self.target))
        return data + self._penalty_terms(W, theta)[0]

    def hessian(self, W, theta, Z=None):
        """The Hessian ``∇²_Wℓ`` over the row-major flattening of ``W``.

        Formed in chunks of samples so that its memory stays bounded.
        """
        return self.add_penalty_hessian(self.data_hessian(W, Z), theta)

    def data_hessian(self, W, Z=None):
        """The Hessian of the data terms alone (no penalty), flattened as in
        :meth:`hessian`."""
        return self._data_hessian(self.decision(W) if Z is None else Z)

    def add_penalty_hessian(self, H, theta, scale=None):
        """``H`` plus the Hessian of the penalty and symmetry terms at ``theta``,
        as a new matrix; ``scale`` replaces :meth:`penalty_scale` when given
        (one value, or one per feature)."""
        H = H.clone()
        diagonal = torch.zeros(
            self.n_outputs, self.n_columns, dtype=self.dtype, device=self.device
        )
        diagonal[:, : self.n_features] = (
            self.penalty_scale(theta) if scale is None else scale
        )
        H.diagonal().add_(diagonal.reshape(-1))
        if self.symmetry_weight:
            last = torch.arange(self.n_outputs, device=self.device)
            index = last * self.n_columns + self.n_features
            H[index[:, None], index[None, :]] += self.symmetry_weight
        return H

    def hessian_operator(self, W, theta, Z=None):
        """Return ``u -> ∇²_Wℓ u`` on flat vectors, without forming the Hessian."""
        product = self.hessian_product(W, theta, Z)
        return lambda u: product(u.reshape(W.shape))[0].reshape(-1)

    def hessian_product(self, W, theta, Z=None):
        """Return ``U -> (∇²_Wℓ U, decision(U))`` for ``U`` shaped like ``W``.

        Each product costs two passes over ``X``: ``ZU = X̃U``, then ``X̃ᵀR``
        with ``R = ŝ ∘ A(ZU)`` and ``A`` the curvature of the loss in the
        decision values; ``ZU`` comes back too, for line searches.
        """
        proba = predict_proba_from(self.decision(W) if Z is None else Z)
        weight = self.weight[:, None]
        curvature = weight * proba * (1.0 - proba) if self.n_outputs == 1 else None
        diagonal = self._penalty_diagonal(theta)

        def product(U):
            ZU = self.decision(U)
            if curvature is not None:
                R = curvature * ZU
            else:
                R = weight * proba * (ZU - (proba * ZU).sum(dim=1, keepdim=True))
            _, penalty_grad = self._penalty_terms(U, theta, diagonal)
            return self._transposed_product(R) + penalty_grad, ZU

        return product

    def _transposed_product(self, R):
        """``[X, 1]ᵀ R`` laid out like ``W``: shape ``(n_outputs, n_columns)``."""
        product = (self.XT @ R).T if self.sparse else R.T @ self.X
        if self.fit_intercept:
            product = torch.cat([product, R.sum(dim=0)[:, None]], dim=1)
        return product

    def _data_hessian(self, Z):
        return assemble_hessian(predict_proba_from(Z), self.weight, self._weighted_gram)

    def _weighted_gram(self, c):
        """``X̃ᵀ diag(c) X̃`` with ``X̃ = [X, 1]``, sparse ``X`` kept sparse."""
        if self.sparse:
            counts = self.X.crow_indices().diff()
            scaled = torch.sparse_csr_tensor(
                self.X.crow_indices(),
                self.X.col_indices(),
                self.X.values() * torch.repeat_interleave(c, counts),
                size=self.X.shape,
            )
            gram = (self.XT @ scaled).to_dense()
            if not self.fit_intercept:
                return gram
            column = self.XT @ c[:, None]
            corner = c.sum().reshape(1, 1)
            return torch.cat(
                [torch.cat([gram, column], 1), torch.cat([column.T, corner], 1)]
            )
        if self._augmented is None:
            ones = torch.ones_like(self.X[:, :1])
            self._augmented = (
                torch.cat([self.X, ones], dim=1) if self.fit_intercept else self.X
            )
        X = self._augmented
        return X.T @ (c[:, None] * X)

    def curvature_bound(self):
        """An upper bound ``L`` on the data part of the Hessian's eigenvalues.

        ``A_i ⪯ ¼`` (two classes) or ``½ I`` (softmax), so ``L ≤ c λ_max(X̃ᵀ
        diag(ŝ) X̃)``; the top eigenvalue comes from a few power iterations,
        inflated by a safety margin since they approach it from below.
        """
        generator = torch.Generator().manual_seed(0)
        u = torch.randn(self.n_columns, 1, generator=generator, dtype=self.dtype)
        u = u.to(self.device)
        estimate = 0.0
        for _ in range(30):
            u = u / torch.linalg.vector_norm(u)
            image = self._transposed_product(self.weight[:, None] * self.decision(u.T))
            image = image.T
            estimate = float(torch.dot(u.ravel(), image.ravel()))
            u = image
        factor = 0.25 if self.n_outputs == 1 else 0.5
        return 1.25 * factor * max(estimate, 0.0) + self.symmetry_weight * (
            self.n_classes
        )


def _gradient_scale(X, weight, device):
    """Per column of ``X``: its weighted root mean square, at least one."""
    if sp.issparse(X):
        squares = np.asarray(sp.csr_matrix(X).multiply(X).T @ weight).ravel()
    else:
        X = np.asarray(X)
        squares = weight @ (X * X)
    return torch.as_tensor(np.maximum(np.sqrt(squares), 1.0), device=device)


def _to_tensor(X, device):
    if not sp.issparse(X) and not np.asarray(X).flags.writeable:
        X = np.array(X)  # torch warns on read-only arrays (e.g. memory maps)
    # torch flags its sparse CSR support as beta with a UserWarning that says
    # nothing the user can act on.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]parse.*", category=UserWarning)
        return as_tensor(X, torch.float64, device)


def assemble_hessian(proba, weight, gram):
    """The data Hessian ``Σ_i s_i A_i ⊗ x̃_i x̃_iᵀ``, flattened row-major by
    class, from per-sample probabilities.

    ``A_i = diag(p_i) - p_i p_iᵀ`` (``p(1-p)`` for two classes), so block
    ``(k, m)`` is ``gram(c)`` with ``c = s p_k (δ_km - p_m)``; the blocks below
    the diagonal are the transposes of those above. ``proba`` has shape
    ``(n_samples, K)`` or ``(n_samples, n_folds, K)``, ``weight`` its shape
    without the last axis; the weighted curvatures are summed over folds, so
    that ``weight`` divided by the number of folds gives the folds' mean.
    """
    n_samples, n_outputs = proba.shape[0], proba.shape[-1]
    blocks = {}
    for k in range(n_outputs):
        for m in range(k, n_outputs):
            if n_outputs == 1:
                curvature = proba[..., 0] * (1.0 - proba[..., 0])
            else:
                curvature = proba[..., k] * (float(k == m) - proba[..., m])
            blocks[k, m] = gram((weight * curvature).reshape(n_samples, -1).sum(1))
    width = blocks[0, 0].shape[0]
    H = proba.new_empty(n_outputs * width, n_outputs * width)
    for (k, m), block in blocks.items():
        H[k * width : (k + 1) * width, m * width : (m + 1) * width] = block
        if m > k:
            H[m * width : (m + 1) * width, k * width : (k + 1) * width] = block.T
    return H


def pointwise_log_loss(Z, target):
    """Per-sample log loss of decision values ``Z`` against encoded targets."""
    if Z.shape[1] == 1:
        return (torch.nn.functional.softplus(Z) - target * Z).reshape(-1)
    return torch.logsumexp(Z, dim=1) - (target * Z).sum(dim=1)


def predict_proba_from(Z):
    """Probability of the positive class (one column) or of every class."""
    if Z.shape[1] == 1:
        return torch.sigmoid(Z)
    # Written out: on the CPU, over twice as fast as torch.softmax for a few
    # columns.
    exponentials = torch.exp(Z - Z.amax(dim=1, keepdim=True))
    return exponentials / exponentials.sum(dim=1, keepdim=True)
