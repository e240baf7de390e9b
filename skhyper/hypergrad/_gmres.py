"""Restarted GMRES, the solver of the implicit-differentiation system when the
Jacobian of the fixed-point map is not symmetric."""

import math

import numpy as np
import torch

from ..exceptions import NonFiniteError
from ._linsys import (
    SolveInfo,
    _check_settings,
    _finish,
    _norm,
    _residual,
    _scaled_problem,
    _start,
)

__all__ = ["gmres"]


def _arnoldi_cycle(matvec, r, beta, m, tol):
    """Up to ``m`` Arnoldi steps from ``r`` (of norm ``beta``); return the
    update of ``x``, the steps used and whether the basis broke down."""
    basis = [r / beta]
    hess = torch.zeros(m + 1, m, dtype=torch.float64)
    e1 = torch.zeros(m + 1, dtype=torch.float64)
    e1[0] = beta
    breakdown = False
    for j in range(m):
        w = matvec(basis[j])
        # Modified Gram-Schmidt against the current basis.
        for i in range(j + 1):
            coefficient = float(torch.dot(w.double(), basis[i].double()))
            hess[i, j] = coefficient
            w = w - coefficient * basis[i]
        hess[j + 1, j] = _norm(w)
        if not math.isfinite(float(hess[j + 1, j])):
            raise NonFiniteError("GMRES: a Krylov vector is not finite")
        # The small least-squares problem min ||beta e1 - H y||, in float64,
        # by numpy's LAPACK driver: torch's lstsq gave run-to-run differences
        # on identical inputs, which made GMRES results irreproducible.
        sub = hess[: j + 2, : j + 1]
        y = torch.from_numpy(
            np.linalg.lstsq(sub.numpy(), e1[: j + 2].numpy(), rcond=None)[0]
        )
        estimate = _norm(e1[: j + 2] - sub @ y)
        # A zero new vector: the Krylov space is invariant under A.
        breakdown = float(hess[j + 1, j]) <= 1e-14 * beta
        if estimate <= tol or breakdown:
            break
        basis.append(w / float(hess[j + 1, j]))
    stacked = torch.stack(basis[: y.shape[0]], dim=1)
    update = stacked @ y.to(dtype=stacked.dtype, device=stacked.device)
    return update, j + 1, breakdown


def gmres(matvec, b, *, x0=None, tol=1e-10, max_iter=100, restart=50, warn=True):
    """Solve ``A x = b`` for a general (non-symmetric) ``A`` by restarted GMRES.

    Parameters
    ----------
    matvec, b, x0, tol, max_iter, warn
        As in :func:`conjugate_gradient`; ``max_iter`` counts the products
        with ``A`` that build the Krylov bases.
    restart : int, default=50
        Size of the Krylov basis before a restart.

    Returns
    -------
    x : torch.Tensor
    info : SolveInfo

    Raises
    ------
    NonFiniteError
        When ``b``, ``x0`` or a product with ``A`` is not finite.

    Notes
    -----
    Arnoldi with modified Gram-Schmidt builds an orthonormal Krylov basis of
    at most ``restart`` vectors; the small least-squares problem is solved in
    float64. At the end of each cycle the true residual ``b - A x`` (one
    extra product) decides convergence and starts the next cycle. A breakdown
    (a zero new basis vector) means the solution lies in the current basis;
    when the true residual still misses the tolerance and no longer
    decreases, ``A`` is singular or too ill-conditioned, and the solver stops
    with ``converged=False``.

    Examples
    --------
    >>> import torch
    >>> from skhyper.hypergrad import gmres
    >>> A = torch.tensor([[2.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    >>> b = torch.tensor([3.0, 1.0], dtype=torch.float64)
    >>> x, info = gmres(lambda v: A @ v, b)
    >>> [round(float(value), 10) for value in x], info.n_iter, info.converged
    ([1.0, 1.0], 2, True)
    """
    tol, max_iter = _check_settings(tol, max_iter)
    if int(restart) != restart or restart < 1:
        raise ValueError(f"restart must be a positive integer, got {restart!r}")
    b, scale = _scaled_problem(b)
    if scale == 0.0:
        return torch.zeros_like(b), SolveInfo("gmres", 0, 0.0, True, "zero rhs")
    x = _start(b, x0, scale)
    r, residual = _residual(matvec, b, x) if x0 is not None else (b.clone(), 1.0)
    n_iter = 0
    message = "warm start"
    while True:
        if not math.isfinite(residual):
            raise NonFiniteError("GMRES: the residual is not finite")
        if residual <= tol:
            return _finish("gmres", x, scale, n_iter, residual, True, message, warn)
        if n_iter >= max_iter:
            break
        m = min(int(restart), max_iter - n_iter)
        update, used, breakdown = _arnoldi_cycle(matvec, r, residual, m, tol)
        n_iter += used
        x = x + update
        previous = residual
        r, residual = _residual(matvec, b, x)
        message = "tolerance met"
        # After a breakdown the cycle found the best x in an invariant space;
        # another cycle helps only if this one still made progress (it
        # refines a solution hit by rounding, not a singular system).
        if breakdown and residual > max(tol, 0.5 * previous):
            message = (
                "breakdown: the Krylov space is invariant and the residual "
                "stopped decreasing above the tolerance (a singular or "
                "ill-conditioned system, or a tolerance below rounding)"
            )
            return _finish("gmres", x, scale, n_iter, residual, False, message, warn)
    return _finish(
        "gmres", x, scale, n_iter, residual, False, "iteration cap reached", warn
    )
