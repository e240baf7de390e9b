"""Device and dtype choice, and conversion between numpy and torch."""

import numpy as np
import scipy.sparse as sp
import torch

__all__ = ["resolve_device", "torch_dtype_for", "as_tensor", "to_numpy"]


def resolve_device(device="auto"):
    """Return the :class:`torch.device` named by ``device``.

    Parameters
    ----------
    device : {"auto", "cpu"}, str or torch.device, default="auto"
        ``"auto"`` picks CUDA when available, else the CPU; any other value is
        passed to :class:`torch.device`.

    Returns
    -------
    torch.device
    """
    if isinstance(device, torch.device):
        return device
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"device must be 'auto', 'cpu' or a torch device string, got {device!r}"
        ) from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} was asked for but CUDA is not available; "
            "use device='auto' or 'cpu'"
        )
    return resolved


def torch_dtype_for(array):
    """float32 inputs compute in float32; everything else in float64."""
    if getattr(array, "dtype", None) == np.float32:
        return torch.float32
    return torch.float64


def as_tensor(array, dtype, device):
    """Copy a numpy array or scipy sparse matrix to a torch tensor.

    Sparse input becomes a sparse CSR tensor, so it is never densified.
    """
    if sp.issparse(array):
        csr = sp.csr_matrix(array)
        return torch.sparse_csr_tensor(
            torch.as_tensor(csr.indptr, dtype=torch.int64),
            torch.as_tensor(csr.indices, dtype=torch.int64),
            torch.as_tensor(csr.data, dtype=dtype),
            size=csr.shape,
        ).to(device)
    return torch.as_tensor(np.asarray(array), dtype=dtype).to(device)


def to_numpy(tensor):
    """Return a numpy copy of a tensor, on the CPU, without its graph."""
    return tensor.detach().cpu().numpy()
