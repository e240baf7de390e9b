"""Ridge regression, where the inner solution and the hypergradient have
closed forms: AID-CG with k = d iterations and the dense solve match them."""

import numpy as np
import pytest
import torch

from skhyper.hypergrad import (
    METHODS,
    aid,
    exact,
    gradient_step_map,
    hypergradient,
    relative_error,
)


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


def test_every_method_handles_matrix_shaped_weights():
    # Two-target ridge: W is (d, 2); dW/dλ = -H⁻¹W, so
    # ∂f/∂λ = -<H⁻¹ X_vᵀ (X_v W - Y_v), W>.
    rng = np.random.default_rng(1)
    X, Y = rng.standard_normal((30, 6)), rng.standard_normal((30, 2))
    X_val, Y_val = rng.standard_normal((20, 6)), rng.standard_normal((20, 2))
    lam = 0.5
    hessian = X.T @ X + lam * np.eye(6)
    W = np.linalg.solve(hessian, X.T @ Y)
    expected = -np.sum(np.linalg.solve(hessian, X_val.T @ (X_val @ W - Y_val)) * W)
    Xt, Yt, Xv, Yv = (torch.as_tensor(a) for a in (X, Y, X_val, Y_val))
    step = 1.0 / float(np.linalg.eigvalsh(hessian).max())

    def fp_map(W, lam):
        return W - step * (Xt.T @ (Xt @ W - Yt) + lam * W)

    def outer_loss(W, lam):
        return 0.5 * ((Xv @ W - Yv) ** 2).sum()

    lam_t = torch.tensor(lam, dtype=torch.float64)
    for method in METHODS:
        # ITD starts at the solution and unrolls enough steps to converge.
        result = hypergradient(
            fp_map,
            outer_loss,
            torch.as_tensor(W),
            lam_t,
            method=method,
            tol=1e-13,
            max_iter=400,
        )
        assert result.w.shape == (6, 2)
        assert float(result.grad) == pytest.approx(expected, rel=1e-9), method


def test_methods_work_inside_no_grad(ridge):
    # The estimators may call the engine where autograd is switched off.
    problem = ridge(n_features=5, per_feature=True)
    for method in METHODS:
        with torch.no_grad():
            result = hypergradient(
                problem.fp_map,
                problem.outer_loss,
                problem.w_star,
                problem.lam,
                method=method,
                tol=1e-13,
                max_iter=2000,
                n_steps=400,
            )
        assert relative_error(result.grad, problem.grad) < 1e-8, method
