"""Fold problems that also report a scikit-learn score of each fold's model.

The optimised objective stays the log loss; the scores only decide which
evaluation counts as best when the user asks for a ``scoring``.
"""

from sklearn.linear_model import LogisticRegression

__all__ = ["ScoredFold", "ScoredFoldSet"]


def _score(scorer, coefficients, classes, X_val, y_val, weight_val):
    """Score the fold model with ``(coef, intercept) = coefficients``."""
    model = LogisticRegression()
    model.coef_, model.intercept_ = coefficients
    model.classes_ = classes
    model.n_features_in_ = X_val.shape[1]
    if weight_val is None:
        return float(scorer(model, X_val, y_val))
    return float(scorer(model, X_val, y_val, sample_weight=weight_val))


class ScoredFoldSet:
    """A fold set whose evaluations also carry scikit-learn scores."""

    def __init__(self, folds, scorer, X, y, splits, weight_val, classes):
        self.folds = folds
        self.scorer = scorer
        self.parts = [
            (X[test], y[test], None if weight_val is None else weight_val[test])
            for _, test in splits
        ]
        self.classes = classes

    def initial_states(self):
        return self.folds.initial_states()

    def fit_whole(self, *args, **kwargs):
        return self.folds.fit_whole(*args, **kwargs)

    def start_from(self, W):
        self.folds.start_from(W)

    def evaluate_all(self, theta, states):
        results = self.folds.evaluate_all(theta, states)
        for result, part in zip(results, self.parts):
            coefficients = self.folds.coefficients(result.state)
            result.score = _score(self.scorer, coefficients, self.classes, *part)
        return results


class ScoredFold:
    """A fold problem whose evaluations also carry a scikit-learn score."""

    def __init__(self, problem, scorer, X_val, y_val, weight_val, classes):
        self.problem = problem
        self.scorer = scorer
        self.X_val = X_val
        self.y_val = y_val
        self.weight_val = weight_val
        self.classes = classes

    def initial_state(self):
        return self.problem.initial_state()

    def evaluate(self, theta, state):
        result = self.problem.evaluate(theta, state)
        result.score = _score(
            self.scorer,
            self.problem.coefficients(result.state),
            self.classes,
            self.X_val,
            self.y_val,
            self.weight_val,
        )
        return result
