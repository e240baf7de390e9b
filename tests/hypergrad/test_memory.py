"""The measurement of benchmarks/bench_memory.py at tiny sizes: the peak memory
of AID-CG does not grow with t, that of reverse ITD does."""

import importlib.util
from pathlib import Path

import pytest
import torch

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_memory.py"


@pytest.fixture(scope="module")
def bench():
    if not BENCHMARK.exists():
        pytest.skip("benchmarks/ is not shipped with an installed package")
    spec = importlib.util.spec_from_file_location("bench_memory", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_measurement_sees_tensor_allocations_exactly(bench):
    measured, expected = bench.calibration(torch.device("cpu"), n_values=100_000)
    assert measured == expected


def test_aid_memory_is_flat_and_itd_memory_grows(bench):
    rows = bench.measure(torch.device("cpu"), steps=[10, 300], n_samples=200)
    peaks = {(name, t): peak for name, t, peak, _ in rows}

    aid_ratio = peaks["AID-CG", 300] / peaks["AID-CG", 10]
    itd_ratio = peaks["ITD reverse", 300] / peaks["ITD reverse", 10]

    assert peaks["AID-CG", 10] > 0
    assert aid_ratio < 1.05
    # 30 times the steps: the stored iterations dominate the fixed part.
    assert itd_ratio > 10
    assert peaks["ITD reverse", 300] > 10 * peaks["AID-CG", 300]
