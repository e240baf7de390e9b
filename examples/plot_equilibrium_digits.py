"""
Equilibrium model on the digits
===============================

An equilibrium model trained by ITD, AID-FP and AID-GMRES.

Reproduces the equilibrium-model experiment of "On the Iteration Complexity of
Hypergradient Computation" (Grazzi et al., ICML 2020) on scikit-learn's digits
instead of MNIST. Each image ``x`` is represented by the fixed point of::

    w = Φ(w, λ) = tanh(A w + B x + c),        λ = (A, B, c),

and classified by a linear readout ``θ w + b``. The outer problem minimises the
training cross-entropy over ``(A, B, c, θ, b)``; its gradient with respect to
``(A, B, c)`` is a hypergradient, computed by skhyper's engine:

- ITD: reverse-mode differentiation through ``t`` iterations of ``Φ``;
- AID-FP: ``t`` iterations of ``Φ``, then ``k`` fixed-point iterations on the
  linear system ``(I - ∂_wΦᵀ) v = ∇_wE``;
- AID-GMRES: the same system by GMRES, since ``∂_wΦ = diag(1 - w²) A`` is not
  symmetric and conjugate gradient does not apply.

``Φ(·, λ)`` is a contraction when the spectral norm of ``A`` is below one
(``tanh`` is 1-Lipschitz). Each method is run twice: with a projection of ``A``
onto ``||A||₂ <= 0.95`` after every step (a contraction throughout), and without
it (marked †), where nothing keeps the map contractive.

Run ``python examples/plot_equilibrium_digits.py [--quick] [--out DIR]``.
"""

import argparse
import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from skhyper.exceptions import NonFiniteError
from skhyper.hypergrad import aid, itd

DTYPE = torch.float64
METHODS = ("ITD", "AID-FP", "AID-GMRES")
RADIUS = 0.95
COLORS = {"ITD": "tab:blue", "AID-FP": "tab:orange", "AID-GMRES": "tab:green"}
# Decreasing widths keep curves visible where the contractive runs coincide.
WIDTHS = {"ITD": 3.5, "AID-FP": 2.2, "AID-GMRES": 1.0}
# Sphinx-gallery runs the script from the examples folder, without __file__.
EXAMPLES = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
DEFAULT_OUT = EXAMPLES / "figures"
DESCRIPTION = "Equilibrium model on the digits, by ITD, AID-FP and AID-GMRES."


@contextlib.contextmanager
def single_thread():
    """Run torch on one thread inside the block.

    With these small matrices, two threads on two busy cores are slower than
    one: thread hand-offs cost more than they save.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def load_data(test_size=0.3, random_state=0):
    """The digits, pixels scaled to [0, 1], split with stratification.

    Returns
    -------
    X_train, X_test : torch.Tensor of shape (n, 64), float64
    y_train, y_test : torch.Tensor of shape (n,), int64

    Examples
    --------
    >>> X_train, X_test, y_train, y_test = load_data()
    >>> X_train.shape, X_test.shape
    (torch.Size([1257, 64]), torch.Size([540, 64]))
    """
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X / 16.0, y, test_size=test_size, stratify=y, random_state=random_state
    )
    return (
        torch.as_tensor(X_train, dtype=DTYPE),
        torch.as_tensor(X_test, dtype=DTYPE),
        torch.as_tensor(y_train),
        torch.as_tensor(y_test),
    )


# --------------------------------------------------------------------------
# The model: the map Φ, the readout and the projection.


def init_params(n_features, n_hidden, n_classes, random_state=0):
    """Initial parameters ``[A, B, c, θ, b]``.

    ``A`` is Gaussian rescaled to ``||A||₂ = 0.5`` (a contraction), ``B`` and
    ``θ`` Gaussian with variance one over their input size, ``c`` and ``b``
    zero.

    Examples
    --------
    >>> [tuple(p.shape) for p in init_params(64, 8, 10)]
    [(8, 8), (8, 64), (8,), (10, 8), (10,)]
    """
    generator = torch.Generator().manual_seed(random_state)

    def normal(*shape, scale):
        return scale * torch.randn(*shape, generator=generator, dtype=DTYPE)

    A = normal(n_hidden, n_hidden, scale=1.0)
    A = 0.5 * A / torch.linalg.matrix_norm(A, ord=2)
    B = normal(n_hidden, n_features, scale=1.0 / math.sqrt(n_features))
    theta = normal(n_classes, n_hidden, scale=1.0 / math.sqrt(n_hidden))
    zeros = torch.zeros(n_hidden, dtype=DTYPE), torch.zeros(n_classes, dtype=DTYPE)
    return [A, B, zeros[0], theta, zeros[1]]


def equilibrium_map(X):
    """The map ``Φ(W, λ) = tanh(W Aᵀ + X Bᵀ + c)``, one row of ``W`` per sample.

    Parameters
    ----------
    X : torch.Tensor of shape (n_samples, n_features)

    Returns
    -------
    fp_map : callable
        ``fp_map(W, params)`` with ``params = [A, B, c, θ, b]``.

    Notes
    -----
    ``∂_wΦ = diag(1 - Φ²) A`` row by row: not symmetric, and of norm at most
    ``||A||₂`` since ``0 < 1 - tanh² <= 1``; so ``||A||₂ < 1`` makes ``Φ(·, λ)``
    a contraction.

    Examples
    --------
    >>> params = init_params(3, 4, 2)
    >>> X = torch.ones(5, 3, dtype=DTYPE)
    >>> W = iterate(equilibrium_map(X), torch.zeros(5, 4, dtype=DTYPE), params, 200)
    >>> gap = equilibrium_map(X)(W, params) - W
    >>> bool(gap.abs().max() < 1e-12)
    True
    """

    def fp_map(W, params):
        A, B, c = params[:3]
        return torch.tanh(W @ A.T + X @ B.T + c)

    return fp_map


def readout_loss(y):
    """The outer loss: cross-entropy of the readout ``W θᵀ + b`` against ``y``.

    Returns
    -------
    outer_loss : callable
        ``outer_loss(W, params)``, the mean cross-entropy.
    """

    def outer_loss(W, params):
        theta, bias = params[3:]
        return torch.nn.functional.cross_entropy(W @ theta.T + bias, y)

    return outer_loss


def iterate(fp_map, W, params, n_steps):
    """``n_steps`` iterations ``W ← Φ(W, λ)``, without an autograd graph."""
    with torch.no_grad():
        for _ in range(n_steps):
            W = fp_map(W, params)
    return W


def project_spectral_norm(A, radius=RADIUS):
    """Euclidean projection of ``A`` onto ``{A : ||A||₂ <= radius}``.

    Notes
    -----
    With ``A = U diag(s) Vᵀ``, the projection in Frobenius norm is
    ``U diag(min(s, radius)) Vᵀ``: the singular values are clipped.

    Examples
    --------
    >>> A = torch.tensor([[2.0, 0.0], [0.0, 0.5]], dtype=DTYPE)
    >>> project_spectral_norm(A, radius=1.0)
    tensor([[1.0000, 0.0000],
            [0.0000, 0.5000]], dtype=torch.float64)
    """
    U, s, Vh = torch.linalg.svd(A)
    return (U * s.clamp(max=radius)) @ Vh


def accuracy(params, X, y, n_steps=100):
    """Share of ``y`` predicted by the readout after ``n_steps`` iterations of
    the map from zero."""
    W = torch.zeros(X.shape[0], params[0].shape[0], dtype=DTYPE)
    W = iterate(equilibrium_map(X), W, params, n_steps)
    predictions = (W @ params[3].T + params[4]).argmax(dim=1)
    return float((predictions == y).double().mean())


# --------------------------------------------------------------------------
# Training.


@dataclass
class TrainingRun:
    """The record of one training run.

    Attributes
    ----------
    method : str
    project : bool
        Whether ``A`` was projected onto ``||A||₂ <= RADIUS``.
    times, objectives, grad_norms : list of float
        Cumulative training time, training cross-entropy and hypergradient
        norm, per outer iteration.
    eval_iters, test_accuracies : list
        Test accuracy at a few outer iterations.
    spectral_norms : list of float
        ``||A||₂`` at the evaluation points.
    failure : str
        Why the run stopped early (a non-finite hypergradient), or "".
    """

    method: str
    project: bool
    times: list = field(default_factory=list)
    objectives: list = field(default_factory=list)
    grad_norms: list = field(default_factory=list)
    eval_iters: list = field(default_factory=list)
    test_accuracies: list = field(default_factory=list)
    spectral_norms: list = field(default_factory=list)
    failure: str = ""

    @property
    def label(self):
        """The method's name, marked † when ``A`` was not projected."""
        return self.method if self.project else f"{self.method} †"


def hypergradient_step(method, fp_map, outer_loss, W, params, n_inner, n_linsys):
    """One hypergradient by ``method``, from the warm start ``W``.

    Returns
    -------
    grads : list of torch.Tensor
        Gradients of the outer loss with respect to ``[A, B, c, θ, b]``.
    objective : float
        The outer loss at the ``t``-th iterate.
    W : torch.Tensor
        The ``t``-th iterate, the warm start of the next call.

    Notes
    -----
    Every method runs the same ``t = n_inner`` iterations of ``Φ`` from ``W``.
    ITD differentiates through them, taking ``W`` as independent of ``λ`` (a
    truncated ITD); AID solves ``(I - ∂_wΦᵀ) v = ∇_wE`` at the last iterate
    with ``k = n_linsys`` iterations.
    """
    if method == "ITD":
        result = itd(fp_map, outer_loss, W, params, n_inner)
    else:
        W = iterate(fp_map, W, params, n_inner)
        # GMRES, since ∂_wΦ is not symmetric and conjugate gradient does not
        # apply; the fixed-point solver needs no symmetry.
        solver = "fp" if method == "AID-FP" else "gmres"
        result = aid(
            fp_map,
            outer_loss,
            W,
            params,
            solver=solver,
            tol=1e-8,
            max_iter=n_linsys,
            warn=False,
        )
    return result.grad, result.outer_loss, result.w


def train(
    method,
    data,
    project=True,
    n_hidden=50,
    n_iter=200,
    n_inner=20,
    n_linsys=20,
    learning_rate=0.01,
    eval_every=20,
    random_state=0,
):
    """Train the equilibrium model by Adam on hypergradients from ``method``.

    Parameters
    ----------
    method : {"ITD", "AID-FP", "AID-GMRES"}
    data : tuple
        ``(X_train, X_test, y_train, y_test)`` from :func:`load_data`.
    project : bool, default=True
        Project ``A`` onto ``||A||₂ <= RADIUS`` after every step.
    n_hidden, n_iter, n_inner, n_linsys : int
        State size, outer iterations, map iterations ``t`` per hypergradient
        (warm-started from the previous state) and linear-system iterations
        ``k`` for AID.
    learning_rate : float
    eval_every : int
        Outer iterations between two test-accuracy evaluations.

    Returns
    -------
    run : TrainingRun
    """
    X_train, X_test, y_train, y_test = data
    n_classes = int(y_train.max()) + 1
    params = init_params(X_train.shape[1], n_hidden, n_classes, random_state)
    fp_map, outer_loss = equilibrium_map(X_train), readout_loss(y_train)
    W = torch.zeros(X_train.shape[0], n_hidden, dtype=DTYPE)
    optimizer = torch.optim.Adam(params, lr=learning_rate)
    run = TrainingRun(method, project)
    elapsed = 0.0
    for it in range(1, n_iter + 1):
        start = time.perf_counter()
        try:
            grads, objective, W = hypergradient_step(
                method, fp_map, outer_loss, W, params, n_inner, n_linsys
            )
        except NonFiniteError as exc:
            run.failure = f"iteration {it}: {exc}"
        if not run.failure:
            # The outer step, then the projection that keeps Φ contractive.
            for p, g in zip(params, grads):
                p.grad = g
            optimizer.step()
            if project:
                with torch.no_grad():
                    params[0].copy_(project_spectral_norm(params[0]))
            elapsed += time.perf_counter() - start
            run.times.append(elapsed)
            run.objectives.append(objective)
            run.grad_norms.append(math.sqrt(sum(float((g**2).sum()) for g in grads)))
        if it % eval_every == 0 or it == n_iter or run.failure:
            run.eval_iters.append(it)
            run.test_accuracies.append(accuracy(params, X_test, y_test))
            run.spectral_norms.append(float(torch.linalg.matrix_norm(params[0], 2)))
        if run.failure:
            break
    return run


def run_all(data, **kwargs):
    """The six runs: every method, with and without the projection.

    ``kwargs`` go to :func:`train`.
    """
    runs = []
    with single_thread():
        for project in (True, False):
            for method in METHODS:
                runs.append(train(method, data, project=project, **kwargs))
    return runs


# --------------------------------------------------------------------------
# Figure and command line.


def plot_runs(runs, path):
    """Training objective against time; test accuracy and hypergradient norm
    against iterations.

    Saves the figure to ``path`` and returns it, still open, so that a
    documentation build can show it.
    """
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for run in runs:
        style = dict(
            color=COLORS[run.method],
            linewidth=WIDTHS[run.method],
            linestyle="-" if run.project else "--",
            label=run.label,
        )
        iterations = np.arange(1, len(run.objectives) + 1)
        axes[0].plot(run.times, run.objectives, **style)
        axes[1].plot(run.eval_iters, run.test_accuracies, marker="o", ms=3, **style)
        axes[2].plot(iterations, run.grad_norms, **style)
    axes[0].set(xlabel="time (s)", ylabel="training cross-entropy", yscale="log")
    axes[1].set(xlabel="outer iterations", ylabel="test accuracy")
    axes[2].set(xlabel="outer iterations", ylabel="hypergradient norm", yscale="log")
    for ax in axes:
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8, title="† : no projection of A", title_fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return fig


def main(argv=None):
    """Train the six models, print their test accuracy, write the figure.

    Returns
    -------
    runs : list of TrainingRun
    """
    # Sphinx-gallery runs the script with an empty __doc__: no description from it.
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, seconds")
    parser.add_argument("--out", default=DEFAULT_OUT, help="folder of the figure")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    data = load_data()
    if args.quick:
        settings = dict(n_hidden=20, n_iter=30, n_inner=10, n_linsys=10, eval_every=10)
    else:
        settings = dict(n_hidden=50, n_iter=200, n_inner=20, n_linsys=20)
    runs = run_all(data, **settings)
    for run in runs:
        objective = run.objectives[-1] if run.objectives else math.nan
        elapsed = run.times[-1] if run.times else 0.0
        status = f" (stopped: {run.failure})" if run.failure else ""
        print(
            f"{run.label:12s} test accuracy {run.test_accuracies[-1]:.4f}  "
            f"objective {objective:.2e}  ||A||₂ {run.spectral_norms[-1]:.3f}  "
            f"time {elapsed:.1f} s{status}"
        )
    path = out / "equilibrium_digits.png"
    plot_runs(runs, path)
    print(f"wrote {path}")
    return runs


if __name__ == "__main__":
    main()
