"""Fixed-point maps built from training losses."""

import torch

__all__ = ["gradient_step_map"]


def gradient_step_map(train_loss, step_size):
    """Turn a training loss into its gradient-step fixed-point map.

    Parameters
    ----------
    train_loss : callable
        ``train_loss(w, hparams) -> scalar tensor``, the regularised training
        loss ``ℓ(w, λ)``; ``hparams`` is whatever the engine is given (a tensor
        or a list of tensors).
    step_size : float
        The step ``η``. The map is a contraction when ``0 < η < 2 / L`` on a
        strongly convex loss whose gradient is ``L``-Lipschitz; ``η = 1 / L``
        is the usual choice.

    Returns
    -------
    fp_map : callable
        ``fp_map(w, hparams) = w - η ∇_w ℓ(w, hparams)``, differentiable in
        both arguments (the gradient is taken with ``create_graph=True``).

    Notes
    -----
    The Jacobian ``∂_wΦ = I - η ∇²_w ℓ`` is symmetric, so the linear system of
    implicit differentiation can be solved by conjugate gradient; its fixed
    point is the minimiser of ``ℓ(·, λ)``.

    Examples
    --------
    >>> import torch
    >>> from skhyper.hypergrad import gradient_step_map
    >>> loss = lambda w, lam: 0.5 * ((w - 3.0) ** 2).sum() + 0.5 * lam * (w**2).sum()
    >>> phi = gradient_step_map(loss, step_size=0.5)
    >>> w = torch.zeros(2, dtype=torch.float64)
    >>> for _ in range(60):
    ...     w = phi(w, torch.tensor(1.0, dtype=torch.float64)).detach()
    >>> w
    tensor([1.5000, 1.5000], dtype=torch.float64)
    """
    step_size = float(step_size)
    if not step_size > 0:
        raise ValueError(f"step_size must be positive, got {step_size!r}")

    def fp_map(w, hparams):
        if not w.requires_grad:
            w = w.detach().requires_grad_(True)
        with torch.enable_grad():
            loss = train_loss(w, hparams)
            (grad_w,) = torch.autograd.grad(loss, w, create_graph=True)
        return w - step_size * grad_w

    return fp_map
