"""The matrix-free linear solvers on their own, against numpy.linalg.solve."""

import warnings

import numpy as np
import pytest
import torch

from skhyper.exceptions import HypergradientWarning
from skhyper.hypergrad import conjugate_gradient, dense_solve, fixed_point, gmres


def _spd(n, seed, condition=50.0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return q @ np.diag(np.geomspace(1.0, condition, n)) @ q.T


def _nonsymmetric(n, seed):
    rng = np.random.default_rng(seed)
    return np.eye(n) * 3.0 + rng.standard_normal((n, n)) / np.sqrt(n)


def _contraction(n, seed, norm=0.6):
    """A non-symmetric ``J`` with spectral norm ``norm``."""
    rng = np.random.default_rng(seed)
    J = rng.standard_normal((n, n))
    return norm * J / np.linalg.norm(J, 2)


def _rhs(n, seed):
    return np.random.default_rng(seed + 100).standard_normal(n)


def _true_residual(A, b, x):
    return float(np.linalg.norm(b - A @ x.numpy()) / np.linalg.norm(b))


def _operator(A):
    At = torch.as_tensor(A)
    return lambda v: At @ v


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cg_matches_numpy_on_spd_systems(seed):
    A, b = _spd(30, seed), _rhs(30, seed)

    x, info = conjugate_gradient(_operator(A), torch.as_tensor(b), tol=1e-12)

    expected = np.linalg.solve(A, b)
    assert info.converged and info.solver == "cg"
    assert np.linalg.norm(x.numpy() - expected) / np.linalg.norm(expected) < 1e-9
    assert info.residual <= 1e-12
    # The residual reported is the true one of the returned iterate.
    assert info.residual == pytest.approx(_true_residual(A, b, x), rel=1e-6, abs=1e-15)


@pytest.mark.parametrize("restart", [50, 7])
@pytest.mark.parametrize("seed", [0, 1])
def test_gmres_matches_numpy_on_nonsymmetric_systems(seed, restart):
    A, b = _nonsymmetric(30, seed), _rhs(30, seed)

    x, info = gmres(_operator(A), torch.as_tensor(b), tol=1e-12, restart=restart)

    expected = np.linalg.solve(A, b)
    assert info.converged and info.solver == "gmres"
    assert np.linalg.norm(x.numpy() - expected) / np.linalg.norm(expected) < 1e-10
    assert _true_residual(A, b, x) <= 1e-12
    assert info.residual == pytest.approx(_true_residual(A, b, x), rel=1e-6, abs=1e-15)


@pytest.mark.parametrize("seed", [0, 1])
def test_fixed_point_matches_numpy_on_contractions(seed):
    J, b = _contraction(30, seed), _rhs(30, seed)
    Jt = torch.as_tensor(J)

    x, info = fixed_point(lambda v: Jt.T @ v, torch.as_tensor(b), tol=1e-13)

    expected = np.linalg.solve(np.eye(30) - J.T, b)
    assert info.converged and info.solver == "fp"
    assert np.linalg.norm(x.numpy() - expected) / np.linalg.norm(expected) < 1e-12
    # ||J|| < 1: the returned iterate does at least as well as reported.
    assert _true_residual(np.eye(30) - J.T, b, x) <= info.residual <= 1e-13


def test_dense_solve_matches_numpy():
    A, b = _nonsymmetric(12, 3), _rhs(12, 3)

    x, info = dense_solve(torch.as_tensor(A), torch.as_tensor(b))

    expected = np.linalg.solve(A, b)
    assert np.linalg.norm(x.numpy() - expected) / np.linalg.norm(expected) < 1e-13
    assert info.residual < 1e-14


@pytest.mark.parametrize("solver", ["cg", "gmres", "fp"])
def test_warm_start_at_the_solution_needs_no_iteration(solver):
    A = _spd(20, 4, condition=4.0)
    b = _rhs(20, 4)
    if solver == "fp":
        # I - Jᵀ = A / 4 with Jᵀ = I - A / 4, a symmetric contraction; the
        # right-hand side b / 4 keeps the solution A⁻¹b.
        Jt = torch.as_tensor(np.eye(20) - A / 4.0)

        def run(**kwargs):
            return fixed_point(lambda v: Jt @ v, torch.as_tensor(b / 4.0), **kwargs)

    else:
        function = conjugate_gradient if solver == "cg" else gmres

        def run(**kwargs):
            return function(_operator(A), torch.as_tensor(b), **kwargs)

    cold, cold_info = run(tol=1e-11)
    # At the solution, fp needs one step to measure its residual, the others
    # none; near it, all need fewer steps than from zero.
    warm, warm_info = run(tol=1e-11, x0=cold)
    assert warm_info.converged
    assert warm_info.n_iter <= (1 if solver == "fp" else 0) < cold_info.n_iter
    assert torch.allclose(warm, cold, rtol=1e-10, atol=0)
    near, near_info = run(tol=1e-11, x0=cold * (1 + 1e-6))
    assert near_info.converged and near_info.n_iter < cold_info.n_iter
    assert _true_residual(A, b, near) < 1e-10


@pytest.mark.parametrize("solver", ["cg", "gmres", "fp"])
@pytest.mark.parametrize("cap", [1, 3, 6])
def test_iteration_cap_is_honoured(solver, cap):
    A = _spd(40, 5, condition=1e3)
    b = torch.as_tensor(_rhs(40, 5))
    if solver == "fp":
        Jt = torch.as_tensor(np.eye(40) - A / 1e3)

        def run():
            return fixed_point(lambda v: Jt @ v, b, tol=1e-12, max_iter=cap)

        A_check = A / 1e3
    else:
        function = conjugate_gradient if solver == "cg" else gmres

        def run():
            return function(_operator(A), b, tol=1e-12, max_iter=cap)

        A_check = A

    with pytest.warns(HypergradientWarning, match="did not converge"):
        x, info = run()

    assert info.n_iter == cap
    assert not info.converged
    assert "iteration cap" in info.message
    assert info.residual > 1e-12
    if solver != "fp":
        assert info.residual == pytest.approx(
            _true_residual(A_check, b.numpy(), x), rel=1e-6
        )


def test_iteration_cap_can_be_silent():
    A = _spd(40, 5, condition=1e3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, info = conjugate_gradient(
            _operator(A), torch.as_tensor(_rhs(40, 5)), max_iter=2, warn=False
        )
    assert not info.converged


def test_gmres_reports_breakdown_on_a_singular_system():
    # A has a zero eigenvalue and b a component along its eigenvector: no
    # solution exists, and the Krylov space closes after two vectors.
    A = np.diag([1.0, 2.0, 0.0])
    b = np.array([1.0, 1.0, 1.0])

    with pytest.warns(HypergradientWarning, match="breakdown"):
        x, info = gmres(_operator(A), torch.as_tensor(b), tol=1e-10)

    assert not info.converged
    assert "singular" in info.message
    assert info.residual == pytest.approx(1 / np.sqrt(3), rel=1e-10)
    assert info.n_iter <= 3


@pytest.mark.parametrize(
    "kwargs", [{"tol": -1.0}, {"tol": float("nan")}, {"max_iter": 0}, {"max_iter": 2.5}]
)
@pytest.mark.parametrize("function", [conjugate_gradient, gmres])
def test_solvers_reject_bad_settings(function, kwargs):
    with pytest.raises(ValueError):
        function(lambda v: v, torch.ones(3, dtype=torch.float64), **kwargs)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_float32_cg_reports_the_true_residual(seed):
    # In float32 on an ill-conditioned system the residual updated by the CG
    # recurrence falls below tol long before the true one does; convergence
    # must be judged on b - A x.
    A, b = _spd(100, seed, condition=1e4), _rhs(100, seed)
    A32 = torch.tensor(A, dtype=torch.float32)

    x, info = conjugate_gradient(
        lambda v: A32 @ v,
        torch.tensor(b, dtype=torch.float32),
        tol=1e-5,
        max_iter=1000,
        warn=False,
    )

    true = _true_residual(A, b, x.double())
    assert info.residual == pytest.approx(true, rel=0.2)
    if info.converged:
        assert true <= 1.01e-5
    else:
        assert info.residual > 1e-5
