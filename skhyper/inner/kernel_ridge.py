"""Kernel ridge regression as an inner problem.

The training problem of :class:`sklearn.kernel_ridge.KernelRidge` with sample
weights ``s`` is solved, as scikit-learn does, on the rescaled system

    (S K S + α I) b = S y,      dual_coef = S b,      S = diag(√s),

and a validation point ``x`` is predicted as ``k(x, X_train) dual_coef``. The
hyperparameters are ``α`` and, for the ``"rbf"`` and ``"laplacian"`` kernels,
the width ``γ`` of ``k(x, x') = exp(-γ d(x, x'))``; they are optimised as
``θ = log λ``.

The inner solve is a Cholesky factorisation (exact). The hypergradient goes
through the engine with the gradient-step map

    Φ(b, θ) = b - η ((S K(γ) S + α I) b - S y),

whose Jacobian ``I - η (S K S + α I)`` is symmetric, so AID-CG applies.
"""

import math

import numpy as np
import scipy.sparse as sp
import torch

from ..exceptions import NonFiniteError
from ..hypergrad import hypergradient
from ..tuning import FoldResult
from ..utils import as_tensor, resolve_device, to_numpy, torch_dtype_for

__all__ = ["KERNELS", "KernelRidgeFoldProblem", "pairwise_distances_for"]

#: Kernels supported, with the hyperparameters each one has.
KERNELS = {
    "linear": ("alpha",),
    "rbf": ("alpha", "gamma"),
    "laplacian": ("alpha", "gamma"),
}


def pairwise_distances_for(kernel, A, B):
    """The distance matrix a kernel is a function of (torch, float64 safe).

    ``"rbf"``: squared Euclidean distances; ``"laplacian"``: Manhattan
    distances; ``"linear"``: the inner products ``A Bᵀ``.

    Examples
    --------
    >>> import torch
    >>> from skhyper.inner.kernel_ridge import pairwise_distances_for
    >>> A = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    >>> pairwise_distances_for("rbf", A, A)
    tensor([[0., 5.],
            [5., 0.]])
    >>> pairwise_distances_for("laplacian", A, A)[0, 1].item()
    3.0
    """
    if kernel == "linear":
        return A @ B.T
    if kernel == "rbf":
        sq = (A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2.0 * (A @ B.T)
        return sq.clamp_min(0.0)
    if kernel == "laplacian":
        return torch.cdist(A, B, p=1)
    raise ValueError(f"kernel must be one of {sorted(KERNELS)}, got {kernel!r}")


class KernelRidgeFoldProblem:
    """One cross-validation fold of kernel ridge regression.

    Parameters
    ----------
    X_train, y_train, X_val, y_val : array-like
        The fold's training and validation parts (dense; sparse input is
        densified row-wise by the kernel computation only).
    kernel : {"linear", "rbf", "laplacian"}
        The kernel of :class:`~sklearn.kernel_ridge.KernelRidge`.
    tuned : tuple of str
        Which of ``("alpha", "gamma")`` are optimised; ``theta`` holds their
        logarithms in this order.
    fixed : dict
        Values of the hyperparameters that are not tuned (``alpha``,
        ``gamma``).
    sample_weight_train, sample_weight_val : array-like, default=None
        Sample weights of the two parts.
    hypergrad : {"cg", "fp", "gmres", "exact", "itd", "itd-forward"}, default="cg"
        Hypergradient method of the engine.
    linsys_tol, linsys_max_iter : float, int
        Tolerance and cap of the linear system (AID), or the number of ITD
        steps (``linsys_max_iter``).
    device : str, default="auto"

    Notes
    -----
    The validation loss is the (weighted) mean squared error over validation
    samples and outputs, the loss that ``neg_mean_squared_error`` reports.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.kernel_ridge import KernelRidge
    >>> from skhyper.inner.kernel_ridge import KernelRidgeFoldProblem
    >>> rng = np.random.RandomState(0)
    >>> X, y = rng.normal(size=(40, 3)), rng.normal(size=40)
    >>> fold = KernelRidgeFoldProblem(X[:30], y[:30], X[30:], y[30:], kernel="rbf")
    >>> result = fold.evaluate(np.log([0.5, 0.2]), fold.initial_state())
    >>> model = KernelRidge(alpha=0.5, kernel="rbf", gamma=0.2).fit(X[:30], y[:30])
    >>> mse = np.mean((model.predict(X[30:]) - y[30:]) ** 2)
    >>> bool(np.isclose(result.loss, mse)), result.grad.shape
    (True, (2,))
    """

    def __init__(
        self,
        X_train,
        y_train,
        X_val,
        y_val,
        *,
        kernel="rbf",
        tuned=("alpha", "gamma"),
        fixed=None,
        sample_weight_train=None,
        sample_weight_val=None,
        hypergrad="cg",
        linsys_tol=1e-8,
        linsys_max_iter=200,
        device="auto",
    ):
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {sorted(KERNELS)}, got {kernel!r}")
        unknown = set(tuned) - set(KERNELS[kernel])
        if unknown:
            raise ValueError(
                f"the {kernel!r} kernel has hyperparameters {KERNELS[kernel]}; "
                f"cannot tune {sorted(unknown)}"
            )
        self.kernel = kernel
        self.tuned = tuple(tuned)
        self.fixed = dict(fixed or {})
        self.hypergrad = hypergrad
        self.linsys_tol = linsys_tol
        self.linsys_max_iter = linsys_max_iter
        self.device = resolve_device(device)
        self.dtype = torch_dtype_for(X_train)

        # Fixed per fold: the distance matrices the kernels are functions of,
        # formed in float64 (then stored in the working precision): in float32,
        # |a|² + |b|² - 2 a·b loses every digit when the features have a large
        # mean. The rbf and laplacian kernels are unchanged by a shift of the
        # data, so the training mean is also taken out first.
        def dense(X):
            X = X.toarray() if sp.issparse(X) else np.asarray(X)
            return as_tensor(X, torch.float64, self.device)

        Xt, Xv = dense(X_train), dense(X_val)
        if kernel != "linear":
            centre = Xt.mean(dim=0)
            Xt, Xv = Xt - centre, Xv - centre
        self.dist_train = pairwise_distances_for(kernel, Xt, Xt).to(self.dtype)
        self.dist_val = pairwise_distances_for(kernel, Xv, Xt).to(self.dtype)
        self.y_train = self._as_2d(y_train)
        self.y_val = self._as_2d(y_val)
        self.single_output = np.ndim(y_train) == 1
        self.sqrt_sw = self._sqrt_weights(sample_weight_train, len(self.y_train))
        weights = self._sqrt_weights(sample_weight_val, len(self.y_val)) ** 2
        self.val_weights = weights / weights.sum()

    def _as_2d(self, y):
        y = as_tensor(np.asarray(y), self.dtype, self.device)
        return y[:, None] if y.ndim == 1 else y

    def _sqrt_weights(self, sample_weight, n):
        if sample_weight is None:
            return torch.ones(n, dtype=self.dtype, device=self.device)
        return as_tensor(np.asarray(sample_weight), self.dtype, self.device).sqrt()

    # ------------------------------------------------------------------
    # The maths, as functions of θ (log-hyperparameters, torch).

    def _values(self, theta):
        """α and γ as tensors, tuned ones differentiable through ``theta``."""
        values = {}
        for name in ("alpha", "gamma"):
            if name in self.tuned:
                values[name] = theta[self.tuned.index(name)].exp()
            else:
                values[name] = torch.as_tensor(
                    float(self.fixed.get(name, 1.0)), dtype=self.dtype
                ).to(self.device)
        return values

    def _kernel(self, distances, gamma):
        if self.kernel == "linear":
            return distances
        return torch.exp(-gamma * distances)

    def _system(self, theta):
        values = self._values(theta)
        K = self._kernel(self.dist_train, values["gamma"])
        K = self.sqrt_sw[:, None] * K * self.sqrt_sw[None, :]
        return K, values

    def fp_map(self, step_size):
        """The gradient-step map ``Φ(b, θ)`` with step ``η``."""
        rhs = self.sqrt_sw[:, None] * self.y_train

        def phi(b, theta):
            K, values = self._system(theta)
            return b - step_size * (K @ b + values["alpha"] * b - rhs)

        return phi

    def outer_loss(self, b, theta):
        """Weighted validation mean squared error ``E(b, θ)``."""
        values = self._values(theta)
        K_val = self._kernel(self.dist_val, values["gamma"])
        residual = K_val @ (self.sqrt_sw[:, None] * b) - self.y_val
        return (self.val_weights[:, None] * residual**2).sum() / residual.shape[1]

    # ------------------------------------------------------------------
    # The fold-problem protocol of :func:`skhyper.tuning.tune`.

    def initial_state(self):
        return {"b": None, "v": None}

    def evaluate(self, theta, state):
        theta_t = torch.as_tensor(np.asarray(theta), dtype=self.dtype).to(self.device)

        # Step 1: the inner problem, exactly, by a Cholesky factorisation.
        with torch.no_grad():
            K, values = self._system(theta_t)
            system = K + values["alpha"] * torch.eye(
                K.shape[0], dtype=K.dtype, device=K.device
            )
            factor, failed = torch.linalg.cholesky_ex(system)
            if int(failed) != 0:
                raise NonFiniteError(
                    "kernel ridge: the training system K + alpha I is not "
                    "positive definite in working precision; raise the lower "
                    "bound of alpha"
                )
            b = torch.cholesky_solve(self.sqrt_sw[:, None] * self.y_train, factor)
            # η = 1 / (largest row sum + α) bounds the curvature from above.
            step = 1.0 / float(K.abs().sum(1).max() + values["alpha"])

        # Steps 2 and 3: the linear system and the hypergradient, in the engine
        # (ITD starts from the previous solution instead of the exact one).
        start = b if not self.hypergrad.startswith("itd") else state["b"]
        if start is None:
            start = torch.zeros_like(b)
        result = hypergradient(
            self.fp_map(step),
            self.outer_loss,
            start,
            theta_t,
            method=self.hypergrad,
            tol=self.linsys_tol,
            max_iter=self.linsys_max_iter,
            v0=state["v"],
            warn=False,
        )
        loss = result.outer_loss
        if not math.isfinite(loss):
            raise NonFiniteError("kernel ridge: non-finite validation loss")
        return FoldResult(
            loss=loss,
            grad=to_numpy(result.grad).astype(np.float64),
            state={"b": result.w, "v": result.v, "values": _floats(values)},
            linsys_converged=bool(result.info.converged),
        )

    def coefficients(self, state):
        """``dual_coef_`` in :class:`~sklearn.kernel_ridge.KernelRidge`'s
        shape, from a state returned by :meth:`evaluate`."""
        dual = to_numpy(self.sqrt_sw[:, None] * state["b"])
        return dual[:, 0] if self.single_output else dual


def _floats(values):
    return {name: float(value) for name, value in values.items()}
