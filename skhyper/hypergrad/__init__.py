"""The hypergradient engine: ITD, AID-FP, AID-CG, AID-GMRES and exact.

Pure PyTorch; knows nothing of scikit-learn. See "On the Iteration Complexity
of Hypergradient Computation" (Grazzi et al., ICML 2020) for the methods and
their error bounds.
"""

from ._aid import aid, exact
from ._common import HypergradResult, relative_error
from ._gmres import gmres
from ._itd import itd
from ._linsys import SolveInfo, conjugate_gradient, dense_solve, fixed_point
from ._maps import gradient_step_map
from ._methods import METHODS, hypergradient

__all__ = [
    "METHODS",
    "HypergradResult",
    "SolveInfo",
    "aid",
    "conjugate_gradient",
    "dense_solve",
    "exact",
    "fixed_point",
    "gmres",
    "gradient_step_map",
    "hypergradient",
    "itd",
    "relative_error",
]
