"""Ridge regression, where the inner solution and the hypergradient have
closed forms: AID-CG with k = d iterations and the dense solve match them."""

import pytest
import torch

from skhyper.hypergrad import aid, exact, gradient_step_map, relative_error


@pytest.mark.parametrize("per_feature", [False, True])
def test_cg_with_d_iterations_matches_closed_form(ridge, per_feature):
    problem = ridge(n_features=8, per_feature=per_feature)
    fp_map = gradient_step_map(problem.train_loss, problem.step_size)

    result = aid(
        fp_map,
        problem.outer_loss,
        problem.w_star,
        problem.lam,
        solver="cg",
        tol=1e-14,
        max_iter=problem.n_features,
        warn=False,
    )

    # Conjugate gradient on a d x d SPD system terminates in at most d steps.
    assert result.info.n_iter <= problem.n_features
    assert relative_error(result.grad, problem.grad) < 1e-8
    assert result.grad.shape == problem.lam.shape


@pytest.mark.parametrize("per_feature", [False, True])
def test_exact_matches_closed_form(ridge, per_feature):
    problem = ridge(n_features=8, per_feature=per_feature)
    fp_map = gradient_step_map(problem.train_loss, problem.step_size)

    result = exact(fp_map, problem.outer_loss, problem.w_star, problem.lam)

    assert relative_error(result.grad, problem.grad) < 1e-10
    assert result.info.converged


def test_closed_form_inner_solution_is_the_fixed_point(ridge):
    # The map the engine differentiates has the closed-form w(λ) as its fixed
    # point, and gradient_step_map agrees with the gradient written out.
    problem = ridge(n_features=8, per_feature=True)
    fp_map = gradient_step_map(problem.train_loss, problem.step_size)
    w = problem.w_star

    assert relative_error(fp_map(w, problem.lam).detach(), w) < 1e-14
    w_other = w + torch.linspace(-1.0, 1.0, w.numel(), dtype=w.dtype)
    by_autograd = fp_map(w_other, problem.lam).detach()
    assert relative_error(by_autograd, problem.fp_map(w_other, problem.lam)) < 1e-14


def test_exact_matches_closed_form_on_handwritten_map(ridge):
    problem = ridge(n_features=8, per_feature=True)

    result = exact(problem.fp_map, problem.outer_loss, problem.w_star, problem.lam)

    assert relative_error(result.grad, problem.grad) < 1e-10
