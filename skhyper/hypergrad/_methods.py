"""Hypergradients of a bilevel problem defined by a fixed-point map.

The lower level is ``w(λ) = Φ(w(λ), λ)`` and the upper level is
``f(λ) = E(w(λ), λ)``. By the implicit function theorem

    ∇f(λ) = ∇_λE + ∂_λΦᵀ v,    (I - ∂_wΦᵀ) v = ∇_wE,

evaluated at ``w(λ)``. AID solves the linear system with an iterative solver
(:func:`aid`), ``exact`` with a dense solve (:func:`exact`), and ITD
differentiates through ``t`` iterations of the map (:func:`itd`).
"""

import math
from dataclasses import dataclass

import torch

from ..exceptions import NonFiniteError
from ._linsys import (
    SolveInfo,
    conjugate_gradient,
    dense_solve,
    fixed_point,
    gmres,
)

__all__ = ["HypergradResult", "aid", "exact", "itd", "hypergradient"]

AID_SOLVERS = ("cg", "fp", "gmres")


@dataclass
class HypergradResult:
    """What a hypergradient computation returns.

    Attributes
    ----------
    grad : torch.Tensor or list of torch.Tensor
        The hypergradient, with the structure of the hyperparameters given.
    info : SolveInfo
        Diagnostics: method, iterations, final relative residual, converged.
    outer_loss : float
        The outer loss ``E(w, λ)`` at the weights used.
    w : torch.Tensor
        The inner weights the hypergradient was evaluated at (for ITD, the
        last iterate of the map).
    v : torch.Tensor or None
        Solution of the linear system (AID and exact), reusable as the warm
        start of the next solve.
    """

    grad: object
    info: SolveInfo
    outer_loss: float
    w: torch.Tensor
    v: object = None


# --------------------------------------------------------------------------
# Shared plumbing: hyperparameter structure and finiteness checks.


def _as_list(hparams):
    if isinstance(hparams, torch.Tensor):
        return [hparams], False
    return list(hparams), True


def _restructure(grads, was_list):
    return grads if was_list else grads[0]


def _leaf_copies(tensors):
    return [t.detach().clone().requires_grad_(True) for t in tensors]


def _check_finite(tensor, step):
    if not bool(torch.isfinite(tensor).all()):
        raise NonFiniteError(f"non-finite value in {step}")


def _fill_none(grads, like):
    return [torch.zeros_like(t) if g is None else g for g, t in zip(grads, like)]


def _outer_gradients(outer_loss, w_leaf, hp_leaves):
    """Return ``E``, ``∇_wE`` and ``∇_λE`` at one point."""
    with torch.enable_grad():
        value = outer_loss(w_leaf, _hp_arg(hp_leaves))
    _check_finite(value.detach(), "the outer loss E(w, λ)")
    grads = torch.autograd.grad(value, [w_leaf, *hp_leaves], allow_unused=True)
    grads = _fill_none(grads, [w_leaf, *hp_leaves])
    _check_finite(grads[0], "the gradient of the outer loss with respect to w")
    for g in grads[1:]:
        _check_finite(g, "the gradient of the outer loss with respect to λ")
    return float(value.detach()), grads[0], grads[1:]


def _hp_arg(hp_leaves):
    # The maps receive hyperparameters in the structure the user gave; the
    # structure is recorded on the list itself by :func:`_prepare`.
    return hp_leaves if getattr(hp_leaves, "as_list", True) else hp_leaves[0]


class _HpList(list):
    as_list = True


def _prepare(w, hparams):
    hp_list, was_list = _as_list(hparams)
    _check_finite(w.detach(), "the inner weights w")
    for h in hp_list:
        _check_finite(h.detach(), "the hyperparameters λ")
    hp_leaves = _HpList(_leaf_copies(hp_list))
    hp_leaves.as_list = was_list
    return hp_leaves, was_list


# --------------------------------------------------------------------------
# Approximate implicit differentiation.


def _symmetry_gap(jtvec, n, like):
    """Relative asymmetry of ``J`` from two random probes: ``z·Jᵀu - u·Jᵀz``."""
    generator = torch.Generator().manual_seed(0)
    u = torch.randn(n, generator=generator, dtype=torch.float64).to(like)
    z = torch.randn(n, generator=generator, dtype=torch.float64).to(like)
    jtu, jtz = jtvec(u), jtvec(z)
    gap = abs(float(z.double() @ jtu.double()) - float(u.double() @ jtz.double()))
    norm = torch.linalg.vector_norm
    scale = float(norm(jtu.double()) * norm(z.double())) + float(
        norm(jtz.double()) * norm(u.double())
    )
    return gap / scale if scale > 0 else 0.0


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
        The hyperparameters ``λ``.
    solver : {"cg", "fp", "gmres"}, default="cg"
        Linear-system solver: conjugate gradient (``∂_wΦ`` must be symmetric),
        the fixed-point iteration, or restarted GMRES for non-symmetric maps.
    tol : float, default=1e-10
        Relative residual tolerance of the linear system.
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

    Notes
    -----
    The three steps of AID: (1) the inner solution ``w`` is given; (2) solve
    ``(I - ∂_wΦᵀ) v = ∇_wE`` with ``k`` iterations; (3) return
    ``∇_λE + ∂_λΦᵀ v``. Each iteration costs one vector-Jacobian product of
    ``Φ``; memory does not grow with ``k`` or with the inner iterations.

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

    # Step 1: the inner solution, as a leaf of a fresh graph.
    w_leaf = w.detach().clone().requires_grad_(True)
    loss_value, grad_w, grad_hp = _outer_gradients(outer_loss, w_leaf, hp_leaves)
    with torch.enable_grad():
        phi = fp_map(w_leaf, _hp_arg(hp_leaves))
    _check_finite(phi.detach(), "the fixed-point map Φ(w, λ)")

    def jtvec(v):
        (out,) = torch.autograd.grad(
            phi, w_leaf, v.reshape(phi.shape), retain_graph=True
        )
        return out.reshape(-1)

    # Step 2: the linear system (I - ∂_wΦᵀ) v = ∇_wE.
    rhs = grad_w.reshape(-1)
    n = rhs.numel()
    if solver == "cg" and check_symmetry and n > 1:
        gap = _symmetry_gap(jtvec, n, rhs)
        limit = 1e-6 if rhs.dtype == torch.float64 else 1e-3
        if gap > limit:
            raise ValueError(
                "AID-CG needs a symmetric Jacobian ∂_wΦ, but this map's is not "
                f"symmetric (relative asymmetry {gap:.1e}); use solver='gmres' "
                "or solver='fp' (or hypergrad='itd')."
            )
    start = None if v0 is None else v0.reshape(-1)
    if solver == "cg":
        v, info = conjugate_gradient(
            lambda x: x - jtvec(x),
            rhs,
            x0=start,
            tol=tol,
            max_iter=max_iter,
            warn=warn,
        )
    elif solver == "fp":
        v, info = fixed_point(
            jtvec, rhs, x0=start, tol=tol, max_iter=max_iter, warn=warn
        )
    else:
        v, info = gmres(
            lambda x: x - jtvec(x),
            rhs,
            x0=start,
            tol=tol,
            max_iter=max_iter,
            restart=min(max_iter, 50),
            warn=warn,
        )
    _check_finite(v, "the solution v of the linear system")

    # Step 3: the hypergradient ∇_λE + ∂_λΦᵀ v.
    grads = _mixed_product(phi, hp_leaves, v.reshape(phi.shape), grad_hp)
    return HypergradResult(
        _restructure(grads, was_list), info, loss_value, w.detach(), v.detach()
    )


def _mixed_product(phi, hp_leaves, v, grad_hp):
    """Return ``∇_λE + ∂_λΦᵀ v`` for every hyperparameter tensor."""
    if float(torch.linalg.vector_norm(v.double())) == 0.0:
        cross = [torch.zeros_like(h) for h in hp_leaves]
    else:
        cross = torch.autograd.grad(phi, list(hp_leaves), v, allow_unused=True)
        cross = _fill_none(cross, hp_leaves)
    grads = [(g + c).detach() for g, c in zip(grad_hp, cross)]
    for g in grads:
        _check_finite(g, "the hypergradient ∇_λE + ∂_λΦᵀ v")
    return grads


def exact(fp_map, outer_loss, w, hparams):
    """Hypergradient with the linear system solved directly.

    Forms ``I - ∂_wΦᵀ`` densely (one vector-Jacobian product per inner weight)
    and solves it by LU. For small problems and as a reference in tests.

    Parameters
    ----------
    fp_map, outer_loss, w, hparams
        As in :func:`aid`.

    Returns
    -------
    result : HypergradResult
    """
    hp_leaves, was_list = _prepare(w, hparams)

    # Step 1: the inner solution, as a leaf of a fresh graph.
    w_leaf = w.detach().clone().requires_grad_(True)
    loss_value, grad_w, grad_hp = _outer_gradients(outer_loss, w_leaf, hp_leaves)
    with torch.enable_grad():
        phi = fp_map(w_leaf, _hp_arg(hp_leaves))
    _check_finite(phi.detach(), "the fixed-point map Φ(w, λ)")

    # Step 2: the dense matrix I - ∂_wΦᵀ, column by column, and its solve.
    n = w_leaf.numel()
    identity = torch.eye(n, dtype=w_leaf.dtype, device=w_leaf.device)
    columns = [
        torch.autograd.grad(
            phi, w_leaf, identity[i].reshape(phi.shape), retain_graph=True
        )[0].reshape(-1)
        for i in range(n)
    ]
    jacobian_t = torch.stack(columns, dim=1)  # column i is ∂_wΦᵀ e_i
    v, info = dense_solve(identity - jacobian_t, grad_w.reshape(-1))
    _check_finite(v, "the solution v of the linear system")

    # Step 3: the hypergradient.
    grads = _mixed_product(phi, hp_leaves, v.reshape(phi.shape), grad_hp)
    return HypergradResult(
        _restructure(grads, was_list), info, loss_value, w.detach(), v.detach()
    )


# --------------------------------------------------------------------------
# Iterative differentiation.


def itd(fp_map, outer_loss, w0, hparams, n_steps, *, mode="reverse", truncate=None):
    """Hypergradient by iterative differentiation (ITD).

    Runs ``t = n_steps`` iterations ``w_i = Φ(w_{i-1}, λ)`` from ``w0`` and
    returns the exact gradient of ``E(w_t(λ), λ)``.

    Parameters
    ----------
    fp_map, outer_loss, hparams
        As in :func:`aid`.
    w0 : torch.Tensor
        Starting point, treated as independent of ``λ`` (a warm start).
    n_steps : int
        Number of iterations ``t``.
    mode : {"reverse", "forward"}, default="reverse"
        Reverse mode keeps the ``t`` iterations in memory (memory grows with
        ``t``); forward mode propagates ``dw/dλ`` alongside the iterations
        (cost grows with the number of hyperparameters, memory does not grow
        with ``t``).
    truncate : int, default=None
        Reverse mode only: differentiate through the last ``truncate``
        iterations alone (the first ones are run without a graph).

    Returns
    -------
    result : HypergradResult
        ``info.residual`` is the relative size of the last step,
        ``||w_t - w_{t-1}|| / ||w_t||``.

    Notes
    -----
    The ITD hypergradient is the exact gradient of the approximate objective
    ``f_t(λ) = E(w_t(λ), λ)``; it converges to ``∇f(λ)`` linearly in ``t``
    when ``Φ(·, λ)`` is a contraction.
    """
    if mode not in ("reverse", "forward"):
        raise ValueError(f"mode must be 'reverse' or 'forward', got {mode!r}")
    n_steps = int(n_steps)
    if n_steps < 1:
        raise ValueError(f"n_steps must be at least 1, got {n_steps}")
    hp_leaves, was_list = _prepare(w0, hparams)
    if mode == "forward":
        grads, w, loss_value, step = _itd_forward(
            fp_map, outer_loss, w0, hp_leaves, n_steps
        )
    else:
        grads, w, loss_value, step = _itd_reverse(
            fp_map, outer_loss, w0, hp_leaves, n_steps, truncate
        )
    size = float(torch.linalg.vector_norm(w.double()))
    residual = step / size if size > 0 else step
    info = SolveInfo(f"itd-{mode}", n_steps, residual, True, f"{n_steps} steps")
    return HypergradResult(_restructure(grads, was_list), info, loss_value, w)


def _itd_reverse(fp_map, outer_loss, w0, hp_leaves, n_steps, truncate):
    n_tracked = n_steps if truncate is None else min(int(truncate), n_steps)
    frozen = [h.detach() for h in hp_leaves]
    if not getattr(hp_leaves, "as_list", True):
        frozen = frozen[0]

    # Step 1: the untracked iterations, then the tracked ones.
    w = w0.detach()
    previous = w
    with torch.enable_grad():
        for _ in range(n_steps - n_tracked):
            previous = w
            w = fp_map(w, frozen).detach()
        for _ in range(n_tracked):
            previous = w
            w = fp_map(w, _hp_arg(hp_leaves))
        _check_finite(w.detach(), "the ITD iterates w_t")
        value = outer_loss(w, _hp_arg(hp_leaves))
    _check_finite(value.detach(), "the outer loss E(w_t, λ)")

    # Step 2: reverse-mode differentiation through the tracked iterations.
    grads = torch.autograd.grad(value, list(hp_leaves), allow_unused=True)
    grads = [g.detach() for g in _fill_none(grads, hp_leaves)]
    for g in grads:
        _check_finite(g, "the ITD hypergradient")
    step = float(torch.linalg.vector_norm((w - previous).detach().double()))
    return grads, w.detach(), float(value.detach()), step


def _itd_forward(fp_map, outer_loss, w0, hp_leaves, n_steps):
    sizes = [h.numel() for h in hp_leaves]
    n_hp = sum(sizes)
    w = w0.detach()
    # tangents[:, j] = dw_i / dλ_j (flattened), zero at the warm start.
    tangents = torch.zeros(w.numel(), n_hp, dtype=w.dtype, device=w.device)
    step = 0.0
    for _ in range(n_steps):
        w_leaf = w.clone().requires_grad_(True)
        with torch.enable_grad():
            phi = fp_map(w_leaf, _hp_arg(hp_leaves))
            # Jacobian-vector products through the double-backward trick:
            # g(u) = [∂_wΦᵀ u, ∂_λΦᵀ u] is linear in u, and the gradient of
            # g(u)·(z, e_j) with respect to u is ∂_wΦ z + ∂_λΦ e_j.
            dummy = torch.zeros_like(phi, requires_grad=True)
            vjps = torch.autograd.grad(
                phi, [w_leaf, *hp_leaves], dummy, create_graph=True, allow_unused=True
            )
        vjp_w = vjps[0]
        vjp_hp = torch.cat(
            [
                (torch.zeros_like(h) if g is None else g).reshape(-1)
                for g, h in zip(vjps[1:], hp_leaves)
            ]
        )
        columns = []
        for j in range(n_hp):
            with torch.enable_grad():
                total = (vjp_w.reshape(-1) * tangents[:, j]).sum() + vjp_hp[j]
            if total.requires_grad:
                (col,) = torch.autograd.grad(
                    total, dummy, retain_graph=True, allow_unused=True
                )
            else:
                col = None
            columns.append(torch.zeros_like(phi) if col is None else col)
        tangents = torch.stack([c.reshape(-1) for c in columns], dim=1).detach()
        step = float(torch.linalg.vector_norm((phi.detach() - w).double()))
        w = phi.detach()
        _check_finite(w, "the ITD iterates w_t")
        _check_finite(tangents, "the forward-mode tangents dw_t/dλ")

    # The chain rule at w_t: ∇_λE + (dw_t/dλ)ᵀ ∇_wE.
    w_leaf = w.clone().requires_grad_(True)
    loss_value, grad_w, grad_hp = _outer_gradients(outer_loss, w_leaf, hp_leaves)
    flat = torch.cat([g.reshape(-1) for g in grad_hp]) + tangents.T @ grad_w.reshape(-1)
    _check_finite(flat, "the ITD hypergradient")
    grads = [piece.reshape(h.shape) for piece, h in zip(flat.split(sizes), hp_leaves)]
    return grads, w, loss_value, step


# --------------------------------------------------------------------------
# One entry point for the estimators.

METHODS = ("cg", "fp", "gmres", "exact", "itd", "itd-forward")


def hypergradient(
    fp_map,
    outer_loss,
    w,
    hparams,
    *,
    method="cg",
    tol=1e-10,
    max_iter=100,
    n_steps=None,
    v0=None,
    warn=True,
):
    """Hypergradient by any of the engine's methods.

    Parameters
    ----------
    fp_map, outer_loss, hparams
        As in :func:`aid`.
    w : torch.Tensor
        For AID and ``exact``, the inner solution; for ITD, the starting point
        of the ``n_steps`` iterations.
    method : {"cg", "fp", "gmres", "exact", "itd", "itd-forward"}, default="cg"
        AID-CG, AID-FP, AID with GMRES, a dense solve, reverse-mode ITD,
        forward-mode ITD.
    tol, max_iter, v0, warn
        Linear-system settings of AID (see :func:`aid`).
    n_steps : int, default=None
        ITD iterations ``t``; defaults to ``max_iter``.

    Returns
    -------
    result : HypergradResult
    """
    if method in AID_SOLVERS:
        return aid(
            fp_map,
            outer_loss,
            w,
            hparams,
            solver=method,
            tol=tol,
            max_iter=max_iter,
            v0=v0,
            warn=warn,
        )
    if method == "exact":
        return exact(fp_map, outer_loss, w, hparams)
    if method in ("itd", "itd-forward"):
        mode = "forward" if method == "itd-forward" else "reverse"
        steps = max_iter if n_steps is None else n_steps
        return itd(fp_map, outer_loss, w, hparams, steps, mode=mode)
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def relative_error(estimate, reference):
    """``||estimate - reference|| / ||reference||`` over (lists of) tensors."""
    est, _ = _as_list(estimate)
    ref, _ = _as_list(reference)
    num = math.sqrt(sum(float(((a - b) ** 2).sum()) for a, b in zip(est, ref)))
    den = math.sqrt(sum(float((b**2).sum()) for b in ref))
    return num / den if den > 0 else num
