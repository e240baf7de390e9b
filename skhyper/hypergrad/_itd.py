"""Iterative differentiation: the exact gradient of ``t`` steps of the map."""

import math

import torch

from ._common import (
    HypergradResult,
    _check_finite,
    _grad_or_zeros,
    _hp_arg,
    _outer_gradients,
    _prepare,
    _restructure,
)
from ._linsys import SolveInfo

__all__ = ["itd"]


def itd(
    fp_map, outer_loss, w0, hparams, n_steps, *, mode="reverse", truncate=None, tol=None
):
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
        Number of iterations ``t``, at least 1.
    mode : {"reverse", "forward"}, default="reverse"
        Reverse mode keeps the ``t`` iterations in memory (memory grows with
        ``t``); forward mode propagates ``dw/dλ`` alongside the iterations
        (cost grows with the number of hyperparameters, memory does not grow
        with ``t``).
    truncate : int, default=None
        Reverse mode only: differentiate through the last ``truncate``
        iterations alone (the first ones are run without a graph), at least 1.
    tol : float, default=None
        Tolerance on the estimated relative truncation error of the
        hypergradient (see Notes); ``None`` reports every run as converged.

    Returns
    -------
    result : HypergradResult
        ``info.residual`` is the relative size of the last step,
        ``||w_t - w_{t-1}|| / ||w_t||``; ``info.converged`` says whether the
        truncation estimate is at most ``tol``, and ``info.message`` gives
        it.

    Raises
    ------
    NonFiniteError
        When a NaN or an infinity appears; the message names the step.

    Notes
    -----
    The ITD hypergradient is the exact gradient of the approximate objective
    ``f_t(λ) = E(w_t(λ), λ)``; it converges to ``∇f(λ)`` linearly in ``t``
    when ``Φ(·, λ)`` is a contraction. Reverse mode back-propagates
    ``∇_wE`` through the stored iterates; forward mode carries the Jacobian
    ``dw_i/dλ = ∂_wΦ dw_{i-1}/dλ + ∂_λΦ`` forward, one column per
    hyperparameter.

    Near the fixed point both modes sum the first ``t`` terms of the series
    ``Σ_s (∂_wΦ)^s``; with a contraction of rate ``q`` the rest is ``q^t``
    of the whole. The ratio of the last term to the first estimates it:
    ``||(∂_wΦᵀ)^t ∇_wE|| / ||∇_wE||`` in reverse mode (the gradient reaching
    the first differentiated iterate), and the last change of ``dw/dλ``
    over its first in forward mode. When ``Φ`` contracts slowly (a gradient
    step on an ill-conditioned problem) that estimate stays near one and a
    few hundred steps give a hypergradient far from ``∇f``, even of the
    wrong sign; ``tol`` turns the estimate into ``info.converged``.

    Examples
    --------
    >>> import torch
    >>> from skhyper.hypergrad import itd
    >>> lam = torch.tensor(2.0, dtype=torch.float64)
    >>> fp_map = lambda w, lam: 0.5 * w + lam  # w_t = (2 - 2^(1-t)) λ from 0
    >>> outer = lambda w, lam: w.sum()
    >>> w0 = torch.zeros(1, dtype=torch.float64)
    >>> float(itd(fp_map, outer, w0, lam, 3).grad)  # 2 - 2^(-2)
    1.75
    >>> float(itd(fp_map, outer, w0, lam, 3, mode="forward").grad)
    1.75
    """
    if mode not in ("reverse", "forward"):
        raise ValueError(f"mode must be 'reverse' or 'forward', got {mode!r}")
    n_steps = int(n_steps)
    if n_steps < 1:
        raise ValueError(f"n_steps must be at least 1, got {n_steps}")
    if truncate is not None:
        if mode == "forward":
            raise ValueError("truncate applies to mode='reverse' only")
        truncate = int(truncate)
        if truncate < 1:
            raise ValueError(f"truncate must be at least 1, got {truncate}")
    hp_leaves, was_list = _prepare(w0, hparams)
    if mode == "forward":
        grads, w, loss_value, step, tail = _itd_forward(
            fp_map, outer_loss, w0, hp_leaves, n_steps
        )
    else:
        n_tracked = n_steps if truncate is None else min(truncate, n_steps)
        grads, w, loss_value, step, tail = _itd_reverse(
            fp_map, outer_loss, w0, hp_leaves, n_steps, n_tracked
        )
    size = float(torch.linalg.vector_norm(w.double()))
    residual = step / size if size > 0 else step
    converged = tol is None or tail <= tol
    message = f"{n_steps} steps, estimated truncation error {tail:.1e}"
    info = SolveInfo(f"itd-{mode}", n_steps, residual, converged, message)
    return HypergradResult(_restructure(grads, was_list), info, loss_value, w)


def _itd_reverse(fp_map, outer_loss, w0, hp_leaves, n_steps, n_tracked):
    frozen = [h.detach() for h in hp_leaves]
    if not hp_leaves.as_list:
        frozen = frozen[0]

    # Step 1: the untracked iterations, then the tracked ones on a graph
    # from a first iterate that is a leaf, for the truncation estimate.
    w = w0.detach()
    with torch.enable_grad():
        for _ in range(n_steps - n_tracked):
            w = fp_map(w, frozen).detach()
        first = w.clone().requires_grad_(True)
        w = previous = first
        for _ in range(n_tracked):
            previous = w
            w = fp_map(w, _hp_arg(hp_leaves))
        _check_finite(w.detach(), "the ITD iterates w_t")
        value = outer_loss(w, _hp_arg(hp_leaves))
    _check_finite(value.detach(), "the outer loss E(w_t, λ)")

    # Step 2: reverse-mode differentiation through the tracked iterations;
    # the gradients at w_t and at the first iterate give the estimate.
    *grads, at_first, at_last = (
        g.detach() for g in _grad_or_zeros(value, [*hp_leaves, first, w])
    )
    for g in grads:
        _check_finite(g, "the ITD hypergradient")
    step = float(torch.linalg.vector_norm((w - previous).detach().double()))
    tail = _ratio(at_first, at_last)
    return grads, w.detach(), float(value.detach()), step, tail


def _ratio(numerator, denominator):
    """``||numerator|| / ||denominator||``, zero when both are zero."""
    top = float(torch.linalg.vector_norm(numerator.double()))
    bottom = float(torch.linalg.vector_norm(denominator.double()))
    return top / bottom if bottom > 0 else (0.0 if top == 0 else math.inf)


def _forward_step(fp_map, w, hp_leaves, tangents):
    """One step of ``w`` and of ``dw/dλ`` (columns of ``tangents``)."""
    w_leaf = w.clone().requires_grad_(True)
    # Everything below builds graphs through the dummy cotangent, so autograd
    # must be on even when the caller switched it off.
    with torch.enable_grad():
        phi = fp_map(w_leaf, _hp_arg(hp_leaves))
        # Jacobian-vector products by the double-backward trick: the
        # vector-Jacobian product g(u) = [∂_wΦᵀ u, ∂_λΦᵀ u] is linear in u,
        # so the gradient of g(u)·(z, e_j) with respect to u is
        # ∂_wΦ z + ∂_λΦ e_j, the new column j.
        dummy = torch.zeros_like(phi, requires_grad=True)
        vjps = torch.autograd.grad(
            phi, [w_leaf, *hp_leaves], dummy, create_graph=True, allow_unused=True
        )
        vjp_w = torch.zeros_like(w_leaf) if vjps[0] is None else vjps[0]
        vjp_hp = torch.cat(
            [
                (torch.zeros_like(h) if g is None else g).reshape(-1)
                for g, h in zip(vjps[1:], hp_leaves)
            ]
        )
        columns = []
        for j in range(tangents.shape[1]):
            total = (vjp_w.reshape(-1) * tangents[:, j]).sum() + vjp_hp[j]
            (column,) = _grad_or_zeros(total, [dummy], retain_graph=True)
            columns.append(column.reshape(-1))
    return phi.detach(), torch.stack(columns, dim=1).detach()


def _itd_forward(fp_map, outer_loss, w0, hp_leaves, n_steps):
    sizes = [h.numel() for h in hp_leaves]
    w = w0.detach()

    # Step 1: the iterations, with tangents[:, j] = dw_i / dλ_j (flattened),
    # zero at the warm start.
    tangents = torch.zeros(w.numel(), sum(sizes), dtype=w.dtype, device=w.device)
    step, first_change, tail = 0.0, None, 0.0
    for _ in range(n_steps):
        w_new, new_tangents = _forward_step(fp_map, w, hp_leaves, tangents)
        step = float(torch.linalg.vector_norm((w_new - w).double()))
        # The truncation estimate: the last change of dw/dλ over the first.
        change = new_tangents - tangents
        first_change = change if first_change is None else first_change
        tail = _ratio(change, first_change)
        w, tangents = w_new, new_tangents
        _check_finite(w, "the ITD iterates w_t")
        _check_finite(tangents, "the forward-mode tangents dw_t/dλ")

    # Step 2: the chain rule at w_t, ∇_λE + (dw_t/dλ)ᵀ ∇_wE.
    w_leaf = w.clone().requires_grad_(True)
    loss_value, grad_w, grad_hp = _outer_gradients(outer_loss, w_leaf, hp_leaves)
    flat = torch.cat([g.reshape(-1) for g in grad_hp])
    flat = flat + tangents.T.to(flat.dtype) @ grad_w.reshape(-1).to(flat.dtype)
    _check_finite(flat, "the ITD hypergradient")
    grads = [piece.reshape(h.shape) for piece, h in zip(flat.split(sizes), hp_leaves)]
    return grads, w, loss_value, step, tail
