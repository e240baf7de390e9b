"""The package surface: version, lazy imports, device choice."""

import subprocess
import sys

import pytest
import torch

import skhyper
from skhyper.utils import resolve_device


def test_version_is_exposed_and_matches_setup():
    assert isinstance(skhyper.__version__, str)
    assert skhyper.__version__.count(".") >= 2


def test_importing_skhyper_does_not_import_torch():
    code = (
        "import sys, skhyper\n"
        "assert 'torch' not in sys.modules, 'torch imported by skhyper'\n"
        "skhyper.HypergradSearchCV\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="NoSuchThing"):
        skhyper.NoSuchThing  # noqa: B018


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("not-a-device")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
