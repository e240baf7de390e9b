"""Peak memory of AID against reverse-mode ITD as the number of steps t grows.

The problem is L2 logistic regression on scikit-learn's digits (digit >= 5
against the rest, standardised features), its gradient-step map built by
:func:`skhyper.hypergrad.gradient_step_map`. AID-CG runs ``k = t`` iterations
at the inner solution; reverse ITD differentiates ``t`` steps of the map from
zero. AID keeps one evaluation of the map in memory whatever ``t``; reverse
ITD keeps all ``t`` of them, so its peak must grow linearly.

Memory is what torch allocates during the call, above what was allocated
before it: ``torch.cuda.max_memory_allocated`` on a GPU; on the CPU, the
allocation and release events that the PyTorch profiler records from the CPU
allocator (``profile_memory=True``), replayed in time order. ``tracemalloc``
would not do: it sees Python's allocator only, not tensor storage. Before the
table the script measures a function that holds known tensors, to show the
measurement is exact.

Run from the repository root::

    python benchmarks/bench_memory.py [--device cpu|cuda] [--steps 10 1000]
"""

import argparse
import platform
import time
from functools import partial

import numpy as np
import torch
from sklearn.datasets import load_digits

from skhyper.hypergrad import aid, gradient_step_map, itd

MIB = 2.0**20


# --------------------------------------------------------------------------
# Measuring peak tensor memory.


def _allocation_events(prof):
    """``(time, bytes)`` of every allocation (+) and release (-) recorded."""
    results = prof.profiler.kineto_results
    if hasattr(results, "experimental_event_tree"):
        events, stack = [], list(results.experimental_event_tree())
        while stack:
            node = stack.pop()
            size = getattr(node.extra_fields, "alloc_size", None)
            if size is not None:
                events.append((node.start_time_ns, size))
            stack.extend(node.children)
        return events
    # Public fallback: memory attributed to each operator, net of its
    # children, at the operator's start (transients inside one operator are
    # not seen).
    return [(e.time_range.start, e.self_cpu_memory_usage) for e in prof.events()]


def peak_memory(function, device):
    """Peak bytes allocated by torch while ``function()`` runs, above the
    memory already allocated when it starts; returns ``(peak, seconds)``."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device)
        start = time.perf_counter()
        function()
        torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        return torch.cuda.max_memory_allocated(device) - baseline, seconds
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities, profile_memory=True) as prof:
        start = time.perf_counter()
        function()
        seconds = time.perf_counter() - start
    current = peak = 0
    for _, size in sorted(_allocation_events(prof)):
        current += size
        peak = max(peak, current)
    return peak, seconds


def calibration(device, n_values=1_000_000):
    """Measure a function whose peak is known: ``n_values`` doubles held
    while half as many more are allocated, then both released."""

    def hold_known_tensors():
        first = torch.ones(n_values, dtype=torch.float64, device=device)
        second = torch.ones(n_values // 2, dtype=torch.float64, device=device)
        del first, second

    measured, _ = peak_memory(hold_known_tensors, device)
    return measured, 8 * (n_values + n_values // 2)


# --------------------------------------------------------------------------
# The problem and the two methods.


def build_problem(device, n_samples=None, lam=0.1):
    """L2 logistic regression on digits; return the map, the losses, the
    inner solution and ``λ``."""
    X, y = load_digits(return_X_y=True)
    X = X[:n_samples]
    y = y[:n_samples]
    X = (X - X.mean(0)) / np.maximum(X.std(0), 1e-12)
    signs = np.where(y >= 5, 1.0, -1.0)
    half = X.shape[0] // 2
    X_t = torch.as_tensor(X[:half], dtype=torch.float64, device=device)
    s_t = torch.as_tensor(signs[:half], dtype=torch.float64, device=device)
    X_v = torch.as_tensor(X[half:], dtype=torch.float64, device=device)
    s_v = torch.as_tensor(signs[half:], dtype=torch.float64, device=device)

    def train_loss(w, lam):
        loss = torch.nn.functional.softplus(-s_t * (X_t @ w)).mean()
        return loss + 0.5 * lam * (w @ w)

    def outer_loss(w, lam):
        return torch.nn.functional.softplus(-s_v * (X_v @ w)).mean()

    # η = 1 / L with L = σ_max(X)² / (4 n) + λ bounding the curvature.
    sigma = float(torch.linalg.matrix_norm(X_t, ord=2))
    fp_map = gradient_step_map(train_loss, 1.0 / (sigma**2 / (4 * half) + lam))
    lam_t = torch.tensor(lam, dtype=torch.float64, device=device)
    w = torch.zeros(X.shape[1], dtype=torch.float64, device=device)
    with torch.no_grad():
        for _ in range(300):
            w = fp_map(w, lam_t).detach()
    return fp_map, outer_loss, w, lam_t


def measure(device, steps, n_samples=None):
    """Rows ``(method, t, peak bytes, seconds)`` for AID-CG and reverse ITD."""
    fp_map, outer_loss, w_star, lam = build_problem(device, n_samples)
    w0 = torch.zeros_like(w_star)
    rows = []
    for t in steps:
        # tol = 0: exactly k = t iterations of conjugate gradient.
        runs = {
            "AID-CG": partial(
                aid, fp_map, outer_loss, w_star, lam, tol=0.0, max_iter=t, warn=False
            ),
            "ITD reverse": partial(itd, fp_map, outer_loss, w0, lam, t),
        }
        for name, run in runs.items():
            peak, seconds = peak_memory(run, device)
            rows.append((name, t, peak, seconds))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = "cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--device", default=default)
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 1000])
    args = parser.parse_args(argv)
    device = torch.device(args.device)

    print(f"torch {torch.__version__}, {platform.platform()}, device {device}")
    measured, expected = calibration(device)
    print(
        f"calibration: known peak {expected / MIB:.3f} MiB, "
        f"measured {measured / MIB:.3f} MiB"
    )
    rows = measure(device, args.steps)
    print(f"\n{'method':<12} {'t':>6} {'peak MiB':>10} {'time s':>8}")
    for name, t, peak, seconds in rows:
        print(f"{name:<12} {t:>6} {peak / MIB:>10.3f} {seconds:>8.2f}")

    peaks = {(name, t): peak for name, t, peak, _ in rows}
    first, last = min(args.steps), max(args.steps)
    print()
    for name in ("AID-CG", "ITD reverse"):
        ratio = peaks[name, last] / peaks[name, first]
        print(f"{name}: peak at t = {last} / peak at t = {first} = {ratio:.2f}")
    ratio = peaks["ITD reverse", last] / peaks["AID-CG", last]
    print(f"at t = {last}: ITD reverse / AID-CG = {ratio:.1f}")


if __name__ == "__main__":
    main()
