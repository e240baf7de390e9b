"""Guards of the engine: exact zeros, indefinite systems, non-finite values
named by step, bad inputs refused, and tiny gradients in float32."""

import math
import warnings

import numpy as np
import pytest
import torch

from skhyper.exceptions import HypergradientWarning, NonFiniteError
from skhyper.hypergrad import (
    aid,
    conjugate_gradient,
    exact,
    fixed_point,
    gmres,
    hypergradient,
    itd,
    relative_error,
)

F64 = torch.float64


@pytest.mark.parametrize("method", ["cg", "fp", "gmres", "exact"])
def test_zero_rhs_gives_an_exact_zero_hypergradient(logistic, method):
    problem = logistic(n_features=5)
    target = problem.w_star.clone()

    def outer_loss(w, lam):
        # Minimal at the inner solution: ∇_wE = 0 and ∇_λE = 0 there.
        return 0.5 * ((w - target) ** 2).sum()

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = hypergradient(
            problem.fp_map,
            outer_loss,
            problem.w_star,
            problem.lam,
            method=method,
            v0=torch.ones(5, dtype=F64) if method != "exact" else None,
        )

    assert torch.equal(result.grad, torch.zeros(5, dtype=F64))
    assert torch.equal(result.v, torch.zeros(5, dtype=F64))
    assert result.info.converged and result.info.n_iter == 0


@pytest.mark.parametrize("function", [conjugate_gradient, gmres])
def test_solvers_return_exact_zero_for_zero_rhs(function):
    x, info = function(lambda v: 2 * v, torch.zeros(4, dtype=F64), x0=torch.ones(4))
    assert torch.equal(x, torch.zeros(4, dtype=F64))
    assert info.residual == 0.0 and info.message == "zero rhs"
    x, info = fixed_point(lambda v: 0.5 * v, torch.zeros(4, dtype=F64))
    assert torch.equal(x, torch.zeros(4, dtype=F64))


def test_cg_on_an_indefinite_system_warns_and_does_not_converge():
    A = torch.diag(torch.tensor([3.0, 1.0, -2.0, 0.5], dtype=F64))
    b = torch.ones(4, dtype=F64)

    with pytest.warns(HypergradientWarning, match="not positive definite"):
        x, info = conjugate_gradient(lambda v: A @ v, b, tol=1e-12)

    assert not info.converged
    assert "curvature" in info.message
    # The reported residual is that of the iterate returned.
    true = float(torch.linalg.vector_norm(b - A @ x) / torch.linalg.vector_norm(b))
    assert info.residual == pytest.approx(true, rel=1e-12)
    assert info.residual > 1e-3


def test_aid_cg_on_an_expanding_symmetric_map_warns():
    # Φ(w) = 1.5 w - λ: ∂_wΦ = 1.5 I is symmetric but I - ∂_wΦᵀ = -0.5 I is
    # negative definite, so conjugate gradient must not claim success.
    lam = torch.tensor([1.0, 2.0], dtype=F64)

    with pytest.warns(HypergradientWarning, match="curvature"):
        result = aid(
            lambda w, lam: 1.5 * w - lam,
            lambda w, lam: w.sum(),
            2 * lam,
            lam,
            solver="cg",
        )

    assert not result.info.converged


def _finite_setup():
    lam = torch.tensor([0.5, 1.5], dtype=F64)
    w = lam / (1 + lam)  # fixed point of the map below

    def fp_map(w, lam):
        return 0.5 * w + 0.5 * lam / (1 + lam)

    return fp_map, lambda w, lam: (w**2).sum(), w, lam


def _nan_cases():
    fp_map, outer_loss, w, lam = _finite_setup()
    nan_w = w.clone()
    nan_w[0] = math.nan
    nan_lam = lam.clone()
    nan_lam[1] = math.nan

    def nan_map(w, lam):
        return fp_map(w, lam) * torch.tensor([1.0, math.nan], dtype=F64)

    def inf_loss(w, lam):
        return outer_loss(w, lam) + math.inf

    def nan_jacobian_map(w, lam):
        # Finite values, but a non-finite derivative in w: sqrt at 0.
        return fp_map(w, lam) + torch.sqrt(w - w.detach())

    return {
        "w": (fp_map, outer_loss, nan_w, lam, "inner weights"),
        "lambda": (fp_map, outer_loss, w, nan_lam, "hyperparameters"),
        "map": (nan_map, outer_loss, w, lam, "map|iterates"),
        "outer loss": (fp_map, inf_loss, w, lam, "outer loss"),
        "jacobian": (nan_jacobian_map, outer_loss, w, lam, "not finite|non-finite"),
    }


@pytest.mark.parametrize("where", list(_nan_cases()))
@pytest.mark.parametrize("method", ["cg", "fp", "gmres", "exact", "itd", "itd-forward"])
def test_non_finite_values_raise_an_error_naming_the_step(where, method):
    fp_map, outer_loss, w, lam, step = _nan_cases()[where]

    with pytest.raises(NonFiniteError, match=step):
        hypergradient(fp_map, outer_loss, w, lam, method=method, n_steps=5)


def test_the_finite_setup_is_finite():
    # A guard on the test above: without the NaN, every method succeeds.
    fp_map, outer_loss, w, lam = _finite_setup()
    reference = exact(fp_map, outer_loss, w, lam).grad
    # d/dλ of Σ (λ/(1+λ))² = 2 λ / (1+λ)³
    assert relative_error(reference, 2 * lam / (1 + lam) ** 3) < 1e-14
    for method in ("cg", "fp", "gmres", "itd", "itd-forward"):
        result = hypergradient(
            fp_map, outer_loss, w, lam, method=method, tol=1e-14, n_steps=60
        )
        assert relative_error(result.grad, reference) < 1e-10


def test_less_precise_hyperparameters_are_refused():
    fp_map, outer_loss, w, lam = _finite_setup()
    with pytest.raises(TypeError, match="dtype"):
        aid(fp_map, outer_loss, w, lam.float())
    with pytest.raises(TypeError):
        itd(fp_map, outer_loss, w, [1.0, 2.0], 3)


def test_hypergradient_rejects_unknown_methods():
    fp_map, outer_loss, w, lam = _finite_setup()
    with pytest.raises(ValueError, match="method"):
        hypergradient(fp_map, outer_loss, w, lam, method="newton")
    with pytest.raises(ValueError, match="solver"):
        aid(fp_map, outer_loss, w, lam, solver="lu")


def test_inputs_are_not_modified(logistic):
    problem = logistic(n_features=5)
    w, lam = problem.w_star.clone(), problem.lam.clone()
    for method in ("cg", "exact", "itd", "itd-forward"):
        hypergradient(problem.fp_map, problem.outer_loss, w, lam, method=method)
        assert torch.equal(w, problem.w_star) and torch.equal(lam, problem.lam)
        assert not w.requires_grad and not lam.requires_grad


@pytest.mark.parametrize("scale", [1e-30, 1e-36])
@pytest.mark.parametrize("function", [conjugate_gradient, gmres])
def test_float32_tiny_rhs_solves_correctly(function, scale):
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((10, 10)))
    A = q @ np.diag(np.linspace(1.0, 4.0, 10)) @ q.T
    b = rng.standard_normal(10)
    A32 = torch.tensor(A, dtype=torch.float32)

    x, info = function(
        lambda v: A32 @ v, torch.tensor(b * scale, dtype=torch.float32), tol=1e-5
    )

    expected = np.linalg.solve(A, b) * scale
    assert x.dtype == torch.float32
    assert info.converged
    error = np.linalg.norm(x.double().numpy() - expected) / np.linalg.norm(expected)
    assert error < 1e-4


def _in_float32(problem, scale=1.0):
    """The problem's map and outer loss (times ``scale``) seen in float32,
    computed in float64, and its float64 hypergradient as reference."""

    def fp_map32(w, lam):
        return problem.fp_map(w.double(), lam.double()).float()

    def loss32(w, lam):
        return scale * problem.outer_loss(w.double(), lam.double()).float()

    reference = aid(
        problem.fp_map, problem.outer_loss, problem.w_star, problem.lam, tol=1e-12
    ).grad
    return fp_map32, loss32, reference


def test_float32_tiny_outer_loss_gives_scaled_hypergradient(logistic):
    problem = logistic(n_features=5)
    fp_map32, tiny_loss32, reference = _in_float32(problem, scale=1e-30)

    result = aid(
        fp_map32, tiny_loss32, problem.w_star.float(), problem.lam.float(), tol=1e-5
    )

    assert result.grad.dtype == torch.float32
    assert result.info.converged
    assert relative_error(result.grad.double() * 1e30, reference) < 1e-4


@pytest.mark.parametrize("solver", ["cg", "fp", "gmres"])
def test_float32_systems_stop_at_their_precision_not_at_an_unreachable_tol(
    logistic, solver
):
    # tol=1e-12 is out of float32's reach; the solvers stop at 100 machine
    # epsilons (1.2e-5) instead, converged, with that accuracy.
    problem = logistic(n_features=5)
    fp_map32, loss32, reference = _in_float32(problem)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = aid(
            fp_map32,
            loss32,
            problem.w_star.float(),
            problem.lam.float(),
            solver=solver,
            tol=1e-12,
            max_iter=500,
        )
    assert result.info.converged
    assert result.info.residual <= 100 * np.finfo(np.float32).eps
    assert relative_error(result.grad.double(), reference) < 1e-4
