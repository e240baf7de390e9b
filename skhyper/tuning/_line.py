"""A safeguarded search for the minimum of a function of one variable.

With one hyperparameter the outer problem is a line search, and a dedicated
method beats a general quasi-Newton one: it walks downhill in steps that grow
until the derivative changes sign (about one and a half times the distance
the derivatives predict, so that warm starts stay close), then shrinks the
bracket by cubic interpolation of the values and derivatives at its ends.
"""

import math
from dataclasses import dataclass

__all__ = ["minimise_scalar"]


@dataclass
class _Point:
    theta: float
    loss: float
    grad: float
    finite: bool


@dataclass
class ScalarSearchResult:
    """How :func:`minimise_scalar` ended: ``n_evals`` evaluations, and
    ``converged`` False when it stopped on its budget."""

    n_evals: int
    converged: bool


def _cubic_minimiser(a, b):
    """Minimiser of the cubic through the values and slopes at ``a`` and
    ``b``; ``None`` when the cubic has none (the caller bisects)."""
    span = b.theta - a.theta
    d1 = a.grad + b.grad - 3.0 * (a.loss - b.loss) / (a.theta - b.theta)
    radicand = d1 * d1 - a.grad * b.grad
    if radicand < 0:
        return None
    d2 = math.copysign(math.sqrt(radicand), span)
    denominator = b.grad - a.grad + 2.0 * d2
    if denominator == 0:
        return None
    return b.theta - span * (b.grad + d2 - d1) / denominator


def _predicted_decrease(best, other):
    """What is left to gain near ``best``: ``g²/(2h)`` with ``h`` the secant
    curvature towards ``other``, else the bound ``|g| · width``."""
    width = abs(other.theta - best.theta)
    if other.finite and width > 0:
        curvature = (other.grad - best.grad) / (other.theta - best.theta)
        if curvature > 0:
            return min(best.grad**2 / (2.0 * curvature), abs(best.grad) * width)
    return abs(best.grad) * width


def minimise_scalar(
    evaluate,
    theta0,
    lower,
    upper,
    *,
    max_evals,
    tol,
    xtol=1e-3,
    first_step=1.0,
    max_step=4.0,
):
    """Minimise ``f`` on ``[lower, upper]`` from values and derivatives.

    Parameters
    ----------
    evaluate : callable
        ``theta -> (loss, grad, finite)`` for a float ``theta``.
    theta0 : float
        Starting point.
    lower, upper : float
        Bounds.
    max_evals : int
        Evaluations at most.
    tol : float
        Stop once the decrease still to gain (:func:`_predicted_decrease`)
        is at most ``tol`` times the loss.
    xtol : float, default=1e-3
        Stop once the bracket is narrower than this.
    first_step : float, default=1.0
        Length of the first step.
    max_step : float, default=4.0
        Longest step while bracketing.

    Returns
    -------
    result : ScalarSearchResult

    Notes
    -----
    Bracketing steps from the best point ``a`` downhill. After two points
    the derivatives predict where they vanish, by the secant through them;
    the step is that distance times 1.5, kept between a quarter of the
    previous step and twice it when the slope flattens, and doubled when it
    steepens. A point
    with a higher loss, a derivative of the other sign or a non-finite value
    closes the bracket; then each new point is the cubic's minimiser, at
    least a tenth of the bracket away from its ends (the midpoint if the
    cubic fails or an end is not finite).
    """
    n_evals = 0

    def point(theta):
        nonlocal n_evals
        n_evals += 1
        loss, grad, finite = evaluate(theta)
        return _Point(theta, loss, grad, finite)

    best = point(theta0)
    if not best.finite:
        return ScalarSearchResult(n_evals, False)
    previous, step = None, first_step

    # Bracketing: walk downhill until the slope turns or the loss rises.
    while True:
        if best.grad == 0:
            return ScalarSearchResult(n_evals, True)
        direction = -math.copysign(1.0, best.grad)
        room = (upper - best.theta) if direction > 0 else (best.theta - lower)
        if room <= xtol:
            return ScalarSearchResult(n_evals, True)  # at a bound, still downhill
        if n_evals >= max_evals:
            return ScalarSearchResult(n_evals, False)
        step = _bracketing_step(previous, best, step)
        step = min(step, room, max_step)
        new = point(best.theta + direction * step)
        if not new.finite or new.loss > best.loss or new.grad * best.grad <= 0:
            other = new
            break
        previous, best = best, new

    # Refinement: shrink the bracket around the best point.
    while True:
        width = abs(other.theta - best.theta)
        if width <= xtol or _predicted_decrease(best, other) <= tol * abs(best.loss):
            return ScalarSearchResult(n_evals, True)
        if n_evals >= max_evals:
            return ScalarSearchResult(n_evals, False)
        theta = _cubic_minimiser(best, other) if other.finite else None
        low, high = sorted((best.theta, other.theta))
        margin = 0.1 * width
        if theta is None or not math.isfinite(theta):
            theta = 0.5 * (low + high)
        theta = min(max(theta, low + margin), high - margin)
        new = point(theta)
        if new.finite and new.loss <= best.loss:
            # The minimum lies on the side the new slope points down to.
            towards_other = (other.theta - new.theta) * new.grad < 0
            best, other = new, (other if towards_other else best)
        else:
            other = new


def _bracketing_step(previous, best, step):
    """The next bracketing step (see :func:`minimise_scalar`'s Notes)."""
    if previous is None:
        return step
    flattening = abs(best.grad) < abs(previous.grad)
    if not flattening:
        return 2.0 * step
    distance = abs(best.grad) * abs(best.theta - previous.theta)
    distance /= abs(previous.grad) - abs(best.grad)
    return min(max(1.5 * distance, 0.25 * step), 2.0 * step)
