"""The paper's experiments (examples/plot_*.py) reproduce its findings.

The error curves of examples/plot_hypergradient_error.py are checked against
the theory of Grazzi et al. (2020): linear convergence at the contraction rate
of the map, the ordering AID-CG <= AID-FP <= ITD on average at k = t, and a
plateau of the k = 10 curves. The references those errors are measured against
are themselves checked against finite differences.
"""

import doctest
import importlib.util
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from skhyper.hypergrad import aid, itd

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load_example(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


error_example = _load_example("plot_hypergradient_error")
digits_example = _load_example("plot_equilibrium_digits")

K_EQUAL_T = ("ITD", "AID-FP k = t", "AID-CG k = t")


@pytest.mark.parametrize(
    "module", [error_example, digits_example], ids=lambda module: module.__name__
)
def test_example_docstring_examples_run(module):
    failures, attempted = doctest.testmod(module)
    assert attempted > 0
    assert failures == 0


def _is_png(path):
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_errors(tmp_path_factory):
    """One run of the error example in quick mode, shared by the checks."""
    out = tmp_path_factory.mktemp("figures")
    results = error_example.main(["--quick", "--out", str(out)])
    plt.close("all")
    return out, results


# --------------------------------------------------------------------------
# The references: the exact hypergradient against finite differences.


def _value(problem, hparams):
    """``f(λ) = E(w(λ), λ)`` with the inner problem solved by Newton."""
    w, _ = error_example.solve_inner(problem.train_loss, problem.w_shape, hparams)
    return float(problem.outer_loss(w, hparams))


@pytest.mark.parametrize(
    "problem",
    [
        error_example.LogisticRegression(n_samples=30, n_features=6),
        error_example.KernelRidge(n_samples=15),
        error_example.BiasedRegularization(n_tasks=2, n_samples=5, n_features=4),
        error_example.HyperRepresentation(
            n_tasks=2, n_samples=6, n_features=4, n_components=2
        ),
    ],
    ids=lambda problem: problem.name,
)
def test_reference_hypergradient_matches_finite_differences(problem):
    rng = np.random.default_rng(1)
    hparams = problem.draw_hparams(rng)
    reference = error_example.make_instance(problem, hparams).reference
    # Central differences along three random directions.
    eps = 1e-5
    for _ in range(3):
        direction = error_example._tensor(rng.standard_normal(tuple(hparams.shape)))
        forward = _value(problem, hparams + eps * direction)
        backward = _value(problem, hparams - eps * direction)
        finite_difference = (forward - backward) / (2 * eps)
        analytic = float((reference * direction).sum())
        assert analytic == pytest.approx(finite_difference, rel=1e-6, abs=1e-9)


def test_contraction_constant_is_spectral_norm_of_jacobian():
    problem = error_example.KernelRidge(n_samples=12)
    instance = error_example.make_instance(
        problem, problem.draw_hparams(np.random.default_rng(0))
    )
    jacobian = torch.autograd.functional.jacobian(
        lambda w: instance.fp_map(w, instance.hparams), instance.w_star
    )
    assert torch.allclose(jacobian, jacobian.T, atol=1e-12)
    spectral_norm = float(torch.linalg.matrix_norm(jacobian, ord=2))
    assert instance.contraction == pytest.approx(spectral_norm, rel=1e-10)
    assert instance.contraction < 1.0


def test_itd_equals_aid_fp_when_jacobian_does_not_depend_on_hparams():
    # Biased regularisation: ∂_wΦ = I - η ∇²ℓ does not depend on the bias λ, so
    # the ITD sum and the k = t fixed-point sum are the same series.
    problem = error_example.BiasedRegularization(n_tasks=2, n_samples=5, n_features=4)
    instance = error_example.make_instance(
        problem, problem.draw_hparams(np.random.default_rng(0))
    )
    w = instance.w0
    for _ in range(15):
        w = instance.fp_map(w, instance.hparams).detach()
    by_itd = itd(
        instance.fp_map, instance.outer_loss, instance.w0, instance.hparams, 15
    )
    by_fp = aid(
        instance.fp_map,
        instance.outer_loss,
        w,
        instance.hparams,
        solver="fp",
        tol=0.0,
        max_iter=15,
        warn=False,
    )
    assert torch.allclose(by_itd.grad, by_fp.grad, rtol=1e-10, atol=0.0)


# --------------------------------------------------------------------------
# The paper's findings on the quick-mode curves.


@pytest.mark.slow
def test_quick_error_example_writes_its_figure(quick_errors):
    out, results = quick_errors
    assert _is_png(out / "hypergradient_error.png")
    assert len(results) == 4


@pytest.mark.slow
def test_errors_decrease_linearly_at_the_contraction_rate(quick_errors):
    _, results = quick_errors
    for name, result in results.items():
        t_grid, errors = result["t_grid"], result["errors"]
        tail = slice(len(t_grid) // 2, None)  # after the transient
        for method in K_EQUAL_T:
            for draw, contraction in enumerate(result["contractions"]):
                log_errors = np.log10(errors[method][draw, tail])
                slope, intercept = np.polyfit(t_grid[tail], log_errors, 1)
                misfit = np.abs(log_errors - (intercept + slope * t_grid[tail]))
                # A straight line in log scale, within a tenth of a decade...
                assert misfit.max() < 0.1, (name, method, draw, misfit)
                # ...decreasing at least as fast as the contraction allows
                # (the bounds are O(t q^t), hence the small allowance).
                rate = 10**slope
                assert rate < contraction + 0.01, (name, method, draw, rate)


@pytest.mark.slow
def test_k_equal_t_errors_are_ordered_cg_fp_itd_on_average(quick_errors):
    _, results = quick_errors
    for name, result in results.items():
        final = {m: result["errors"][m][:, -1].mean() for m in K_EQUAL_T}
        # In biased regularisation ITD and AID-FP agree to rounding (see the
        # identity test above), hence the relative allowance.
        assert final["AID-CG k = t"] <= final["AID-FP k = t"], (name, final)
        assert final["AID-FP k = t"] <= final["ITD"] * (1 + 1e-8), (name, final)


@pytest.mark.slow
def test_k_fixed_curves_level_off(quick_errors):
    _, results = quick_errors
    for name, result in results.items():
        t_grid, errors = result["t_grid"], result["errors"]
        middle = len(t_grid) // 2
        for solver in ("FP", "CG"):
            fixed = errors[f"AID-{solver} k = 10"].mean(axis=0)
            growing = errors[f"AID-{solver} k = t"].mean(axis=0)
            # Decades gained over the second half of the grid.
            fixed_gain = math.log10(fixed[middle] / fixed[-1])
            growing_gain = math.log10(growing[middle] / growing[-1])
            assert fixed_gain < 0.5 * growing_gain, (name, solver)
            assert fixed[-1] > 2 * growing[-1], (name, solver)


# --------------------------------------------------------------------------
# The equilibrium model on the digits.


def test_equilibrium_hypergradient_matches_finite_differences():
    generator = torch.Generator().manual_seed(0)
    X = torch.rand(6, 5, generator=generator, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    params = digits_example.init_params(5, 4, 3, random_state=0)
    fp_map = digits_example.equilibrium_map(X)
    outer_loss = digits_example.readout_loss(y)

    def objective(params):
        W = torch.zeros(6, 4, dtype=torch.float64)
        W = digits_example.iterate(fp_map, W, params, 200)
        return float(outer_loss(W, params))

    W = digits_example.iterate(
        fp_map, torch.zeros(6, 4, dtype=torch.float64), params, 200
    )
    result = aid(fp_map, outer_loss, W, params, solver="gmres", tol=1e-12, max_iter=50)
    eps = 1e-6
    for index, grad in enumerate(result.grad):
        direction = torch.randn(grad.shape, generator=generator, dtype=torch.float64)
        plus = [p + eps * direction if i == index else p for i, p in enumerate(params)]
        minus = [p - eps * direction if i == index else p for i, p in enumerate(params)]
        finite_difference = (objective(plus) - objective(minus)) / (2 * eps)
        assert float((grad * direction).sum()) == pytest.approx(
            finite_difference, rel=1e-6, abs=1e-10
        )


def test_projection_clips_singular_values():
    A = torch.randn(
        6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    projected = digits_example.project_spectral_norm(3 * A, radius=0.95)
    singular = np.linalg.svd(3 * A.numpy(), compute_uv=False)
    expected = np.minimum(singular, 0.95)
    got = np.linalg.svd(projected.numpy(), compute_uv=False)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    small = 0.1 * A
    assert torch.allclose(digits_example.project_spectral_norm(small), small)


@pytest.mark.slow
def test_quick_equilibrium_example_writes_its_figure(tmp_path):
    runs = digits_example.main(["--quick", "--out", str(tmp_path)])
    plt.close("all")
    assert _is_png(tmp_path / "equilibrium_digits.png")
    assert len(runs) == 6
    for run in runs:
        if run.project:
            assert max(run.spectral_norms) <= digits_example.RADIUS + 1e-9


@pytest.mark.parametrize("method", digits_example.METHODS)
def test_contractive_equilibrium_model_beats_90_percent(method):
    data = digits_example.load_data()
    with digits_example.single_thread():
        run = digits_example.train(
            method, data, n_hidden=30, n_iter=40, n_inner=15, n_linsys=15
        )
    assert not run.failure
    assert max(run.spectral_norms) <= digits_example.RADIUS + 1e-9
    assert run.test_accuracies[-1] > 0.90
