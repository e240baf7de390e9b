"""The outer loop: cross-validation objective and its optimiser."""

from ._outer import FoldResult, TuningResult, tune
from ._warnings import warn_on_failures

__all__ = ["FoldResult", "TuningResult", "tune", "warn_on_failures"]
