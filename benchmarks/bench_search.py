"""HypergradSearchCV against GridSearchCV over a 30-point grid.

For each supported estimator, on a data set that scikit-learn ships, both
searches run on the same folds with the same scoring; the script prints both
best scores, both times and the time ratio (skhyper / GridSearchCV).

Run from the repository root::

    python benchmarks/bench_search.py
"""

import argparse
import platform
import time
import warnings

import numpy as np
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.exceptions import ConvergenceWarning
from sklearn.kernel_ridge import KernelRidge
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skhyper import HypergradSearchCV


def cases():
    """(name, X, y, estimator, bounds, grid, cv, scoring) for each estimator."""
    X_reg, y_reg = load_diabetes(return_X_y=True)
    X_clf, y_clf = load_breast_cancer(return_X_y=True)
    kfold = KFold(5, shuffle=True, random_state=0)
    stratified = StratifiedKFold(5, shuffle=True, random_state=0)
    return [
        (
            "Ridge / diabetes",
            X_reg,
            y_reg,
            make_pipeline(StandardScaler(), Ridge()),
            {"ridge__alpha": (1e-4, 1e4)},
            {"ridge__alpha": np.logspace(-4, 4, 30)},
            kfold,
            "neg_mean_squared_error",
        ),
        (
            "LogisticRegression / breast cancer",
            X_clf,
            y_clf,
            make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
            {"logisticregression__C": (1e-4, 1e4)},
            {"logisticregression__C": np.logspace(-4, 4, 30)},
            stratified,
            "neg_log_loss",
        ),
        (
            "KernelRidge rbf / diabetes",
            X_reg,
            y_reg,
            make_pipeline(StandardScaler(), KernelRidge(kernel="rbf")),
            {"kernelridge__alpha": (1e-3, 1e2), "kernelridge__gamma": (1e-4, 1.0)},
            {
                "kernelridge__alpha": np.logspace(-3, 2, 6),
                "kernelridge__gamma": np.logspace(-4, 0, 5),
            },
            kfold,
            "neg_mean_squared_error",
        ),
    ]


def timed(search, X, y):
    start = time.perf_counter()
    search.fit(X, y)
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="torch device for skhyper")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", ConvergenceWarning)
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}")
    header = f"{'case':36s} {'grid score':>12s} {'skhyper score':>14s}"
    print(header + f" {'grid s':>8s} {'skhyper s':>10s} {'ratio':>7s}")
    for name, X, y, estimator, bounds, grid, cv, scoring in cases():
        grid_search = GridSearchCV(estimator, grid, cv=cv, scoring=scoring)
        hyper_search = HypergradSearchCV(
            estimator, bounds, cv=cv, scoring=scoring, device=args.device
        )
        # Warm up torch once on a subset, outside the timing.
        subset = np.random.RandomState(0).permutation(len(y))[:120]
        hyper_search.fit(X[subset], y[subset])
        grid_time = timed(grid_search, X, y)
        hyper_time = timed(hyper_search, X, y)
        print(
            f"{name:36s} {grid_search.best_score_:12.5g} "
            f"{hyper_search.best_score_:14.5g} {grid_time:8.3f} "
            f"{hyper_time:10.3f} {hyper_time / grid_time:7.3f}"
        )


if __name__ == "__main__":
    main()
