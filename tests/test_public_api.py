"""The public names promised in README resolve, and importing the package stays light."""
import subprocess
import sys

import pytest

import sae_steer


@pytest.mark.parametrize("name", sae_steer.__all__)
def test_public_name_resolves(name):
    assert getattr(sae_steer, name) is not None


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        sae_steer.nope


def test_import_does_not_load_torch_or_widgets():
    code = ("import sys, sae_steer; "
            "print(sorted(m for m in ('torch', 'transformer_lens', 'ipywidgets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
