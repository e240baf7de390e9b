"""One aggregated warning for everything that went wrong in a fit."""

import warnings

from sklearn.exceptions import ConvergenceWarning

__all__ = ["warn_on_failures"]


def warn_on_failures(
    result, *, hyperparameter, bounds, inner_hint, linsys_hint, notes=()
):
    """Emit one aggregated :class:`ConvergenceWarning` for a whole fit.

    Parameters
    ----------
    result : TuningResult
    hyperparameter : str or list of str
        Name shown to the user (``"alpha"``, ``"C"``), or one name per entry
        of ``theta`` (for a few hyperparameters tuned together).
    bounds : tuple of float, or list of tuples
        The user's bounds (not in log space), named when the optimum sits on
        one of them; one pair per name when several names are given. With
        one name and many entries (per-feature values), a value at a bound
        is expected (a useless feature's penalty runs to its bound) and is
        reported only when every entry sits on the same bound.
    inner_hint, linsys_hint : str
        What to change when the inner solver or the linear system stopped
        early (``"increase inner_max_iter"``).
    notes : sequence of str, default=()
        Further problems found by the caller (badly scaled data, say), joined
        into the same warning.

    Examples
    --------
    >>> import warnings
    >>> import numpy as np
    >>> from skhyper.tuning import TuningResult, warn_on_failures
    >>> result = TuningResult(
    ...     theta=np.zeros(1), loss=1.0, best_index=0, history={"loss": [1.0]},
    ...     n_iter=1, states=[], at_lower=np.zeros(1, bool),
    ...     at_upper=np.zeros(1, bool), n_inner_failures=3)
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warn_on_failures(result, hyperparameter="C", bounds=(1e-3, 1e3),
    ...                      inner_hint="increase inner_max_iter", linsys_hint="")
    >>> caught[0].category.__name__, "in 3 fold solves" in str(caught[0].message)
    ('ConvergenceWarning', True)
    """
    messages = []
    n_evals = len(result.history["loss"])
    if result.n_inner_failures:
        messages.append(
            f"the inner solver did not reach its tolerance in "
            f"{result.n_inner_failures} fold solves over {n_evals} evaluations "
            f"({inner_hint})"
        )
    if result.n_linsys_failures:
        messages.append(
            f"the hypergradient linear system did not reach its tolerance in "
            f"{result.n_linsys_failures} fold solves ({linsys_hint})"
        )
    if result.max_iter_reached:
        messages.append(
            f"the outer loop used all of its {result.n_iter} iterations (or its "
            "evaluation budget) before meeting its tolerance; increase max_iter"
        )
    if result.n_non_finite:
        messages.append(
            f"{result.n_non_finite} evaluations gave a non-finite loss or "
            "hypergradient and were skipped"
        )
    names = [hyperparameter] if isinstance(hyperparameter, str) else hyperparameter
    pairs = [bounds] if isinstance(hyperparameter, str) else list(bounds)
    if len(names) == result.theta.size:
        for name, (low, high), lo, up in zip(
            names, pairs, result.at_lower, result.at_upper
        ):
            if (lo or up) and low < high:  # equal bounds fix the value
                side, value = ("lower", low) if lo else ("upper", high)
                messages.append(
                    f"the best {name} sits at the {side} bound {value:g}; "
                    f"widen the bounds of {name}"
                )
    elif len(names) == 1 and result.theta.size > 1:
        messages.extend(_all_at_one_bound(names[0], pairs[0], result))
    messages.extend(notes)
    if messages:
        text = "; ".join(messages)
        warnings.warn(
            text[0].upper() + text[1:] + ".", ConvergenceWarning, stacklevel=3
        )


def _all_at_one_bound(name, bounds, result):
    """A message when every per-feature value sits on the same bound: either
    their optimum lies beyond it, or the search stopped on a plateau (the CV
    loss flattens in ``log`` of a value near a bound where it stops mattering)."""
    for side, value, flags in (
        ("lower", bounds[0], result.at_lower),
        ("upper", bounds[1], result.at_upper),
    ):
        if bool(flags.all()):
            return [
                f"all {flags.size} per-feature values of {name} sit at the "
                f"{side} bound {value:g}; widen the bounds of {name}, or, if "
                "the search stopped where the CV loss is flat, start it from an "
                f"array of {name} values well inside them"
            ]
    return []
