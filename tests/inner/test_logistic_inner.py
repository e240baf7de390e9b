"""The logistic inner problem against autograd, scikit-learn and itself."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss

from skhyper.exceptions import NonFiniteError
from skhyper.inner._logistic_objective import LogisticObjective
from skhyper.inner._logistic_solvers import newton_cg_solve
from skhyper.inner.logistic import LogisticFoldProblem, fit_logistic

CPU = torch.device("cpu")


def _classification(n_samples=90, n_features=5, n_classes=2, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_samples, n_features))
    scores = X @ rng.normal(size=(n_features, n_classes)) + rng.normal(
        size=(n_samples, n_classes)
    )
    y = scores.argmax(axis=1)
    return X, y


def _reference(C, **params):
    """scikit-learn's logistic regression, solved far below our tolerances."""
    return LogisticRegression(
        C=C, solver="newton-cholesky", tol=1e-12, max_iter=500, **params
    )


# ---------------------------------------------------------------------------
# The objective: gradient, Hessian and Hessian-vector products.


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("sparse", [False, True])
def test_objective_derivatives_match_autograd(n_classes, fit_intercept, sparse):
    X, y = _classification(40, 4, n_classes)
    X[np.abs(X) < 0.5] = 0.0
    weight = np.random.default_rng(1).uniform(0.2, 2.0, size=40)
    data = sp.csr_matrix(X) if sparse else X
    objective = LogisticObjective(data, y, n_classes, weight, fit_intercept, CPU)
    dense = LogisticObjective(X, y, n_classes, weight, fit_intercept, CPU)
    generator = torch.Generator().manual_seed(0)
    W = torch.randn(
        objective.n_outputs, objective.n_columns, generator=generator
    ).double()
    theta = torch.tensor([0.3, -0.2, 0.1, 0.5], dtype=torch.float64)

    value, grad, _ = objective.value_and_gradient(W, theta)
    hessian = objective.hessian(W, theta)
    u = torch.randn(objective.n_weights, generator=generator).double()
    product = objective.hessian_operator(W, theta)(u)

    leaf = W.clone().requires_grad_(True)
    reference = dense.value(leaf, theta)
    (auto_grad,) = torch.autograd.grad(reference, leaf, create_graph=True)
    rows = [
        torch.autograd.grad(g, leaf, retain_graph=True)[0].reshape(-1)
        for g in auto_grad.reshape(-1)
    ]
    auto_hessian = torch.stack(rows)
    np.testing.assert_allclose(float(value), reference.item(), rtol=1e-12)
    np.testing.assert_allclose(grad, auto_grad.detach(), atol=1e-12)
    np.testing.assert_allclose(hessian, auto_hessian, atol=1e-12)
    np.testing.assert_allclose(product, auto_hessian @ u, atol=1e-12)


def test_objective_value_is_sklearn_log_loss_plus_penalty():
    X, y = _classification(50, 3, 3)
    weight = np.random.default_rng(2).uniform(0.5, 1.5, size=50)
    objective = LogisticObjective(X, y, 3, weight, True, CPU)
    W = torch.randn(3, 4, generator=torch.Generator().manual_seed(3)).double()
    C = 0.7
    value = float(objective.value(W, torch.tensor([np.log(C)]).double()))
    scores = X @ W[:, :3].numpy().T + W[:, 3].numpy()
    proba = np.exp(scores - scores.max(1, keepdims=True))
    proba /= proba.sum(1, keepdims=True)
    data = log_loss(y, proba, sample_weight=weight)
    intercept_sum = float(W[:, 3].sum())
    penalty = 0.5 * float((W[:, :3] ** 2).sum()) / (C * weight.sum())
    symmetry = 0.5 * objective.symmetry_weight * intercept_sum**2
    np.testing.assert_allclose(value, data + penalty + symmetry, rtol=1e-12)


# ---------------------------------------------------------------------------
# The refit: scikit-learn's LogisticRegression at the same C.


@pytest.mark.parametrize("n_classes", [2, 4])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_fit_logistic_matches_sklearn(n_classes, fit_intercept):
    X, y = _classification(120, 6, n_classes, seed=4)
    weight = np.random.default_rng(5).uniform(0.0, 3.0, size=120)
    reference = _reference(0.3, fit_intercept=fit_intercept).fit(
        X, y, sample_weight=weight
    )
    coef, intercept = fit_logistic(
        X, y, n_classes, 0.3, weight, fit_intercept, device="cpu"
    )
    np.testing.assert_allclose(coef, reference.coef_, atol=1e-7)
    np.testing.assert_allclose(intercept, np.ravel(reference.intercept_), atol=1e-7)


def test_fit_logistic_sparse_equals_dense():
    X, y = _classification(100, 8, 3, seed=6)
    X[np.abs(X) < 0.7] = 0.0
    dense = fit_logistic(X, y, 3, 2.0, device="cpu")
    for solver in ("auto", "lbfgs"):
        sparse = fit_logistic(sp.csr_matrix(X), y, 3, 2.0, device="cpu", solver=solver)
        np.testing.assert_allclose(sparse[0], dense[0], atol=1e-6)
        np.testing.assert_allclose(sparse[1], dense[1], atol=1e-6)


def test_per_feature_C_is_sklearn_on_rescaled_features():
    X, y = _classification(100, 4, 2, seed=7)
    C = np.array([0.05, 0.5, 5.0, 50.0])
    coef, intercept = fit_logistic(X, y, 2, C, device="cpu")
    reference = _reference(1.0).fit(X * np.sqrt(C), y)
    np.testing.assert_allclose(coef, reference.coef_ * np.sqrt(C), atol=1e-7)
    np.testing.assert_allclose(intercept, reference.intercept_, atol=1e-7)


def test_newton_reuses_a_stale_factor_and_still_converges():
    X, y = _classification(150, 6, 3, seed=8)
    objective = LogisticObjective(X, y, 3, None, True, CPU)
    first = newton_cg_solve(
        objective,
        torch.tensor([2.0]).double(),
        objective.zeros(),
        None,
        tol=1e-10,
        max_iter=50,
    )
    second = newton_cg_solve(
        objective,
        torch.tensor([-1.0]).double(),
        first.W,
        first.factor,
        tol=1e-10,
        max_iter=50,
    )
    coef, _ = fit_logistic(X, y, 3, np.exp(-1.0), device="cpu")
    assert first.converged and second.converged
    np.testing.assert_allclose(second.W[:, :6], coef, atol=1e-8)


# ---------------------------------------------------------------------------
# The fold problem: loss, hypergradient, warm starts, failures.


def _fold(n_classes=2, per_feature=False, seed=9, **params):
    X, y = _classification(120, 5, n_classes, seed=seed)
    settings = {"inner_tol": 1e-11, "linsys_tol": 1e-11, "device": "cpu"}
    problem = LogisticFoldProblem(
        X[:80],
        y[:80],
        X[80:],
        y[80:],
        n_classes,
        per_feature=per_feature,
        **{**settings, **params},
    )
    return problem, X, y


def _sklearn_fold_loss(X, y, C):
    C = np.asarray(C, dtype=float)
    scale = np.sqrt(C) if C.ndim else 1.0
    model = _reference(1.0 if C.ndim else float(C)).fit(X[:80] * scale, y[:80])
    return log_loss(y[80:], model.predict_proba(X[80:] * scale))


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("per_feature", [False, True])
def test_fold_hypergradient_matches_finite_differences(n_classes, per_feature):
    problem, X, y = _fold(n_classes, per_feature)
    theta = np.log([0.2, 0.5, 1.0, 2.0, 5.0]) if per_feature else np.log([0.8])
    result = problem.evaluate(theta, problem.initial_state())
    assert result.inner_converged and result.linsys_converged
    np.testing.assert_allclose(
        result.loss, _sklearn_fold_loss(X, y, np.exp(theta)), rtol=1e-9
    )
    step = 1e-4
    numeric = []
    for direction in np.eye(theta.size):
        up = _sklearn_fold_loss(X, y, np.exp(theta + step * direction))
        down = _sklearn_fold_loss(X, y, np.exp(theta - step * direction))
        numeric.append((up - down) / (2 * step))
    np.testing.assert_allclose(result.grad, numeric, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize(
    "params",
    [
        {"hypergrad": "fp"},
        {"hypergrad": "gmres"},
        {"hypergrad": "exact"},
        {"hypergrad": "itd", "linsys_max_iter": 10},
        # L-BFGS's line search on loss values stalls near 1e-9.
        {"solver": "lbfgs", "inner_tol": 1e-9},
        {"solver": "lbfgs", "inner_tol": 1e-9, "hypergrad": "exact"},
    ],
)
def test_every_method_gives_the_same_hypergradient(params):
    reference, _, _ = _fold(3, per_feature=True)
    problem, _, _ = _fold(3, per_feature=True, **params)
    theta = np.log([0.3, 1.0, 3.0, 0.5, 2.0])
    expected = reference.evaluate(theta, reference.initial_state())
    result = problem.evaluate(theta, problem.initial_state())
    assert result.inner_converged and result.linsys_converged
    np.testing.assert_allclose(result.loss, expected.loss, rtol=1e-8)
    np.testing.assert_allclose(result.grad, expected.grad, rtol=1e-5, atol=1e-10)


def test_warm_start_gives_the_cold_answer_and_leaves_the_state_alone():
    problem, _, _ = _fold(3)
    first = problem.evaluate(np.log([5.0]), problem.initial_state())
    kept = {key: np.copy(value) for key, value in first.state.items() if key in "Wv"}
    warm = problem.evaluate(np.log([0.1]), first.state)
    cold = problem.evaluate(np.log([0.1]), problem.initial_state())
    np.testing.assert_allclose(warm.loss, cold.loss, rtol=1e-10)
    np.testing.assert_allclose(warm.grad, cold.grad, rtol=1e-7)
    for key, value in kept.items():
        np.testing.assert_array_equal(first.state[key], value)


def test_coefficients_have_logistic_regression_shapes():
    for n_classes, rows in ((2, 1), (3, 3)):
        problem, X, y = _fold(n_classes)
        result = problem.evaluate(np.log([0.8]), problem.initial_state())
        coef, intercept = problem.coefficients(result.state)
        reference = _reference(0.8).fit(X[:80], y[:80])
        assert coef.shape == (rows, 5) and intercept.shape == (rows,)
        np.testing.assert_allclose(coef, reference.coef_, atol=1e-8)
        np.testing.assert_allclose(intercept, reference.intercept_, atol=1e-8)


def test_a_training_part_without_a_class_is_refused():
    X, y = _classification(60, 3, 3)
    keep = y != 2
    with pytest.raises(ValueError, match="class index 2"):
        LogisticFoldProblem(X[keep], y[keep], X, y, 3, device="cpu")


def test_non_finite_data_raise_non_finite_error():
    X, y = _classification(60, 3, 2)
    X[5, 1] = np.inf
    problem = LogisticFoldProblem(X[:40], y[:40], X[40:], y[40:], 2, device="cpu")
    with pytest.raises(NonFiniteError):
        problem.evaluate(np.zeros(1), problem.initial_state())


def test_a_warm_start_from_all_the_data_gives_the_cold_answer():
    X, y = _classification(150, 5, 3, seed=10)
    _, _, state = fit_logistic(X, y, 3, 0.5, device="cpu", return_state=True)
    assert state["converged"] and state["factor"].shape == (18, 18)
    refit = fit_logistic(X, y, 3, 0.05, device="cpu", warm_start=state)
    cold = fit_logistic(X, y, 3, 0.05, device="cpu")
    np.testing.assert_allclose(refit[0], cold[0], atol=1e-9)
    settings = {"inner_tol": 1e-11, "device": "cpu"}
    folds = [
        LogisticFoldProblem(X[:100], y[:100], X[100:], y[100:], 3, **settings, **extra)
        for extra in ({}, {"warm_start": state})
    ]
    cold_fold, warm_fold = (
        fold.evaluate(np.log([0.05]), fold.initial_state()) for fold in folds
    )
    np.testing.assert_array_equal(folds[1].initial_state()["W"], state["W"])
    np.testing.assert_allclose(warm_fold.loss, cold_fold.loss, rtol=1e-10)
    np.testing.assert_allclose(warm_fold.grad, cold_fold.grad, rtol=1e-7)
