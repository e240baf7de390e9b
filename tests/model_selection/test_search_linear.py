"""HypergradSearchCV on Ridge and LogisticRegression, alone and in Pipelines."""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import f1_score, log_loss, make_scorer, mean_squared_error
from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skhyper import HypergradSearchCV


@pytest.fixture(scope="module")
def diabetes():
    return load_diabetes(return_X_y=True)


@pytest.fixture(scope="module")
def cancer():
    return load_breast_cancer(return_X_y=True)


def test_pipeline_cv_loss_matches_a_manual_loop_at_fixed_alpha(diabetes):
    X, y = diabetes
    alpha = 3.7
    cv = KFold(5, shuffle=True, random_state=0)
    pipe = make_pipeline(StandardScaler(), PCA(n_components=6), Ridge())
    # Degenerate bounds: one evaluation, at alpha exactly.
    search = HypergradSearchCV(
        pipe, {"ridge__alpha": (alpha, alpha)}, cv=cv, refit=False
    ).fit(X, y)
    # Reference: the scaler and the PCA refitted inside each fold by hand.
    losses = []
    for train, val in cv.split(X):
        scaler = StandardScaler().fit(X[train])
        pca = PCA(n_components=6).fit(scaler.transform(X[train]))
        Z_train = pca.transform(scaler.transform(X[train]))
        Z_val = pca.transform(scaler.transform(X[val]))
        model = Ridge(alpha=alpha).fit(Z_train, y[train])
        losses.append(mean_squared_error(y[val], model.predict(Z_val)))
    assert search.cv_results_["mean_cv_loss"][0] == pytest.approx(
        np.mean(losses), rel=1e-8
    )
    assert search.cv_results_["param_ridge__alpha"][0] == pytest.approx(alpha)


def test_ridge_search_matches_a_30_point_grid(diabetes):
    X, y = diabetes
    cv = KFold(5, shuffle=True, random_state=1)
    pipe = make_pipeline(StandardScaler(), Ridge())
    kwargs = {"cv": cv, "scoring": "neg_mean_squared_error"}
    search = HypergradSearchCV(pipe, {"ridge__alpha": (1e-4, 1e4)}, **kwargs)
    search.fit(X, y)
    grid = GridSearchCV(pipe, {"ridge__alpha": np.logspace(-4, 4, 30)}, **kwargs)
    grid.fit(X, y)
    assert search.best_score_ >= grid.best_score_
    # The fitted Pipeline is plain scikit-learn, refitted with the best alpha.
    reference = clone(pipe).set_params(**search.best_params_).fit(X, y)
    np.testing.assert_allclose(
        search.best_estimator_[-1].coef_, reference[-1].coef_, rtol=1e-10
    )


@pytest.mark.slow
def test_logistic_search_matches_a_30_point_grid(cancer):
    X, y = cancer
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    kwargs = {"cv": cv, "scoring": "neg_log_loss"}
    search = HypergradSearchCV(pipe, {"logisticregression__C": (1e-4, 1e4)}, **kwargs)
    search.fit(X, y)
    grid = GridSearchCV(
        pipe, {"logisticregression__C": np.logspace(-4, 4, 30)}, **kwargs
    ).fit(X, y)
    assert search.best_score_ >= grid.best_score_ - 1e-6
    # Per-fold scores of the best row equal sklearn's own fit at that C, with
    # a tight tolerance so that sklearn's fits are a reference to 1e-4.
    C = search.best_params_["logisticregression__C"]
    tight = clone(pipe).set_params(
        logisticregression__C=C, logisticregression__tol=1e-10
    )
    scores = []
    for train, val in cv.split(X, y):
        model = clone(tight).fit(X[train], y[train])
        scores.append(-log_loss(y[val], model.predict_proba(X[val])))
    assert search.best_score_ == pytest.approx(np.mean(scores), rel=1e-4)
    proba = search.predict_proba(X)
    np.testing.assert_allclose(proba, search.best_estimator_.predict_proba(X))
    np.testing.assert_array_equal(search.classes_, [0, 1])


def test_default_scoring_of_a_classifier_keeps_the_optimisers_best(cancer):
    # With accuracy choosing among the iterates, the start C = 1 (accuracy
    # 0.9807) beat the optimum the search found (C = 0.598, 0.9789). The
    # default now ranks classifiers' iterates by log loss; score() stays the
    # estimator's own, as in GridSearchCV.
    X, y = cancer
    pipe = make_pipeline(StandardScaler(), LogisticRegression())
    cv = StratifiedKFold(5)
    search = HypergradSearchCV(pipe, {"logisticregression__C": (1e-3, 1e3)}, cv=cv)
    search.fit(X, y)
    C = search.best_params_["logisticregression__C"]
    assert C == pytest.approx(0.598, rel=0.02)
    tight = clone(pipe).set_params(
        logisticregression__C=C, logisticregression__tol=1e-10
    )
    losses = []
    for train, val in cv.split(X, y):
        model = clone(tight).fit(X[train], y[train])
        losses.append(log_loss(y[val], model.predict_proba(X[val])))
    assert -search.best_score_ == pytest.approx(np.mean(losses), rel=1e-4)
    cv_loss = search.cv_results_["mean_cv_loss"]
    assert cv_loss[search.best_index_] == pytest.approx(cv_loss.min(), rel=1e-6)
    assert search.score(X, y) == search.best_estimator_.score(X, y)


def test_string_labels_and_class_weight_are_honoured():
    X, y = load_iris(return_X_y=True)
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    model = LogisticRegression(class_weight="balanced", max_iter=10000, tol=1e-10)
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    search = HypergradSearchCV(
        model, {"C": (1e-2, 1e2)}, cv=cv, scoring="neg_log_loss", max_iter=10
    ).fit(X, names)
    assert set(search.predict(X)) <= set(names)
    np.testing.assert_array_equal(search.classes_, np.unique(names))
    # The reported fold scores are those of sklearn's own fit at the same C.
    C = search.best_params_["C"]
    expected = []
    for train, val in cv.split(X, names):
        fitted = clone(model).set_params(C=C).fit(X[train], names[train])
        expected.append(-log_loss(names[val], fitted.predict_proba(X[val])))
    assert search.best_score_ == pytest.approx(np.mean(expected), rel=1e-4)


def test_training_fold_missing_a_class_is_refused():
    X, y = load_iris(return_X_y=True)
    # Unshuffled KFold on sorted labels: the first fold's training part has no
    # class 0 samples... and the validation part has only class 0.
    with pytest.raises(ValueError, match="fold 0 has no sample of class 0"):
        HypergradSearchCV(LogisticRegression(), {"C": (1e-2, 1e2)}, cv=KFold(3)).fit(
            X, y
        )


def test_l1_logistic_is_refused(cancer):
    X, y = cancer
    model = LogisticRegression(l1_ratio=1.0, solver="saga")
    with pytest.raises(ValueError, match="L2 penalty only"):
        HypergradSearchCV(model, {"C": (1e-2, 1e2)}).fit(X, y)


def test_sample_weight_is_passed_to_the_final_step(diabetes):
    X, y = diabetes
    weights = np.random.RandomState(0).uniform(0.5, 2.0, size=len(y))
    pipe = make_pipeline(StandardScaler(), Ridge())
    search = HypergradSearchCV(pipe, {"ridge__alpha": (1e-2, 1e2)}, cv=3)
    search.fit(X, y, sample_weight=weights)
    reference = clone(pipe).set_params(**search.best_params_)
    reference.fit(X, y, ridge__sample_weight=weights)
    np.testing.assert_allclose(search.predict(X), reference.predict(X), rtol=1e-10)


def test_scorers_see_the_users_labels(cancer):
    X, y = cancer
    names = np.array(["benign", "malignant"])[y]
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    scorer = make_scorer(f1_score, pos_label="malignant")
    pipe = make_pipeline(StandardScaler(), LogisticRegression())
    search = HypergradSearchCV(
        pipe, {"logisticregression__C": (1e-2, 1e2)}, cv=cv, scoring=scorer
    ).fit(X, names)
    # Reference: sklearn's own fits at the best C, scored with the same scorer.
    best = clone(pipe).set_params(**search.best_params_)
    expected = [
        scorer(clone(best).fit(X[tr], names[tr]), X[va], names[va])
        for tr, va in cv.split(X, names)
    ]
    assert search.best_score_ == pytest.approx(np.mean(expected), abs=1e-9)


def test_weighted_search_picks_the_best_weighted_score(cancer):
    X, y = cancer
    X = StandardScaler().fit_transform(X)
    weights = np.where(y == 0, 5.0, 1.0)
    search = HypergradSearchCV(
        LogisticRegression(), {"C": (1e-3, 1e3)}, cv=3, scoring="neg_log_loss"
    ).fit(X, y, sample_weight=weights)
    results = search.cv_results_
    # With weights, the weighted validation loss drives the descent and the
    # weighted score the choice: both pick the same row.
    assert search.best_index_ == int(np.argmin(results["mean_cv_loss"]))
    assert search.best_score_ == pytest.approx(
        -results["mean_cv_loss"][search.best_index_], rel=1e-4
    )


def test_bad_search_settings_get_clear_errors(diabetes):
    X, y = diabetes
    bounds = {"alpha": (1e-3, 1e3)}
    with pytest.raises(ValueError, match="init names parameters"):
        HypergradSearchCV(Ridge(), bounds, init={"alpah": 1.0}).fit(X, y)
    with pytest.raises(ValueError, match="positive number"):
        HypergradSearchCV(Ridge(), bounds, init={"alpha": -1.0}).fit(X, y)
    with pytest.raises(ValueError, match="max_iter == 0, must be > 0"):
        HypergradSearchCV(Ridge(), bounds, max_iter=0).fit(X, y)
    with pytest.raises(ValueError, match="multi-metric scoring is not supported"):
        HypergradSearchCV(Ridge(), bounds, scoring=["r2", "max_error"]).fit(X, y)
    with pytest.raises(ValueError, match="refit must be True or False"):
        HypergradSearchCV(Ridge(), bounds, refit="r2").fit(X, y)
    with pytest.raises(ValueError, match="sample_weight"):
        HypergradSearchCV(Ridge(), bounds).fit(X, y, sample_weight=np.ones(3))
    with pytest.raises(ValueError, match="liblinear"):
        HypergradSearchCV(
            LogisticRegression(solver="liblinear"), {"C": (1e-2, 1e2)}
        ).fit(X, y > 140)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"tol": -1.0}, "tol"),
        ({"linsys_tol": -1.0}, "linsys_tol"),
        ({"verbose": -3}, "verbose"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_numeric_and_device_settings_are_validated(diabetes, params, match):
    X, y = diabetes
    with pytest.raises(ValueError, match=match):
        HypergradSearchCV(Ridge(), {"alpha": (1e-3, 1e3)}, **params).fit(X, y)


def test_bad_targets_and_weights_get_scikit_learns_errors(diabetes, cancer):
    X, y = diabetes
    bounds = {"alpha": (1e-3, 1e3)}
    y_nan = y.astype(float)
    y_nan[3] = np.nan
    with pytest.raises(ValueError, match="y contains NaN"):
        HypergradSearchCV(Ridge(), bounds).fit(X, y_nan)
    weights = np.ones(len(y))
    weights[0] = -1.0
    with pytest.raises(ValueError, match="non-negative"):
        HypergradSearchCV(Ridge(), bounds).fit(X, y, sample_weight=weights)
    with pytest.raises(ValueError, match="Unknown label type"):
        HypergradSearchCV(LogisticRegression(), {"C": (1e-2, 1e2)}).fit(X, y / 7.0)


def test_a_validation_part_missing_a_class_is_scored_with_every_class():
    # Class 1 has three rows: some validation parts have none of it, which
    # the default log-loss scoring must take (labels from all of y).
    X, y = load_iris(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    rows = np.r_[0:50, 50:53, 100:150]
    X, y = X[rows], y[rows]
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    search = HypergradSearchCV(
        LogisticRegression(), {"C": (1e-2, 1e2)}, cv=cv, max_iter=5
    ).fit(X, y)
    assert any(len(np.unique(y[val])) < 3 for _, val in cv.split(X, y))
    tight = LogisticRegression(C=search.best_params_["C"], tol=1e-10, max_iter=10000)
    losses = [
        log_loss(
            y[va], clone(tight).fit(X[tr], y[tr]).predict_proba(X[va]), labels=[0, 1, 2]
        )
        for tr, va in cv.split(X, y)
    ]
    assert -search.best_score_ == pytest.approx(np.mean(losses), rel=1e-4)
