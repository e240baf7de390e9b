"""Helpers shared by the layers: device, dtype, numpy-torch conversion."""

from ._torch import as_tensor, resolve_device, to_numpy, torch_dtype_for

__all__ = ["as_tensor", "resolve_device", "to_numpy", "torch_dtype_for"]
