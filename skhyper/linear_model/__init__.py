"""Linear models whose regularisation is tuned by hypergradient CV."""

import importlib

_LAZY = {
    "HypergradRidgeCV": "skhyper.linear_model._ridge",
    "HypergradLogisticCV": "skhyper.linear_model._logistic",
}

__all__ = list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'skhyper.linear_model' has no attribute {name!r}")
