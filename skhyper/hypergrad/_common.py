"""What every hypergradient method shares: the result record, the handling of
hyperparameters given as a tensor or a list of tensors, and the finiteness
checks that name the step where a NaN or an infinity appeared."""

import math
from dataclasses import dataclass

import torch

from ..exceptions import NonFiniteError
from ._linsys import SolveInfo

__all__ = ["HypergradResult", "relative_error"]


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
        Solution of the linear system (AID and exact), flattened, reusable as
        the warm start ``v0`` of the next solve; None for ITD.

    Notes
    -----
    ``grad`` approximates ``∇f(λ)`` with ``f(λ) = E(w(λ), λ)`` and ``w(λ)`` the
    fixed point of ``Φ(·, λ)``; how well depends on the method and on ``info``.

    Examples
    --------
    >>> import torch
    >>> from skhyper.hypergrad import exact
    >>> lam = torch.tensor(1.0, dtype=torch.float64)
    >>> w = torch.tensor([0.5], dtype=torch.float64)
    >>> result = exact(lambda w, lam: 0.5 * (w + lam), lambda w, lam: w.sum(), w, lam)
    >>> float(result.grad), result.info.solver, result.outer_loss
    (1.0, 'exact', 0.5)
    """

    grad: object
    info: SolveInfo
    outer_loss: float
    w: torch.Tensor
    v: object = None


class _HpList(list):
    """The hyperparameter leaves, remembering whether the user gave a list."""

    as_list = True


def _as_list(hparams):
    if isinstance(hparams, torch.Tensor):
        return [hparams], False
    return list(hparams), True


def _restructure(grads, was_list):
    return grads if was_list else grads[0]


def _hp_arg(hp_leaves):
    # The maps receive the hyperparameters in the structure the user gave.
    return hp_leaves if hp_leaves.as_list else hp_leaves[0]


def _check_finite(tensor, step):
    if not bool(torch.isfinite(tensor).all()):
        raise NonFiniteError(f"non-finite value in {step}")


def _fill_none(grads, like):
    return [torch.zeros_like(t) if g is None else g for g, t in zip(grads, like)]


def _grad_or_zeros(value, inputs, retain_graph=False):
    """``∂value/∂inputs``, with zeros where ``value`` does not depend on them."""
    if not value.requires_grad:
        return [torch.zeros_like(t) for t in inputs]
    grads = torch.autograd.grad(
        value, inputs, retain_graph=retain_graph, allow_unused=True
    )
    return _fill_none(grads, inputs)


def _prepare(w, hparams):
    """Check the inputs and return fresh leaves for the hyperparameters.

    The leaves are copies: the user's tensors are never modified, and any
    graph they belong to is cut.
    """
    hp_list, was_list = _as_list(hparams)
    if not isinstance(w, torch.Tensor) or not w.is_floating_point():
        raise TypeError("the inner weights w must be a floating-point torch tensor")
    for h in hp_list:
        if not isinstance(h, torch.Tensor) or not h.is_floating_point():
            raise TypeError(
                "hparams must be a floating-point torch tensor or a list of them"
            )
        # A float32 λ next to float64 w would silently compute the λ-dependent
        # parts in float32, a precision loss no tolerance can see. (A float64 λ
        # next to float32 w loses nothing and is allowed.)
        if torch.finfo(h.dtype).bits < torch.finfo(w.dtype).bits:
            raise TypeError(
                f"the hyperparameters have dtype {h.dtype}, less precise than "
                f"the inner weights' {w.dtype}; give them the dtype of w"
            )
    _check_finite(w.detach(), "the inner weights w")
    for h in hp_list:
        _check_finite(h.detach(), "the hyperparameters λ")
    hp_leaves = _HpList(h.detach().clone().requires_grad_(True) for h in hp_list)
    hp_leaves.as_list = was_list
    return hp_leaves, was_list


def _outer_gradients(outer_loss, w_leaf, hp_leaves):
    """Return ``E``, ``∇_wE`` and ``∇_λE`` at one point."""
    with torch.enable_grad():
        value = outer_loss(w_leaf, _hp_arg(hp_leaves))
    _check_finite(value.detach(), "the outer loss E(w, λ)")
    grads = _grad_or_zeros(value, [w_leaf, *hp_leaves])
    _check_finite(grads[0], "the gradient of the outer loss with respect to w")
    for g in grads[1:]:
        _check_finite(g, "the gradient of the outer loss with respect to λ")
    return float(value.detach()), grads[0], grads[1:]


def relative_error(estimate, reference):
    """Relative distance between two hypergradients.

    Parameters
    ----------
    estimate, reference : torch.Tensor or list of torch.Tensor
        Hypergradients with the same structure.

    Returns
    -------
    error : float
        ``||estimate - reference|| / ||reference||``, the norms taken over all
        the tensors together; the absolute error when ``reference`` is zero.

    Notes
    -----
    The sums are taken in float64, so that float32 inputs do not overflow.

    Examples
    --------
    >>> import torch
    >>> from skhyper.hypergrad import relative_error
    >>> relative_error(torch.tensor([3.0, 4.5]), torch.tensor([3.0, 4.0]))
    0.1
    """
    est, _ = _as_list(estimate)
    ref, _ = _as_list(reference)
    if len(est) != len(ref):
        raise ValueError(f"{len(est)} tensors compared with {len(ref)}")
    num = math.sqrt(
        sum(float(((a.double() - b.double()) ** 2).sum()) for a, b in zip(est, ref))
    )
    den = math.sqrt(sum(float((b.double() ** 2).sum()) for b in ref))
    return num / den if den > 0 else num
