"""On a contraction with a symmetric Jacobian, the errors of ITD, AID-FP and
AID-CG (k = t) decrease linearly in t, and at large t their order is the one of
the paper's bounds: AID-CG <= AID-FP <= ITD."""

import numpy as np
import pytest
import torch

from skhyper.hypergrad import aid, exact, itd, relative_error

# After the transient and before rounding (errors about 1e-14 at t = 100).
STEPS = np.arange(20, 101, 5)


def _errors(problem):
    """Relative hypergradient errors of each method for every t in STEPS.

    As in the paper, the inner weights are t steps of the gradient-step map
    from zero, AID solves the linear system at them with k = t iterations,
    and ITD differentiates those t steps; the reference is the dense solve
    at the exact inner solution.
    """
    fp_map, outer_loss, lam = problem.fp_map, problem.outer_loss, problem.lam
    reference = exact(fp_map, outer_loss, problem.w_star, lam).grad
    w0 = torch.zeros_like(problem.w_star)
    errors = {"itd": [], "fp": [], "cg": [], "inner": []}
    for t in STEPS:
        w = w0
        for _ in range(t):
            w = fp_map(w, lam)
        for solver in ("fp", "cg"):
            # tol = 0: exactly k = t iterations, as the bounds assume.
            result = aid(
                fp_map,
                outer_loss,
                w,
                lam,
                solver=solver,
                tol=0.0,
                max_iter=int(t),
                warn=False,
            )
            errors[solver].append(relative_error(result.grad, reference))
        result = itd(fp_map, outer_loss, w0, lam, int(t))
        errors["itd"].append(relative_error(result.grad, reference))
        errors["inner"].append(relative_error(w, problem.w_star))
    return {name: np.array(values) for name, values in errors.items()}


def _log_linear_fit(errors):
    """Slope of log(error) against t and the coefficient of determination."""
    y = np.log(errors)
    slope, intercept = np.polyfit(STEPS, y, 1)
    fitted = slope * STEPS + intercept
    r_squared = 1 - ((y - fitted) ** 2).sum() / ((y - y.mean()) ** 2).sum()
    return slope, r_squared


@pytest.fixture(scope="module", params=["ridge", "logistic"])
def errors(request, ridge, logistic):
    if request.param == "ridge":
        return _errors(ridge(n_features=8, per_feature=True))
    return _errors(logistic(n_features=5))


@pytest.mark.parametrize("method", ["itd", "fp", "cg"])
def test_errors_decrease_linearly_in_t(errors, method):
    slope, r_squared = _log_linear_fit(errors[method])
    inner_slope, _ = _log_linear_fit(errors["inner"])

    assert slope < 0
    assert r_squared > 0.999
    # The rate is the contraction rate of the map, seen on the inner iterates
    # (ITD's error carries an extra factor t, hence a slightly smaller slope).
    assert slope == pytest.approx(inner_slope, rel=0.15)


def test_order_at_large_t_is_cg_fp_itd(errors):
    last = slice(-3, None)  # t = 90, 95, 100
    assert bool((errors["cg"][last] <= errors["fp"][last]).all())
    assert bool((errors["fp"][last] <= errors["itd"][last]).all())
    # And the gaps are real, not rounding: ITD is an order of magnitude off.
    assert bool((errors["itd"][last] > 10 * errors["fp"][last]).all())
    assert bool((errors["itd"][last] > 1e-13).all())
