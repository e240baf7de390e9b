"""A GridSearchCV replacement for continuous hyperparameters."""

import importlib

_LAZY = {"HypergradSearchCV": "skhyper.model_selection._search"}

__all__ = list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'skhyper.model_selection' has no attribute {name!r}")
