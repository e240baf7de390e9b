"""Matrix-free solvers for the linear system of implicit differentiation.

Every solver takes a callable ``matvec(v) -> A v`` on flat torch vectors, a
right-hand side ``b``, a warm start, a relative tolerance and an iteration cap,
and returns the solution together with a :class:`SolveInfo` record. The guards
are shared: a zero right-hand side returns an exact zero, and a non-finite
value or a breakdown stops the solver and is reported, never hidden.
"""

import math
import warnings
from dataclasses import dataclass

import torch

from ..exceptions import HypergradientWarning, NonFiniteError

__all__ = ["SolveInfo", "conjugate_gradient", "fixed_point", "gmres", "dense_solve"]


@dataclass
class SolveInfo:
    """Diagnostics of one linear-system solve.

    Attributes
    ----------
    solver : str
        Name of the solver (``"cg"``, ``"fp"``, ``"gmres"``, ``"exact"``).
    n_iter : int
        Iterations used (matrix-vector products for the iterative solvers).
    residual : float
        Final relative residual ``||b - A v|| / ||b||``.
    converged : bool
        Whether the residual met the tolerance.
    message : str
        What stopped the solver, in words.
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
        Maximum number of iterations.
    warn : bool, default=True
        Emit a :class:`~skhyper.exceptions.HypergradientWarning` when the solve
        does not converge.

    Returns
    -------
    x : torch.Tensor
        The iterate that met the tolerance, or the last finite one.
    info : SolveInfo
        Diagnostics. Non-positive curvature ``p^T A p <= 0`` (``A`` is not
        positive definite) stops the solver with ``converged=False``.

    Notes
    -----
    The right-hand side is normalised to unit norm before the iterations and
    the solution is rescaled after, so that tiny gradients in float32 do not
    underflow.
    """
    b, scale = _scaled_problem(b)
    if scale == 0.0:
        return torch.zeros_like(b), SolveInfo("cg", 0, 0.0, True, "zero rhs")
    x = torch.zeros_like(b) if x0 is None else x0.detach().to(b) / scale

    # Residual of the warm start.
    r = b - matvec(x) if x0 is not None else b.clone()
    rr = float(torch.dot(r.double(), r.double()))
    residual = math.sqrt(rr)
    if residual <= tol:
        return _finish("cg", x, scale, 0, residual, True, "warm start", warn)
    p = r.clone()
    for it in range(1, max_iter + 1):
        Ap = matvec(p)
        curvature = float(torch.dot(p.double(), Ap.double()))
        if not math.isfinite(curvature):
            raise NonFiniteError("conjugate gradient: A p is not finite")
        if curvature <= 0.0:
            return _finish(
                "cg",
                x,
                scale,
                it,
                residual,
                False,
                "non-positive curvature p^T A p <= 0: the system is not "
                "positive definite, so conjugate gradient does not apply",
                warn,
            )
        step = rr / curvature
        x = x + step * p
        r = r - step * Ap
        rr_new = float(torch.dot(r.double(), r.double()))
        residual = math.sqrt(rr_new)
        if residual <= tol:
            return _finish("cg", x, scale, it, residual, True, "tolerance met", warn)
        p = r + (rr_new / rr) * p
        rr = rr_new
    return _finish(
        "cg", x, scale, max_iter, residual, False, "iteration cap reached", warn
    )


def fixed_point(jtvec, b, *, x0=None, tol=1e-10, max_iter=100, warn=True):
    """Solve ``(I - J^T) x = b`` by the fixed-point iteration
    ``x <- J^T x + b``.

    Parameters
    ----------
    jtvec : callable
        ``jtvec(v)`` returns ``J^T v``, with ``J`` the Jacobian of the
        fixed-point map with respect to the inner weights.
    b, x0, tol, max_iter, warn
        As in :func:`conjugate_gradient`.

    Returns
    -------
    x : torch.Tensor
    info : SolveInfo

    Notes
    -----
    The iteration converges linearly at the contraction rate of the map; it is
    the linear-system counterpart of iterating the map itself. The residual of
    iterate ``x`` is ``J^T x + b - x``, the difference of two iterates.
    """
    b, scale = _scaled_problem(b)
    if scale == 0.0:
        return torch.zeros_like(b), SolveInfo("fp", 0, 0.0, True, "zero rhs")
    x = torch.zeros_like(b) if x0 is None else x0.detach().to(b) / scale
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


def gmres(matvec, b, *, x0=None, tol=1e-10, max_iter=100, restart=50, warn=True):
    """Solve ``A x = b`` for a general (non-symmetric) ``A`` by restarted GMRES.

    Parameters
    ----------
    matvec, b, x0, tol, max_iter, warn
        As in :func:`conjugate_gradient`; ``max_iter`` counts matrix-vector
        products.
    restart : int, default=50
        Size of the Krylov basis before a restart.

    Returns
    -------
    x : torch.Tensor
    info : SolveInfo

    Notes
    -----
    Arnoldi with modified Gram-Schmidt builds an orthonormal Krylov basis; the
    small least-squares problem is solved in float64 at every step so that the
    residual norm is known without forming ``x``. Breakdown (a zero new basis
    vector) means the exact solution lies in the current basis.
    """
    b, scale = _scaled_problem(b)
    if scale == 0.0:
        return torch.zeros_like(b), SolveInfo("gmres", 0, 0.0, True, "zero rhs")
    x = torch.zeros_like(b) if x0 is None else x0.detach().to(b) / scale
    n_iter = 0
    residual = math.inf
    while n_iter < max_iter:
        r = b - matvec(x) if (x0 is not None or n_iter > 0) else b.clone()
        beta = _norm(r)
        if not math.isfinite(beta):
            raise NonFiniteError("GMRES: the residual is not finite")
        residual = beta
        if beta <= tol:
            return _finish("gmres", x, scale, n_iter, beta, True, "tolerance met", warn)
        m = min(restart, max_iter - n_iter)
        basis = [r / beta]
        hess = torch.zeros(m + 1, m, dtype=torch.float64)
        e1 = torch.zeros(m + 1, dtype=torch.float64)
        e1[0] = beta
        y = None
        for j in range(m):
            w = matvec(basis[j])
            n_iter += 1
            # Modified Gram-Schmidt against the current basis.
            for i in range(j + 1):
                coefficient = float(torch.dot(w.double(), basis[i].double()))
                hess[i, j] = coefficient
                w = w - coefficient * basis[i]
            hess[j + 1, j] = _norm(w)
            if not math.isfinite(float(hess[j + 1, j])):
                raise NonFiniteError("GMRES: a Krylov vector is not finite")
            # Small least-squares problem min ||beta e1 - H y||.
            sub = hess[: j + 2, : j + 1]
            y = torch.linalg.lstsq(sub, e1[: j + 2, None]).solution[:, 0]
            residual = _norm(e1[: j + 2] - sub @ y)
            breakdown = float(hess[j + 1, j]) <= 1e-14 * beta
            if residual <= tol or breakdown:
                break
            basis.append(w / float(hess[j + 1, j]))
        stacked = torch.stack(basis[: y.shape[0]], dim=1)
        x = x + stacked @ y.to(dtype=stacked.dtype, device=stacked.device)
        if residual <= tol:
            return _finish(
                "gmres", x, scale, n_iter, residual, True, "tolerance met", warn
            )
    return _finish(
        "gmres", x, scale, n_iter, residual, False, "iteration cap reached", warn
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
    """
    b, scale = _scaled_problem(b)
    if scale == 0.0:
        return torch.zeros_like(b), SolveInfo("exact", 0, 0.0, True, "zero rhs")
    try:
        x = torch.linalg.solve(matrix, b)
    except RuntimeError as exc:  # singular matrix
        raise NonFiniteError(f"exact solve: the system is singular ({exc})") from exc
    residual = _norm(matrix @ x - b)
    if not math.isfinite(residual):
        raise NonFiniteError("exact solve: the solution is not finite")
    return x * scale, SolveInfo("exact", 1, residual, True, "direct solve")
