"""A non-symmetric map, the equilibrium layer w = tanh(A w + B x + c) with
||A||₂ < 1: GMRES and the fixed-point iteration match the dense solve and
finite differences, and conjugate gradient is refused."""

import pytest
import torch

from skhyper.hypergrad import aid, exact, gradient_step_map, relative_error


@pytest.fixture(scope="module")
def problem(equilibrium):
    return equilibrium(n_units=6, n_inputs=4, spectral_norm=0.5)


def test_the_layer_is_solved_and_its_jacobian_is_not_symmetric(problem):
    A = problem.hparams[0]
    w = problem.w_star
    residual = problem.fp_map(w, problem.hparams) - w
    assert float(torch.linalg.vector_norm(residual)) < 1e-15
    jacobian = (1 - w**2)[:, None] * A
    assert float(torch.linalg.matrix_norm(jacobian - jacobian.T)) > 0.1


def test_exact_matches_finite_differences(problem):
    result = exact(problem.fp_map, problem.outer_loss, problem.w_star, problem.hparams)

    # Central differences on every entry of c and on a few entries of A and B,
    # the layer re-solved to machine precision at each shifted point.
    def loss(hparams):
        return float(problem.outer_loss(problem.solve(hparams), hparams))

    h = 1e-6
    for index, entry in [(2, (0,)), (2, (3,)), (0, (1, 4)), (0, (5, 5)), (1, (2, 1))]:
        shifted = [[p.clone() for p in problem.hparams] for _ in range(2)]
        shifted[0][index][entry] += h
        shifted[1][index][entry] -= h
        difference = (loss(shifted[0]) - loss(shifted[1])) / (2 * h)
        assert float(result.grad[index][entry]) == pytest.approx(difference, rel=1e-6)


@pytest.mark.parametrize("solver", ["gmres", "fp"])
def test_nonsymmetric_solvers_match_exact(problem, solver):
    reference = exact(
        problem.fp_map, problem.outer_loss, problem.w_star, problem.hparams
    )

    result = aid(
        problem.fp_map,
        problem.outer_loss,
        problem.w_star,
        problem.hparams,
        solver=solver,
        tol=1e-13,
        max_iter=200,
    )

    assert result.info.converged
    assert [g.shape for g in result.grad] == [p.shape for p in problem.hparams]
    assert relative_error(result.grad, reference.grad) < 1e-8


def test_conjugate_gradient_is_refused(problem):
    with pytest.raises(ValueError, match="symmetric"):
        aid(
            problem.fp_map,
            problem.outer_loss,
            problem.w_star,
            problem.hparams,
            solver="cg",
        )


def test_symmetric_maps_are_not_refused(logistic):
    # The probe accepts a symmetric Jacobian, and also a map whose Jacobian is
    # zero up to rounding (I - ∂_wΦᵀ is then the identity).
    problem = logistic(n_features=5)
    result = aid(problem.fp_map, problem.outer_loss, problem.w_star, problem.lam)
    assert result.info.converged

    # Gradient step 1 / (1 + λ) on ½||w - a||² + ½ λ ||w||²: ∂_wΦ = 0 exactly in
    # theory and rounding noise in practice; f(λ) = ½||a||² / (1 + λ)².
    target = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    lam = torch.tensor(1.0, dtype=torch.float64)

    def train_loss(w, lam):
        return 0.5 * ((w - target) ** 2).sum() + 0.5 * lam * (w * w).sum()

    fp_map = gradient_step_map(train_loss, 1 / (1 + float(lam)))
    result = aid(fp_map, lambda w, lam: 0.5 * (w**2).sum(), target / 2, lam)
    expected = -float((target**2).sum()) / (1 + float(lam)) ** 3
    assert float(result.grad) == pytest.approx(expected, rel=1e-14)
