"""One entry point to every hypergradient method, for the estimators."""

from ._aid import AID_SOLVERS, aid, exact
from ._itd import itd

__all__ = ["METHODS", "hypergradient"]

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
        Linear-system settings of AID (see :func:`aid`). ``exact`` ignores
        them; ITD takes ``max_iter`` as its default ``n_steps`` and ``tol``
        as the tolerance of its truncation estimate (:func:`itd`), and never
        warns.
    n_steps : int, default=None
        ITD iterations ``t``; defaults to ``max_iter``.

    Returns
    -------
    result : HypergradResult

    See Also
    --------
    aid, exact, itd : the methods themselves.

    Notes
    -----
    AID and ``exact`` approximate ``∇f(λ)`` at the inner solution given; ITD
    returns the exact gradient of ``E(w_t(λ), λ)`` after ``t`` steps of the
    map from ``w``. Their errors are bounded in Grazzi et al. (2020).

    Examples
    --------
    >>> import torch
    >>> from skhyper.hypergrad import hypergradient
    >>> lam = torch.tensor(2.0, dtype=torch.float64)
    >>> fp_map = lambda w, lam: 0.5 * w + lam  # fixed point w = 2 λ
    >>> outer = lambda w, lam: w.sum()  # f(λ) = 2 λ
    >>> w = torch.tensor([4.0], dtype=torch.float64)
    >>> [round(float(hypergradient(fp_map, outer, w, lam, method=m).grad), 8)
    ...  for m in ("cg", "fp", "gmres", "exact")]
    [2.0, 2.0, 2.0, 2.0]
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
        return itd(fp_map, outer_loss, w, hparams, steps, mode=mode, tol=tol)
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")
