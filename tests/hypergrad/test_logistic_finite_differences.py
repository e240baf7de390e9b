"""L2 logistic regression with one hyperparameter per feature: every method,
at tight tolerances, matches a central finite difference of the validation
loss, the inner problem being re-solved by Newton's method at λ ± h."""

import pytest
import torch

from skhyper.hypergrad import METHODS, gradient_step_map, hypergradient, relative_error


@pytest.fixture(scope="module")
def problem_and_reference(logistic):
    problem = logistic(n_features=5)

    def validation_loss(lam):
        return float(problem.outer_loss(problem.solve(lam), lam))

    # Central differences, O(h²) accurate; h relative to each λ_j keeps the
    # rounding error (about eps / h) far below the tolerance.
    reference = torch.zeros_like(problem.lam)
    for j in range(problem.lam.numel()):
        shift = torch.zeros_like(problem.lam)
        shift[j] = 1e-5 * float(problem.lam[j])
        upper = validation_loss(problem.lam + shift)
        lower = validation_loss(problem.lam - shift)
        reference[j] = (upper - lower) / (2 * float(shift[j]))
    return problem, reference


@pytest.mark.parametrize("method", METHODS)
def test_every_method_matches_finite_differences(problem_and_reference, method):
    problem, reference = problem_and_reference
    fp_map = gradient_step_map(problem.train_loss, problem.step_size)

    # AID and exact start at the inner solution; ITD starts there too and
    # unrolls t steps, so that its error is the contraction rate to the t.
    result = hypergradient(
        fp_map,
        problem.outer_loss,
        problem.w_star,
        problem.lam,
        method=method,
        tol=1e-13,
        max_iter=1000,
        n_steps=400,
    )

    assert result.info.converged
    assert result.grad.shape == problem.lam.shape
    assert relative_error(result.grad, reference) < 1e-5


def test_finite_differences_see_every_hyperparameter(problem_and_reference):
    # The reference is not degenerate: each λ_j moves the validation loss.
    _, reference = problem_and_reference
    assert bool((reference.abs() > 1e-5).all())
