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

    Examples
    --------
    >>> from skhyper.utils import resolve_device
    >>> resolve_device("cpu")
    device(type='cpu')
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
    if resolved.type == "meta":
        raise ValueError("device='meta' holds no data; use device='auto' or 'cpu'")
    if resolved.type not in ("cpu", "cuda"):
        # Other backends (mps, xpu, ...) are known to torch by name even where
        # absent, and some lack float64, which skhyper computes in: only an
        # allocation tells.
        try:
            torch.zeros(1, dtype=torch.float64, device=resolved)
        except (RuntimeError, AssertionError, TypeError) as exc:
            raise ValueError(
                f"device={device!r} is not available here or has no float64; "
                "use device='auto' or 'cpu'"
            ) from exc
    return resolved


def torch_dtype_for(array):
    """The torch dtype to compute in for an input array.

    float32 inputs compute in float32; everything else in float64.

    Examples
    --------
    >>> import numpy as np
    >>> from skhyper.utils import torch_dtype_for
    >>> torch_dtype_for(np.ones(2, dtype=np.float32)), torch_dtype_for([1, 2])
    (torch.float32, torch.float64)
    """
    if getattr(array, "dtype", None) == np.float32:
        return torch.float32
    return torch.float64


def as_tensor(array, dtype, device):
    """Copy a numpy array or scipy sparse matrix to a torch tensor.

    Sparse input becomes a sparse CSR tensor, so it is never densified.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp, torch
    >>> from skhyper.utils import as_tensor
    >>> as_tensor(np.eye(2), torch.float64, "cpu").sum().item()
    2.0
    >>> as_tensor(sp.eye(3, format="csr"), torch.float64, "cpu").layout
    torch.sparse_csr
    """
    if sp.issparse(array):
        csr = sp.csr_matrix(array)
        return torch.sparse_csr_tensor(
            torch.as_tensor(csr.indptr, dtype=torch.int64),
            torch.as_tensor(csr.indices, dtype=torch.int64),
            torch.as_tensor(csr.data, dtype=dtype),
            size=csr.shape,
        ).to(device)
    array = np.asarray(array)
    if not array.flags.writeable:
        # A read-only array (a DataFrame's values, a memory map) cannot be
        # shared with torch, which would warn; copy it instead.
        return torch.tensor(array, dtype=dtype, device=device)
    return torch.as_tensor(array, dtype=dtype).to(device)


def to_numpy(tensor):
    """Return a numpy copy of a tensor, on the CPU, without its graph.

    Examples
    --------
    >>> import torch
    >>> from skhyper.utils import to_numpy
    >>> to_numpy(torch.ones(2, requires_grad=True) * 3)
    array([3., 3.], dtype=float32)
    """
    return tensor.detach().cpu().numpy()
