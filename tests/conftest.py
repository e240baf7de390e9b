"""Settings shared by the whole test suite."""

import pytest
import torch
from threadpoolctl import threadpool_limits


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # The test problems are small: thread pools (torch's, and the BLAS and
    # OpenMP ones under numpy and scikit-learn) add only synchronisation, which
    # on a busy 2-core machine costs far more than the arithmetic. Speed is
    # measured in benchmarks/, not here.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(previous)
