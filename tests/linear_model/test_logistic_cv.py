"""HypergradLogisticCV against scikit-learn: LogisticRegression(CV), CV loops."""

import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import (
    load_breast_cancer,
    load_digits,
    make_classification,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.metrics import accuracy_score, log_loss
from sklearn.model_selection import KFold, StratifiedKFold, StratifiedShuffleSplit
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from skhyper import HypergradLogisticCV
from skhyper.inner.logistic import LogisticFoldProblem


def _data(n_samples=150, n_features=5, n_classes=2, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_samples, n_features))
    scores = X @ rng.normal(size=(n_features, n_classes))
    y = (scores + rng.normal(size=scores.shape)).argmax(axis=1)
    return X, y


def _reference(C, **params):
    """LogisticRegression solved far below the package's tolerances."""
    return LogisticRegression(
        C=C, solver="newton-cholesky", tol=1e-12, max_iter=500, **params
    )


def _cv_log_loss(X, y, C, cv):
    """Mean over folds of sklearn's validation log loss (a brute-force loop).

    One C per feature is LogisticRegression(C=1) on features scaled by √C.
    """
    C = np.asarray(C, dtype=float)
    scale = np.sqrt(C) if C.ndim else 1.0
    losses = []
    for train, test in cv.split(X, y):
        model = _reference(1.0 if C.ndim else float(C))
        model.fit(X[train] * scale, y[train])
        proba = model.predict_proba(X[test] * scale)
        losses.append(log_loss(y[test], proba, labels=np.unique(y)))
    return float(np.mean(losses))


def _fit_quietly(model, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(*args, **kwargs)


# ---------------------------------------------------------------------------
# Must show 1: scikit-learn's estimator checks.


@parametrize_with_checks(
    [
        HypergradLogisticCV(device="cpu"),
        HypergradLogisticCV(per_feature=True, max_iter=5, device="cpu"),
    ]
)
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        # Random data often puts the best C on a bound: that warning is
        # expected here and checked elsewhere.
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


# ---------------------------------------------------------------------------
# Must show 2: the hypergradient against finite differences of a loop.


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("per_feature", [False, True])
def test_hypergradient_matches_finite_differences_of_a_stratified_loop(
    n_classes, per_feature
):
    X, y = _data(120, 4, n_classes, seed=1)
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    theta = np.log([0.1, 0.4, 1.5, 6.0]) if per_feature else np.log([0.7])
    folds = [
        LogisticFoldProblem(
            X[train],
            y[train],
            X[test],
            y[test],
            n_classes,
            per_feature=per_feature,
            inner_tol=1e-11,
            linsys_tol=1e-11,
            device="cpu",
        )
        for train, test in cv.split(X, y)
    ]
    results = [fold.evaluate(theta, fold.initial_state()) for fold in folds]
    loss = np.mean([r.loss for r in results])
    grad = np.mean([r.grad for r in results], axis=0)

    np.testing.assert_allclose(loss, _cv_log_loss(X, y, np.exp(theta), cv), rtol=1e-9)
    step = 1e-4
    numeric = [
        (
            _cv_log_loss(X, y, np.exp(theta + step * e), cv)
            - _cv_log_loss(X, y, np.exp(theta - step * e), cv)
        )
        / (2 * step)
        for e in np.eye(theta.size)
    ]
    assert np.linalg.norm(grad - numeric) <= 1e-4 * np.linalg.norm(numeric)

    # The estimator's first evaluation is this objective at its starting C:
    # to round-off at the same tolerances; at its default ones (inner 1e-6),
    # the first-order loss correction keeps the loss to 1e-8 and the
    # hypergradient is off by about the inner tolerance (1e-6).
    for tols, gradient_atol in ((1e-11, 1e-5 * np.linalg.norm(grad)), (None, 2e-6)):
        settings = {} if tols is None else {"inner_tol": tols, "linsys_tol": tols}
        model = HypergradLogisticCV(
            C=np.exp(theta),
            per_feature=per_feature,
            cv=cv,
            max_iter=1,
            device="cpu",
            **settings,
        )
        row = _fit_quietly(model, X, y).cv_results_
        np.testing.assert_allclose(row["mean_test_loss"][0], loss, rtol=1e-8)
        np.testing.assert_allclose(
            row["hypergradient_norm"][0], np.linalg.norm(grad), atol=gradient_atol
        )


# ---------------------------------------------------------------------------
# The refit is LogisticRegression at the tuned C.


@pytest.mark.parametrize("n_classes", [2, 3])
def test_coef_equals_logistic_regression_at_the_tuned_C(n_classes):
    X, y = _data(200, 6, n_classes, seed=2)
    weights = np.random.default_rng(3).uniform(0.5, 2.0, size=200)
    model = HypergradLogisticCV(device="cpu").fit(X, y, sample_weight=weights)
    reference = _reference(model.C_).fit(X, y, sample_weight=weights)
    np.testing.assert_allclose(model.coef_, reference.coef_, atol=1e-5)
    np.testing.assert_allclose(model.intercept_, reference.intercept_, atol=1e-5)
    np.testing.assert_allclose(
        model.predict_proba(X), reference.predict_proba(X), atol=1e-6
    )
    np.testing.assert_array_equal(model.predict(X), reference.predict(X))
    np.testing.assert_allclose(
        model.decision_function(X), reference.decision_function(X), atol=1e-5
    )
    np.testing.assert_allclose(
        model.predict_log_proba(X), reference.predict_log_proba(X), atol=1e-5
    )


def test_balanced_class_weight_is_computed_on_all_of_y():
    X, y = _data(200, 4, 3, seed=4)
    y[:120] = 0  # make the classes unbalanced
    model = HypergradLogisticCV(class_weight="balanced", device="cpu").fit(X, y)
    reference = _reference(model.C_, class_weight="balanced").fit(X, y)
    np.testing.assert_allclose(model.coef_, reference.coef_, atol=1e-5)
    by_dict = HypergradLogisticCV(
        class_weight={0: 0.5, 1: 2.0, 2: 1.0}, device="cpu"
    ).fit(X, y)
    reference = _reference(by_dict.C_, class_weight={0: 0.5, 1: 2.0, 2: 1.0})
    np.testing.assert_allclose(by_dict.coef_, reference.fit(X, y).coef_, atol=1e-5)


# ---------------------------------------------------------------------------
# Must show 3: no worse than LogisticRegressionCV's best of 30 Cs.


def _standardised(name):
    if name == "breast_cancer":
        X, y = load_breast_cancer(return_X_y=True)
    elif name == "digits":
        X, y = load_digits(return_X_y=True)
    else:
        X, y = make_classification(n_samples=5000, n_features=200, random_state=0)
    return StandardScaler().fit_transform(X), y


@pytest.mark.slow
@pytest.mark.parametrize("name", ["breast_cancer", "digits", "classification"])
def test_cv_log_loss_beats_logistic_regression_cv_with_30_Cs(name):
    X, y = _standardised(name)
    cv = StratifiedKFold(5)
    with warnings.catch_warnings():
        # scikit-learn 1.9 announces a change of its fitted attributes.
        warnings.simplefilter("ignore", FutureWarning)
        grid = LogisticRegressionCV(Cs=30, cv=cv, scoring="neg_log_loss").fit(X, y)
    fold_scores = next(iter(grid.scores_.values()))  # (n_folds, n_Cs)
    grid_best = -np.mean(fold_scores, axis=0).max()
    model = HypergradLogisticCV(cv=cv).fit(X, y)
    assert -model.best_score_ <= 1.005 * grid_best
    # Its reported CV loss is the true one at C_.
    np.testing.assert_allclose(
        -model.best_score_, _cv_log_loss(X, y, model.C_, cv), rtol=1e-6
    )


# ---------------------------------------------------------------------------
# Must show 5: one C per feature when few features are informative.


@pytest.mark.slow
def test_per_feature_C_predicts_better_with_few_informative_features():
    X, y = make_classification(
        n_samples=2400,
        n_features=30,
        n_informative=3,
        n_redundant=0,
        n_clusters_per_class=1,
        class_sep=0.8,
        flip_y=0.05,
        shuffle=False,  # the 3 informative features come first
        random_state=0,
    )
    rows = np.random.default_rng(0).permutation(len(y))
    X, y = X[rows], y[rows]
    X_train, y_train, X_test, y_test = X[:400], y[:400], X[400:], y[400:]
    scalar = HypergradLogisticCV(device="cpu").fit(X_train, y_train)
    per_feature = _fit_quietly(
        HypergradLogisticCV(per_feature=True, max_iter=100, device="cpu"),
        X_train,
        y_train,
    )
    assert np.median(per_feature.C_[3:]) < 1e-2 * np.median(per_feature.C_[:3])
    held_out = [
        log_loss(y_test, m.predict_proba(X_test)) for m in (per_feature, scalar)
    ]
    assert held_out[0] < held_out[1]


def test_per_feature_search_starts_from_the_best_single_C():
    # Started from C = 1 on these data, the per-feature search stopped at CV
    # log loss 0.5438, above the single C's 0.5376. It starts from the single
    # C now, and can only improve on it.
    X, y = make_classification(
        3000,
        50,
        n_informative=5,
        n_redundant=0,
        class_sep=0.5,
        shuffle=False,
        random_state=0,
    )
    cv = StratifiedKFold(5)
    scalar = HypergradLogisticCV(cv=cv, device="cpu").fit(X, y)
    model = _fit_quietly(
        HypergradLogisticCV(per_feature=True, max_iter=20, cv=cv, device="cpu"),
        X,
        y,
    )
    np.testing.assert_allclose(model.cv_results_["param_C"][0], scalar.C_, rtol=1e-4)
    brute = _cv_log_loss(X, y, model.C_, cv)
    assert -model.best_score_ == pytest.approx(brute, rel=1e-6)
    assert brute < -scalar.best_score_ - 5e-3


# ---------------------------------------------------------------------------
# Labels, folds, inputs.


def test_group_splitters_get_the_groups():
    from sklearn.model_selection import GroupKFold

    X, y = _data(150, 4, 3, seed=3)
    groups = np.arange(150) % 5
    cv = GroupKFold(5)
    model = HypergradLogisticCV(cv=cv, device="cpu").fit(X, y, groups=groups)
    losses = []
    for train, test in cv.split(X, y, groups):
        fitted = _reference(model.C_).fit(X[train], y[train])
        losses.append(log_loss(y[test], fitted.predict_proba(X[test])))
    assert -model.best_score_ == pytest.approx(np.mean(losses), rel=1e-6)


def test_labels_of_any_type_keep_probabilities_aligned_to_classes():
    X, y = _data(180, 4, 3, seed=5)
    names = np.array(["setosa", "versicolor", "virginica"], dtype=object)
    coded = HypergradLogisticCV(device="cpu").fit(X, y)
    named = HypergradLogisticCV(device="cpu").fit(X, names[y])
    reversed_ints = HypergradLogisticCV(device="cpu").fit(X, 10 - 3 * y)
    assert list(named.classes_) == list(names)
    np.testing.assert_array_equal(reversed_ints.classes_, [4, 7, 10])
    np.testing.assert_allclose(named.predict_proba(X), coded.predict_proba(X))
    np.testing.assert_allclose(
        reversed_ints.predict_proba(X), coded.predict_proba(X)[:, ::-1], atol=1e-6
    )
    np.testing.assert_array_equal(named.predict(X), names[coded.predict(X)])


def test_a_training_fold_without_a_class_is_refused_before_optimising():
    X, _ = _data(90, 3, seed=6)
    y = np.repeat(["a", "b", "c"], 30)  # sorted: KFold(3) holds out one class
    with pytest.raises(ValueError, match="CV fold 0 has no sample of class 'a'"):
        HypergradLogisticCV(cv=KFold(3), device="cpu").fit(X, y)


def test_one_class_is_an_error_naming_the_class():
    X, y = _data(30, 3)
    with pytest.raises(ValueError, match="only one class: 'only'"):
        HypergradLogisticCV(device="cpu").fit(X, np.full(30, "only"))


def test_sparse_equals_dense():
    X, y = _data(160, 8, 3, seed=7)
    X[np.abs(X) < 0.8] = 0.0
    dense = HypergradLogisticCV(device="cpu").fit(X, y)
    sparse = HypergradLogisticCV(device="cpu").fit(sp.csr_matrix(X), y)
    np.testing.assert_allclose(sparse.C_, dense.C_, rtol=1e-6)
    np.testing.assert_allclose(sparse.coef_, dense.coef_, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(
        sparse.predict_proba(sp.csr_matrix(X)), dense.predict_proba(X)
    )


def test_float32_input_gives_float32_coefficients_close_to_float64():
    X, y = _data(150, 4, 2, seed=8)
    single = HypergradLogisticCV(device="cpu").fit(X.astype(np.float32), y)
    double = HypergradLogisticCV(device="cpu").fit(X, y)
    assert single.coef_.dtype == np.float32
    np.testing.assert_allclose(single.C_, double.C_, rtol=1e-4)
    np.testing.assert_allclose(single.coef_, double.coef_, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("per_feature", [False, True])
def test_pickle_round_trip_predicts_identically_without_torch(tmp_path, per_feature):
    X, y = _data(120, 4, 3, seed=9)
    model = _fit_quietly(
        HypergradLogisticCV(per_feature=per_feature, max_iter=5, device="cpu"), X, y
    )
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(model))
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "proba.npy", model.predict_proba(X))
    script = (
        "import pickle, sys, numpy as np\n"
        f"model = pickle.loads(open({str(path)!r}, 'rb').read())\n"
        f"X = np.load({str(tmp_path / 'X.npy')!r})\n"
        f"expected = np.load({str(tmp_path / 'proba.npy')!r})\n"
        "np.testing.assert_array_equal(model.predict_proba(X), expected)\n"
        "assert 'torch' not in sys.modules, 'predicting imported torch'\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)


def test_pipeline_with_scaling_and_scoring_option():
    X, y = load_breast_cancer(return_X_y=True)
    cv = StratifiedKFold(4)
    model = make_pipeline(
        StandardScaler(), HypergradLogisticCV(cv=cv, scoring="accuracy", device="cpu")
    ).fit(X, y)
    fitted = model[-1]
    # The scoring option reports the fold accuracy at C_, computed by hand.
    scaled = model[0].transform(X)
    accuracies = []
    for train, test in cv.split(scaled, y):
        fold = _reference(fitted.C_).fit(scaled[train], y[train])
        accuracies.append(accuracy_score(y[test], fold.predict(scaled[test])))
    np.testing.assert_allclose(fitted.best_score_, np.mean(accuracies))
    scores = fitted.cv_results_["mean_test_score"]
    assert fitted.best_score_ == np.nanmax(scores)


def test_cv_results_has_one_row_per_evaluation():
    pandas = pytest.importorskip("pandas")
    X, y = _data(150, 4, 3, seed=10)
    model = HypergradLogisticCV(cv=3, device="cpu").fit(X, y)
    table = pandas.DataFrame(model.cv_results_)
    assert len(table) >= model.n_iter_ >= 1
    assert {"param_C", "mean_test_loss", "split2_test_loss", "time"} <= set(table)
    best = table["mean_test_loss"].idxmin()
    assert table["param_C"][best] == model.C_
    np.testing.assert_allclose(-model.best_score_, table["mean_test_loss"][best])


def test_verbose_prints_one_line_per_evaluation(capsys):
    X, y = _data(100, 3, 2, seed=11)
    model = HypergradLogisticCV(verbose=1, device="cpu").fit(X, y)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(model.cv_results_["mean_test_loss"])
    assert all("C=" in line for line in lines)


def test_solver_failures_give_one_aggregated_convergence_warning():
    X, y = _data(150, 5, 3, seed=12)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        HypergradLogisticCV(inner_max_iter=1, max_iter=3, device="cpu").fit(X, y)
    convergence = [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert len(convergence) == 1
    assert "inner solver" in str(convergence[0].message)


def test_badly_scaled_columns_are_named_in_the_one_warning_and_losses_stay_valid():
    # Scaled by 1e6, the training problems at large C are nearly singular: the
    # fit must say so (once), finish quickly and never report a negative log
    # loss (the first-order correction is dropped where it cannot hold).
    X, y = load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X) * 1e6
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = HypergradLogisticCV(max_iter=8, device="cpu").fit(X, y)
    convergence = [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert len(convergence) == 1
    assert "root mean square of 1e+06" in str(convergence[0].message)
    assert np.all(model.cv_results_["mean_test_loss"] > 0)


@pytest.mark.parametrize("solver", ["lbfgs", "newton"])
def test_the_refit_matches_logistic_regression_whatever_the_fold_solver(solver):
    X, y = load_digits(return_X_y=True)
    X = StandardScaler().fit_transform(X[::4])
    y = y[::4]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = HypergradLogisticCV(solver=solver, max_iter=3, device="cpu").fit(X, y)
    # The refit converges: no inner-solver failure among the fit's warnings.
    assert not any("inner solver" in str(w.message) for w in caught)
    reference = LogisticRegression(
        C=model.C_, solver="newton-cg", tol=1e-12, max_iter=1000
    ).fit(X, y)
    np.testing.assert_allclose(model.coef_, reference.coef_, atol=1e-5)


def test_an_optimum_beyond_the_bounds_warns_that_C_sits_on_one():
    X, y = _data(80, 2, 2, seed=13)
    y = (X[:, 0] > 0).astype(int)  # separable: the best C here is about 50
    with pytest.warns(ConvergenceWarning, match="upper bound 10;"):
        model = HypergradLogisticCV(C_bounds=(1e-2, 10.0), device="cpu").fit(X, y)
    assert model.C_ == pytest.approx(10.0)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"hypergrad": "newton"}, "hypergrad"),
        ({"solver": "sag"}, "solver"),
        ({"C_bounds": (1.0, 0.1)}, "C_bounds"),
        ({"class_weight": "even"}, "class_weight"),
        ({"C": -1.0}, "C must be positive"),
        ({"max_iter": 0}, "max_iter"),
    ],
)
def test_invalid_parameters_raise_in_fit_not_init(params, match):
    model = HypergradLogisticCV(**params)
    X, y = _data(40, 3)
    with pytest.raises(ValueError, match=match):
        model.fit(X, y)


def test_non_finite_input_is_an_error_and_inputs_are_not_modified():
    X, y = _data(60, 3)
    weights = np.ones(60)
    copies = X.copy(), y.copy(), weights.copy()
    HypergradLogisticCV(class_weight="balanced", device="cpu").fit(
        X, y, sample_weight=weights
    )
    for before, after in zip(copies, (X, y, weights)):
        np.testing.assert_array_equal(before, after)
    X[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        HypergradLogisticCV(device="cpu").fit(X, y)


def test_folds_in_parallel_threads_give_the_sequential_fit():
    # Folds are spread over joblib workers when they are solved one at a time,
    # as with the direct solve of the hypergradient's linear system.
    joblib = pytest.importorskip("joblib")
    X, y = _data(150, 4, 3, seed=14)
    sequential = HypergradLogisticCV(hypergrad="exact", device="cpu").fit(X, y)
    with joblib.parallel_backend("threading"):
        parallel = HypergradLogisticCV(hypergrad="exact", n_jobs=2, device="cpu").fit(
            X, y
        )
    np.testing.assert_allclose(parallel.C_, sequential.C_, rtol=1e-12)
    np.testing.assert_allclose(parallel.coef_, sequential.coef_, rtol=1e-10)


def test_a_scorer_without_sample_weight_works_when_no_weights_are_given():
    X, y = _data(120, 4, seed=3)
    cv = StratifiedKFold(3)
    model = HypergradLogisticCV(
        cv=cv, scoring=lambda est, X, y: est.score(X, y), device="cpu"
    ).fit(X, y)
    # The reported score is the fold accuracy at C_, computed by hand.
    accuracies = []
    for train, test in cv.split(X, y):
        fold = _reference(model.C_).fit(X[train], y[train])
        accuracies.append(accuracy_score(y[test], fold.predict(X[test])))
    np.testing.assert_allclose(model.best_score_, np.mean(accuracies))


@pytest.mark.parametrize(
    "device, match",
    [
        ("bogus", "device must be 'auto', 'cpu' or a torch device string"),
        ("cuda", "CUDA is not available"),
        ("mps", "not available here"),
        ("meta", "holds no data"),
    ],
)
def test_an_unusable_device_is_a_clear_error(device, match):
    torch = pytest.importorskip("torch")
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    X, y = _data(40, 3)
    with pytest.raises(ValueError, match=match):
        HypergradLogisticCV(device=device).fit(X, y)


def test_a_single_split_is_accepted_like_grid_search_cv():
    X, y = _data(120, 4, seed=5)
    cv = StratifiedShuffleSplit(1, test_size=0.25, random_state=0)
    model = HypergradLogisticCV(cv=cv, device="cpu").fit(X, y)
    # The tuned loss is the brute-force validation log loss at C_.
    np.testing.assert_allclose(
        -model.best_score_, _cv_log_loss(X, y, model.C_, cv), rtol=1e-5
    )


def test_itd_warns_when_its_steps_truncate_the_hypergradient():
    # After L-BFGS, ITD iterates a gradient step whose rate is close to one on
    # standardised breast cancer: 30 steps give a hypergradient far from the
    # implicit one, and the fit must say so. After Newton the map contracts
    # at once and ITD's C is CG's.
    X, y = load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X)[::2]
    y = y[::2]
    cv = StratifiedKFold(3)
    with pytest.warns(ConvergenceWarning, match="linsys_max_iter.*hypergrad='cg'"):
        HypergradLogisticCV(
            hypergrad="itd", solver="lbfgs", linsys_max_iter=30, cv=cv, max_iter=3
        ).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        itd = HypergradLogisticCV(hypergrad="itd", solver="newton", cv=cv).fit(X, y)
    cg = HypergradLogisticCV(cv=cv).fit(X, y)
    np.testing.assert_allclose(itd.C_, cg.C_, rtol=1e-3)
