"""
Hypergradient error against the number of iterations
====================================================

The error of ITD, AID-FP and AID-CG on four bilevel problems.

Reproduces the synthetic experiment of "On the Iteration Complexity of
Hypergradient Computation" (Grazzi, Franceschi, Pontil, Salzo, ICML 2020) with
skhyper's engine. In each problem the inner solution ``w(λ)`` is the fixed point
of one gradient step ``Φ(w, λ) = w - η ∇_w ℓ(w, λ)`` on a training loss, and
``f(λ) = E(w(λ), λ)`` is a validation loss. After ``t`` iterations of ``Φ`` from
zero, the script measures the error ``||∇f(λ) - ĝ(λ)||`` of

- ITD: reverse-mode differentiation through the ``t`` iterations;
- AID-FP with ``k = t`` and ``k = 10`` fixed-point iterations on the linear
  system, at the ``t``-th iterate;
- AID-CG with ``k = t`` and ``k = 10`` conjugate-gradient iterations;

against a reference: the inner problem solved to machine precision by Newton's
method, then the linear system solved densely (:func:`skhyper.hypergrad.exact`).
Every ``Φ`` is a contraction with the symmetric Jacobian ``I - η ∇²ℓ``: the step
is ``η = 1 / L``, with ``L`` a bound on the curvature of ``ℓ(·, λ)``.

Run ``python examples/plot_hypergradient_error.py [--quick] [--out DIR]``.
"""

import argparse
import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from skhyper.hypergrad import aid, exact, gradient_step_map, itd

DTYPE = torch.float64
K_FIXED = 10
METHODS = ("ITD", "AID-FP k = t", "AID-FP k = 10", "AID-CG k = t", "AID-CG k = 10")
STYLES = {
    "ITD": dict(color="tab:blue", linestyle="-"),
    "AID-FP k = t": dict(color="tab:orange", linestyle="-"),
    "AID-FP k = 10": dict(color="tab:orange", linestyle="--"),
    "AID-CG k = t": dict(color="tab:green", linestyle="-"),
    "AID-CG k = 10": dict(color="tab:green", linestyle="--"),
}
# Sphinx-gallery runs the script from the examples folder, without __file__.
EXAMPLES = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
DEFAULT_OUT = EXAMPLES / "figures"
DESCRIPTION = "Hypergradient error against t for ITD, AID-FP and AID-CG."


@contextlib.contextmanager
def single_thread():
    """Run torch on one thread inside the block.

    These tensors are tiny: on two busy cores, two threads made ITD ten times
    slower than one (measured), thread hand-offs costing more than they save.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _tensor(array):
    return torch.as_tensor(np.asarray(array), dtype=DTYPE)


def _half_mse(predictions, targets):
    return 0.5 * ((predictions - targets) ** 2).mean()


def _largest_eigenvalue(matrices):
    return float(torch.linalg.eigvalsh(matrices)[..., -1].max())


# --------------------------------------------------------------------------
# The four bilevel problems. Each holds generated data and gives its training
# loss ℓ(w, λ), its validation loss E(w, λ), a bound L on the curvature of
# ℓ(·, λ), the shape of w, and random draws of λ.


class LogisticRegression:
    """Logistic regression with one penalty ``exp(λ_j)`` per feature.

    Notes
    -----
    ``ℓ(w, λ) = mean_i log(1 + exp(-y_i x_iᵀ w)) + ½ Σ_j exp(λ_j) w_j²`` and
    ``E`` is the mean log loss on validation data. The Hessian of the data term
    is ``Xᵀ D X / n`` with ``D <= 1/4``, so ``L = λ_max(XᵀX / n) / 4 +
    max_j exp(λ_j)``.

    Examples
    --------
    >>> problem = LogisticRegression(n_samples=20, n_features=3)
    >>> hparams = problem.draw_hparams(np.random.default_rng(0))
    >>> tuple(hparams.shape), problem.w_shape
    ((3,), (3,))
    """

    name = "Logistic regression"

    def __init__(
        self, n_samples=100, n_features=50, log_penalty=(-6.0, -3.0), random_state=0
    ):
        rng = np.random.default_rng(random_state)
        X = rng.standard_normal((2 * n_samples, n_features))
        coef = rng.standard_normal(n_features) * (rng.random(n_features) < 0.5)
        y = np.where(X @ coef + 0.5 * rng.standard_normal(2 * n_samples) >= 0, 1, -1)
        self.X_train, self.X_val = _tensor(X[:n_samples]), _tensor(X[n_samples:])
        self.y_train, self.y_val = _tensor(y[:n_samples]), _tensor(y[n_samples:])
        self.log_penalty = log_penalty
        self.w_shape = (n_features,)
        gram = self.X_train.T @ self.X_train / n_samples
        self._data_curvature = _largest_eigenvalue(gram) / 4

    def draw_hparams(self, rng):
        return _tensor(rng.uniform(*self.log_penalty, size=self.w_shape))

    def train_loss(self, w, hparams):
        margins = self.y_train * (self.X_train @ w)
        penalty = 0.5 * (torch.exp(hparams) * w**2).sum()
        return torch.nn.functional.softplus(-margins).mean() + penalty

    def outer_loss(self, w, hparams):
        margins = self.y_val * (self.X_val @ w)
        return torch.nn.functional.softplus(-margins).mean()

    def curvature_bound(self, hparams):
        return self._data_curvature + float(torch.exp(hparams).max())


class KernelRidge:
    """Kernel ridge regression in the dual, ``λ = (log penalty, log γ)``.

    Notes
    -----
    With the Gaussian kernel ``K_ij = exp(-γ ||x_i - x_j||²)`` and penalty
    ``μ``, ``ℓ(w, λ) = ½ wᵀ (K + μ I) w - yᵀ w`` (minimised at
    ``(K + μ I)⁻¹ y``) and ``E`` is half the mean squared validation error of
    ``K_val w``. The curvature is ``L = λ_max(K) + μ``.

    Examples
    --------
    >>> problem = KernelRidge(n_samples=10)
    >>> problem.w_shape
    (10,)
    """

    name = "Kernel ridge regression"

    def __init__(self, n_samples=100, n_features=5, random_state=0):
        rng = np.random.default_rng(random_state)
        X = rng.uniform(-1.0, 1.0, size=(2 * n_samples, n_features))
        y = np.sin(3 * X[:, 0]) + X[:, 1] ** 2 + 0.1 * rng.standard_normal(len(X))
        X_train, X_val = _tensor(X[:n_samples]), _tensor(X[n_samples:])
        self.y_train, self.y_val = _tensor(y[:n_samples]), _tensor(y[n_samples:])
        # Squared distances, computed once: the kernel is exp(-γ d²).
        self._dist_train = torch.cdist(X_train, X_train) ** 2
        self._dist_val = torch.cdist(X_val, X_train) ** 2
        self.w_shape = (n_samples,)

    def draw_hparams(self, rng):
        return _tensor([rng.uniform(-1.25, -0.75), rng.uniform(0.25, 0.75)])

    def train_loss(self, w, hparams):
        gram = torch.exp(-torch.exp(hparams[1]) * self._dist_train)
        quadratic = 0.5 * w @ (gram @ w) + 0.5 * torch.exp(hparams[0]) * w @ w
        return quadratic - self.y_train @ w

    def outer_loss(self, w, hparams):
        kernel = torch.exp(-torch.exp(hparams[1]) * self._dist_val)
        return _half_mse(kernel @ w, self.y_val)

    def curvature_bound(self, hparams):
        gram = torch.exp(-torch.exp(hparams[1]) * self._dist_train)
        return _largest_eigenvalue(gram) + float(torch.exp(hparams[0]))


def _multitask_data(rng, coef, n_samples, noise=0.1):
    """Per-task Gaussian inputs and linear targets, split into train and val."""
    n_tasks, n_features = coef.shape
    X = rng.standard_normal((n_tasks, 2 * n_samples, n_features))
    y = np.einsum("tnd,td->tn", X, coef) + noise * rng.standard_normal(X.shape[:2])
    X, y = _tensor(X), _tensor(y)
    return X[:, :n_samples], X[:, n_samples:], y[:, :n_samples], y[:, n_samples:]


class BiasedRegularization:
    """Ridge regression on every task, pulled towards a shared bias ``λ``.

    Notes
    -----
    ``w`` stacks one weight vector per task; ``ℓ(w, λ) = Σ_t [½ mean_i
    (x_tiᵀ w_t - y_ti)² + (β/2) ||w_t - λ||²]`` and ``E`` sums the tasks' half
    mean squared validation errors. ``L = max_t λ_max(X_tᵀX_t / n) + β``. The
    Jacobian ``∂_wΦ`` does not depend on ``λ``, so ITD and AID-FP with ``k = t``
    compute the same sum and coincide.

    Examples
    --------
    >>> BiasedRegularization(n_tasks=2, n_samples=4, n_features=3).w_shape
    (2, 3)
    """

    name = "Biased regularization"

    def __init__(
        self, n_tasks=10, n_samples=10, n_features=20, strength=0.6, random_state=0
    ):
        rng = np.random.default_rng(random_state)
        center = rng.standard_normal(n_features)
        coef = center + 0.3 * rng.standard_normal((n_tasks, n_features))
        self.X_train, self.X_val, self.y_train, self.y_val = _multitask_data(
            rng, coef, n_samples
        )
        self.strength, self.n_features = strength, n_features
        self.w_shape = (n_tasks, n_features)

    def draw_hparams(self, rng):
        return _tensor(rng.standard_normal(self.n_features))

    def train_loss(self, w, hparams):
        residuals = torch.einsum("tnd,td->tn", self.X_train, w) - self.y_train
        data_fit = 0.5 * (residuals**2).mean(dim=1).sum()
        return data_fit + 0.5 * self.strength * ((w - hparams) ** 2).sum()

    def outer_loss(self, w, hparams):
        predictions = torch.einsum("tnd,td->tn", self.X_val, w)
        return _half_mse(predictions, self.y_val) * self.w_shape[0]

    def curvature_bound(self, hparams):
        gram = torch.einsum("tnd,tne->tde", self.X_train, self.X_train)
        return _largest_eigenvalue(gram / self.X_train.shape[1]) + self.strength


class HyperRepresentation:
    """Ridge regression of every task on a shared linear representation ``λ``.

    Notes
    -----
    ``λ`` is a ``(n_features, n_components)`` matrix; ``ℓ(w, λ) = Σ_t [½ mean_i
    (x_tiᵀ λ w_t - y_ti)² + (β/2) ||w_t||²]`` and ``E`` sums the tasks' half
    mean squared validation errors. ``L = max_t λ_max(λᵀX_tᵀX_t λ / n) + β``.

    Examples
    --------
    >>> HyperRepresentation(n_tasks=2, n_samples=4, n_features=3).w_shape
    (2, 5)
    """

    name = "Hyper-representation"

    def __init__(
        self,
        n_tasks=10,
        n_samples=20,
        n_features=15,
        n_components=5,
        strength=0.1,
        random_state=0,
    ):
        rng = np.random.default_rng(random_state)
        basis = rng.standard_normal((n_features, n_components))
        coef = rng.standard_normal((n_tasks, n_components)) @ basis.T
        self.X_train, self.X_val, self.y_train, self.y_val = _multitask_data(
            rng, coef, n_samples
        )
        self.strength = strength
        self.w_shape = (n_tasks, n_components)

    def draw_hparams(self, rng):
        n_features = self.X_train.shape[2]
        shape = (n_features, self.w_shape[1])
        return _tensor(rng.standard_normal(shape) / math.sqrt(n_features))

    def train_loss(self, w, hparams):
        features = self.X_train @ hparams
        residuals = torch.einsum("tnr,tr->tn", features, w) - self.y_train
        data_fit = 0.5 * (residuals**2).mean(dim=1).sum()
        return data_fit + 0.5 * self.strength * (w**2).sum()

    def outer_loss(self, w, hparams):
        predictions = torch.einsum("tnr,tr->tn", self.X_val @ hparams, w)
        return _half_mse(predictions, self.y_val) * self.w_shape[0]

    def curvature_bound(self, hparams):
        features = self.X_train @ hparams
        gram = torch.einsum("tnr,tns->trs", features, features) / features.shape[1]
        return _largest_eigenvalue(gram) + self.strength


# --------------------------------------------------------------------------
# One problem at one λ: the map, the reference solution and hypergradient.


@dataclass
class BilevelInstance:
    """A bilevel problem at fixed hyperparameters, with its references.

    Attributes
    ----------
    fp_map, outer_loss : callable
        The map ``Φ(w, λ) = w - η ∇_w ℓ(w, λ)`` and the validation loss ``E``.
    hparams : torch.Tensor
        The hyperparameters ``λ``.
    w0 : torch.Tensor
        Starting point of the inner iterations (zero).
    w_star : torch.Tensor
        The inner solution, to machine precision.
    reference : torch.Tensor
        The hypergradient ``∇f(λ)`` at ``w_star``, by a dense solve.
    contraction : float
        ``||∂_wΦ(w_star, λ)||₂``, the asymptotic rate of the iterations.
    """

    fp_map: object
    outer_loss: object
    hparams: torch.Tensor
    w0: torch.Tensor
    w_star: torch.Tensor
    reference: torch.Tensor
    contraction: float


def _flat_hessian(train_loss, w, hparams):
    def flat_loss(flat_w):
        return train_loss(flat_w.reshape(w.shape), hparams)

    return torch.autograd.functional.hessian(flat_loss, w.reshape(-1))


def solve_inner(train_loss, w_shape, hparams, max_iter=50):
    """Minimise ``ℓ(·, λ)`` by Newton's method, to machine precision.

    Parameters
    ----------
    train_loss : callable
        ``train_loss(w, hparams) -> scalar tensor``, strongly convex in ``w``.
    w_shape : tuple of int
    hparams : torch.Tensor
    max_iter : int, default=50

    Returns
    -------
    w : torch.Tensor
        The iterate with the smallest gradient; Newton stops when the gradient
        stops decreasing, i.e. at rounding level.
    hessian : torch.Tensor of shape (w.numel(), w.numel())
        ``∇²_w ℓ`` at ``w``.

    Notes
    -----
    Newton's step ``w ← w - (∇²ℓ)⁻¹ ∇ℓ`` with the Hessian formed densely by
    autograd; a quadratic loss is solved in one step.

    Examples
    --------
    >>> loss = lambda w, lam: 0.5 * ((w - 2.0) ** 2).sum() + 0.5 * lam * w @ w
    >>> w, hessian = solve_inner(loss, (2,), torch.tensor(1.0, dtype=DTYPE))
    >>> w
    tensor([1., 1.], dtype=torch.float64)
    """
    w = torch.zeros(w_shape, dtype=DTYPE)
    best_w, best_size = w, math.inf
    for _ in range(max_iter):
        w_leaf = w.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(train_loss(w_leaf, hparams), w_leaf)
        size = float(torch.linalg.vector_norm(grad))
        if size >= best_size:
            break
        best_w, best_size = w, size
        hessian = _flat_hessian(train_loss, w, hparams)
        w = w - torch.linalg.solve(hessian, grad.reshape(-1)).reshape(w_shape)
    return best_w.detach(), _flat_hessian(train_loss, best_w, hparams)


def make_instance(problem, hparams):
    """The map with step ``1 / L`` and the reference hypergradient at ``λ``.

    Parameters
    ----------
    problem : LogisticRegression, KernelRidge, BiasedRegularization or \
HyperRepresentation
    hparams : torch.Tensor

    Returns
    -------
    instance : BilevelInstance

    Notes
    -----
    ``∂_wΦ = I - η ∇²ℓ`` with ``0 < η ∇²ℓ <= I``, so its norm is ``1 - η μ``
    with ``μ`` the smallest eigenvalue of ``∇²ℓ`` at ``w(λ)``.

    Examples
    --------
    >>> problem = KernelRidge(n_samples=10)
    >>> hparams = problem.draw_hparams(np.random.default_rng(0))
    >>> instance = make_instance(problem, hparams)
    >>> 0 < instance.contraction < 1
    True
    """
    step_size = 1.0 / problem.curvature_bound(hparams)
    fp_map = gradient_step_map(problem.train_loss, step_size)
    w_star, hessian = solve_inner(problem.train_loss, problem.w_shape, hparams)
    reference = exact(fp_map, problem.outer_loss, w_star, hparams).grad
    contraction = 1.0 - step_size * float(torch.linalg.eigvalsh(hessian)[0])
    w0 = torch.zeros(problem.w_shape, dtype=DTYPE)
    return BilevelInstance(
        fp_map, problem.outer_loss, hparams, w0, w_star, reference, contraction
    )


# --------------------------------------------------------------------------
# The error curves.


def error_curves(instance, t_grid, linsys_tol=1e-14):
    """Errors ``||∇f(λ) - ĝ(λ)||`` of the five methods at every ``t`` of a grid.

    Parameters
    ----------
    instance : BilevelInstance
    t_grid : sequence of int
        Increasing numbers of inner iterations ``t``.
    linsys_tol : float, default=1e-14
        Relative tolerance of the linear solvers: small enough that they use
        all ``k`` iterations unless the solution is exact to rounding.

    Returns
    -------
    errors : dict of str to ndarray of shape (len(t_grid),)
        One entry per name in ``METHODS``.

    Notes
    -----
    ITD differentiates through ``w_t = Φ^t(w_0)``; the AID variants start from
    the same ``w_t`` and solve ``(I - ∂_wΦᵀ) v = ∇_wE`` with ``k`` iterations.

    Examples
    --------
    >>> problem = KernelRidge(n_samples=10)
    >>> hparams = problem.draw_hparams(np.random.default_rng(0))
    >>> instance = make_instance(problem, hparams)
    >>> errors = error_curves(instance, [5, 40])
    >>> bool(errors["AID-CG k = t"][1] < errors["AID-CG k = t"][0])
    True
    """
    fp_map, outer_loss, hp = instance.fp_map, instance.outer_loss, instance.hparams
    errors = {method: [] for method in METHODS}
    w, done = instance.w0, 0
    for t in t_grid:
        # The inner iterate w_t, shared by the AID variants.
        for _ in range(t - done):
            w = fp_map(w, hp).detach()
        done = t
        estimates = {"ITD": itd(fp_map, outer_loss, instance.w0, hp, t).grad}
        for solver in ("fp", "cg"):
            for label, k in (("t", t), (str(K_FIXED), K_FIXED)):
                result = aid(
                    fp_map,
                    outer_loss,
                    w,
                    hp,
                    solver=solver,
                    tol=linsys_tol,
                    max_iter=k,
                    warn=False,
                )
                estimates[f"AID-{solver.upper()} k = {label}"] = result.grad
        for method, estimate in estimates.items():
            gap = torch.linalg.vector_norm(estimate - instance.reference)
            errors[method].append(float(gap))
    return {method: np.array(values) for method, values in errors.items()}


def run_problem(problem, t_grid, n_draws=5, random_state=0):
    """Error curves of one problem over ``n_draws`` random hyperparameters.

    Parameters
    ----------
    problem : LogisticRegression, KernelRidge, BiasedRegularization or \
HyperRepresentation
    t_grid : sequence of int
    n_draws : int, default=5
    random_state : int, default=0
        Seed of the draws of ``λ``.

    Returns
    -------
    errors : dict of str to ndarray of shape (n_draws, len(t_grid))
    contractions : ndarray of shape (n_draws,)
        ``||∂_wΦ(w(λ), λ)||₂`` of every draw.
    """
    rng = np.random.default_rng(random_state)
    curves, contractions = [], []
    with single_thread():
        for _ in range(n_draws):
            instance = make_instance(problem, problem.draw_hparams(rng))
            curves.append(error_curves(instance, t_grid))
            contractions.append(instance.contraction)
    errors = {m: np.stack([curve[m] for curve in curves]) for m in METHODS}
    return errors, np.array(contractions)


def tail_rates(t_grid, errors):
    """Per-iteration decay rate of each curve over the second half of the grid.

    Parameters
    ----------
    t_grid : ndarray of shape (n_t,)
    errors : ndarray of shape (n_draws, n_t)

    Returns
    -------
    rates : ndarray of shape (n_draws,)
        ``ρ`` of the least-squares fit ``log e_t ≈ a + t log ρ``, after the
        transient; a straight line in log scale means linear convergence.

    Examples
    --------
    >>> t_grid = np.array([0, 10, 20, 30])
    >>> tail_rates(t_grid, 3.0 * 0.9 ** t_grid[None, :]).round(6)
    array([0.9])
    """
    tail = slice(len(t_grid) // 2, None)
    slopes = np.polyfit(t_grid[tail], np.log(errors[:, tail]).T, 1)[0]
    return np.exp(slopes)


# --------------------------------------------------------------------------
# Figure and command line.


def plot_errors(results, path):
    """One panel per problem: the mean error over the draws of ``λ`` (line)
    and the range from the smallest to the largest (band).

    Saves the figure to ``path`` and returns it, still open, so that a
    documentation build can show it.
    """
    fig, axes = plt.subplots(1, len(results), figsize=(4.3 * len(results), 3.9))
    axes = np.atleast_1d(axes)
    for ax, (name, result) in zip(axes, results.items()):
        t_grid, errors = result["t_grid"], result["errors"]
        for method in METHODS:
            ax.plot(t_grid, errors[method].mean(axis=0), label=method, **STYLES[method])
            ax.fill_between(
                t_grid,
                errors[method].min(axis=0),
                errors[method].max(axis=0),
                color=STYLES[method]["color"],
                alpha=0.12,
                linewidth=0,
            )
        ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("t (inner iterations)")
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_ylabel("||∇f(λ) − ĝ(λ)||")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(METHODS), frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=100)
    return fig


def default_setup(quick=False):
    """The problems with their grids of ``t``, and the number of draws of ``λ``.

    The quick sizes still show every finding: the grids stop before the errors
    reach rounding level and go far enough for the ``k = 10`` plateaus.
    """
    if quick:
        return [
            (
                LogisticRegression(60, 30, log_penalty=(-4.0, -2.0)),
                np.linspace(20, 200, 6).astype(int),
            ),
            (KernelRidge(n_samples=60), np.linspace(10, 100, 6).astype(int)),
            (
                BiasedRegularization(n_tasks=4, n_samples=8, n_features=10),
                np.linspace(10, 120, 6).astype(int),
            ),
            (
                HyperRepresentation(5, n_samples=10, n_features=10),
                np.linspace(10, 200, 6).astype(int),
            ),
        ], 3
    return [
        (LogisticRegression(), np.linspace(20, 800, 12).astype(int)),
        (KernelRidge(), np.linspace(10, 200, 12).astype(int)),
        (BiasedRegularization(), np.linspace(10, 200, 12).astype(int)),
        (HyperRepresentation(), np.linspace(20, 400, 12).astype(int)),
    ], 5


def main(argv=None):
    """Compute the curves, print the final errors, write the figure.

    Returns
    -------
    results : dict of str to dict
        Per problem: ``t_grid``, ``errors`` and ``contractions`` as returned by
        :func:`run_problem`.
    """
    # Sphinx-gallery runs the script with an empty __doc__: no description from it.
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, seconds")
    parser.add_argument("--out", default=DEFAULT_OUT, help="folder of the figure")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    setup, n_draws = default_setup(args.quick)
    results = {}
    for problem, t_grid in setup:
        start = time.perf_counter()
        errors, contractions = run_problem(problem, t_grid, n_draws=n_draws)
        results[problem.name] = dict(
            t_grid=t_grid, errors=errors, contractions=contractions
        )
        print(
            f"{problem.name} ({time.perf_counter() - start:.1f} s): "
            f"||∂_wΦ|| from {contractions.min():.4f} to {contractions.max():.4f}"
        )
        for method in METHODS:
            mean_error = errors[method][:, -1].mean()
            rates = tail_rates(t_grid, errors[method])
            print(
                f"  {method:14s} mean error at t = {t_grid[-1]}: {mean_error:.2e}, "
                f"rate over the second half {rates.min():.4f} to {rates.max():.4f}"
            )
    path = out / "hypergradient_error.png"
    plot_errors(results, path)
    print(f"wrote {path}")
    return results


if __name__ == "__main__":
    main()
