"""The outer loop on synthetic fold problems whose optimum is known."""

import multiprocessing
import warnings

import numpy as np
import pytest
from joblib import parallel_config
from sklearn.exceptions import ConvergenceWarning

from skhyper.exceptions import NonFiniteError
from skhyper.tuning import FoldResult, tune, warn_on_failures


class QuadraticFold:
    """``loss(θ) = 0.5 Σ_j a_j (θ_j - c_j)^2``, counting its evaluations."""

    def __init__(self, centre, curvature=1.0, finite_below=np.inf, converged=True):
        self.centre = np.asarray(centre, dtype=float)
        self.curvature = curvature
        self.finite_below = finite_below
        self.converged = converged

    def initial_state(self):
        return 0

    def evaluate(self, theta, state):
        if np.any(theta > self.finite_below):
            raise NonFiniteError("synthetic overflow")
        diff = theta - self.centre
        return FoldResult(
            loss=0.5 * self.curvature * float(diff @ diff),
            grad=self.curvature * diff,
            state=state + 1,
            inner_converged=self.converged,
            score=-float(np.abs(diff).sum()),
        )


def test_tune_finds_the_minimiser_of_the_mean_fold_loss():
    problems = [QuadraticFold([1.0, -2.0], 1.0), QuadraticFold([3.0, 0.0], 3.0)]
    # Mean of the curvature-weighted centres: the minimiser of the mean loss.
    expected = (1.0 * np.array([1.0, -2.0]) + 3.0 * np.array([3.0, 0.0])) / 4.0
    result = tune(problems, [0.0, 0.0], (-10.0, 10.0), tol=1e-12)
    np.testing.assert_allclose(result.theta, expected, atol=1e-6)
    assert result.loss == pytest.approx(
        np.mean([p.evaluate(expected, 0).loss for p in problems]), rel=1e-9
    )
    assert not result.at_lower.any() and not result.at_upper.any()


def test_states_are_threaded_through_evaluations():
    problems = [QuadraticFold([0.5]), QuadraticFold([1.5])]
    result = tune(problems, [0.0], (-5.0, 5.0))
    # Each evaluation adds one to the state it is given: the last states count
    # every (finite) evaluation.
    assert result.states == [len(result.history["loss"])] * 2


def test_optimum_outside_the_bounds_is_reported_at_the_bound():
    problems = [QuadraticFold([4.0])]
    result = tune(problems, [0.0], (np.log(0.1), np.log(10.0)))
    assert result.theta[0] == pytest.approx(np.log(10.0))
    assert result.at_upper[0]
    with pytest.warns(ConvergenceWarning, match="upper bound 10; widen"):
        warn_on_failures(
            result,
            hyperparameter="alpha",
            bounds=(0.1, 10.0),
            inner_hint="-",
            linsys_hint="-",
        )


def test_per_feature_values_all_on_one_bound_are_reported():
    # Two per-feature values whose optima lie beyond the lower bound: both end
    # on it, which is reported; one of two on a bound is not.
    bounds = (np.log(0.1), np.log(10.0))
    kwargs = dict(hyperparameter="alpha", inner_hint="-", linsys_hint="-")
    both = tune([QuadraticFold([-4.0, -5.0])], [0.0, 0.0], bounds)
    assert both.at_lower.all()
    with pytest.warns(ConvergenceWarning, match="All 2 per-feature values of alpha"):
        warn_on_failures(both, bounds=(0.1, 10.0), **kwargs)
    one = tune([QuadraticFold([-4.0, 1.0])], [0.0, 0.0], bounds)
    assert one.at_lower[0] and not one.at_lower[1]
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        warn_on_failures(one, bounds=(0.1, 10.0), **kwargs)


def test_non_finite_evaluations_are_skipped_and_best_finite_kept():
    # The unconstrained minimum (θ = 2) lies where the folds overflow.
    problems = [QuadraticFold([2.0], finite_below=1.0)]
    result = tune(problems, [0.0], (-5.0, 5.0))
    assert result.n_non_finite > 0
    assert np.isnan(result.history["loss"]).any()
    assert result.theta[0] <= 1.0
    assert np.isfinite(result.loss)
    finite = [v for v in result.history["loss"] if np.isfinite(v)]
    assert result.loss == min(finite)


def test_all_non_finite_raises_a_clear_error():
    problems = [QuadraticFold([0.0], finite_below=-10.0)]
    with pytest.raises(NonFiniteError, match="every evaluation"):
        tune(problems, [0.0], (-5.0, 5.0))


def test_one_aggregated_warning_for_many_failed_inner_solves():
    problems = [QuadraticFold([1.0], converged=False) for _ in range(3)]
    result = tune(problems, [0.0], (-5.0, 5.0))
    n_evals = len(result.history["loss"])
    assert result.n_inner_failures == 3 * n_evals
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_on_failures(
            result,
            hyperparameter="C",
            bounds=(1e-3, 1e3),
            inner_hint="increase inner_max_iter",
            linsys_hint="-",
        )
    messages = [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert len(messages) == 1
    assert f"{3 * n_evals} fold solves" in str(messages[0].message)
    assert "increase inner_max_iter" in str(messages[0].message)


def test_parallel_folds_give_the_serial_result():
    problems = [QuadraticFold([c, -c]) for c in (0.3, 1.1, 2.0)]
    serial = tune(problems, [0.0, 0.0], (-5.0, 5.0))
    with parallel_config(backend="threading"):
        threaded = tune(problems, [0.0, 0.0], (-5.0, 5.0), n_jobs=2)
    np.testing.assert_array_equal(serial.theta, threaded.theta)
    assert serial.history["loss"] == threaded.history["loss"]


def test_scan_starts_from_the_best_coarse_point():
    # Far from theta0 = -9, near the upper end of the box: the scan finds it.
    problems = [QuadraticFold([8.0])]
    result = tune(problems, [-9.0], (-10.0, 10.0), scan=5, max_iter=2)
    assert abs(result.theta[0] - 8.0) < 1.0
    # theta0 and the 5 scan points come first in the history.
    np.testing.assert_allclose(
        np.ravel(result.history["theta"][:6]), [-9.0, -10.0, -5.0, 0.0, 5.0, 10.0]
    )


class SeparableFold(QuadraticFold):
    """A quadratic fold whose loss is the mean of one part per coordinate,
    ``0.5 a_j (θ_j - c_j)²``, evaluated many points at a time."""

    def __init__(self, centre, curvature, separable=True):
        super().__init__(centre, curvature)
        self.separable = separable

    def evaluate(self, theta, state):
        diff = np.asarray(theta) - self.centre
        parts = 0.5 * self.curvature * diff**2
        return FoldResult(
            loss=float(parts.mean()),
            grad=self.curvature * diff / diff.size,
            state=state + 1,
            parts=parts if self.separable else None,
        )

    def evaluate_many(self, thetas, state):
        results = []
        for theta in thetas:
            results.append(self.evaluate(theta, state))
            state = results[-1].state
        return results


def test_scan_picks_each_coordinate_of_a_separable_loss_on_its_own():
    # Optima at -8 and 8, on (-10, 10) with a scan of 5 points: no shared
    # value on the diagonal (-10, -5, 0, 5, 10) suits both, the best is 0
    # (loss (64 + 64) / 4 = 32); per coordinate the best scan values are -10
    # and 10 (loss (4 + 4) / 4 = 2).
    problems = [SeparableFold([-8.0, 8.0], curvature=np.ones(2))]
    result = tune(problems, [0.0, 0.0], (-10.0, 10.0), scan=5)
    # theta0 and the 5 scan points come first, then the composed start.
    history = result.history
    assert min(history["loss"][:6]) == pytest.approx(32.0)
    np.testing.assert_allclose(history["theta"][6], [-10.0, 10.0])
    assert history["loss"][6] == pytest.approx(2.0)
    np.testing.assert_allclose(result.theta, [-8.0, 8.0], atol=1e-4)


def test_a_separable_part_a_million_times_smaller_still_reaches_its_optimum():
    # Parts 0.5e6 (θ_1 - 1)² and 0.5 (θ_2 - 3)²: on their mean, L-BFGS-B
    # (at the estimators' tol, 1e-5) settles θ_1 and stops with θ_2 far from
    # 3; seen part by part, each divided by its starting value, both reach
    # their optima.
    def run(separable):
        fold = SeparableFold([1.0, 3.0], np.array([1e6, 1.0]), separable)
        return tune([fold], [0.0, 0.0], (-10.0, 10.0), tol=1e-5).theta

    np.testing.assert_allclose(run(True), [1.0, 3.0], atol=1e-3)
    assert abs(run(False)[1] - 3.0) > 0.5


def test_separable_parts_that_are_not_positive_are_not_used_as_weights():
    # Parts 0.5 (θ_j - c_j)² - 10 (or + 1): no weight 1/part makes sense, and
    # the plain mean must still be minimised, at (1, 3).
    class Shifted(SeparableFold):
        def evaluate(self, theta, state):
            result = super().evaluate(theta, state)
            result.parts = result.parts + self.shift
            result.loss = float(result.parts.mean())
            return result

    for shift in ([-10.0, -10.0], [-10.0, 1.0]):
        fold = Shifted([1.0, 3.0], np.ones(2))
        fold.shift = np.array(shift)
        result = tune([fold], [0.0, 0.0], (-5.0, 5.0))
        np.testing.assert_allclose(result.theta, [1.0, 3.0], atol=1e-4)


def test_use_score_selects_by_score_not_loss():
    problems = [QuadraticFold([1.0])]
    result = tune(problems, [0.0], (-5.0, 5.0), use_score=True)
    scores = result.history["score"]
    assert scores[result.best_index] == max(s for s in scores if s is not None)


def test_running_out_of_iterations_is_reported():
    # A badly scaled quadratic: two iterations cannot reach the minimum.
    problems = [QuadraticFold([3.0, -2.0], curvature=1.0)]
    result = tune(problems, [-4.0, 4.0], (-10.0, 10.0), max_iter=1, tol=1e-12)
    assert result.max_iter_reached
    with pytest.warns(ConvergenceWarning, match="increase max_iter"):
        warn_on_failures(
            result,
            hyperparameter="alpha",
            bounds=(1e-3, 1e3),
            inner_hint="-",
            linsys_hint="-",
        )
    converged = tune(problems, [-4.0, 4.0], (-10.0, 10.0), tol=1e-12)
    assert not converged.max_iter_reached


def test_fork_backend_is_refused_once_torch_is_loaded():
    # conftest imports torch, so the fork-based backend would risk a hang.
    method = multiprocessing.get_start_method(allow_none=True)
    if (method or multiprocessing.get_all_start_methods()[0]) != "fork":
        pytest.skip("the multiprocessing backend does not fork on this platform")
    problems = [QuadraticFold([1.0]), QuadraticFold([2.0])]
    with parallel_config(backend="multiprocessing"):
        with pytest.raises(ValueError, match="'loky' backend or 'threading'"):
            tune(problems, [0.0], (-5.0, 5.0), n_jobs=2)
    # Sequential runs do not fork: allowed under any backend.
    with parallel_config(backend="multiprocessing"):
        tune(problems, [0.0], (-5.0, 5.0), n_jobs=1)


# ---------------------------------------------------------------------------
# The "scalar" search for one hyperparameter, and fold sets.


class FunctionFold:
    """A fold whose loss is ``f(θ)`` for a given smooth ``f`` of one variable."""

    def __init__(self, function, derivative):
        self.function = function
        self.derivative = derivative

    def initial_state(self):
        return None

    def evaluate(self, theta, state):
        value = float(theta[0])
        return FoldResult(
            loss=self.function(value),
            grad=np.array([self.derivative(value)]),
            state=state,
        )


@pytest.mark.parametrize("start", [-6.0, 0.0, 5.0])
def test_scalar_search_finds_the_minimum_of_a_non_quadratic_function(start):
    # f(θ) = log(1 + exp(θ - 1)) + exp(-θ) / 4 - not quadratic, minimum where
    # sigmoid(θ - 1) = exp(-θ) / 4, found here by bisection.
    def f(t):
        return np.logaddexp(0.0, t - 1.0) + np.exp(-t) / 4.0

    def df(t):
        return 1.0 / (1.0 + np.exp(1.0 - t)) - np.exp(-t) / 4.0

    low, high = -8.0, 8.0
    for _ in range(200):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if df(mid) < 0 else (low, mid)
    result = tune(
        [FunctionFold(f, df)], [start], (-8.0, 8.0), method="scalar", tol=1e-12
    )
    assert result.theta[0] == pytest.approx(low, abs=1e-3)
    assert len(result.history["loss"]) <= 15
    assert not result.max_iter_reached


def test_scalar_search_stops_on_the_bound_it_walks_to():
    problems = [QuadraticFold([4.0])]
    result = tune(problems, [0.0], (-2.0, 2.0), method="scalar")
    assert result.theta[0] == 2.0 and result.at_upper[0]


def test_scalar_search_skips_non_finite_points_and_keeps_the_best_finite():
    problems = [QuadraticFold([2.0], finite_below=1.0)]
    result = tune(problems, [0.0], (-5.0, 5.0), method="scalar")
    assert result.n_non_finite > 0
    finite = [v for v in result.history["loss"] if np.isfinite(v)]
    assert result.loss == min(finite) and result.theta[0] <= 1.0


def test_scalar_search_refuses_several_hyperparameters():
    with pytest.raises(ValueError, match="one hyperparameter"):
        tune([QuadraticFold([0.0, 0.0])], [1.0, 1.0], (-5.0, 5.0), method="scalar")
    with pytest.raises(ValueError, match="method must be"):
        tune([QuadraticFold([0.0])], [1.0], (-5.0, 5.0), method="newton")


class QuadraticFoldSet:
    """Several :class:`QuadraticFold` evaluated by one ``evaluate_all`` call."""

    def __init__(self, folds):
        self.folds = folds
        self.calls = 0

    def initial_states(self):
        return [fold.initial_state() for fold in self.folds]

    def evaluate_all(self, theta, states):
        self.calls += 1
        return [fold.evaluate(theta, s) for fold, s in zip(self.folds, states)]


@pytest.mark.parametrize("method", ["l-bfgs-b", "scalar"])
def test_a_fold_set_gives_what_its_folds_give_one_by_one(method):
    folds = [QuadraticFold([1.0], 1.0), QuadraticFold([3.0], 3.0)]
    one_by_one = tune(folds, [0.0], (-10.0, 10.0), method=method)
    fold_set = QuadraticFoldSet(folds)
    together = tune(fold_set, [0.0], (-10.0, 10.0), method=method)
    assert together.theta[0] == one_by_one.theta[0]
    assert fold_set.calls == len(together.history["loss"])
    assert together.states == [len(together.history["loss"])] * 2
