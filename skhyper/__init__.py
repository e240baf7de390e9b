"""skhyper: tune continuous hyperparameters of scikit-learn models by gradient
descent on the cross-validation loss."""

__version__ = "0.1.0.dev0"

__all__ = ["__version__"]
