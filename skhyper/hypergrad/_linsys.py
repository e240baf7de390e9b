"""Matrix-free solvers for the linear system of implicit differentiation.

Every solver (restarted GMRES lives in ``_gmres.py``) takes a callable
``matvec(v) -> A v`` on flat torch vectors, a right-hand side ``b``, a warm
start, a relative tolerance and an iteration cap, and returns the solution
together with a :class:`SolveInfo` record. The guards are shared: a zero
right-hand side returns an exact zero, a non-finite value raises
:class:`~skhyper.exceptions.NonFiniteError`, and a breakdown or an early stop
is reported in the record and by a warning, never hidden.
"""

import math
import warnings
from dataclasses import dataclass

import torch

from ..exceptions import HypergradientWarning, NonFiniteError

__all__ = ["SolveInfo", "conjugate_gradient", "fixed_point", "dense_solve"]


@dataclass
class SolveInfo:
    """Diagnostics of one linear-system solve.

    Attributes
    ----------
    solver : str
        Name of the solver (``"cg"``, ``"fp"``, ``"gmres"``, ``"exact"``).
    n_iter : int
        Iterations used: CG or fixed-point steps, GMRES Krylov products (the
        extra products that check the true residual are not counted), 1 for
        the dense solve, ``t`` for ITD.
    residual : float
        Final relative residual ``||b - A v|| / ||b||`` of the returned
        solution (for ITD, the relative size of the last step).
    converged : bool
        Whether the residual met the tolerance.
    message : str
        What stopped the solver, in words.

    Notes
    -----
    The residual is relative to ``||b||``: the solvers work on ``b / ||b||``
    and rescale the solution, so it is also the residual of that scaled
    problem. A zero right-hand side gives ``n_iter = 0`` and ``residual = 0``.

    Examples
    --------
    >>> import torch
    >>> from skhyper.hypergrad import conjugate_gradient
    >>> _, info = conjugate_gradient(lambda v: 2 * v, torch.zeros(3))
    >>> info
    SolveInfo(solver='cg', n_iter=0, residual=0.0, converged=True, message='zero rhs')
    """

    solver: str
    n_iter: int
    residual: float
    converged: bool
    message: str = ""


def _norm(x):
    # Reductions in float64 so that float32 iterates do not under- or overflow.
    return float(torch.linalg.vector_norm(x.double()))


def _scaled_problem(b):
    """Return ``(b / scale, scale)`` with ``scale = ||b||``, or ``(b, 0)``."""
    scale = _norm(b)
    if not math.isfinite(scale):
        raise NonFiniteError(
            "the right-hand side of the linear system (gradient of the outer "
            "loss with respect to the inner weights) is not finite"
        )
    if scale == 0.0:
        return b, 0.0
    return b / scale, scale


def _check_settings(tol, max_iter):
    tol = float(tol)
    if not (math.isfinite(tol) and tol >= 0.0):
        raise ValueError(f"tol must be a finite non-negative number, got {tol!r}")
    if int(max_iter) != max_iter or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    return tol, int(max_iter)


def _start(b, x0, scale):
    """The warm start in the scaled problem, zero when none is given."""
    if x0 is None:
        return torch.zeros_like(b)
    if x0.shape != b.shape:
        raise ValueError(f"x0 has shape {tuple(x0.shape)}, b has {tuple(b.shape)}")
    _require_finite(x0, "the warm start x0")
    return x0.detach().to(b) / scale


def _require_finite(x, what):
    if not bool(torch.isfinite(x).all()):
        raise NonFiniteError(f"non-finite value in {what}")


def _finish(solver, v, scale, n_iter, residual, converged, message, warn):
    info = SolveInfo(solver, n_iter, residual, converged, message)
    if warn and not converged:
        warnings.warn(
            f"{solver} linear-system solver did not converge: {message} "
            f"(relative residual {residual:.2e} after {n_iter} iterations). "
            "Increase linsys_max_iter or relax linsys_tol.",
            HypergradientWarning,
            stacklevel=3,
        )
    return v * scale, info


def _residual(matvec, b, x):
    """The true relative residual ``||b - A x||`` of the scaled problem."""
    r = b - matvec(x)
    return r, _norm(r)


def conjugate_gradient(matvec, b, *, x0=None, tol=1e-10, max_iter=100, warn=True):
    """Solve ``A x = b`` for a symmetric positive definite ``A`` by conjugate
    gradient.

    Parameters
    ----------
    matvec : callable
        ``matvec(v)`` returns ``A v`` for a flat tensor ``v``.
    b : torch.Tensor
        Flat right-hand side.
    x0 : torch.Tensor, default=None
        Warm start; zero when None.
    tol : float, default=1e-10
        Relative tolerance on the residual ``||b - A x|| / ||b||``.
    max_iter : int, default=100
        Maximum number of iterations (one product with ``A`` each).
    warn : bool, default=True
        Emit a :class:`~skhyper.exceptions.HypergradientWarning` when the solve
        does not converge.

    Returns
    -------
    x : torch.Tensor
        The iterate that met the tolerance, or the last one.
    info : SolveInfo
        Diagnostics. Non-positive curvature ``pᵀAp <= 0`` (``A`` is not
        positive definite) stops the solver with ``converged=False``.

    Raises
    ------
    NonFiniteError
        When ``b``, ``x0`` or a product with ``A`` is not finite.

    Notes
    -----
    The right-hand side is normalised to unit norm before the iterations and
    the solution is rescaled after, so that tiny gradients in float32 do not
    underflow; inner products are taken in float64. The residual that CG
    updates by recurrence drifts from ``b - A x`` in finite precision, so
    convergence is confirmed on the true residual (one extra product) and the
    iteration restarts from it when the two disagree. The residual reported
    is always the true one of the returned iterate.

    Examples
    --------
    >>> import torch
    >>> from skhyper.hypergrad import conjugate_gradient
    >>> A = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
    >>> b = torch.tensor([1.0, 2.0], dtype=torch.float64)
    >>> x, info = conjugate_gradient(lambda v: A @ v, b)
    >>> x, info.n_iter, info.converged
    (tensor([0.0909, 0.6364], dtype=torch.float64), 2, True)
    """
    tol, max_iter = _check_settings(tol, max_iter)
    b, scale = _scaled_problem(b)
    if scale == 0.0:
        return torch.zeros_like(b), SolveInfo("cg", 0, 0.0, True, "zero rhs")
    x = _start(b, x0, scale)
    r, residual = _residual(matvec, b, x) if x0 is not None else (b.clone(), 1.0)
    if not math.isfinite(residual):
        raise NonFiniteError("conjugate gradient: A x0 is not finite")
    if residual <= tol:
        return _finish("cg", x, scale, 0, residual, True, "warm start", warn)
    rr = residual**2
    p = r.clone()
    for it in range(1, max_iter + 1):
        Ap = matvec(p)
        curvature = float(torch.dot(p.double(), Ap.double()))
        if not math.isfinite(curvature):
            raise NonFiniteError("conjugate gradient: A p is not finite")
        if curvature <= 0.0:
            _, residual = _residual(matvec, b, x)
            message = (
                "non-positive curvature pᵀAp <= 0: the system is not positive "
                "definite, so conjugate gradient does not apply"
            )
            return _finish("cg", x, scale, it, residual, False, message, warn)
        step = rr / curvature
        x = x + step * p
        r = r - step * Ap
        rr_new = float(torch.dot(r.double(), r.double()))
        if math.sqrt(rr_new) <= tol or it == max_iter:
            # Confirm on the true residual before stopping.
            r, residual = _residual(matvec, b, x)
            if not math.isfinite(residual):
                raise NonFiniteError("conjugate gradient: the residual is not finite")
            if residual <= tol:
                return _finish(
                    "cg", x, scale, it, residual, True, "tolerance met", warn
                )
            # Restart the directions from the true residual.
            rr, p = residual**2, r.clone()
            continue
        p = r + (rr_new / rr) * p
        rr = rr_new
    return _finish(
        "cg", x, scale, max_iter, residual, False, "iteration cap reached", warn
    )


def fixed_point(jtvec, b, *, x0=None, tol=1e-10, max_iter=100, warn=True):
    """Solve ``(I - Jᵀ) x = b`` by the fixed-point iteration ``x <- Jᵀx + b``.

    Parameters
    ----------
    jtvec : callable
        ``jtvec(v)`` returns ``Jᵀv``, with ``J`` the Jacobian of the
        fixed-point map with respect to the inner weights.
    b, x0, tol, max_iter, warn
        As in :func:`conjugate_gradient`.

    Returns
    -------
    x : torch.Tensor
    info : SolveInfo

    Raises
    ------
    NonFiniteError
        When ``b``, ``x0`` or an iterate is not finite (the iteration diverges
        when ``J`` is not a contraction).

    Notes
    -----
    The iteration converges linearly at the contraction rate of the map; it is
    the linear-system counterpart of iterating the map itself, and ``k``
    iterations from zero give the AID-FP estimate of the paper. The residual
    of an iterate ``x`` is ``Jᵀx + b - x``, the difference of two successive
    iterates; the one reported is that of the previous iterate, and bounds the
    residual of the returned one whenever ``||J|| <= 1``.

    Examples
    --------
    >>> import torch
    >>> from skhyper.hypergrad import fixed_point
    >>> J = torch.tensor([[0.5, 0.0], [0.2, 0.25]], dtype=torch.float64)
    >>> b = torch.tensor([1.0, 3.0], dtype=torch.float64)
    >>> x, info = fixed_point(lambda v: J.T @ v, b, tol=1e-14)
    >>> x, info.converged
    (tensor([3.6000, 4.0000], dtype=torch.float64), True)
    """
    tol, max_iter = _check_settings(tol, max_iter)
    b, scale = _scaled_problem(b)
    if scale == 0.0:
        return torch.zeros_like(b), SolveInfo("fp", 0, 0.0, True, "zero rhs")
    x = _start(b, x0, scale)
    residual = math.inf
    for it in range(1, max_iter + 1):
        x_new = jtvec(x) + b
        residual = _norm(x_new - x)
        if not math.isfinite(residual):
            raise NonFiniteError("fixed-point solver: an iterate is not finite")
        x = x_new
        if residual <= tol:
            return _finish("fp", x, scale, it, residual, True, "tolerance met", warn)
    return _finish(
        "fp", x, scale, max_iter, residual, False, "iteration cap reached", warn
    )


def dense_solve(matrix, b):
    """Solve ``matrix x = b`` directly (LU), for small problems and tests.

    Parameters
    ----------
    matrix : torch.Tensor of shape (n, n)
    b : torch.Tensor of shape (n,)

    Returns
    -------
    x : torch.Tensor
    info : SolveInfo
        ``residual`` is the relative residual of the computed solution.

    Raises
    ------
    NonFiniteError
        When the matrix is singular or the solution is not finite.

    Notes
    -----
    ``b`` is normalised before the solve and the solution rescaled after, as
    in the iterative solvers.

    Examples
    --------
    >>> import torch
    >>> from skhyper.hypergrad import dense_solve
    >>> A = torch.tensor([[2.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    >>> x, info = dense_solve(A, torch.tensor([3.0, 1.0], dtype=torch.float64))
    >>> [round(float(value), 10) for value in x], info.solver
    ([1.0, 1.0], 'exact')
    """
    b, scale = _scaled_problem(b)
    if scale == 0.0:
        return torch.zeros_like(b), SolveInfo("exact", 0, 0.0, True, "zero rhs")
    _require_finite(matrix, "the matrix of the linear system")
    try:
        x = torch.linalg.solve(matrix, b)
    except RuntimeError as exc:  # an exactly singular matrix
        raise NonFiniteError(f"exact solve: the system is singular ({exc})") from exc
    residual = _norm(matrix @ x - b)
    if not math.isfinite(residual):
        raise NonFiniteError("exact solve: the solution is not finite")
    return x * scale, SolveInfo("exact", 1, residual, True, "direct solve")
