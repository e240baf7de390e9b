"""
Quick start: skhyper next to GridSearchCV
=========================================

Each demo tunes a regularisation hyperparameter of a scikit-learn model on
data that scikit-learn ships, once by hypergradient descent on the
cross-validation loss (skhyper) and once by ``GridSearchCV`` on the same
folds, and prints the chosen value, the CV and test scores and the times.

Run it from the root of a checkout::

    python examples/quickstart.py
"""

import time
import warnings

import numpy as np
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.linear_model import LogisticRegressionCV, Ridge
from sklearn.metrics import accuracy_score, log_loss, mean_squared_error, r2_score
from sklearn.model_selection import (
    GridSearchCV,
    KFold,
    StratifiedKFold,
    train_test_split,
)
from sklearn.preprocessing import StandardScaler

from skhyper import HypergradLogisticCV, HypergradRidgeCV


def _timed_fit(model, X, y):
    # A first fit on a few rows, untimed, so that neither method is charged
    # for importing its modules.
    clone(model).fit(X[:50], y[:50])
    start = time.perf_counter()
    model.fit(X, y)
    return model, time.perf_counter() - start


def _report(name, value, cv_mse, y_test, y_pred, seconds):
    print(
        f"{name:<34}{value:>11.4g}{cv_mse:>11.2f}"
        f"{mean_squared_error(y_test, y_pred):>11.2f}"
        f"{r2_score(y_test, y_pred):>9.3f}{seconds:>10.3f}"
    )


def ridge_demo():
    """HypergradRidgeCV against GridSearchCV(Ridge, 100 alphas) on diabetes."""
    X, y = load_diabetes(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)
    cv = KFold(5, shuffle=True, random_state=0)  # the same folds for both

    hyper, hyper_time = _timed_fit(HypergradRidgeCV(cv=cv), X_train, y_train)
    grid, grid_time = _timed_fit(
        GridSearchCV(
            Ridge(),
            {"alpha": np.logspace(-6, 6, 100)},
            cv=cv,
            scoring="neg_mean_squared_error",
        ),
        X_train,
        y_train,
    )

    print("Ridge regression on the diabetes data (5-fold CV on 331 rows)")
    print(
        f"{'':<34}{'alpha':>11}{'CV MSE':>11}{'test MSE':>11}"
        f"{'test R2':>9}{'time [s]':>10}"
    )
    _report(
        "HypergradRidgeCV",
        hyper.alpha_,
        -hyper.best_score_,
        y_test,
        hyper.predict(X_test),
        hyper_time,
    )
    _report(
        "GridSearchCV(Ridge, 100 alphas)",
        grid.best_params_["alpha"],
        -grid.best_score_,
        y_test,
        grid.predict(X_test),
        grid_time,
    )
    print(
        f"skhyper evaluated the CV loss {len(hyper.cv_results_['iteration'])} "
        f"times ({hyper.n_iter_} L-BFGS-B iterations); the grid, 100 times."
    )


def logistic_demo():
    """HypergradLogisticCV against LogisticRegressionCV(30 Cs) on breast cancer."""
    X, y = load_breast_cancer(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, stratify=y, random_state=0
    )
    scaler = StandardScaler().fit(X_train)
    X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
    cv = StratifiedKFold(5, shuffle=True, random_state=0)  # the same folds

    hyper, hyper_time = _timed_fit(HypergradLogisticCV(cv=cv), X_train, y_train)
    with warnings.catch_warnings():
        # scikit-learn 1.9 announces a change of LogisticRegressionCV's
        # fitted attributes; scores_ reads the same either way.
        warnings.simplefilter("ignore", FutureWarning)
        grid, grid_time = _timed_fit(
            LogisticRegressionCV(Cs=30, cv=cv, scoring="neg_log_loss"),
            X_train,
            y_train,
        )
    grid_cv_loss = -np.mean(next(iter(grid.scores_.values())), axis=0).max()

    print("\nLogistic regression on the breast cancer data (5-fold CV on 426 rows)")
    print(
        f"{'':<34}{'C':>11}{'CV loss':>11}{'test loss':>11}"
        f"{'test acc':>9}{'time [s]':>10}"
    )
    for name, model, C, cv_loss, seconds in (
        ("HypergradLogisticCV", hyper, hyper.C_, -hyper.best_score_, hyper_time),
        (
            "LogisticRegressionCV(30 Cs)",
            grid,
            float(np.ravel(grid.C_)[0]),
            grid_cv_loss,
            grid_time,
        ),
    ):
        print(
            f"{name:<34}{C:>11.4g}{cv_loss:>11.4f}"
            f"{log_loss(y_test, model.predict_proba(X_test)):>11.4f}"
            f"{accuracy_score(y_test, model.predict(X_test)):>9.3f}{seconds:>10.3f}"
        )
    print(
        f"skhyper evaluated the CV log loss {len(hyper.cv_results_['iteration'])} "
        "times; LogisticRegressionCV, 30 times."
    )


def main():
    ridge_demo()
    logistic_demo()


if __name__ == "__main__":
    main()
