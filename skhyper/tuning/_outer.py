"""The outer loop: minimise the cross-validation loss over log-hyperparameters.

The objective is the mean over folds of the validation loss. Each fold is an
object with two methods:

- ``initial_state()``: the fold's warm-start state before the first evaluation;
- ``evaluate(theta, state) -> FoldResult``: solve the inner problem at
  ``λ = exp(theta)`` from ``state``, and return the validation loss, its
  gradient with respect to ``theta`` and the new warm-start state;
- optionally ``evaluate_many(thetas, state) -> list of FoldResult``: the same
  at several points in one call (the scan of :func:`tune` uses it), each
  result's state following from the previous one.

Folds that are cheaper to solve together come instead as one *fold set*, an
object with ``initial_states() -> list`` (one state per fold) and
``evaluate_all(theta, states) -> list of FoldResult`` (one result per fold).

States travel by value (returned, not mutated), so folds can run on any joblib
backend, processes and remote workers included.
"""

import logging
import math
import multiprocessing
import sys
import time
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
from joblib import Parallel, delayed
from joblib.parallel import get_active_backend
from scipy.optimize import minimize

from ..exceptions import NonFiniteError
from ._line import minimise_scalar

logger = logging.getLogger(__name__)

__all__ = ["FoldResult", "TuningResult", "tune"]


@dataclass
class FoldResult:
    """What one fold's evaluation returns.

    Attributes
    ----------
    loss : float
        Validation loss of the fold at ``theta``.
    grad : ndarray of shape (n_hyperparameters,)
        Gradient of ``loss`` with respect to ``theta = log λ``.
    state : object
        Warm-start state for the next evaluation of this fold.
    inner_converged : bool
        Whether the inner solver met its tolerance.
    linsys_converged : bool
        Whether the hypergradient's linear system met its tolerance.
    score : float or None
        Optional score (greater is better) used to pick the best iterate.
    parts : ndarray of shape (n_hyperparameters,) or None
        Optional, for a separable loss: part ``j`` depends on ``theta_j``
        alone and ``loss`` is their mean (one alpha per target, say). The
        scan of :func:`tune` then picks each ``theta_j`` on its own, and,
        when every part is positive at the start, L-BFGS-B weighs each part
        by the inverse of its starting value.

    Examples
    --------
    >>> import numpy as np
    >>> from skhyper.tuning import FoldResult
    >>> FoldResult(loss=0.5, grad=np.array([0.1]), state={"w": None}).score is None
    True
    """

    loss: float
    grad: np.ndarray
    state: object = None
    inner_converged: bool = True
    linsys_converged: bool = True
    score: object = None
    parts: object = None


@dataclass
class TuningResult:
    """The outcome of :func:`tune`.

    Attributes
    ----------
    theta : ndarray
        Best finite ``log λ`` found.
    loss : float
        Mean CV loss at ``theta``.
    best_index : int
        Row of ``history`` holding the best iterate.
    history : dict of lists
        One entry per evaluation: ``theta``, ``loss``, ``fold_losses``,
        ``grad_norm``, ``score``, ``fold_scores``, ``time``.
    n_iter : int
        Outer (L-BFGS-B) iterations.
    states : list
        Warm-start states of the folds at the last evaluation.
    at_lower, at_upper : ndarray of bool
        Which hyperparameters of the best iterate sit at a bound.

    Examples
    --------
    See :func:`tune`, which returns one.
    """

    theta: np.ndarray
    loss: float
    best_index: int
    history: dict
    n_iter: int
    states: list
    at_lower: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    at_upper: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    n_inner_failures: int = 0
    n_linsys_failures: int = 0
    n_non_finite: int = 0
    max_iter_reached: bool = False


def _check_parallel_backend(n_jobs):
    """Refuse joblib's fork-based backend once PyTorch is loaded.

    PyTorch's thread pools do not survive ``fork``: workers forked from a
    process where PyTorch has run can wait forever on a lock. ``loky`` (the
    default) and ``threading`` are safe.
    """
    if n_jobs in (None, 1) or "torch" not in sys.modules:
        return
    backend, _ = get_active_backend()
    # The first of the supported start methods is the platform's default.
    method = multiprocessing.get_start_method(allow_none=True)
    forks = (method or multiprocessing.get_all_start_methods()[0]) == "fork"
    if type(backend).__name__ == "MultiprocessingBackend" and forks:
        raise ValueError(
            "joblib's 'multiprocessing' backend forks the process, and workers "
            "forked after PyTorch has run can hang; use the default 'loky' "
            "backend or 'threading' for n_jobs > 1"
        )


def _evaluate_folds(problems, theta, states, n_jobs):
    if n_jobs in (None, 1) or len(problems) == 1:
        return [p.evaluate(theta, s) for p, s in zip(problems, states)]
    return Parallel(n_jobs=n_jobs)(
        delayed(p.evaluate)(theta, s) for p, s in zip(problems, states)
    )


def _evaluate_folds_many(problems, thetas, states, n_jobs):
    if n_jobs in (None, 1) or len(problems) == 1:
        return [p.evaluate_many(thetas, s) for p, s in zip(problems, states)]
    return Parallel(n_jobs=n_jobs)(
        delayed(p.evaluate_many)(thetas, s) for p, s in zip(problems, states)
    )


def tune(
    problems,
    theta0,
    bounds,
    *,
    max_iter=50,
    tol=1e-6,
    n_jobs=None,
    verbose=0,
    use_score=False,
    names=None,
    scan=0,
    method="l-bfgs-b",
):
    """Minimise the mean CV loss over ``theta = log λ`` inside bounds.

    Parameters
    ----------
    problems : list of fold problems, or a fold set
        See the module docstring for the protocols.
    theta0 : array-like of shape (n_hyperparameters,)
        Starting point, in log space.
    bounds : tuple of arrays (lower, upper)
        Bounds on ``theta``, in log space; broadcast to ``theta0``.
    max_iter : int, default=50
        Maximum number of outer iterations.
    tol : float, default=1e-6
        Stop when the relative decrease of the loss, or the largest projected
        gradient component, falls below ``tol``.
    n_jobs : int, default=None
        Folds evaluated in parallel through joblib (any active backend); a
        fold set evaluates its folds itself.
    verbose : int, default=0
        ``verbose >= 1`` prints one line per evaluation.
    use_score : bool, default=False
        Choose the best iterate by the mean fold ``score`` (greater is better)
        rather than by the loss.
    names : str or list of str, default=None
        Names of the hyperparameters for the progress line (``"alpha"``, or
        one name per entry of ``theta``).
    scan : int, default=0
        Before L-BFGS-B, evaluate ``scan`` points evenly spaced along the
        diagonal of the bounds box (for one hyperparameter, a coarse log-grid
        of its interval) and start from the best of them and ``theta0``. Worth
        it when evaluations are cheap, for example when one factorisation per
        fold serves every point.
    method : {"l-bfgs-b", "scalar"}, default="l-bfgs-b"
        The optimiser. ``"scalar"``, for one hyperparameter only, is a
        bracketing search with cubic interpolation (see Notes), which needs
        fewer evaluations and keeps successive points close, so that warm
        starts stay good; ``tol`` is then the relative decrease of the loss
        still predicted by the derivatives, and ``max_iter`` and the
        result's ``n_iter`` count evaluations.

    Returns
    -------
    result : TuningResult

    Notes
    -----
    The optimiser is L-BFGS-B on ``theta``. An evaluation whose loss or
    hypergradient is not finite (a :class:`~skhyper.exceptions.NonFiniteError`
    from a fold) is recorded, skipped, and shown to L-BFGS-B as a very large
    loss so that its line search steps back; the best finite iterate is
    returned. L-BFGS-B starts with the identity as its Hessian model, so its
    first step is the gradient itself; the objective it sees is divided by the
    largest gradient component at the start, which makes that first step one
    unit of ``log λ`` whatever the scale of the loss (the history keeps the
    unscaled values). A separable loss (fold results with ``parts``) is seen
    as the mean of its parts, each divided by its value at the start: the
    minimiser is the same, and a part far smaller than the others still
    moves its hyperparameter instead of stopping L-BFGS-B short of it. Its
    scan also picks each hyperparameter's start on its own.

    The ``"scalar"`` search steps downhill from ``theta0`` (first one unit of
    ``log λ``, then about one and a half times the distance at which the
    secant through the last two derivatives vanishes) until the derivative
    changes sign or the loss rises, then shrinks that bracket by cubic
    interpolation of the values and derivatives at its ends.

    Examples
    --------
    Two folds whose losses are quadratics in ``θ`` with minima at 1 and 3: the
    mean is minimised at 2.

    >>> import numpy as np
    >>> from skhyper.tuning import FoldResult, tune
    >>> class Quadratic:
    ...     def __init__(self, centre):
    ...         self.centre = centre
    ...     def initial_state(self):
    ...         return None
    ...     def evaluate(self, theta, state):
    ...         d = theta - self.centre
    ...         return FoldResult(loss=0.5 * float(d @ d), grad=d, state=state)
    >>> result = tune([Quadratic(1.0), Quadratic(3.0)], [0.0], (-5.0, 5.0))
    >>> round(float(result.theta[0]), 6)
    2.0
    """
    _check_parallel_backend(n_jobs)
    theta0 = np.asarray(theta0, dtype=np.float64).ravel()
    lower = np.broadcast_to(np.asarray(bounds[0], dtype=np.float64), theta0.shape)
    upper = np.broadcast_to(np.asarray(bounds[1], dtype=np.float64), theta0.shape)
    theta0 = np.clip(theta0, lower, upper)
    fold_set = hasattr(problems, "evaluate_all")
    if fold_set:
        states = problems.initial_states()
    else:
        states = [p.initial_state() for p in problems]
    history = {
        "theta": [],
        "loss": [],
        "fold_losses": [],
        "grad_norm": [],
        "score": [],
        "fold_scores": [],
        "time": [],
    }
    counters = {"inner": 0, "linsys": 0, "non_finite": 0}
    latest = {"parts": None}  # the last evaluation's mean parts, if separable
    start = time.perf_counter()
    label = [names] if isinstance(names, str) else list(names or ["lambda"])

    def objective(theta, results=None):
        nonlocal states
        theta = np.clip(theta, lower, upper)
        try:
            if results is None and fold_set:
                results = problems.evaluate_all(theta, states)
            elif results is None:
                results = _evaluate_folds(problems, theta, states, n_jobs)
            losses = np.array([r.loss for r in results], dtype=np.float64)
            grads = np.array([r.grad for r in results], dtype=np.float64)
            if not (np.all(np.isfinite(losses)) and np.all(np.isfinite(grads))):
                raise NonFiniteError("non-finite validation loss or hypergradient")
        except NonFiniteError as exc:
            latest["parts"] = None
            counters["non_finite"] += 1
            logger.debug("skipping a non-finite evaluation at %s: %s", theta, exc)
            _record(history, theta, math.nan, [], math.nan, None, [], start)
            return _penalty(history), np.zeros_like(theta)
        states = [r.state for r in results]
        latest["parts"] = _mean_parts(results, theta.size)
        counters["inner"] += sum(not r.inner_converged for r in results)
        counters["linsys"] += sum(not r.linsys_converged for r in results)
        loss = float(losses.mean())
        grad = grads.mean(axis=0)
        scores = [r.score for r in results]
        score = float(np.mean(scores)) if None not in scores else None
        _record(history, theta, loss, losses, _norm(grad), score, scores, start)
        if verbose:
            _print_progress(len(history["loss"]), loss, theta, grad, start, label)
        return loss, grad

    def batch(candidates):
        # Fold results at every candidate, by the folds' optional evaluate_many;
        # None when a fold lacks it or a value is not finite (then one by one).
        if fold_set or not all(hasattr(p, "evaluate_many") for p in problems):
            return None
        try:
            per_fold = _evaluate_folds_many(problems, candidates, states, n_jobs)
        except NonFiniteError:
            return None
        return [list(results) for results in zip(*per_fold)]

    if method == "scalar":
        result = _scalar(
            objective, history, theta0, lower, upper, max_iter=max_iter, tol=tol
        )
    elif method == "l-bfgs-b":
        result = _lbfgsb(
            objective,
            batch,
            theta0,
            lower,
            upper,
            scan=scan,
            max_iter=max_iter,
            tol=tol,
            latest=latest,
        )
    else:
        raise ValueError(f"method must be 'l-bfgs-b' or 'scalar', got {method!r}")
    best_index = _best_index(history, use_score)
    if best_index is None:
        raise NonFiniteError(
            "every evaluation of the cross-validation loss was non-finite; "
            "check the input data for extreme values or narrow the bounds"
        )
    theta = np.asarray(history["theta"][best_index])
    span = np.maximum(upper - lower, 1.0)
    return TuningResult(
        theta=theta,
        loss=history["loss"][best_index],
        best_index=best_index,
        history=history,
        n_iter=int(getattr(result, "nit", 0)),  # absent when every bound is fixed
        states=states,
        at_lower=theta <= lower + 1e-6 * span,
        at_upper=theta >= upper - 1e-6 * span,
        n_inner_failures=counters["inner"],
        n_linsys_failures=counters["linsys"],
        n_non_finite=counters["non_finite"],
        # L-BFGS-B's status 1: the iteration or evaluation budget ran out.
        max_iter_reached=int(getattr(result, "status", 0)) == 1,
    )


def _norm(x):
    return float(np.linalg.norm(x))


def _lbfgsb(
    objective, batch, theta0, lower, upper, *, scan, max_iter, tol, latest=None
):
    """L-BFGS-B from ``theta0``, or from the best point of a scan, within bounds.

    The objective L-BFGS-B sees is divided by the largest gradient component
    at its first point (see the Notes of :func:`tune`). A separable loss
    (``latest["parts"]`` set by ``objective``) is seen as the mean of its
    parts, each divided by its value at the first point, so that no part is
    too small to move: the minimiser is the same.
    """
    latest = {"parts": None} if latest is None else latest
    cached = {}
    if scan:
        theta0, cached["start"], cached["parts"] = _scan_start(
            objective, batch, theta0, lower, upper, int(scan), latest
        )
    scale, weights = [], []

    def scaled_objective(theta):
        if "start" in cached and np.array_equal(theta, theta0):
            loss, grad = cached.pop("start")  # the scan already evaluated it
            parts = cached.pop("parts")
        else:
            cached.clear()
            loss, grad = objective(theta)
            parts = latest["parts"]
        if not scale:
            # A non-finite first point comes back with a zero gradient: scale 1.
            if parts is not None and bool(np.all(parts > 0)):
                weights.append(1.0 / parts)
            scale.append(_objective_scale(grad * weights[0] if weights else grad))
        if weights:
            if parts is None:  # a non-finite point: the penalty, flat
                return loss * float(weights[0].mean()) / scale[0], grad
            loss, grad = float(np.mean(parts * weights[0])), grad * weights[0]
        return loss / scale[0], grad / scale[0]

    # L-BFGS-B: cheap, robust, and it honours the bounds exactly.
    return minimize(
        scaled_objective,
        theta0,
        jac=True,
        method="L-BFGS-B",
        bounds=list(zip(lower, upper)),
        options={
            "maxiter": max_iter,
            "maxfun": 3 * max_iter,
            "ftol": tol,
            "gtol": tol,
        },
    )


def _scalar(objective, history, theta0, lower, upper, *, max_iter, tol):
    """The ``"scalar"`` search; returns an object with ``nit`` and ``status``
    as L-BFGS-B's result has them."""
    if theta0.size != 1:
        raise ValueError(f"method='scalar' tunes one hyperparameter, got {theta0.size}")

    def evaluate(theta):
        loss, grad = objective(np.array([theta]))
        # A non-finite evaluation is recorded as NaN (the objective returns a
        # penalty for it).
        return loss, float(grad[0]), math.isfinite(history["loss"][-1])

    search = minimise_scalar(
        evaluate,
        float(theta0[0]),
        float(lower[0]),
        float(upper[0]),
        max_evals=max_iter,
        tol=tol,
    )
    # max_iter counts evaluations here, and so does the reported n_iter.
    return SimpleNamespace(nit=search.n_evals, status=int(not search.converged))


def _objective_scale(grad):
    largest = float(np.max(np.abs(grad))) if np.size(grad) else 0.0
    return largest if math.isfinite(largest) and largest > 0 else 1.0


def _scan_start(objective, batch, theta0, lower, upper, n_points, latest):
    """Evaluate ``theta0`` and ``n_points`` on the diagonal of the bounds box.

    Returns the best finite point, its ``(loss, grad)`` and its parts when
    the loss is separable (else ``None``); ``theta0`` wins ties. Non-finite
    points come back from ``objective`` as a large penalty.
    """
    fractions = np.linspace(0.0, 1.0, n_points) if n_points > 1 else [0.5]
    candidates = [theta0] + [lower + f * (upper - lower) for f in fractions]
    batched = batch(candidates)
    if batched is None:
        evaluated = [(objective(theta), theta) for theta in candidates]
    else:
        evaluated = [(objective(t, r), t) for t, r in zip(candidates, batched)]
    (loss, grad), theta = min(evaluated, key=lambda item: item[0][0])
    composed = None if batched is None else _separable_best(candidates, batched)
    if composed is not None:
        # Each theta_j at its own best candidate: by separability no worse
        # than any single candidate, where one shared value suits no target
        # whose loss is far smaller than the others'.
        composed_loss, composed_grad = objective(composed)
        if composed_loss <= loss:
            return composed, (composed_loss, composed_grad), latest["parts"]
    return np.array(theta, dtype=np.float64), (loss, grad), None


def _mean_parts(results, size):
    """The mean over folds of the results' ``parts``, or ``None``."""
    if any(r.parts is None for r in results):
        return None
    parts = np.mean([np.asarray(r.parts, dtype=np.float64) for r in results], axis=0)
    return parts if parts.shape == (size,) and np.all(np.isfinite(parts)) else None


def _separable_best(candidates, batched):
    """The point taking each ``theta_j`` from the candidate with the smallest
    mean part ``j``, when every fold result has ``parts``; else ``None``."""
    if any(r.parts is None for results in batched for r in results):
        return None
    parts = np.array(
        [np.mean([r.parts for r in results], axis=0) for results in batched]
    )
    if parts.shape != np.shape(candidates) or not np.all(np.isfinite(parts)):
        return None
    best = parts.argmin(axis=0)
    candidates = np.asarray(candidates, dtype=np.float64)
    return candidates[best, np.arange(candidates.shape[1])]


def _record(history, theta, loss, fold_losses, grad_norm, score, scores, start):
    history["theta"].append(np.array(theta, dtype=np.float64))
    history["loss"].append(loss)
    history["fold_losses"].append(np.asarray(fold_losses, dtype=np.float64))
    history["grad_norm"].append(grad_norm)
    history["score"].append(score)
    history["fold_scores"].append(scores)
    history["time"].append(time.perf_counter() - start)


def _penalty(history):
    finite = [v for v in history["loss"] if math.isfinite(v)]
    return 10.0 * max(abs(v) for v in finite) + 1.0 if finite else 1e10


def _best_index(history, use_score):
    candidates = [i for i, v in enumerate(history["loss"]) if math.isfinite(v)]
    if not candidates:
        return None
    if use_score and all(history["score"][i] is not None for i in candidates):
        return max(candidates, key=lambda i: (history["score"][i], -i))
    return min(candidates, key=lambda i: (history["loss"][i], i))


def _print_progress(iteration, loss, theta, grad, start, label):
    values = np.exp(theta)
    if len(label) == values.size:
        shown = "  ".join(f"{n}={v:.4g}" for n, v in zip(label, values))
    else:
        shown = f"{label[0]}={_summary(values)}"
    print(
        f"[skhyper] eval {iteration:3d}  cv_loss={loss:.6g}  {shown}  "
        f"|grad|={_norm(grad):.3g}  time={time.perf_counter() - start:.2f}s"
    )


def _summary(values):
    low, mid, high = values.min(), np.median(values), values.max()
    return f"[min {low:.3g}, median {mid:.3g}, max {high:.3g}]"
