"""Implicit differentiation: the linear system solved iteratively or densely.

The lower level is ``w(λ) = Φ(w(λ), λ)`` and the upper level is
``f(λ) = E(w(λ), λ)``. By the implicit function theorem

    ∇f(λ) = ∇_λE + ∂_λΦᵀ v,    (I - ∂_wΦᵀ) v = ∇_wE,

evaluated at ``w(λ)``. :func:`aid` solves the linear system with an iterative
solver and :func:`exact` with a dense one.
"""

import torch

from ._common import (
    HypergradResult,
    _check_finite,
    _fill_none,
    _hp_arg,
    _outer_gradients,
    _prepare,
    _restructure,
)
from ._gmres import gmres
from ._linsys import conjugate_gradient, dense_solve, fixed_point

__all__ = ["AID_SOLVERS", "aid", "exact"]

AID_SOLVERS = ("cg", "fp", "gmres")


# The smallest relative residual asked of the linear system, in machine
# epsilons of its precision: float32 systems stall near 1e-5 whatever the
# iteration cap (measured on kernel ridge and per-feature ridge).
PRECISION_FLOOR = 100


def _linearise(fp_map, outer_loss, w, hp_leaves):
    """Evaluate ``E`` and ``Φ`` at ``w`` on a fresh graph.

    Returns the outer loss value, ``∇_wE``, ``∇_λE``, the map's output and a
    callable ``u -> ∂_wΦᵀ u`` on flat vectors.
    """
    w_leaf = w.detach().clone().requires_grad_(True)
    loss_value, grad_w, grad_hp = _outer_gradients(outer_loss, w_leaf, hp_leaves)
    with torch.enable_grad():
        phi = fp_map(w_leaf, _hp_arg(hp_leaves))
    if not isinstance(phi, torch.Tensor) or phi.shape != w_leaf.shape:
        raise ValueError(
            "the fixed-point map must return a tensor shaped like w, "
            f"{tuple(w_leaf.shape)}"
        )
    _check_finite(phi.detach(), "the fixed-point map Φ(w, λ)")

    def jtvec(u):
        if not phi.requires_grad:
            return torch.zeros_like(u)
        (out,) = torch.autograd.grad(
            phi,
            w_leaf,
            u.reshape(phi.shape).to(phi.dtype),
            retain_graph=True,
            allow_unused=True,
        )
        return torch.zeros_like(u) if out is None else out.reshape(-1)

    return loss_value, grad_w, grad_hp, phi, jtvec


def _symmetry_gap(matvec, n, like):
    """Relative asymmetry of ``A`` from two random probes: ``|z·Au - u·Az|``
    over ``||Au|| ||z|| + ||Az|| ||u||``."""
    # Measured on A = I - ∂_wΦᵀ, the operator CG sees, not on ∂_wΦ itself: a
    # Jacobian at rounding level (a map nearly constant in w) would otherwise
    # look arbitrarily asymmetric although A is the identity.
    generator = torch.Generator().manual_seed(0)
    u = torch.randn(n, generator=generator, dtype=torch.float64).to(like)
    z = torch.randn(n, generator=generator, dtype=torch.float64).to(like)
    au, az = matvec(u).double(), matvec(z).double()
    gap = abs(float(z.double() @ au) - float(u.double() @ az))
    norm = torch.linalg.vector_norm
    scale = float(norm(au) * norm(z.double()) + norm(az) * norm(u.double()))
    return gap / scale if scale > 0 else 0.0


def _solve_adjoint(jtvec, rhs, solver, tol, max_iter, v0, warn):
    """Solve ``(I - ∂_wΦᵀ) v = rhs`` with the named iterative solver."""

    def matvec(x):
        return x - jtvec(x)

    start = None if v0 is None else v0.reshape(-1)
    if solver == "cg":
        return conjugate_gradient(
            matvec, rhs, x0=start, tol=tol, max_iter=max_iter, warn=warn
        )
    if solver == "fp":
        return fixed_point(jtvec, rhs, x0=start, tol=tol, max_iter=max_iter, warn=warn)
    return gmres(
        matvec,
        rhs,
        x0=start,
        tol=tol,
        max_iter=max_iter,
        restart=min(max_iter, 50),
        warn=warn,
    )


def _mixed_product(phi, hp_leaves, v, grad_hp):
    """Return ``∇_λE + ∂_λΦᵀ v`` for every hyperparameter tensor."""
    if not phi.requires_grad or float(torch.linalg.vector_norm(v.double())) == 0.0:
        cross = [torch.zeros_like(h) for h in hp_leaves]
    else:
        cross = torch.autograd.grad(
            phi, list(hp_leaves), v.reshape(phi.shape).to(phi.dtype), allow_unused=True
        )
        cross = _fill_none(cross, hp_leaves)
    grads = [(g + c).detach() for g, c in zip(grad_hp, cross)]
    for g in grads:
        _check_finite(g, "the hypergradient ∇_λE + ∂_λΦᵀ v")
    return grads


def aid(
    fp_map,
    outer_loss,
    w,
    hparams,
    *,
    solver="cg",
    tol=1e-10,
    max_iter=100,
    v0=None,
    check_symmetry=True,
    warn=True,
):
    """Hypergradient by approximate implicit differentiation (AID).

    Parameters
    ----------
    fp_map : callable
        ``fp_map(w, hparams) -> tensor`` shaped like ``w``: the map ``Φ`` whose
        fixed point is the inner solution.
    outer_loss : callable
        ``outer_loss(w, hparams) -> scalar tensor``: the validation loss ``E``.
    w : torch.Tensor
        Approximate inner solution ``w_t(λ)``, from any solver.
    hparams : torch.Tensor or list of torch.Tensor
        The hyperparameters ``λ``, floating point, at least as precise as
        ``w``.
    solver : {"cg", "fp", "gmres"}, default="cg"
        Linear-system solver: conjugate gradient (``∂_wΦ`` must be symmetric),
        the fixed-point iteration, or restarted GMRES for non-symmetric maps.
    tol : float, default=1e-10
        Relative residual tolerance of the linear system, raised to
        ``PRECISION_FLOOR`` machine epsilons of its precision (1.2e-5 in
        float32), below which round-off stalls the residual.
    max_iter : int, default=100
        Iteration cap ``k`` of the linear-system solver.
    v0 : torch.Tensor, default=None
        Warm start of the linear system, e.g. the ``v`` of the previous call.
    check_symmetry : bool, default=True
        With ``solver="cg"``, probe ``∂_wΦ`` with two random vectors and
        refuse a non-symmetric map, for which conjugate gradient is invalid.
    warn : bool, default=True
        Warn when the linear system does not converge.

    Returns
    -------
    result : HypergradResult

    Raises
    ------
    NonFiniteError
        When a NaN or an infinity appears; the message names the step.
    ValueError
        When ``solver="cg"`` is asked of a map with a non-symmetric Jacobian.
    TypeError
        When the hyperparameters are less precise than ``w``.

    See Also
    --------
    exact : the same linear system solved densely.
    itd : differentiation through the iterations instead.

    Notes
    -----
    The three steps of AID: (1) the inner solution ``w`` is given; (2) solve
    ``(I - ∂_wΦᵀ) v = ∇_wE`` with at most ``k`` iterations; (3) return
    ``∇_λE + ∂_λΦᵀ v``. Each iteration costs one vector-Jacobian product of
    ``Φ``; memory does not grow with ``k`` or with the inner iterations.
    Conjugate gradient applies when ``∂_wΦ`` is symmetric with eigenvalues
    below one, as for the gradient-step map of a strongly convex loss; the
    fixed-point iteration when ``Φ`` is a contraction; GMRES in general.

    Examples
    --------
    >>> import torch
    >>> from skhyper.hypergrad import aid, gradient_step_map
    >>> target = torch.tensor([1.0, 2.0], dtype=torch.float64)
    >>> train = lambda w, lam: 0.5 * ((w - target) ** 2).sum() + 0.5 * lam * w @ w
    >>> val = lambda w, lam: 0.5 * (w**2).sum()
    >>> lam = torch.tensor(1.0, dtype=torch.float64)
    >>> w = target / (1 + lam)  # the inner solution in closed form
    >>> result = aid(gradient_step_map(train, 0.5), val, w, lam)
    >>> round(float(result.grad), 6)  # d/dλ of ||target||² / (2 (1 + λ)²)
    -0.625
    """
    if solver not in AID_SOLVERS:
        raise ValueError(f"solver must be one of {AID_SOLVERS}, got {solver!r}")
    hp_leaves, was_list = _prepare(w, hparams)

    # Step 1: the inner solution w is given; linearise E and Φ around it.
    loss_value, grad_w, grad_hp, phi, jtvec = _linearise(
        fp_map, outer_loss, w, hp_leaves
    )

    # Step 2: the linear system (I - ∂_wΦᵀ) v = ∇_wE.
    rhs = grad_w.reshape(-1)
    if solver == "cg" and check_symmetry and rhs.numel() > 1:
        # Two probes cost two products and catch a non-symmetric J with
        # probability one; the limit sits far above rounding in each dtype,
        # and below it CG's error from the asymmetry is negligible.
        gap = _symmetry_gap(lambda x: x - jtvec(x), rhs.numel(), rhs)
        limit = 1e-8 if rhs.dtype == torch.float64 else 1e-3
        if gap > limit:
            raise ValueError(
                "AID-CG needs a symmetric Jacobian ∂_wΦ, but this map's is not "
                f"symmetric (relative asymmetry {gap:.1e}); use solver='gmres' "
                "or solver='fp' (or hypergrad='itd')."
            )
    tol = max(tol, PRECISION_FLOOR * torch.finfo(rhs.dtype).eps)
    v, info = _solve_adjoint(jtvec, rhs, solver, tol, max_iter, v0, warn)
    _check_finite(v, "the solution v of the linear system")

    # Step 3: the hypergradient ∇_λE + ∂_λΦᵀ v.
    grads = _mixed_product(phi, hp_leaves, v, grad_hp)
    return HypergradResult(
        _restructure(grads, was_list), info, loss_value, w.detach(), v.detach()
    )


def exact(fp_map, outer_loss, w, hparams):
    """Hypergradient with the linear system solved directly.

    Parameters
    ----------
    fp_map, outer_loss, w, hparams
        As in :func:`aid`.

    Returns
    -------
    result : HypergradResult
        ``info.residual`` is the relative residual of the dense solve.

    Raises
    ------
    NonFiniteError
        When a NaN or an infinity appears, or ``I - ∂_wΦᵀ`` is singular.

    Notes
    -----
    Forms ``I - ∂_wΦᵀ`` densely, one vector-Jacobian product per inner weight
    (``n`` products and ``n²`` memory), and solves it by LU. Exact up to
    rounding at the given ``w``, whatever the symmetry of ``∂_wΦ``; for small
    problems and as a reference in tests.

    Examples
    --------
    >>> import torch
    >>> from skhyper.hypergrad import exact
    >>> lam = torch.tensor(2.0, dtype=torch.float64)
    >>> fp_map = lambda w, lam: 0.5 * w + lam  # fixed point w = 2 λ
    >>> outer = lambda w, lam: w.sum() ** 2  # E = 4 λ², dE/dλ = 8 λ
    >>> float(exact(fp_map, outer, torch.tensor([4.0], dtype=torch.float64), lam).grad)
    16.0
    """
    hp_leaves, was_list = _prepare(w, hparams)

    # Step 1: the inner solution w is given; linearise E and Φ around it.
    loss_value, grad_w, grad_hp, phi, jtvec = _linearise(
        fp_map, outer_loss, w, hp_leaves
    )

    # Step 2: the dense matrix I - ∂_wΦᵀ, column by column, and its solve.
    n = grad_w.numel()
    identity = torch.eye(n, dtype=grad_w.dtype, device=grad_w.device)
    jacobian_t = torch.stack([jtvec(identity[i]) for i in range(n)], dim=1)
    v, info = dense_solve(identity - jacobian_t, grad_w.reshape(-1))
    _check_finite(v, "the solution v of the linear system")

    # Step 3: the hypergradient ∇_λE + ∂_λΦᵀ v.
    grads = _mixed_product(phi, hp_leaves, v, grad_hp)
    return HypergradResult(
        _restructure(grads, was_list), info, loss_value, w.detach(), v.detach()
    )
