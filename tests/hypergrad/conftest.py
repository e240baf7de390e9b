"""Bilevel test problems for the hypergradient engine, with references.

Each builder returns a :class:`types.SimpleNamespace` holding the fixed-point
map, the outer loss, the hyperparameters, the inner solution solved to machine
precision by a method independent of the engine (a linear solve, Newton, a
long fixed-point iteration) and, where one exists, the hypergradient in closed
form. Everything is float64 and seeded.
"""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification

DTYPE = torch.float64


def _tensor(array):
    return torch.as_tensor(np.asarray(array), dtype=DTYPE)


def build_ridge(n_features=8, per_feature=False, seed=0):
    """Ridge regression: ``ℓ = ½||Xw - y||² + ½ Σ λ_j w_j²``, ``E = ½||X_v w - y_v||²``.

    With ``H = XᵀX + diag(λ)``, ``w(λ) = H⁻¹Xᵀy`` and, since
    ``dw/dλ_j = -H⁻¹ e_j w_j``, ``∂f/∂λ_j = -w_j (H⁻¹ X_vᵀ (X_v w - y_v))_j``.
    """
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((40, n_features))
    y = X @ rng.standard_normal(n_features) + 0.5 * rng.standard_normal(40)
    X_val = rng.standard_normal((30, n_features))
    y_val = X_val @ rng.standard_normal(n_features)
    lam = rng.uniform(0.3, 2.0, n_features) if per_feature else np.array(0.7)

    # The closed forms, in numpy.
    hessian = X.T @ X + np.diag(np.broadcast_to(lam, (n_features,)))
    w_star = np.linalg.solve(hessian, X.T @ y)
    v_hess = np.linalg.solve(hessian, X_val.T @ (X_val @ w_star - y_val))
    grad = -w_star * v_hess if per_feature else np.array(-w_star @ v_hess)
    lipschitz = float(np.linalg.eigvalsh(hessian).max())

    Xt, yt, Xv, yv = map(_tensor, (X, y, X_val, y_val))

    def train_loss(w, lam):
        return 0.5 * ((Xt @ w - yt) ** 2).sum() + 0.5 * (lam * w * w).sum()

    def fp_map(w, lam):
        # The gradient step written out, without autograd.
        return w - (Xt.T @ (Xt @ w - yt) + lam * w) / lipschitz

    def outer_loss(w, lam):
        return 0.5 * ((Xv @ w - yv) ** 2).sum()

    return SimpleNamespace(
        train_loss=train_loss,
        fp_map=fp_map,
        outer_loss=outer_loss,
        lam=_tensor(lam),
        w_star=_tensor(w_star),
        grad=_tensor(grad),
        step_size=1.0 / lipschitz,
        n_features=n_features,
    )


def _softplus(z):
    return torch.nn.functional.softplus(z)


def build_logistic(n_features=5, seed=0):
    """L2 logistic regression with one hyperparameter per feature.

    ``ℓ(w, λ) = mean log(1 + exp(-s Xw)) + ½ Σ λ_j w_j²`` on the training part,
    ``E(w) = mean log(1 + exp(-s X_v w))`` on the validation part, ``s = ±1``.
    ``solve(λ)`` returns the minimiser by Newton's method to machine precision.
    """
    X, y = make_classification(
        n_samples=100,
        n_features=n_features,
        n_informative=min(3, n_features),
        n_redundant=0,
        random_state=seed,
    )
    X = (X - X.mean(0)) / X.std(0)
    signs = 2.0 * y - 1.0
    Xt, st = _tensor(X[:60]), _tensor(signs[:60])
    Xv, sv = _tensor(X[60:]), _tensor(signs[60:])
    lam = _tensor(np.linspace(0.05, 0.5, n_features))

    # ∇²ℓ ≼ XᵀX / (4 n) + max λ, so η = 1 / L keeps the gradient step a
    # contraction with a symmetric Jacobian.
    curvature = float(torch.linalg.eigvalsh(Xt.T @ Xt).max()) / (4 * Xt.shape[0])

    def lipschitz(lam):
        return curvature + float(lam.max())

    def train_loss(w, lam):
        return _softplus(-st * (Xt @ w)).mean() + 0.5 * (lam * w * w).sum()

    def outer_loss(w, lam):
        return _softplus(-sv * (Xv @ w)).mean()

    def solve(lam):
        w = torch.zeros(n_features, dtype=DTYPE)
        n = Xt.shape[0]
        for _ in range(50):
            p = torch.sigmoid(-st * (Xt @ w))
            grad = -(Xt.T @ (st * p)) / n + lam * w
            weights = p * (1 - p)
            hess = (Xt.T * weights) @ Xt / n + torch.diag(lam)
            w = w - torch.linalg.solve(hess, grad)
            if float(torch.linalg.vector_norm(grad)) < 1e-15:
                break
        return w

    step = 1.0 / lipschitz(lam)

    def fp_map(w, lam):
        p = torch.sigmoid(-st * (w @ Xt.T))
        grad = -(Xt.T @ (st * p)) / Xt.shape[0] + lam * w
        return w - step * grad

    return SimpleNamespace(
        train_loss=train_loss,
        fp_map=fp_map,
        outer_loss=outer_loss,
        solve=solve,
        lam=lam,
        w_star=solve(lam),
        step_size=step,
        lipschitz=lipschitz,
        n_features=n_features,
    )


def build_equilibrium(n_units=6, n_inputs=4, spectral_norm=0.5, seed=0):
    """Equilibrium layer ``w = tanh(A w + B x + c)`` with ``||A||₂ < 1``.

    The hyperparameters are ``[A, B, c]``; ``∂_wΦ = diag(1 - w²) A`` is not
    symmetric. ``solve(hparams)`` iterates the map (a contraction, since
    ``|tanh'| <= 1``) to machine precision.
    """
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=generator, dtype=DTYPE)

    A = randn(n_units, n_units)
    A = spectral_norm * A / torch.linalg.matrix_norm(A, ord=2)
    B = randn(n_units, n_inputs) / n_inputs**0.5
    c = 0.1 * randn(n_units)
    x = randn(n_inputs)
    target = 0.5 * randn(n_units)

    def fp_map(w, hparams):
        A, B, c = hparams
        return torch.tanh(A @ w + B @ x + c)

    def outer_loss(w, hparams):
        return 0.5 * ((w - target) ** 2).sum()

    def solve(hparams):
        w = torch.zeros(n_units, dtype=DTYPE)
        with torch.no_grad():
            for _ in range(500):
                w_new = fp_map(w, hparams)
                if float(torch.linalg.vector_norm(w_new - w)) == 0.0:
                    break
                w = w_new
        return w_new

    hparams = [A, B, c]
    return SimpleNamespace(
        fp_map=fp_map,
        outer_loss=outer_loss,
        solve=solve,
        hparams=hparams,
        w_star=solve(hparams),
    )


@pytest.fixture(scope="session")
def ridge():
    return build_ridge


@pytest.fixture(scope="session")
def logistic():
    return build_logistic


@pytest.fixture(scope="session")
def equilibrium():
    return build_equilibrium
