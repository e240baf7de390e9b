"""All folds in lockstep against the folds solved one by one, and scikit-learn."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from skhyper.inner._lockstep_solvers import batched_cg
from skhyper.inner.logistic import LogisticFoldProblem
from skhyper.inner.logistic_folds import LogisticFolds

TIGHT = {"inner_tol": 1e-11, "linsys_tol": 1e-11}


def _classification(n_samples=150, n_features=5, n_classes=2, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_samples, n_features))
    scores = X @ rng.normal(size=(n_features, n_classes)) + rng.normal(
        size=(n_samples, n_classes)
    )
    return X, scores.argmax(axis=1)


def _one_by_one(X, y, n_classes, splits, theta, fit_weight, val_weight, **params):
    """The per-fold problems' losses and hypergradients at ``theta``."""
    losses, grads = [], []
    for train, test in splits:
        fold = LogisticFoldProblem(
            X[train],
            y[train],
            X[test],
            y[test],
            n_classes,
            sample_weight_train=fit_weight[train],
            sample_weight_val=val_weight[test],
            device="cpu",
            **TIGHT,
            **params,
        )
        result = fold.evaluate(theta, fold.initial_state())
        losses.append(result.loss)
        grads.append(result.grad)
    return np.array(losses), np.array(grads)


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("per_feature", [False, True])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_lockstep_folds_match_the_folds_solved_one_by_one(
    n_classes, per_feature, fit_intercept
):
    X, y = _classification(n_classes=n_classes, seed=n_classes)
    splits = list(StratifiedKFold(3, shuffle=True, random_state=0).split(X, y))
    rng = np.random.default_rng(1)
    fit_weight, val_weight = rng.uniform(0.5, 2.0, size=(2, len(y)))
    theta = np.log([0.3, 1.0, 2.0, 0.5, 4.0]) if per_feature else np.log([0.7])
    params = {"per_feature": per_feature, "fit_intercept": fit_intercept}
    losses, grads = _one_by_one(
        X, y, n_classes, splits, theta, fit_weight, val_weight, **params
    )
    folds = LogisticFolds(
        X,
        y,
        n_classes,
        splits,
        fit_weight=fit_weight,
        val_weight=val_weight,
        device="cpu",
        **TIGHT,
        **params,
    )
    # Twice, the second from the first's states at another C: the warm
    # starts must not change the answer.
    states = folds.initial_states()
    for scale in (np.log(3.0), 0.0):
        results = folds.evaluate_all(theta + scale, states)
        states = [result.state for result in results]
    np.testing.assert_allclose([r.loss for r in results], losses, rtol=1e-10)
    np.testing.assert_allclose(
        np.array([r.grad for r in results]), grads, rtol=1e-6, atol=1e-12
    )
    assert all(r.inner_converged and r.linsys_converged for r in results)


def test_sparse_input_gives_the_dense_results():
    X, y = _classification(n_classes=3, seed=4)
    X[np.abs(X) < 0.8] = 0.0
    splits = list(StratifiedKFold(3).split(X, y))
    results = [
        LogisticFolds(data, y, 3, splits, device="cpu", **TIGHT).evaluate_all(
            np.log([0.5]), [{"W": np.zeros((3, 6)), "v": None}] * 3
        )
        for data in (X, sp.csr_matrix(X))
    ]
    for dense, sparse in zip(*results):
        assert sparse.loss == pytest.approx(dense.loss, rel=1e-10)
        np.testing.assert_allclose(sparse.grad, dense.grad, rtol=1e-7)


@pytest.mark.parametrize("n_classes", [2, 4])
def test_default_tolerances_keep_the_hypergradient_to_about_the_inner_tol(n_classes):
    # Float32 products for Newton's directions and the linear systems; float64
    # gradients, so that the answer is as good as the tolerances say.
    X, y = _classification(n_samples=400, n_features=8, n_classes=n_classes, seed=7)
    splits = list(StratifiedKFold(5).split(X, y))
    theta = np.log([0.2])
    exact = LogisticFolds(X, y, n_classes, splits, device="cpu", **TIGHT)
    loose = LogisticFolds(
        X, y, n_classes, splits, device="cpu", inner_tol=1e-6, linsys_tol=1e-4
    )
    tight = exact.evaluate_all(theta, exact.initial_states())
    results = loose.evaluate_all(theta, loose.initial_states())
    for a, b in zip(results, tight):
        assert a.loss == pytest.approx(b.loss, abs=1e-9)
        np.testing.assert_allclose(a.grad, b.grad, rtol=1e-3, atol=2e-6)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_fit_whole_is_logistic_regression_on_all_the_data(n_classes):
    X, y = _classification(n_classes=n_classes, seed=9)
    weight = np.random.default_rng(2).uniform(0.1, 3.0, size=len(y))
    splits = list(StratifiedKFold(3).split(X, y))
    folds = LogisticFolds(X, y, n_classes, splits, fit_weight=weight, device="cpu")
    for C in (0.05, 50.0):
        coef, intercept, _, converged = folds.fit_whole(
            np.log([C]), tol=1e-10, low=False
        )
        reference = LogisticRegression(
            C=C, solver="newton-cholesky", tol=1e-12, max_iter=500
        ).fit(X, y, sample_weight=weight)
        assert converged
        np.testing.assert_allclose(coef, reference.coef_, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(
            intercept, reference.intercept_, rtol=1e-6, atol=1e-8
        )


def test_a_training_part_without_a_class_is_refused_naming_the_fold():
    X, _ = _classification(n_classes=3, seed=5)
    y = np.repeat([0, 1, 2], 50)  # rows 100 to 149 hold all of class 2
    splits = [(np.arange(0, 100), np.arange(100, 150)), (np.arange(50, 150), [0])]
    with pytest.raises(ValueError, match="fold 0 has no sample of class index 2"):
        LogisticFolds(X, y, 3, splits, device="cpu")


def test_batched_conjugate_gradient_solves_each_system():
    # Fold f's system is A_f x = b_f with its own SPD matrix; the shared
    # preconditioner is the mean matrix.
    rng = np.random.default_rng(3)
    n_folds, size = 4, 12
    matrices = []
    for _ in range(n_folds):
        basis = rng.normal(size=(size, size))
        matrices.append(basis @ basis.T + size * np.eye(size))
    A = torch.as_tensor(np.array(matrices))
    b = torch.as_tensor(rng.normal(size=(n_folds, 3, 4)))
    mean_inverse = torch.linalg.inv(A.mean(dim=0))

    def apply(U):
        return (A @ U.reshape(n_folds, size, 1)).reshape(U.shape), None

    def precondition(R):
        return (R.reshape(n_folds, size) @ mean_inverse.T).reshape(R.shape)

    x, _, n_iter, converged = batched_cg(
        apply, b, precondition, rtol=1e-12, max_iter=50, x0=torch.zeros_like(b)
    )
    expected = torch.linalg.solve(A, b.reshape(n_folds, size, 1)).reshape(b.shape)
    np.testing.assert_allclose(x.numpy(), expected.numpy(), rtol=1e-9, atol=1e-12)
    assert bool(converged.all()) and int(n_iter.max()) <= size


@pytest.mark.parametrize("n_classes", [2, 4])
def test_lockstep_losses_and_probabilities_match_scikit_learn(n_classes):
    # Per fold: the weighted mean training log loss (scikit-learn's log_loss
    # on the training rows) plus ½ exp(-θ)/S ||coef||² (and the intercept
    # symmetry term), and the probabilities of every row.
    from scipy.special import expit, softmax
    from sklearn.metrics import log_loss

    from skhyper.inner._logistic_lockstep import LockstepObjective

    X, y = _classification(n_samples=90, n_features=4, n_classes=n_classes, seed=7)
    splits = list(StratifiedKFold(3).split(X, y))
    weight = np.random.default_rng(8).uniform(0.5, 2.0, size=len(y))
    objective = LockstepObjective(
        X, y, n_classes, splits, weight, weight, True, torch.device("cpu")
    )
    W = torch.as_tensor(np.random.default_rng(9).normal(size=objective.shape))
    theta = torch.tensor([0.3], dtype=torch.float64)
    values, _, proba = objective.values_and_gradients(W, theta, objective.decision(W))
    for f, (train, _) in enumerate(splits):
        coef, intercept = W[f, :, :-1].numpy(), W[f, :, -1].numpy()
        Z = X @ coef.T + intercept
        expected_proba = expit(Z) if n_classes == 2 else softmax(Z, axis=1)
        np.testing.assert_allclose(proba[:, f].numpy(), expected_proba, rtol=1e-12)
        labels = np.arange(n_classes)
        full = np.c_[1 - expected_proba, expected_proba] if n_classes == 2 else None
        full = expected_proba if full is None else full
        data = log_loss(
            y[train], full[train], sample_weight=weight[train], labels=labels
        )
        penalty = 0.5 * np.exp(-0.3) / weight[train].sum() * (coef**2).sum()
        penalty += 0.5 * objective.data.symmetry_weight * intercept.sum() ** 2
        np.testing.assert_allclose(float(values[f]), data + penalty, rtol=1e-12)
