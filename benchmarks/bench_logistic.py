"""Time HypergradLogisticCV against scikit-learn's ways of tuning C.

On breast cancer, digits (10 classes) and ``make_classification(5000, 200)``,
all standardised, with the same five stratified folds for everyone, it prints
the wall-clock time and the 5-fold CV log loss of:

- ``HypergradLogisticCV`` (tunes C in ``[1e-4, 1e4]``, refits on all data);
- ``LogisticRegressionCV(Cs=10, cv=5)`` (its default scoring, accuracy, picks
  C; refits on all data), and the same scored by log loss;
- ``cross_val_score(LogisticRegression(C=1.0), cv=5)``: one C, no refit,
  close to the least work any 5-fold tuner can do.

The ratio column is HypergradLogisticCV's time over the other method's; the
targets of issue 4 are at most 1/2 of ``LogisticRegressionCV(Cs=10)`` at equal
or better CV log loss, and at most 5 times the single-C ``cross_val_score``.
The CV log loss of every method is measured on the same five folds at the C
it chose, with ``LogisticRegression`` solved to a tolerance of 1e-10.

Everything runs on the CPU with one thread by default (``--threads``), so
that the timings compare algorithms rather than thread pools; on a busy
machine, oversubscribed thread pools cost more than they bring.

Run from the root of a checkout::

    python benchmarks/bench_logistic.py            # one timed run of each
    python benchmarks/bench_logistic.py --repeat 5 # the median of five
"""

import argparse
import statistics
import time
import warnings

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer, load_digits, make_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from skhyper import HypergradLogisticCV

TARGETS = {"LogisticRegressionCV": 1 / 2, "cross_val_score": 5.0}
LABELS = {
    "LogisticRegressionCV": "LogisticRegressionCV(Cs=10)",
    "LogisticRegressionCV-logloss": "  same, scoring=neg_log_loss",
    "cross_val_score": "cross_val_score(LR(C=1.0))",
}


def cv_log_loss(X, y, C, cv):
    """5-fold CV log loss of LogisticRegression(C), solved to 1e-10."""
    model = LogisticRegression(C=C, solver="newton-cholesky", tol=1e-10)
    scores = cross_val_score(model, X, y, cv=cv, scoring="neg_log_loss")
    return -scores.mean()


def _lrcv_C(model):
    return float(np.ravel(model.C_)[0])


def run_methods(X, y, cv, device):
    """Fit every method once; return {name: (seconds, chosen C, evaluations)}."""
    runs = {}

    start = time.perf_counter()
    model = HypergradLogisticCV(cv=cv, device=device).fit(X, y)
    evaluations = len(model.cv_results_["mean_test_loss"])
    runs["HypergradLogisticCV"] = (time.perf_counter() - start, model.C_, evaluations)

    for name, scoring in (
        ("LogisticRegressionCV", None),
        ("LogisticRegressionCV-logloss", "neg_log_loss"),
    ):
        start = time.perf_counter()
        grid = LogisticRegressionCV(Cs=10, cv=cv, scoring=scoring).fit(X, y)
        runs[name] = (time.perf_counter() - start, _lrcv_C(grid), 10)

    start = time.perf_counter()
    cross_val_score(LogisticRegression(C=1.0), X, y, cv=cv, scoring="neg_log_loss")
    runs["cross_val_score"] = (time.perf_counter() - start, 1.0, 1)
    return runs


def benchmark(name, X, y, repeat, device):
    """Print one table: time, ratio against the targets, and CV log loss."""
    X = StandardScaler().fit_transform(X)
    cv = StratifiedKFold(5)
    timings = [run_methods(X, y, cv, device) for _ in range(repeat)]
    n_classes = len(np.unique(y))
    print(
        f"\n{name}: {X.shape[0]} samples, {X.shape[1]} features, "
        f"{n_classes} classes, 5-fold stratified CV"
    )
    header = f"{'method':<32}{'time [s]':>10}{'ours/it':>9}{'target':>9}"
    print(header + f"{'C':>10}{'Cs tried':>10}{'CV log loss':>13}")
    ours = statistics.median(t["HypergradLogisticCV"][0] for t in timings)
    for method, (_, C, tried) in timings[0].items():
        seconds = statistics.median(t[method][0] for t in timings)
        ratio = "" if method == "HypergradLogisticCV" else f"{ours / seconds:.2f}"
        target = f"<= {TARGETS[method]:.3g}" if method in TARGETS else ""
        print(
            f"{LABELS.get(method, method):<32}{seconds:>10.3f}{ratio:>9}"
            f"{target:>9}{C:>10.4g}{tried:>10}{cv_log_loss(X, y, C, cv):>13.6f}"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeat", type=int, default=1, help="timed runs per method (median)"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="threads of torch, BLAS and OpenMP"
    )
    parser.add_argument("--device", default="cpu", help="torch device of skhyper")
    args = parser.parse_args()
    warnings.simplefilter("ignore", ConvergenceWarning)
    warnings.simplefilter("ignore", FutureWarning)
    torch.set_num_threads(args.threads)
    with threadpool_limits(args.threads):
        print(f"threads: {args.threads}, skhyper device: {args.device}")
        # Warm-up on tiny data, so that no method pays for first imports.
        X_small, y_small = make_classification(60, 4, random_state=0)
        run_methods(X_small, y_small, StratifiedKFold(5), args.device)

        X, y = load_breast_cancer(return_X_y=True)
        benchmark("load_breast_cancer", X, y, args.repeat, args.device)
        X, y = load_digits(return_X_y=True)
        benchmark("load_digits", X, y, args.repeat, args.device)
        X, y = make_classification(n_samples=5000, n_features=200, random_state=0)
        benchmark(
            "make_classification(n_samples=5000, n_features=200)",
            X,
            y,
            args.repeat,
            args.device,
        )


if __name__ == "__main__":
    main()
