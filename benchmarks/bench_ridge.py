"""Time HypergradRidgeCV against scikit-learn's ways of tuning ridge's alpha.

On ``make_regression(5000, 500)`` and on the diabetes data, with the same five
folds for everyone, it prints the wall-clock time and the 5-fold CV mean
squared error of:

- ``HypergradRidgeCV`` (tunes alpha in ``[1e-6, 1e6]``, refits on all data);
- ``GridSearchCV(Ridge(), 30 alphas, cv=5)`` (refits on all data);
- ``RidgeCV(alphas=the same 30)`` (leave-one-out by generalised CV, refits);
- ``cross_val_score(Ridge(alpha=1.0), cv=5)``: one alpha, no refit, close to
  the least work any 5-fold tuner can do.

The ratio column is HypergradRidgeCV's time over the other method's; the
targets of issue 3 are at most 1/20 of GridSearchCV, at most 1 times RidgeCV
and at most 3 times the single-alpha ``cross_val_score``. The CV MSE of every
method is measured on the same five folds at the alpha it chose.

Run from the root of a checkout::

    python benchmarks/bench_ridge.py            # one timed run of each
    python benchmarks/bench_ridge.py --repeat 5 # the median of five
    python benchmarks/bench_ridge.py --blas-threads 1

On a machine whose cores other processes also use, multi-threaded BLAS can
slow any method down many times at random; ``--blas-threads 1`` gives steadier
ratios.
"""

import argparse
import statistics
import time
import warnings

import numpy as np
from sklearn.datasets import load_diabetes, make_regression
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Ridge, RidgeCV
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from threadpoolctl import threadpool_limits

from skhyper import HypergradRidgeCV

ALPHAS = np.logspace(-6, 6, 30)
TARGETS = {"GridSearchCV": 1 / 20, "RidgeCV": 1.0, "cross_val_score": 3.0}


def cv_mse(X, y, alpha, cv):
    """5-fold CV mean squared error of Ridge(alpha) on the given folds."""
    scores = cross_val_score(
        Ridge(alpha=alpha), X, y, cv=cv, scoring="neg_mean_squared_error"
    )
    return -scores.mean()


def run_methods(X, y, cv):
    """Fit every method once; return {name: (seconds, chosen alpha)}."""
    runs = {}

    start = time.perf_counter()
    model = HypergradRidgeCV(cv=cv).fit(X, y)
    runs["HypergradRidgeCV"] = (time.perf_counter() - start, model.alpha_)

    start = time.perf_counter()
    grid = GridSearchCV(
        Ridge(), {"alpha": ALPHAS}, cv=cv, scoring="neg_mean_squared_error"
    ).fit(X, y)
    runs["GridSearchCV"] = (time.perf_counter() - start, grid.best_params_["alpha"])

    start = time.perf_counter()
    ridge_cv = RidgeCV(alphas=ALPHAS).fit(X, y)
    runs["RidgeCV"] = (time.perf_counter() - start, ridge_cv.alpha_)

    start = time.perf_counter()
    cross_val_score(Ridge(alpha=1.0), X, y, cv=cv, scoring="neg_mean_squared_error")
    runs["cross_val_score"] = (time.perf_counter() - start, 1.0)
    return runs


def benchmark(name, X, y, repeat):
    """Print one table: time, ratio against the targets, and CV MSE."""
    cv = KFold(5)
    timings = [run_methods(X, y, cv) for _ in range(repeat)]
    print(f"\n{name}: {X.shape[0]} samples, {X.shape[1]} features, 5-fold CV")
    header = f"{'method':<34}{'time [s]':>10}{'ours/it':>10}{'target':>9}"
    print(header + f"{'alpha':>11}{'CV MSE':>14}")
    ours = statistics.median(t["HypergradRidgeCV"][0] for t in timings)
    for method, (_, alpha) in timings[0].items():
        seconds = statistics.median(t[method][0] for t in timings)
        label = {
            "GridSearchCV": "GridSearchCV(Ridge, 30 alphas)",
            "RidgeCV": "RidgeCV(same 30 alphas, GCV)",
            "cross_val_score": "cross_val_score(Ridge(1.0))",
        }.get(method, method)
        ratio = "" if method == "HypergradRidgeCV" else f"{ours / seconds:.3f}"
        target = f"<= {TARGETS[method]:.3g}" if method in TARGETS else ""
        print(
            f"{label:<34}{seconds:>10.3f}{ratio:>10}{target:>9}"
            f"{alpha:>11.3g}{cv_mse(X, y, alpha, cv):>14.6g}"
        )


def run_all(repeat):
    """Warm up, then benchmark both data sets."""
    # Warm-up on tiny data, so that no method pays for first imports.
    X_small, y_small = make_regression(50, 5, random_state=0)
    run_methods(X_small, y_small, KFold(5))

    X, y = make_regression(n_samples=5000, n_features=500, noise=10.0, random_state=0)
    name = "make_regression(n_samples=5000, n_features=500, noise=10)"
    benchmark(name, X, y, repeat)
    X, y = load_diabetes(return_X_y=True)
    benchmark("load_diabetes", X, y, repeat)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeat", type=int, default=1, help="timed runs per method (median)"
    )
    parser.add_argument(
        "--blas-threads",
        type=int,
        default=None,
        help="limit the BLAS threads of every method (default: BLAS's own)",
    )
    args = parser.parse_args()
    warnings.simplefilter("ignore", ConvergenceWarning)
    with threadpool_limits(limits=args.blas_threads, user_api="blas"):
        run_all(args.repeat)


if __name__ == "__main__":
    main()
