"""Installation script for skhyper."""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(
    r'^__version__ = "([^"]+)"',
    (HERE / "skhyper" / "__init__.py").read_text(),
    re.MULTILINE,
).group(1)

setup(
    name="skhyper",
    version=VERSION,
    description=(
        "Tune the continuous hyperparameters of scikit-learn models by "
        "gradient descent on the cross-validation loss."
    ),
    long_description=(HERE / "README.rst").read_text(),
    long_description_content_type="text/x-rst",
    license="BSD-3-Clause",
    packages=find_packages(include=["skhyper", "skhyper.*"]),
    python_requires=">=3.9",
    install_requires=[
        "numpy>=1.22",
        "scipy>=1.8",
        "scikit-learn>=1.3",
        "torch>=2.1",
        "joblib>=1.2",
    ],
    extras_require={
        "test": ["pytest>=7", "pandas", "matplotlib", "ruff"],
        "examples": ["matplotlib"],
        "docs": [
            "sphinx>=7",
            "numpydoc>=1.6",
            "sphinx-gallery>=0.15",
            "pydata-sphinx-theme>=0.15",
            "matplotlib",
            "pandas",
        ],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Intended Audience :: Science/Research",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
