"""Torch-free prediction and fold checks for the linear classifiers."""

import numpy as np
from scipy.special import expit, log_softmax

from ._base import LinearPredictorMixin

__all__ = ["LinearClassifierMixin", "check_folds_have_classes", "label"]


class LinearClassifierMixin(LinearPredictorMixin):
    """Predictions of a fitted linear classifier, with numpy alone.

    Needs ``coef_`` of shape ``(1, n_features)`` (two classes, the score of
    ``classes_[1]``) or ``(n_classes, n_features)`` (softmax), ``intercept_``
    and ``classes_``.
    """

    def decision_function(self, X):
        """Decision values ``X coef_ᵀ + intercept_``.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
            For two classes, the score of ``classes_[1]``.
        """
        scores = self._decision_function(X)
        return scores.ravel() if scores.shape[1] == 1 else scores

    def predict(self, X):
        """Predict class labels.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        labels : ndarray of shape (n_samples,)
        """
        scores = self.decision_function(X)
        index = (scores > 0).astype(int) if scores.ndim == 1 else scores.argmax(1)
        return self.classes_[index]

    def predict_log_proba(self, X):
        """Logarithm of the class probabilities, columns in ``classes_`` order.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
        """
        scores = self._decision_function(X)
        if scores.shape[1] == 1:
            scores = np.hstack([np.zeros_like(scores), scores])
        return log_softmax(scores, axis=1)

    def predict_proba(self, X):
        """Class probabilities, columns in ``classes_`` order.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
        """
        scores = self._decision_function(X)
        if scores.shape[1] == 1:
            positive = expit(scores)
            return np.hstack([1.0 - positive, positive])
        return np.exp(log_softmax(scores, axis=1))


def label(value):
    """A class label as the user wrote it (a numpy scalar as a Python one)."""
    return value.item() if isinstance(value, np.generic) else value


def check_folds_have_classes(splits, y_encoded, weights, classes):
    """Refuse, before any optimisation, a training part that misses a class."""
    for index, (train, _) in enumerate(splits):
        totals = np.bincount(
            y_encoded[train], weights=weights[train], minlength=classes.size
        )
        if np.any(totals <= 0):
            missing = label(classes[np.flatnonzero(totals <= 0)[0]])
            raise ValueError(
                f"the training part of CV fold {index} has no sample of class "
                f"{missing!r} (with a positive weight); use fewer folds or a "
                "stratified splitter so that every class appears in every "
                "training part"
            )
