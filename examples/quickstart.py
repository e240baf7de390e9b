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

import numpy as np
from sklearn.base import clone
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge
from sklearn.metrics import mean_squared_error, r2_score
from sklearn.model_selection import GridSearchCV, KFold, train_test_split

from skhyper import HypergradRidgeCV


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


def main():
    ridge_demo()


if __name__ == "__main__":
    main()
