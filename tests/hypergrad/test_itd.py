"""Iterative differentiation: reverse mode is autograd through the unrolled
loop, forward mode agrees with it, and truncation differentiates only the
last k steps."""

import pytest
import torch

from skhyper.hypergrad import hypergradient, itd, relative_error


def _unrolled(fp_map, outer_loss, w0, hparams, n_steps, n_tracked=None):
    """Autograd through a hand-written loop; only the last ``n_tracked``
    iterations are recorded."""
    n_tracked = n_steps if n_tracked is None else n_tracked
    leaves = [h.detach().clone().requires_grad_(True) for h in hparams]
    w = w0.detach()
    with torch.no_grad():
        for _ in range(n_steps - n_tracked):
            w = fp_map(w, leaves)
    for _ in range(n_tracked):
        w = fp_map(w, leaves)
    grads = torch.autograd.grad(outer_loss(w, leaves), leaves, allow_unused=True)
    grads = [torch.zeros_like(h) if g is None else g for g, h in zip(grads, leaves)]
    return grads, w.detach()


def _listed(problem):
    """The logistic problem with hyperparameters ``[λ, μ]``: λ per feature in
    the training loss, μ a scalar weighing an extra outer-loss term."""

    def fp_map(w, hparams):
        return problem.fp_map(w, hparams[0])

    def outer_loss(w, hparams):
        return problem.outer_loss(w, hparams[0]) + hparams[1] * (w * w).sum()

    hparams = [problem.lam, torch.tensor(0.3, dtype=problem.lam.dtype)]
    return fp_map, outer_loss, hparams


def test_reverse_itd_equals_autograd_through_the_loop(logistic):
    fp_map, outer_loss, hparams = _listed(logistic(n_features=5))
    w0 = torch.zeros(5, dtype=torch.float64)

    result = itd(fp_map, outer_loss, w0, hparams, 40)
    expected, w_t = _unrolled(fp_map, outer_loss, w0, hparams, 40)

    assert isinstance(result.grad, list) and len(result.grad) == 2
    for got, want in zip(result.grad, expected):
        assert got.shape == want.shape
        assert relative_error(got, want) < 1e-12
    assert relative_error(result.w, w_t) < 1e-15


def test_reverse_itd_equals_autograd_on_nonsymmetric_map(equilibrium):
    problem = equilibrium(n_units=4, n_inputs=3)
    w0 = torch.zeros(4, dtype=torch.float64)

    result = itd(problem.fp_map, problem.outer_loss, w0, problem.hparams, 25)
    expected, _ = _unrolled(problem.fp_map, problem.outer_loss, w0, problem.hparams, 25)

    assert relative_error(result.grad, expected) < 1e-12


@pytest.mark.parametrize("which", ["logistic", "equilibrium"])
def test_forward_itd_equals_reverse_itd(logistic, equilibrium, which):
    if which == "logistic":
        fp_map, outer_loss, hparams = _listed(logistic(n_features=5))
        w0 = torch.full((5,), 0.1, dtype=torch.float64)
    else:
        problem = equilibrium(n_units=4, n_inputs=3)
        fp_map, outer_loss = problem.fp_map, problem.outer_loss
        hparams = problem.hparams
        w0 = torch.zeros(4, dtype=torch.float64)

    reverse = itd(fp_map, outer_loss, w0, hparams, 30, mode="reverse")
    forward = itd(fp_map, outer_loss, w0, hparams, 30, mode="forward")

    assert relative_error(forward.grad, reverse.grad) < 1e-12
    assert relative_error(forward.w, reverse.w) < 1e-15
    assert forward.outer_loss == pytest.approx(reverse.outer_loss, rel=1e-14)


@pytest.mark.parametrize("truncate", [1, 7, 40, 100])
def test_truncated_itd_differentiates_only_the_last_steps(logistic, truncate):
    fp_map, outer_loss, hparams = _listed(logistic(n_features=5))
    w0 = torch.zeros(5, dtype=torch.float64)

    result = itd(fp_map, outer_loss, w0, hparams, 40, truncate=truncate)
    expected, _ = _unrolled(
        fp_map, outer_loss, w0, hparams, 40, n_tracked=min(truncate, 40)
    )

    assert relative_error(result.grad, expected) < 1e-12


def test_truncation_changes_the_answer(logistic):
    # A guard on the test above: truncating to one step is not the full ITD.
    fp_map, outer_loss, hparams = _listed(logistic(n_features=5))
    w0 = torch.zeros(5, dtype=torch.float64)

    full = itd(fp_map, outer_loss, w0, hparams, 40)
    short = itd(fp_map, outer_loss, w0, hparams, 40, truncate=1)

    assert relative_error(short.grad, full.grad) > 1e-2


def test_hypergradient_dispatches_to_itd(logistic):
    problem = logistic(n_features=5)
    w0 = torch.zeros(5, dtype=torch.float64)

    by_name = hypergradient(
        problem.fp_map, problem.outer_loss, w0, problem.lam, method="itd", n_steps=20
    )
    forward = hypergradient(
        problem.fp_map,
        problem.outer_loss,
        w0,
        problem.lam,
        method="itd-forward",
        max_iter=20,
    )
    direct = itd(problem.fp_map, problem.outer_loss, w0, problem.lam, 20)

    assert torch.equal(by_name.grad, direct.grad)
    assert relative_error(forward.grad, direct.grad) < 1e-12
    assert by_name.info.n_iter == forward.info.n_iter == 20


def test_itd_reports_the_last_step_as_residual(logistic):
    problem = logistic(n_features=5)
    w0 = torch.zeros(5, dtype=torch.float64)

    result = itd(problem.fp_map, problem.outer_loss, w0, problem.lam, 12)

    w = w0
    for _ in range(11):
        w = problem.fp_map(w, problem.lam)
    w_last = problem.fp_map(w, problem.lam)
    expected = float(
        torch.linalg.vector_norm(w_last - w) / torch.linalg.vector_norm(w_last)
    )
    assert result.info.residual == pytest.approx(expected, rel=1e-12)
    assert result.info.solver == "itd-reverse"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_steps": 0},
        {"mode": "sideways"},
        {"truncate": 0},
        {"truncate": -3},
        {"mode": "forward", "truncate": 5},
    ],
)
def test_itd_rejects_bad_settings(logistic, kwargs):
    problem = logistic(n_features=5)
    arguments = {"n_steps": 10, **kwargs}
    w0 = torch.zeros(5, dtype=torch.float64)

    with pytest.raises(ValueError):
        itd(problem.fp_map, problem.outer_loss, w0, problem.lam, **arguments)


@pytest.mark.parametrize("mode", ["reverse", "forward"])
@pytest.mark.parametrize("n_steps", [5, 20, 60])
def test_truncation_estimate_tracks_the_true_error(mode, n_steps):
    # Φ(w, λ) = diag(q) w + λ c from its fixed point w* = λ c / (1 - q), with
    # E = Σ w: the exact hypergradient is Σ c_i / (1 - q_i), and t steps of
    # ITD sum Σ c_i (1 - q_i^t) / (1 - q_i).
    q = torch.tensor([0.9, 0.5, 0.1], dtype=torch.float64)
    c = torch.ones(3, dtype=torch.float64)
    lam = torch.tensor(2.0, dtype=torch.float64)

    def fp_map(w, lam):
        return q * w + lam * c

    def outer_loss(w, lam):
        return w.sum()

    exact = float((c / (1 - q)).sum())
    result = itd(fp_map, outer_loss, lam * c / (1 - q), lam, n_steps, mode=mode)
    true_error = abs(float(result.grad) - exact) / exact
    estimate = float(result.info.message.split("error ")[1])
    assert true_error == pytest.approx(float((q**n_steps / (1 - q)).sum()) / exact)
    assert 0.5 * true_error <= estimate <= 2.0 * true_error
    # The errors are 0.45, 0.093 and 0.0014: a tolerance of 1e-2 passes the
    # last only.
    checked = itd(
        fp_map, outer_loss, lam * c / (1 - q), lam, n_steps, mode=mode, tol=1e-2
    )
    assert checked.info.converged == (n_steps == 60)
    assert result.info.converged  # no tolerance, no test
