"""What HypergradSearchCV knows of each supported scikit-learn estimator.

An adapter turns a final estimator (with its parameters) and one fold's data
into a fold problem of :mod:`skhyper.inner`, and turns a state of that problem
back into a fitted scikit-learn estimator, so that any scikit-learn scorer can
score the fold.
"""

import numpy as np
from sklearn.base import clone
from sklearn.kernel_ridge import KernelRidge
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.utils.class_weight import compute_sample_weight

__all__ = ["ADAPTERS", "adapter_for", "supported_summary"]


class _Adapter:
    """Base class: one supported estimator class and its tunable parameters."""

    estimator_class = None
    tunable = ()

    def check(self, estimator, tuned):
        """Raise a clear error for parameter values the fold problem ignores."""

    def tunable_for(self, estimator):
        return self.tunable

    def default_value(self, estimator, name, n_features):
        return getattr(estimator, name)

    def prepare_targets(self, y):
        """Encode ``y`` once for the whole search; returns ``(y, extra)``."""
        return y, {}

    def make_problem(self, estimator, fold, tuned, fixed, settings):
        raise NotImplementedError

    @staticmethod
    def _fold_arguments(fold, settings):
        """The data and the keywords that every fold problem takes."""
        data = (fold["X_train"], fold["y_train"], fold["X_val"], fold["y_val"])
        keywords = {
            "sample_weight_train": fold["sw_train"],
            "sample_weight_val": fold["sw_val"],
            **settings,
        }
        return data, keywords

    def fitted(self, estimator, problem, state, values, fold):
        raise NotImplementedError


class _RidgeAdapter(_Adapter):
    estimator_class = Ridge
    tunable = ("alpha",)

    def check(self, estimator, tuned):
        if estimator.positive:
            raise ValueError("HypergradSearchCV supports Ridge(positive=False) only")
        if np.ndim(estimator.alpha) > 0:
            raise ValueError("HypergradSearchCV tunes a scalar Ridge alpha only")

    def make_problem(self, estimator, fold, tuned, fixed, settings):
        from ..inner.ridge import RidgeFoldProblem

        data, keywords = self._fold_arguments(fold, settings)
        return RidgeFoldProblem(
            *data, fit_intercept=estimator.fit_intercept, mode="scalar", **keywords
        )

    def fitted(self, estimator, problem, state, values, fold):
        model = clone(estimator).set_params(**values)
        model.coef_, model.intercept_ = problem.coefficients(state)
        model.n_features_in_ = fold["X_train"].shape[1]
        return model


class _LogisticAdapter(_Adapter):
    estimator_class = LogisticRegression
    tunable = ("C",)

    def check(self, estimator, tuned):
        penalty = getattr(estimator, "penalty", "l2")
        l1_ratio = getattr(estimator, "l1_ratio", None)
        if penalty not in ("l2", "deprecated") or l1_ratio not in (None, 0, 0.0):
            raise ValueError(
                "HypergradSearchCV supports LogisticRegression with the L2 "
                f"penalty only (got penalty={penalty!r}, l1_ratio={l1_ratio!r})"
            )
        if estimator.solver == "liblinear" and estimator.fit_intercept:
            raise ValueError(
                "HypergradSearchCV does not support LogisticRegression("
                "solver='liblinear') with an intercept: liblinear penalises the "
                "intercept, which the search leaves unpenalised; use the default "
                "solver"
            )

    def prepare_targets(self, y):
        classes, encoded = np.unique(y, return_inverse=True)
        if classes.size < 2:
            raise ValueError("LogisticRegression needs at least two classes in y")
        return encoded, {"classes": classes}

    def make_problem(self, estimator, fold, tuned, fixed, settings):
        from ..inner.logistic import LogisticFoldProblem

        n_classes = len(fold["classes"])
        missing = np.setdiff1d(np.arange(n_classes), fold["y_train"])
        if missing.size:
            raise ValueError(
                f"the training part of CV fold {fold['index']} has no sample of "
                f"class {fold['classes'][missing[0]].tolist()!r}; use a stratified "
                "splitter or fewer folds"
            )
        data, keywords = self._fold_arguments(fold, settings)
        if estimator.class_weight is not None:
            balance = compute_sample_weight(estimator.class_weight, fold["y_train"])
            sw = keywords["sample_weight_train"]
            keywords["sample_weight_train"] = balance if sw is None else sw * balance
        return LogisticFoldProblem(
            *data, n_classes, fit_intercept=estimator.fit_intercept, **keywords
        )

    def fitted(self, estimator, problem, state, values, fold):
        model = clone(estimator).set_params(**values)
        model.coef_, model.intercept_ = problem.coefficients(state)
        model.classes_ = fold["classes"]
        model.n_features_in_ = fold["X_train"].shape[1]
        model.n_iter_ = np.zeros(1, dtype=np.int32)
        return model


class _KernelRidgeAdapter(_Adapter):
    estimator_class = KernelRidge
    tunable = ("alpha", "gamma")

    def tunable_for(self, estimator):
        from ..inner.kernel_ridge import KERNELS

        if not isinstance(estimator.kernel, str) or estimator.kernel not in KERNELS:
            raise ValueError(
                "HypergradSearchCV supports KernelRidge with the kernels "
                f"{sorted(KERNELS)}, got kernel={estimator.kernel!r}"
            )
        return KERNELS[estimator.kernel]

    def check(self, estimator, tuned):
        if np.ndim(estimator.alpha) > 0:
            raise ValueError("HypergradSearchCV tunes a scalar KernelRidge alpha only")

    def default_value(self, estimator, name, n_features):
        if name == "gamma" and estimator.gamma is None:
            return 1.0 / n_features  # scikit-learn's default for these kernels
        return getattr(estimator, name)

    def make_problem(self, estimator, fold, tuned, fixed, settings):
        from ..inner.kernel_ridge import KernelRidgeFoldProblem

        data, keywords = self._fold_arguments(fold, settings)
        return KernelRidgeFoldProblem(
            *data, kernel=estimator.kernel, tuned=tuned, fixed=fixed, **keywords
        )

    def fitted(self, estimator, problem, state, values, fold):
        model = clone(estimator).set_params(**values)
        model.dual_coef_ = problem.coefficients(state)
        model.X_fit_ = fold["X_train"]
        model.n_features_in_ = fold["X_train"].shape[1]
        return model


ADAPTERS = (_RidgeAdapter(), _LogisticAdapter(), _KernelRidgeAdapter())


def supported_summary():
    """One line per supported estimator and its tunable parameters."""
    return "; ".join(
        f"{a.estimator_class.__name__} ({', '.join(a.tunable)})" for a in ADAPTERS
    )


def adapter_for(estimator):
    """The adapter of an estimator's exact class, or a clear error."""
    for adapter in ADAPTERS:
        if type(estimator) is adapter.estimator_class:
            return adapter
    raise TypeError(
        f"HypergradSearchCV cannot differentiate through "
        f"{type(estimator).__name__}; supported final estimators: "
        f"{supported_summary()}"
    )
