"""Exceptions and warnings raised by skhyper.

The engine (:mod:`skhyper.hypergrad`) knows nothing of scikit-learn, so its
warning derives from :class:`UserWarning`; the estimators report solver
trouble to the user as one aggregated
:class:`sklearn.exceptions.ConvergenceWarning` per fit.
"""

__all__ = ["NonFiniteError", "HypergradientWarning"]


class NonFiniteError(FloatingPointError):
    """A NaN or an infinity appeared in a hypergradient computation.

    The message names the step where it appeared (inner weights, outer loss,
    linear system, hypergradient), so that the user knows what to change.
    """


class HypergradientWarning(UserWarning):
    """A linear-system solver of the hypergradient engine stopped early.

    Raised when the iteration cap was reached before the tolerance, or when
    the solver met a system it does not apply to (for example non-positive
    curvature under conjugate gradient).
    """
