"""The logistic training objectives of every fold at once.

Cross-validation solves one problem per fold on overlapping rows of the same
``X``. Here the folds share one copy of ``X``: fold ``f`` sees every row,
with its training weight ``t_if`` (zero for the rows it holds out) and its
validation weight ``u_if`` (zero for the rows it trains on). The weights of
all folds then enter one matrix product per pass over ``X``, which serves
every fold's decision values, gradient or Hessian-vector product, and the
validation loss comes from the same decision values as the training loss.

Weights are a tensor ``W`` of shape ``(n_folds, n_outputs, n_columns)``: one
:class:`~skhyper.inner._logistic_objective.LogisticObjective` layout per fold.
"""

import copy

import numpy as np
import torch

from ..exceptions import NonFiniteError
from ._logistic_objective import (
    LogisticObjective,
    assemble_hessian,
    predict_proba_from,
)

__all__ = ["LockstepObjective", "fold_weight_matrix"]


def fold_weight_matrix(splits, weights, index, n_samples):
    """Per-fold weights: column ``f`` holds ``weights`` on the rows of
    ``splits[f][index]`` (counted with multiplicity), zero elsewhere.

    Returns the matrix ``(n_samples, n_folds)`` and its column sums.
    """
    columns = [
        np.bincount(split[index], weights=weights[split[index]], minlength=n_samples)
        for split in splits
    ]
    matrix = np.stack(columns, axis=1)
    return matrix, matrix.sum(axis=0)


class LockstepObjective:
    """The mean-scaled training objectives and validation losses of all folds.

    Parameters
    ----------
    X : {ndarray, sparse matrix} of shape (n_samples, n_features)
        All the data.
    y_encoded : ndarray of shape (n_samples,)
        Class indices.
    n_classes : int
        Number of classes.
    splits : list of (train, test) index arrays
        The folds.
    fit_weight, val_weight : ndarray of shape (n_samples,)
        Weights of the training losses (class weights folded in) and of the
        validation losses.
    fit_intercept : bool
        Fit an unpenalised intercept.
    device : torch.device
        Where the tensors live.
    low_precision : bool, default=False
        Keep a float32 copy of ``X`` for :meth:`hessian_product` with
        ``low=True`` (see there).
    """

    def __init__(
        self,
        X,
        y_encoded,
        n_classes,
        splits,
        fit_weight,
        val_weight,
        fit_intercept,
        device,
        low_precision=False,
    ):
        # The whole data as one fold: its layout, decision values, transposed
        # products and Hessian blocks serve every fold.
        self.data = LogisticObjective(
            X, y_encoded, n_classes, fit_weight, fit_intercept, device
        )
        data = self.data
        self.n_folds = len(splits)
        self.shape = (self.n_folds, data.n_outputs, data.n_columns)
        train, self.weight_sum = fold_weight_matrix(
            splits, np.asarray(fit_weight, np.float64), 0, data.n_samples
        )
        val, val_sum = fold_weight_matrix(
            splits, np.asarray(val_weight, np.float64), 1, data.n_samples
        )
        self.train_weight = torch.as_tensor(train / self.weight_sum, device=device)
        self.val_weight = torch.as_tensor(val / val_sum, device=device)
        self._sums = torch.as_tensor(self.weight_sum, device=device)
        # Class indices shaped for gathering from decision values.
        self._labels = torch.as_tensor(
            np.asarray(y_encoded), dtype=torch.int64, device=device
        )[:, None, None]
        self._X32 = self._XT32 = None
        if low_precision and data.sparse:
            self._X32 = data.X.to(torch.float32)
            self._XT32 = data.XT.to(torch.float32)
        elif low_precision:
            # Dense: [X, 1] (or X), so that the intercept rides along in the
            # matrix products.
            X32 = data.X.to(torch.float32)
            if fit_intercept:
                X32 = torch.cat([X32, torch.ones_like(X32[:, :1])], dim=1)
            self._X32 = X32

    @property
    def low_precision(self):
        """Whether there is a float32 copy of ``X`` for the products."""
        return self._X32 is not None

    def zeros(self):
        return torch.zeros(self.shape, dtype=self.data.dtype, device=self.data.device)

    def whole(self):
        """The same objective with a single fold that trains on every row:
        the model on all the data, sharing this one's copies of ``X``."""
        whole = copy.copy(self)
        weight = self.data.weight  # the fit weights divided by their sum
        whole.n_folds = 1
        whole.shape = (1,) + self.shape[1:]
        whole.weight_sum = np.array([self.data.weight_sum])
        whole.train_weight = weight[:, None]
        whole.val_weight = torch.zeros_like(weight[:, None])
        whole._sums = torch.as_tensor(whole.weight_sum, device=weight.device)
        return whole

    def decision(self, W):
        """Decision values of every fold, shape ``(n_samples, n_folds,
        n_outputs)``: one pass over ``X``."""
        n_folds, n_outputs, n_columns = W.shape
        Z = self.data.decision(W.reshape(n_folds * n_outputs, n_columns))
        return Z.reshape(-1, n_folds, n_outputs)

    def transposed(self, R):
        """``[X, 1]ᵀ R`` for ``R`` shaped like decision values, laid out like
        ``W``: one pass over ``X``."""
        n_samples, n_folds, n_outputs = R.shape
        flat = self.data._transposed_product(R.reshape(n_samples, -1))
        return flat.reshape(n_folds, n_outputs, -1)

    def losses(self, Z):
        """Per-sample, per-fold log loss, shape ``(n_samples, n_folds)``."""
        if Z.shape[2] == 1:
            target = self.data.target[:, None, :]
            return (torch.nn.functional.softplus(Z) - target * Z)[:, :, 0]
        return torch.logsumexp(Z, dim=2) - self._true_class_decision(Z)

    def _true_class_decision(self, Z):
        """Each sample's decision value for its own class, per fold."""
        labels = self._labels.expand(-1, Z.shape[1], -1)
        return Z.gather(2, labels)[:, :, 0]

    def _losses_and_proba(self, Z):
        """:meth:`losses` and :func:`predict_proba_from_folds` from one
        exponential of the decision values (half the work of the two)."""
        if Z.shape[2] == 1:
            return self.losses(Z), torch.sigmoid(Z)
        largest = Z.amax(dim=2, keepdim=True)
        exponentials = torch.exp(Z - largest)
        totals = exponentials.sum(dim=2, keepdim=True)
        log_partition = (largest + torch.log(totals))[:, :, 0]
        losses = log_partition - self._true_class_decision(Z)
        return losses, exponentials / totals

    def penalty_scale(self, theta):
        """``exp(-θ) / S_f``, shape ``(n_folds, 1, 1 or n_features)``."""
        return torch.exp(-theta)[None, None, :] / self._sums[:, None, None]

    def _penalty_diagonal(self, theta):
        """The penalty's Hessian diagonal, laid out like ``W``: ``μ_f`` on
        the coefficients, zero on the intercept (broadcast over classes)."""
        n_features = self.data.n_features
        diagonal = torch.zeros(
            (self.n_folds, 1, self.data.n_columns),
            dtype=self.data.dtype,
            device=self.data.device,
        )
        diagonal[:, :, :n_features] = self.penalty_scale(theta)
        return diagonal

    def _penalty_gradient(self, W, diagonal):
        """Per-fold gradient of the penalty and symmetry terms (a linear map
        of ``W``: also their Hessian-vector product)."""
        grad = diagonal * W
        symmetry = self.data.symmetry_weight
        if symmetry:
            grad[:, :, -1] += symmetry * W[:, :, -1].sum(dim=1, keepdim=True)
        return grad

    def _penalty(self, W, theta):
        """Per-fold value and gradient of the penalty and symmetry terms."""
        grad = self._penalty_gradient(W, self._penalty_diagonal(theta))
        # The quadratic form ½ Wᵀ P W with P the penalty's Hessian.
        return 0.5 * (grad * W).sum(dim=(1, 2)), grad

    def values(self, W, theta, Z):
        """Per-fold training objective ``ℓ_f(W_f, θ)`` from decision values."""
        data = (self.train_weight * self.losses(Z)).sum(dim=0)
        return data + self._penalty(W, theta)[0]

    def values_and_gradients(self, W, theta, Z, low=False):
        """Per-fold ``ℓ_f``, ``∇ℓ_f`` and the probabilities at ``Z``; with
        ``low`` (and ``low_precision``) the pass over ``X`` for the gradient
        runs in float32."""
        losses, proba = self._losses_and_proba(Z)
        residual = self.train_weight[:, :, None] * (proba - self.data.target[:, None])
        penalty, penalty_grad = self._penalty(W, theta)
        values = (self.train_weight * losses).sum(dim=0) + penalty
        if low and self.low_precision:
            data_grads = self._transposed32(residual.to(torch.float32))
        else:
            data_grads = self.transposed(residual)
        grads = data_grads + penalty_grad
        _check_finite(values, grads, "training")
        return values, grads, proba

    def validation(self, Z, proba, low=False):
        """Per-fold validation loss ``E_f`` and its gradient ``∇E_f`` (its
        pass over ``X`` in float32 with ``low``, as the right-hand side of a
        linear system solved no more tightly than that)."""
        residual = self.val_weight[:, :, None] * (proba - self.data.target[:, None])
        losses = (self.val_weight * self.losses(Z)).sum(dim=0)
        if low and self.low_precision:
            grads = self._transposed32(residual.to(torch.float32))
        else:
            grads = self.transposed(residual)
        _check_finite(losses, grads, "validation")
        return losses, grads

    def hessian_product(self, theta, proba, low=False):
        """Return ``U -> (H_f U_f for every f, decision(U))``.

        With ``low=True`` (and ``low_precision``), the two passes over ``X``
        run in float32, about twice as fast on the CPU and more on GPUs: the
        products are then accurate to about 1e-6 relative, enough for
        Newton's directions and for conjugate gradient to a tolerance above
        that; the penalty and everything else stay in float64.
        """
        low = low and self.low_precision
        weight = self.train_weight[:, :, None]
        if low:
            weight, proba = weight.to(torch.float32), proba.to(torch.float32)
        weighted = weight * proba
        curvature = weighted * (1.0 - proba) if proba.shape[2] == 1 else None
        diagonal = self._penalty_diagonal(theta)

        def product(U):
            ZU = self._decision32(U) if low else self.decision(U)
            if curvature is not None:
                R = curvature * ZU
            else:
                R = weighted * (ZU - (proba * ZU).sum(dim=2, keepdim=True))
            HU = self._transposed32(R) if low else self.transposed(R)
            return HU + self._penalty_gradient(U, diagonal), ZU.to(U.dtype)

        return product

    def _decision32(self, W):
        """:meth:`decision` in float32."""
        n_folds, n_outputs, n_columns = W.shape
        flat = W.reshape(n_folds * n_outputs, n_columns).to(torch.float32)
        if self._XT32 is None:  # dense [X, 1]
            return (self._X32 @ flat.T).reshape(-1, n_folds, n_outputs)
        n_features = self.data.n_features
        Z = self._X32 @ flat[:, :n_features].T
        if self.data.fit_intercept:
            Z = Z + flat[:, n_features]
        return Z.reshape(-1, n_folds, n_outputs)

    def _transposed32(self, R):
        """:meth:`transposed` from float32, returned in float64."""
        n_samples, n_folds, n_outputs = R.shape
        flat = R.reshape(n_samples, -1)
        if self._XT32 is None:  # dense [X, 1]
            product = flat.T @ self._X32
        else:
            product = (self._XT32 @ flat).T
            if self.data.fit_intercept:
                product = torch.cat([product, flat.sum(dim=0)[:, None]], dim=1)
        return product.to(self.data.dtype).reshape(n_folds, n_outputs, -1)

    def _gram(self, c):
        """``X̃ᵀ diag(c) X̃``, in float32 when there is a dense float32 copy:
        it only serves as a preconditioner."""
        if self._X32 is None or self._XT32 is not None:
            return self.data._weighted_gram(c)
        X = self._X32
        return (X.T @ (c.to(torch.float32)[:, None] * X)).to(self.data.dtype)

    def mean_data_hessian(self, proba):
        """The mean over folds of their data Hessians, flattened per fold as
        in :meth:`LogisticObjective.hessian`: one Hessian's cost, since every
        block is ``X̃ᵀ diag(c) X̃`` with ``c`` averaged over the folds."""
        return assemble_hessian(proba, self.train_weight / self.n_folds, self._gram)


def predict_proba_from_folds(Z):
    """Probabilities of decision values shaped ``(n_samples, n_folds, K)``."""
    n_samples, n_folds, n_outputs = Z.shape
    return predict_proba_from(Z.reshape(-1, n_outputs)).reshape(Z.shape)


def _check_finite(values, grads, what):
    if not (bool(torch.isfinite(values).all()) and bool(torch.isfinite(grads).all())):
        raise NonFiniteError(
            f"non-finite value in the {what} log loss of a fold or its gradient "
            "(the inner weights w)"
        )
