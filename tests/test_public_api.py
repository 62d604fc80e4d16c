"""The public names resolve, the face stays small, notebooks use only it and the UI, and
importing the package stays light."""
import json
import re
import subprocess
import sys
from pathlib import Path

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


def test_the_face_is_small():
    # the names a notebook needs; everything else is imported from its stage folder
    assert len(sae_steer.__all__) <= 25, sorted(sae_steer.__all__)


def _notebook_imports() -> list[tuple[str, str]]:
    out = []
    for path in sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] == "code":
                for module in re.findall(r"^\s*(?:from|import) (sae_steer[\w.]*)",
                                         "".join(cell["source"]), re.M):
                    out.append((path.name, module))
    return out


def test_notebooks_import_only_the_face_and_the_ui():
    imports = _notebook_imports()
    assert imports, "no notebook imports sae_steer"
    stray = [(nb, m) for nb, m in imports
             if m != "sae_steer" and m != "sae_steer.ui" and not m.startswith("sae_steer.ui.")]
    assert stray == []
