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

    Notes
    -----
    Derives from :class:`FloatingPointError`, so code that already guards
    against floating-point failures catches it too.

    Examples
    --------
    >>> import torch
    >>> from skhyper.exceptions import NonFiniteError
    >>> from skhyper.hypergrad import aid
    >>> lam = torch.tensor(float("nan"), dtype=torch.float64)
    >>> w = torch.ones(2, dtype=torch.float64)
    >>> try:
    ...     aid(lambda w, lam: 0.5 * w + lam, lambda w, lam: w.sum(), w, lam)
    ... except NonFiniteError as error:
    ...     print(error)
    non-finite value in the hyperparameters λ
    """


class HypergradientWarning(UserWarning):
    """A linear-system solver of the hypergradient engine stopped early.

    Raised when the iteration cap was reached before the tolerance, or when
    the solver met a system it does not apply to (for example non-positive
    curvature under conjugate gradient, or a GMRES breakdown on a singular
    system). The same facts are in the solver's ``SolveInfo``.

    Notes
    -----
    The estimators call the engine with ``warn=False`` and report instead one
    aggregated :class:`sklearn.exceptions.ConvergenceWarning` per fit.

    Examples
    --------
    >>> import warnings
    >>> import torch
    >>> from skhyper.exceptions import HypergradientWarning
    >>> from skhyper.hypergrad import conjugate_gradient
    >>> A = torch.diag(torch.tensor([1.0, -1.0], dtype=torch.float64))
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     _, info = conjugate_gradient(lambda v: A @ v, torch.ones(2, dtype=A.dtype))
    >>> caught[0].category is HypergradientWarning, info.converged
    (True, False)
    """
