"""skhyper: tune the continuous hyperparameters of scikit-learn models by
gradient descent on the cross-validation loss.

The estimators are imported lazily, so that ``import skhyper`` (and loading a
fitted model to predict) does not import PyTorch.
"""

import importlib

__version__ = "0.1.0.dev0"

_LAZY = {
    "HypergradRidgeCV": "skhyper.linear_model",
    "HypergradLogisticCV": "skhyper.linear_model",
    "HypergradSearchCV": "skhyper.model_selection",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'skhyper' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
