"""HypergradRidgeCV against scikit-learn: Ridge, GridSearchCV, KFold loops."""

import pickle
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.datasets import load_diabetes, make_regression
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV, KFold, ShuffleSplit, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from skhyper import HypergradRidgeCV


def _data(n_samples=80, n_features=6, noise=1.0, seed=0, n_targets=None):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_samples, n_features))
    shape = (n_features,) if n_targets is None else (n_features, n_targets)
    coef = rng.normal(size=shape)
    y = X @ coef + noise * rng.normal(size=(n_samples,) + shape[1:]) + 2.0
    return X, y


def _kfold_loss(X, y, alpha, cv, sample_weight=None):
    """Mean over folds of the validation MSE of sklearn's Ridge (a brute loop)."""
    losses = []
    for train, test in cv.split(X):
        weights = None if sample_weight is None else sample_weight[train]
        model = Ridge(alpha=alpha).fit(X[train], y[train], sample_weight=weights)
        residual = model.predict(X[test]) - y[test]
        per_row = residual**2 if residual.ndim == 1 else (residual**2).mean(axis=1)
        val_weights = None if sample_weight is None else sample_weight[test]
        losses.append(np.average(per_row, weights=val_weights))
    return float(np.mean(losses))


def _grid_losses(X, y, alphas, cv):
    """CV MSE of Ridge at every alpha, by sklearn's Ridge with one alpha per
    target: one fit per fold gives the whole grid, as GridSearchCV would."""
    total = np.zeros(len(alphas))
    for train, test in cv.split(X):
        tiled = np.repeat(y[train][:, None], len(alphas), axis=1)
        model = Ridge(alpha=alphas, solver="cholesky").fit(X[train], tiled)
        total += ((model.predict(X[test]) - y[test][:, None]) ** 2).mean(axis=0)
    return total / cv.get_n_splits()


# ---------------------------------------------------------------------------
# Must show 1: scikit-learn's estimator checks.


@parametrize_with_checks(
    [HypergradRidgeCV(), HypergradRidgeCV(per_feature=True, max_iter=5)]
)
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        # Random data often puts the best alpha on a bound: that warning is
        # expected here and checked elsewhere.
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


# ---------------------------------------------------------------------------
# Must show 2: the CV loss and its hypergradient against a KFold loop.


def test_cv_loss_and_hypergradient_match_a_kfold_loop_over_ridge():
    X, y = load_diabetes(return_X_y=True)
    cv = KFold(5, shuffle=True, random_state=0)
    model = HypergradRidgeCV(cv=cv).fit(X, y)
    results = model.cv_results_
    step = 1e-4
    for row in (0, 5, len(results["iteration"]) - 1):
        alpha = results["param_alpha"][row]
        expected = _kfold_loss(X, y, alpha, cv)
        np.testing.assert_allclose(results["mean_test_loss"][row], expected, rtol=1e-8)
        # d loss / d log(alpha) by central differences of the same loop.
        up = _kfold_loss(X, y, alpha * np.exp(step), cv)
        down = _kfold_loss(X, y, alpha * np.exp(-step), cv)
        finite_difference = abs(up - down) / (2 * step)
        np.testing.assert_allclose(
            results["hypergradient_norm"][row],
            finite_difference,
            rtol=1e-5,
            atol=1e-7 * expected,
        )
    np.testing.assert_allclose(
        -model.best_score_, _kfold_loss(X, y, model.alpha_, cv), rtol=1e-8
    )


def test_coef_equals_ridge_at_the_tuned_alpha():
    X, y = _data(n_targets=2)
    weights = np.random.default_rng(1).uniform(0.5, 2.0, size=len(y))
    model = HypergradRidgeCV().fit(X, y, sample_weight=weights)
    reference = Ridge(alpha=model.alpha_).fit(X, y, sample_weight=weights)
    np.testing.assert_allclose(model.coef_, reference.coef_, rtol=1e-8)
    np.testing.assert_allclose(model.intercept_, reference.intercept_, rtol=1e-8)
    np.testing.assert_allclose(model.predict(X), reference.predict(X), rtol=1e-8)


# ---------------------------------------------------------------------------
# Must show 3: no worse than the best of a 100-alpha grid, plus 0.1%.


def test_tuned_alpha_beats_gridsearchcv_on_diabetes():
    X, y = load_diabetes(return_X_y=True)
    cv = KFold(5)
    alphas = np.logspace(-6, 6, 100)
    grid = GridSearchCV(
        Ridge(), {"alpha": alphas}, cv=cv, scoring="neg_mean_squared_error"
    ).fit(X, y)
    model = HypergradRidgeCV(cv=cv).fit(X, y)
    assert -model.best_score_ <= -grid.best_score_ * 1.001
    # The one-fit-per-fold grid used for the larger data set is GridSearchCV's.
    np.testing.assert_allclose(
        _grid_losses(X, y, alphas, cv), -grid.cv_results_["mean_test_score"], rtol=1e-8
    )


@pytest.mark.slow
def test_tuned_alpha_beats_the_grid_on_make_regression():
    X, y = make_regression(n_samples=5000, n_features=500, noise=10.0, random_state=0)
    cv = KFold(5)
    grid_losses = _grid_losses(X, y, np.logspace(-6, 6, 100), cv)
    model = HypergradRidgeCV(cv=cv).fit(X, y)
    assert -model.best_score_ <= grid_losses.min() * 1.001
    np.testing.assert_allclose(
        -model.best_score_, _kfold_loss(X, y, model.alpha_, cv), rtol=1e-8
    )


# ---------------------------------------------------------------------------
# Must show 4: per-feature alphas find the noise features.


@pytest.mark.slow
def test_per_feature_alphas_penalise_noise_features_and_predict_better():
    rng = np.random.default_rng(0)
    n_train, n_test, n_features = 400, 2000, 50
    X = rng.normal(size=(n_train + n_test, n_features))
    coef = np.zeros(n_features)
    coef[:5] = rng.uniform(1, 3, 5) * rng.choice([-1, 1], 5)
    y = X @ coef + 2.0 * rng.normal(size=n_train + n_test)
    X_train, y_train, X_test, y_test = (
        X[:n_train],
        y[:n_train],
        X[n_train:],
        y[n_train:],
    )

    scalar = HypergradRidgeCV().fit(X_train, y_train)
    per_feature = HypergradRidgeCV(per_feature=True).fit(X_train, y_train)
    informative, noise = per_feature.alpha_[:5], per_feature.alpha_[5:]
    assert noise.min() > informative.max()
    assert np.median(noise) > 1e3 * np.median(informative)
    assert per_feature.best_score_ > scalar.best_score_
    held_out = [
        np.mean((m.predict(X_test) - y_test) ** 2) for m in (per_feature, scalar)
    ]
    assert held_out[0] < held_out[1]


# ---------------------------------------------------------------------------
# Must show 5: sparse, weights, pickle, clone, pipelines.


@pytest.mark.parametrize("shape", [(80, 6), (30, 60)])
def test_sparse_equals_dense(shape):
    X, y = _data(*shape)
    X[np.abs(X) < 0.7] = 0.0
    dense = HypergradRidgeCV().fit(X, y)
    sparse = HypergradRidgeCV().fit(sp.csr_matrix(X), y)
    np.testing.assert_allclose(sparse.alpha_, dense.alpha_, rtol=1e-6)
    np.testing.assert_allclose(sparse.coef_, dense.coef_, rtol=1e-6, atol=1e-10)
    np.testing.assert_allclose(sparse.intercept_, dense.intercept_, rtol=1e-6)
    np.testing.assert_allclose(sparse.best_score_, dense.best_score_, rtol=1e-6)


def test_integer_weights_equal_repeated_rows():
    X, y = _data(60, 5, noise=3.0)
    counts = np.random.default_rng(2).integers(1, 4, size=len(y))
    folds = list(KFold(5, shuffle=True, random_state=0).split(X))
    # The same folds on the repeated data: a copy stays in its row's fold.
    owner = np.repeat(np.arange(len(y)), counts)
    repeated_folds = [
        (np.flatnonzero(np.isin(owner, train)), np.flatnonzero(np.isin(owner, test)))
        for train, test in folds
    ]
    weighted = HypergradRidgeCV(cv=folds).fit(X, y, sample_weight=counts)
    repeated = HypergradRidgeCV(cv=repeated_folds).fit(X[owner], y[owner])
    np.testing.assert_allclose(weighted.alpha_, repeated.alpha_, rtol=1e-6)
    np.testing.assert_allclose(weighted.coef_, repeated.coef_, rtol=1e-6)
    np.testing.assert_allclose(weighted.intercept_, repeated.intercept_, rtol=1e-6)
    np.testing.assert_allclose(weighted.best_score_, repeated.best_score_, rtol=1e-8)


@pytest.mark.parametrize("per_feature", [False, True])
def test_pickle_round_trip_predicts_identically_without_torch(tmp_path, per_feature):
    X, y = _data()
    model = HypergradRidgeCV(per_feature=per_feature, max_iter=5).fit(X, y)
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(model))
    loaded = pickle.loads(path.read_bytes())
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    for value in vars(model).values():
        assert type(value).__module__.split(".")[0] != "torch"
    # A fresh interpreter loads and predicts with numpy alone.
    script = (
        "import pickle, sys, numpy as np\n"
        f"model = pickle.loads(open({str(path)!r}, 'rb').read())\n"
        f"X = np.random.default_rng(0).normal(size=(5, {X.shape[1]}))\n"
        "model.predict(X)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)


def test_clone_keeps_parameters_and_drops_the_fit():
    X, y = _data()
    model = HypergradRidgeCV(alpha=3.0, cv=3, alpha_bounds=(1e-3, 1e3)).fit(X, y)
    copy = clone(model)
    assert copy.get_params() == model.get_params()
    assert not hasattr(copy, "coef_")
    np.testing.assert_allclose(copy.fit(X, y).coef_, model.coef_)


def test_pipeline_inside_gridsearchcv_over_another_parameter():
    X, y = load_diabetes(return_X_y=True)
    pipeline = make_pipeline(StandardScaler(), HypergradRidgeCV(cv=3))
    search = GridSearchCV(
        pipeline, {"standardscaler__with_std": [True, False]}, cv=KFold(4)
    ).fit(X, y)
    for with_std, score in zip(
        search.cv_results_["param_standardscaler__with_std"],
        search.cv_results_["mean_test_score"],
    ):
        manual = cross_val_score(
            clone(pipeline).set_params(standardscaler__with_std=with_std),
            X,
            y,
            cv=KFold(4),
        )
        np.testing.assert_allclose(score, manual.mean(), rtol=1e-10)
    assert search.best_estimator_.predict(X).shape == y.shape


# ---------------------------------------------------------------------------
# Inputs and fitted attributes.


def test_alpha_per_target_matches_ridge_with_an_alpha_array():
    X, y = _data(n_targets=2)
    y[:, 1] += 5.0 * np.random.default_rng(3).normal(size=len(y))
    model = HypergradRidgeCV(alpha_per_target=True).fit(X, y)
    assert model.alpha_.shape == (2,)
    assert model.alpha_[1] > model.alpha_[0]  # the noisier target
    reference = Ridge(alpha=model.alpha_).fit(X, y)
    np.testing.assert_allclose(model.coef_, reference.coef_, rtol=1e-8)
    # The targets decouple: the joint optimum is each target's own optimum.
    alone = [HypergradRidgeCV().fit(X, y[:, k]) for k in range(2)]
    separate_loss = np.mean([-m.best_score_ for m in alone])
    np.testing.assert_allclose(-model.best_score_, separate_loss, rtol=1e-5)


def test_float32_stays_float32_and_agrees_with_float64():
    X, y = _data(200, 8)
    single = HypergradRidgeCV().fit(X.astype(np.float32), y.astype(np.float32))
    double = HypergradRidgeCV().fit(X, y)
    assert single.coef_.dtype == np.float32
    np.testing.assert_allclose(single.best_score_, double.best_score_, rtol=1e-4)
    np.testing.assert_allclose(single.coef_, double.coef_, rtol=1e-2, atol=1e-3)


def test_dataframe_input_and_cv_results_dataframe():
    pd = pytest.importorskip("pandas")
    X, y = _data()
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    model = HypergradRidgeCV().fit(frame, pd.Series(y))
    assert list(model.feature_names_in_) == list(frame.columns)
    table = pd.DataFrame(model.cv_results_)
    assert len(table) == len(model.cv_results_["iteration"]) > model.n_iter_
    expected = {"param_alpha", "mean_test_loss", "split4_test_loss", "time"}
    assert expected <= set(table.columns) and "hypergradient_norm" in table.columns
    best = table["mean_test_loss"].idxmin()
    assert table["param_alpha"][best] == model.alpha_
    np.testing.assert_allclose(
        table[[f"split{k}_test_loss" for k in range(5)]].mean(axis=1),
        table["mean_test_loss"],
    )


def test_verbose_prints_one_line_per_evaluation(capsys):
    X, y = _data()
    model = HypergradRidgeCV(verbose=1).fit(X, y)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(model.cv_results_["iteration"])
    assert all("alpha=" in line and "cv_loss=" in line for line in lines)


def test_optimum_on_a_bound_warns_once_and_names_the_bound():
    X, y = _data(noise=0.0)  # noiseless: the best alpha is the smallest
    with pytest.warns(ConvergenceWarning, match="lower bound 1e-06") as record:
        model = HypergradRidgeCV().fit(X, y)
    assert len([w for w in record if w.category is ConvergenceWarning]) == 1
    assert model.alpha_ == pytest.approx(1e-6)
    X, y = _data(noise=5.0)  # noisy: the best alpha is far above 0.01
    with pytest.warns(ConvergenceWarning, match="upper bound 0.01"):
        model = HypergradRidgeCV(alpha_bounds=(1e-4, 1e-2)).fit(X, y)
    assert model.alpha_ == pytest.approx(1e-2)


def test_per_feature_itd_with_few_steps_gives_one_aggregated_warning():
    X, y = _data(60, 4)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        HypergradRidgeCV(
            per_feature=True, hypergrad="itd", inner_max_iter=2, max_iter=3
        ).fit(X, y)
    messages = [str(w.message) for w in record if w.category is ConvergenceWarning]
    assert len(messages) == 1 and "inner_max_iter" in messages[0]


def test_per_feature_array_start_is_used():
    X, y = _data(60, 4)
    start = np.array([0.1, 1.0, 10.0, 100.0])
    model = HypergradRidgeCV(per_feature=True, alpha=start, max_iter=3).fit(X, y)
    np.testing.assert_allclose(model.cv_results_["param_alpha"][0], start)
    assert model.alpha_.shape == (4,)


def test_per_feature_search_does_not_start_on_the_flat_lower_bound():
    # Few informative features, little noise: one shared alpha wants the lower
    # bound, where the CV loss is flat in every log alpha. Started there, the
    # per-feature search stopped at once (CV MSE 58.8, the shared one's); it
    # must start from alpha instead and find the noise features' penalties.
    X, y = make_regression(120, 60, n_informative=5, noise=5, random_state=0)
    cv = KFold(5)
    with pytest.warns(ConvergenceWarning, match="lower bound"):
        scalar = HypergradRidgeCV(cv=cv).fit(X, y)
    assert scalar.alpha_ == pytest.approx(1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = HypergradRidgeCV(per_feature=True, cv=cv, max_iter=10).fit(X, y)
    np.testing.assert_allclose(model.cv_results_["param_alpha"][0], 1.0)
    # Brute force: a penalty alpha_j on feature j is Ridge(alpha=1) on the
    # feature divided by sqrt(alpha_j).
    scaled = X / np.sqrt(model.alpha_)
    brute = _kfold_loss(scaled, y, 1.0, cv)
    assert -model.best_score_ == pytest.approx(brute, rel=1e-6)
    assert brute < 0.5 * -scalar.best_score_


def test_group_splitters_get_the_groups():
    from sklearn.model_selection import GroupKFold

    X, y = _data(90, 5, noise=3.0)
    groups = np.arange(90) % 6
    cv = GroupKFold(3)
    model = HypergradRidgeCV(cv=cv).fit(X, y, groups=groups)
    losses = []
    for train, test in cv.split(X, y, groups):
        assert not set(groups[train]) & set(groups[test])
        fitted = Ridge(alpha=model.alpha_).fit(X[train], y[train])
        losses.append(np.mean((fitted.predict(X[test]) - y[test]) ** 2))
    assert -model.best_score_ == pytest.approx(np.mean(losses), rel=1e-8)
    with pytest.raises(ValueError, match="groups has 2 entries for 90 samples"):
        HypergradRidgeCV(cv=cv).fit(X, y, groups=[0, 1])


def test_one_target_as_a_column_gives_ridges_shapes():
    # Since scikit-learn 1.6, Ridge on y of shape (n, 1) has coef_ of shape
    # (n_features,) and predicts shape (n,).
    X, y = _data(60, 4)
    model = HypergradRidgeCV().fit(X, y[:, None])
    reference = Ridge(alpha=model.alpha_).fit(X, y[:, None])
    assert model.coef_.shape == (4,) and model.predict(X).shape == (60,)
    np.testing.assert_allclose(model.coef_, np.ravel(reference.coef_), rtol=1e-8)
    np.testing.assert_allclose(
        model.predict(X), np.ravel(reference.predict(X)), rtol=1e-8
    )


def test_per_feature_float32_input_solves_in_float64_without_warnings():
    # Per-feature penalties span decades: float32 systems stalled above the
    # linear-system tolerance and warned on every fit (105 fold solves here).
    X, y = load_diabetes(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    cv = KFold(5)
    double = HypergradRidgeCV(per_feature=True, cv=cv).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        single = HypergradRidgeCV(per_feature=True, cv=cv).fit(
            X.astype(np.float32), y.astype(np.float32)
        )
    assert single.coef_.dtype == np.float32
    assert single.best_score_ == pytest.approx(double.best_score_, rel=1e-5)


def test_alpha_per_target_finds_each_targets_own_alpha_whatever_its_scale():
    # Diabetes' target (CV MSE about 3000) next to unit noise (about 1) and a
    # weak linear signal scaled by 1e-3: on the mean of their losses the small
    # targets hardly moved (the noise target stayed at alpha 0.0019 where the
    # bound 1e6 is best). Each must end at the alpha it gets on its own.
    X, y = load_diabetes(return_X_y=True)
    rng = np.random.RandomState(1)
    small = 1e-3 * (X @ rng.normal(size=10) * 3 + rng.normal(size=len(y)))
    noise = np.random.RandomState(0).normal(size=len(y))
    Y = np.c_[y, noise, small]
    cv = KFold(5, shuffle=True, random_state=0)
    model = HypergradRidgeCV(cv=cv, alpha_per_target=True).fit(X, Y)
    for target in range(3):
        alone = HypergradRidgeCV(cv=cv).fit(X, Y[:, target])
        np.testing.assert_allclose(model.alpha_[target], alone.alpha_, rtol=1e-3)
    brute = np.mean([_kfold_loss(X, Y[:, t], model.alpha_[t], cv) for t in range(3)])
    assert -model.best_score_ == pytest.approx(brute, rel=1e-8)


def test_the_scan_has_one_point_per_decade_of_the_bounds():
    # log(1e6) - log(1e-6) over log(10) is 11.999999999999998 in floating
    # point: 13 points, not 12.
    X, y = _data()
    model = HypergradRidgeCV(max_iter=1).fit(X, y)
    scanned = model.cv_results_["param_alpha"][1:14].astype(float)
    np.testing.assert_allclose(scanned, np.logspace(-6, 6, 13), rtol=1e-12)


def test_random_state_shuffles_integer_cv():
    X, y = _data()
    seeded = HypergradRidgeCV(cv=4, random_state=0).fit(X, y)
    explicit = HypergradRidgeCV(cv=KFold(4, shuffle=True, random_state=0)).fit(X, y)
    plain = HypergradRidgeCV(cv=4).fit(X, y)
    assert seeded.best_score_ == explicit.best_score_
    assert seeded.best_score_ != plain.best_score_


@pytest.mark.parametrize(
    "params, match",
    [
        ({"hypergrad": "newton"}, "hypergrad must be one of"),
        ({"alpha_bounds": (1.0, 0.1)}, "alpha_bounds"),
        ({"alpha": -1.0}, "alpha must be positive"),
        ({"alpha": [1.0, 2.0]}, "alpha must be a number or an array"),
        ({"per_feature": True, "alpha_per_target": True}, "cannot be combined"),
        ({"max_iter": 0}, "max_iter"),
        ({"linsys_tol": -1.0}, "linsys_tol"),
    ],
)
def test_invalid_parameters_raise_in_fit_not_init(params, match):
    X, y = _data()
    model = HypergradRidgeCV(**params)  # __init__ only stores
    with pytest.raises(ValueError, match=match):
        model.fit(X, y)


def test_non_finite_input_is_an_error():
    X, y = _data()
    X[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        HypergradRidgeCV().fit(X, y)


def test_inputs_are_not_modified():
    X, y = _data()
    weights = np.linspace(0.5, 2.0, len(y))
    copies = X.copy(), y.copy(), weights.copy()
    HypergradRidgeCV(fit_intercept=True).fit(X, y, sample_weight=weights)
    for original, copy in zip((X, y, weights), copies):
        np.testing.assert_array_equal(original, copy)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["threading", "loky"])
def test_parallel_folds_give_the_sequential_result(backend):
    from joblib import parallel_backend

    X, y = load_diabetes(return_X_y=True)
    sequential = HypergradRidgeCV().fit(X, y)
    with parallel_backend(backend):
        parallel = HypergradRidgeCV(n_jobs=2).fit(X, y)
    assert parallel.alpha_ == sequential.alpha_
    np.testing.assert_array_equal(parallel.coef_, sequential.coef_)


def test_splits_that_leave_rows_out_match_a_manual_loop():
    # TimeSeriesSplit's training parts are not the rest of the data, so the
    # folds cannot share one Gram matrix; each forms its own.
    from sklearn.model_selection import TimeSeriesSplit

    X, y = _data(90, 5, noise=3.0)
    cv = TimeSeriesSplit(4)
    model = HypergradRidgeCV(cv=cv).fit(X, y)
    np.testing.assert_allclose(
        -model.best_score_, _kfold_loss(X, y, model.alpha_, cv), rtol=1e-8
    )


def _cuda_available():
    torch = pytest.importorskip("torch")
    return torch.cuda.is_available()


@pytest.mark.parametrize(
    "params",
    [{}, {"alpha_per_target": True}, {"per_feature": True}],
    ids=["scalar", "per_target", "per_feature"],
)
@pytest.mark.parametrize(
    "device, match",
    [
        ("bogus", "device must be 'auto', 'cpu' or a torch device string"),
        ("cuda", "CUDA is not available"),
    ],
)
def test_an_unusable_device_is_the_same_clear_error_in_every_mode(
    params, device, match
):
    if device == "cuda" and _cuda_available():
        pytest.skip("CUDA is available here")
    X, y = _data(n_targets=2)
    with pytest.raises(ValueError, match=match):
        HypergradRidgeCV(device=device, **params).fit(X, y)


def test_a_scalar_fit_on_the_cpu_does_not_import_torch():
    code = (
        "import sys\n"
        "from sklearn.datasets import load_diabetes\n"
        "from skhyper import HypergradRidgeCV\n"
        "X, y = load_diabetes(return_X_y=True)\n"
        "for device in ('cpu', 'auto'):\n"
        "    HypergradRidgeCV(device=device).fit(X, y)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_per_feature_refuses_a_gram_matrix_over_4_gib_before_allocating():
    import tracemalloc

    n_features = 23171  # 8 d² bytes just over 4 GiB; 23170 is just under
    assert 8 * n_features**2 > 4 * 2**30 > 8 * (n_features - 1) ** 2
    X = sp.random(40, n_features, density=1e-3, format="csr", random_state=0)
    y = np.arange(40.0)
    tracemalloc.start()
    try:
        expected = f"dense 23171 x 23171 Gram matrix per fold ({8 * 23171**2:,} bytes"
        with pytest.raises(ValueError, match=re.escape(expected)):
            HypergradRidgeCV(per_feature=True).fit(X, y)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20
    # A single alpha on the same data has no such limit.
    model = HypergradRidgeCV(max_iter=3).fit(X, y)
    reference = Ridge(alpha=model.alpha_, solver="cholesky").fit(X.toarray(), y)
    np.testing.assert_allclose(model.coef_, reference.coef_, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize(
    "cv",
    [
        ShuffleSplit(1, test_size=0.25, random_state=0),
        [(np.arange(20, 80), np.arange(20))],  # one split that covers the rows
    ],
    ids=["shuffle_split", "partition"],
)
def test_a_single_split_is_accepted_like_grid_search_cv(cv):
    X, y = _data()
    model = HypergradRidgeCV(cv=cv).fit(X, y)
    splits = list(cv.split(X)) if hasattr(cv, "split") else cv
    assert len(splits) == 1
    # The tuned loss is the brute-force validation MSE of Ridge at alpha_,
    # and no alpha of a fine grid does better (GridSearchCV with one split).
    ((train, test),) = splits
    fold = Ridge(alpha=model.alpha_).fit(X[train], y[train])
    loss = np.mean((fold.predict(X[test]) - y[test]) ** 2)
    np.testing.assert_allclose(-model.best_score_, loss, rtol=1e-8)
    grid = GridSearchCV(
        Ridge(),
        {"alpha": np.logspace(-6, 6, 121)},
        cv=[(train, test)],
        scoring="neg_mean_squared_error",
    ).fit(X, y)
    assert -model.best_score_ <= -grid.best_score_ * (1 + 1e-8)
