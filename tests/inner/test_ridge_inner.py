"""The ridge inner problem against scikit-learn's Ridge and finite differences."""

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge
from sklearn.model_selection import KFold

from skhyper.inner.ridge import RidgeFoldProblem, fit_ridge


def _data(n_samples=60, n_features=6, n_targets=None, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_samples, n_features)) + 3.0
    shape = (n_features,) if n_targets is None else (n_features, n_targets)
    coef = rng.normal(size=shape)
    noise = rng.normal(size=(n_samples,) if n_targets is None else (n_samples, 2))
    y = X @ coef + 0.5 * noise + 1.0
    weights = rng.uniform(0.5, 2.0, size=n_samples)
    return X, y, weights


def _sklearn_fold_loss(X, y, alpha, train, test, weights, fit_intercept, scale=None):
    """Validation MSE of sklearn's Ridge; ``scale`` divides the columns of X."""
    X_used = X if scale is None else X / scale
    model = Ridge(alpha=alpha, fit_intercept=fit_intercept)
    model.fit(X_used[train], y[train], sample_weight=weights[train])
    residual = model.predict(X_used[test]) - y[test]
    per_row = residual**2 if residual.ndim == 1 else (residual**2).mean(axis=1)
    return np.average(per_row, weights=weights[test])


def _problem(X, y, train, test, weights, **kwargs):
    return RidgeFoldProblem(
        X[train],
        y[train],
        X[test],
        y[test],
        sample_weight_train=weights[train],
        sample_weight_val=weights[test],
        **kwargs,
    )


def _split(n_samples):
    return next(KFold(4, shuffle=True, random_state=0).split(np.zeros(n_samples)))


@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("shape", [(60, 6, None), (60, 6, 2), (20, 40, None)])
@pytest.mark.parametrize("alpha", [1e-3, 0.7, 50.0])
def test_spectral_loss_matches_sklearn_ridge(fit_intercept, shape, alpha):
    # Primal (n >= d) and dual (n < d) forms, one and two targets, weights.
    X, y, weights = _data(*shape)
    train, test = _split(X.shape[0])
    problem = _problem(X, y, train, test, weights, fit_intercept=fit_intercept)
    result = problem.evaluate(np.log([alpha]), problem.initial_state())
    expected = _sklearn_fold_loss(X, y, alpha, train, test, weights, fit_intercept)
    np.testing.assert_allclose(result.loss, expected, rtol=1e-9)


@pytest.mark.parametrize("shape", [(60, 6, None), (60, 6, 2), (20, 40, None)])
def test_spectral_gradient_matches_finite_differences(shape):
    X, y, weights = _data(*shape)
    train, test = _split(X.shape[0])
    problem = _problem(X, y, train, test, weights)
    theta, step = np.log(0.3), 1e-5
    result = problem.evaluate([theta], problem.initial_state())

    def loss(t):
        return _sklearn_fold_loss(X, y, np.exp(t), train, test, weights, True)

    expected = (loss(theta + step) - loss(theta - step)) / (2 * step)
    np.testing.assert_allclose(result.grad[0], expected, rtol=1e-6)


def test_per_target_gradient_matches_finite_differences():
    X, y, weights = _data(60, 6, 2)
    train, test = _split(60)
    problem = _problem(X, y, train, test, weights, mode="per_target")
    theta = np.log([0.3, 4.0])
    result = problem.evaluate(theta, problem.initial_state())

    def loss(t):
        return _sklearn_fold_loss(X, y, np.exp(t), train, test, weights, True)

    np.testing.assert_allclose(result.loss, loss(theta), rtol=1e-9)
    step = 1e-5
    expected = [
        (loss(theta + step * e) - loss(theta - step * e)) / (2 * step)
        for e in np.eye(2)
    ]
    np.testing.assert_allclose(result.grad, expected, rtol=1e-6)


@pytest.mark.parametrize("shape", [(80, 8), (20, 40)])
def test_sparse_fold_equals_dense_fold(shape):
    X, y, weights = _data(*shape)
    X[np.abs(X - 3.0) < 0.8] = 0.0
    train, test = _split(X.shape[0])
    dense = _problem(X, y, train, test, weights)
    sparse = _problem(sp.csr_matrix(X), y, train, test, weights)
    for theta in (np.log([0.01]), np.log([3.0])):
        a = dense.evaluate(theta, dense.initial_state())
        b = sparse.evaluate(theta, sparse.initial_state())
        np.testing.assert_allclose(b.loss, a.loss, rtol=1e-10)
        np.testing.assert_allclose(b.grad, a.grad, rtol=1e-8)
        for got, want in zip(sparse.coefficients(b.state), dense.coefficients(a.state)):
            np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-10)


def test_coefficients_match_ridge_on_the_training_part():
    X, y, weights = _data(60, 6, 2)
    train, test = _split(60)
    problem = _problem(X, y, train, test, weights)
    state = problem.evaluate(np.log([2.0]), problem.initial_state()).state
    reference = Ridge(alpha=2.0).fit(X[train], y[train], sample_weight=weights[train])
    coef, intercept = problem.coefficients(state)
    np.testing.assert_allclose(coef, reference.coef_, rtol=1e-10)
    np.testing.assert_allclose(intercept, reference.intercept_, rtol=1e-10)
    # At another theta without a new evaluation.
    coef, _ = problem.coefficients(state, theta=np.log([9.0]))
    reference = Ridge(alpha=9.0).fit(X[train], y[train], sample_weight=weights[train])
    np.testing.assert_allclose(coef, reference.coef_, rtol=1e-10)


def test_states_are_returned_not_mutated():
    X, y, weights = _data()
    train, test = _split(60)
    problem = _problem(X, y, train, test, weights)
    first = problem.evaluate(np.log([1.0]), problem.initial_state())
    second = problem.evaluate(np.log([5.0]), first.state)
    np.testing.assert_allclose(first.state.theta, np.log([1.0]))
    np.testing.assert_allclose(second.state.theta, np.log([5.0]))
    assert second.state.factors is first.state.factors  # reused, not recomputed


def test_float32_fold_is_close_to_float64():
    X, y, weights = _data(200, 10)
    train, test = _split(200)
    exact = _problem(X, y, train, test, weights)
    single = _problem(X.astype(np.float32), y.astype(np.float32), train, test, weights)
    a = exact.evaluate(np.log([0.5]), exact.initial_state())
    b = single.evaluate(np.log([0.5]), single.initial_state())
    np.testing.assert_allclose(b.loss, a.loss, rtol=1e-4)
    np.testing.assert_allclose(b.grad, a.grad, rtol=1e-2, atol=1e-6 * abs(a.loss))
    coef, intercept = single.coefficients(b.state)
    assert coef.dtype == np.float32 and intercept.dtype == np.float32


def test_zero_validation_weight_is_an_error():
    X, y, weights = _data()
    train, test = _split(60)
    weights[test] = 0.0
    with pytest.raises(ValueError, match="zero total weight"):
        _problem(X, y, train, test, weights)


# ---------------------------------------------------------------------------
# Per-feature alphas. A penalty λ_j on feature j equals Ridge(alpha=1) on the
# feature divided by √λ_j, which gives an independent reference.


def _per_feature_reference(X, y, lam, train, test, weights):
    return _sklearn_fold_loss(X, y, 1.0, train, test, weights, True, np.sqrt(lam))


@pytest.mark.parametrize("method", ["cg", "fp", "gmres", "exact", "itd"])
def test_per_feature_hypergradient_matches_finite_differences(method):
    X, y, weights = _data(60, 5)
    train, test = _split(60)
    problem = _problem(
        X,
        y,
        train,
        test,
        weights,
        mode="per_feature",
        hypergrad=method,
        linsys_tol=1e-12,
        linsys_max_iter=5000,
        inner_max_iter=4000,
    )
    theta = np.log([0.1, 1.0, 10.0, 3.0, 0.5])
    result = problem.evaluate(theta, problem.initial_state())

    def loss(t):
        return _per_feature_reference(X, y, np.exp(t), train, test, weights)

    step = 1e-5
    expected = [
        (loss(theta + step * e) - loss(theta - step * e)) / (2 * step)
        for e in np.eye(5)
    ]
    np.testing.assert_allclose(result.loss, loss(theta), rtol=1e-8)
    np.testing.assert_allclose(result.grad, expected, rtol=1e-5)
    assert result.linsys_converged


def test_per_feature_map_is_the_gradient_step_of_the_training_loss():
    import torch

    from skhyper.hypergrad import gradient_step_map
    from skhyper.inner._ridge_features import (
        feature_factors,
        gradient_step,
        training_loss,
    )

    X, y, weights = _data(60, 5, 2)
    train, test = _split(60)
    problem = _problem(X, y, train, test, weights, mode="per_feature")
    factors = feature_factors(problem)
    generator = torch.Generator().manual_seed(0)
    W = torch.randn(5, 2, generator=generator, dtype=torch.float64)
    theta = torch.randn(5, generator=generator, dtype=torch.float64)
    written_out = gradient_step(factors, 0.01)(W, theta)
    by_autograd = gradient_step_map(training_loss(factors), 0.01)(W, theta)
    torch.testing.assert_close(written_out, by_autograd, rtol=1e-12, atol=1e-12)


def test_per_feature_itd_with_few_steps_reports_the_inner_problem():
    X, y, weights = _data(60, 5)
    train, test = _split(60)
    problem = _problem(X, y, train, test, weights, mode="per_feature", hypergrad="itd")
    problem.inner_max_iter = 3
    result = problem.evaluate(np.zeros(5), problem.initial_state())
    assert not result.inner_converged
    # The warm start carries over: the next call continues from the iterate.
    again = problem.evaluate(np.zeros(5), result.state)
    assert again.loss < result.loss


def test_per_feature_sparse_equals_dense():
    X, y, weights = _data(80, 6)
    X[np.abs(X - 3.0) < 0.8] = 0.0
    train, test = _split(80)
    theta = np.log([0.1, 1.0, 10.0, 3.0, 0.5, 2.0])
    results = []
    for matrix in (X, sp.csr_matrix(X)):
        problem = _problem(matrix, y, train, test, weights, mode="per_feature")
        results.append(problem.evaluate(theta, problem.initial_state()))
    np.testing.assert_allclose(results[1].loss, results[0].loss, rtol=1e-10)
    np.testing.assert_allclose(results[1].grad, results[0].grad, rtol=1e-6)


# ---------------------------------------------------------------------------
# The refit on all data.


@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("shape", [(60, 6, None), (60, 6, 2), (20, 40, 2)])
@pytest.mark.parametrize("sparse", [False, True])
def test_fit_ridge_matches_sklearn_ridge(fit_intercept, shape, sparse):
    X, y, weights = _data(*shape)
    alpha = 0.8 if y.ndim == 1 else np.array([0.8, 30.0])
    matrix = sp.csr_matrix(X) if sparse else X
    coef, intercept = fit_ridge(matrix, y, alpha, weights, fit_intercept)
    # sklearn's sparse solvers are iterative; the dense Cholesky is the reference.
    reference = Ridge(alpha=alpha, fit_intercept=fit_intercept, solver="cholesky")
    reference.fit(X, y, sample_weight=weights)
    assert coef.shape == reference.coef_.shape
    np.testing.assert_allclose(coef, reference.coef_, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(intercept, reference.intercept_, rtol=1e-8)


def test_fit_ridge_per_feature_matches_rescaled_ridge():
    X, y, weights = _data(60, 6)
    lam = np.array([0.01, 0.1, 1.0, 10.0, 100.0, 1.0])
    coef, intercept = fit_ridge(X, y, lam, weights, mode="per_feature")
    reference = Ridge(alpha=1.0).fit(X / np.sqrt(lam), y, sample_weight=weights)
    np.testing.assert_allclose(coef, reference.coef_ / np.sqrt(lam), rtol=1e-9)
    np.testing.assert_allclose(intercept, reference.intercept_, rtol=1e-9)


def test_fold_loss_on_diabetes_matches_a_kfold_loop():
    X, y = load_diabetes(return_X_y=True)
    weights = np.ones(len(y))
    losses, expected = [], []
    for train, test in KFold(5).split(X):
        problem = _problem(X, y, train, test, weights)
        losses.append(problem.evaluate([0.0], problem.initial_state()).loss)
        expected.append(_sklearn_fold_loss(X, y, 1.0, train, test, weights, True))
    np.testing.assert_allclose(losses, expected, rtol=1e-10)


# ---------------------------------------------------------------------------
# Shared moments across the folds, and several points in one call.


@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cv_moments_equal_each_fold_formed_alone(fit_intercept, sparse, dtype):
    from skhyper.inner._centring import (
        centred_gram,
        centred_targets,
        weighted_offsets,
    )
    from skhyper.inner.ridge import cv_ridge_moments

    X, y, weights = _data(80, 6, 2)
    X[np.abs(X - 3.0) < 0.5] = 0.0
    X, y = X.astype(dtype), y.astype(dtype)
    matrix = sp.csr_matrix(X) if sparse else X
    splits = list(KFold(4, shuffle=True, random_state=0).split(X))
    folds, full = cv_ridge_moments(matrix, y, weights, splits, fit_intercept)
    rtol = 1e-9 if dtype == np.float64 else 1e-4
    for (train, _), moments in zip(splits + [(np.arange(80), None)], folds + [full]):
        w = weights[train].astype(dtype)
        x_offset, y_offset = weighted_offsets(X[train], y[train], w, fit_intercept)
        gram = centred_gram(X[train].astype(np.float64), x_offset, w)
        rhs = centred_targets(
            X[train].astype(np.float64), y[train], x_offset, y_offset, w
        )
        scale = np.abs(gram).max()
        np.testing.assert_allclose(moments.x_offset, x_offset, rtol=rtol, atol=1e-12)
        np.testing.assert_allclose(moments.y_offset, y_offset, rtol=rtol)
        np.testing.assert_allclose(moments.gram, gram, rtol=rtol, atol=rtol * scale)
        np.testing.assert_allclose(moments.rhs, rhs, rtol=rtol, atol=rtol * scale)


def test_cv_moments_refuse_splits_that_are_not_complements():
    from skhyper.inner.ridge import cv_ridge_moments

    X, y, weights = _data()
    splits = [(np.arange(0, 40), np.arange(30, 60))]
    with pytest.raises(ValueError, match="rest of the data"):
        cv_ridge_moments(X, y[:, None], weights, splits, True)


def test_fold_with_shared_moments_equals_fold_alone():
    from skhyper.inner.ridge import cv_ridge_moments

    X, y, weights = _data(80, 6)
    splits = list(KFold(4, shuffle=True, random_state=0).split(X))
    folds, _ = cv_ridge_moments(X, y[:, None], weights, splits, True)
    train, test = splits[1]
    alone = _problem(X, y, train, test, weights)
    shared = RidgeFoldProblem(  # the moments stand for X_train
        None,
        y[train],
        X[test],
        y[test],
        sample_weight_train=weights[train],
        sample_weight_val=weights[test],
        moments=folds[1],
    )
    for theta in (np.log([0.01]), np.log([30.0])):
        a = alone.evaluate(theta, alone.initial_state())
        b = shared.evaluate(theta, shared.initial_state())
        np.testing.assert_allclose(b.loss, a.loss, rtol=1e-10)
        np.testing.assert_allclose(b.grad, a.grad, rtol=1e-8)
        for got, want in zip(shared.coefficients(b.state), alone.coefficients(a.state)):
            np.testing.assert_allclose(got, want, rtol=1e-8)
    with pytest.raises(ValueError, match="only when moments are given"):
        RidgeFoldProblem(None, y[train], X[test], y[test])


@pytest.mark.parametrize("mode", ["scalar", "per_target", "per_feature"])
def test_evaluate_many_equals_evaluate_one_by_one(mode):
    X, y, weights = _data(60, 4, 2)
    train, test = _split(60)
    problem = _problem(X, y, train, test, weights, mode=mode)
    size = problem.n_hyperparameters
    thetas = np.random.default_rng(0).normal(size=(5, size))
    many = problem.evaluate_many(thetas, problem.initial_state())
    state = problem.initial_state()
    for theta, batched in zip(thetas, many):
        single = problem.evaluate(theta, state)
        state = single.state
        np.testing.assert_allclose(batched.loss, single.loss, rtol=1e-12)
        np.testing.assert_allclose(batched.grad, single.grad, rtol=1e-8)
        np.testing.assert_array_equal(batched.state.theta, theta)


# ---------------------------------------------------------------------------
# The outer loop on ridge folds: the batched scan and the loss scale.


class _OneByOne:
    """A fold problem without ``evaluate_many``, so tune scans point by point."""

    def __init__(self, problem):
        self.problem = problem

    def initial_state(self):
        return self.problem.initial_state()

    def evaluate(self, theta, state):
        return self.problem.evaluate(theta, state)


def _ridge_folds(X, y, scale=1.0):
    weights = np.ones(len(y))
    return [
        _problem(X, scale * y, train, test, weights)
        for train, test in KFold(5).split(X)
    ]


def test_batched_scan_gives_the_same_history_as_one_by_one():
    from skhyper.tuning import tune

    X, y = load_diabetes(return_X_y=True)
    bounds = (np.log(1e-6), np.log(1e6))
    batched = tune(_ridge_folds(X, y), [0.0], bounds, scan=13)
    single = tune([_OneByOne(p) for p in _ridge_folds(X, y)], [0.0], bounds, scan=13)
    np.testing.assert_allclose(batched.history["loss"], single.history["loss"])
    np.testing.assert_allclose(batched.theta, single.theta)
    # The scan's points come first in the history, then L-BFGS-B's.
    np.testing.assert_allclose(
        np.ravel(batched.history["theta"][1:14]), np.linspace(*bounds, 13)
    )


def test_outer_loop_is_invariant_to_the_scale_of_the_loss():
    from skhyper.tuning import tune

    X, y = load_diabetes(return_X_y=True)
    bounds = (np.log(1e-6), np.log(1e6))
    plain = tune(_ridge_folds(X, y), [0.0], bounds)
    tiny = tune(_ridge_folds(X, y, scale=1e-4), [0.0], bounds)  # loss × 1e-8
    np.testing.assert_allclose(tiny.theta, plain.theta, rtol=1e-6)
    np.testing.assert_allclose(tiny.loss, 1e-8 * plain.loss, rtol=1e-10)
    # ... and it does leave the start: the best alpha is far below 1.
    assert np.exp(plain.theta[0]) < 1e-2
