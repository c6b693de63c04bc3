"""The guided notebooks are committed clean and keep the house layout; the notebook helpers cache by config.

Running the notebooks themselves is nbval's job (``make test``, smoke mode by default).
"""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
PARAMS = re.compile(r'^SMOKE\s*=\s*os\.environ\.get\("AFTLAB_SMOKE",\s*"1"\)\s*!=\s*"0"', re.M)


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 5


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stripped(path):
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [], f"{path.name}: a code cell has outputs"
            assert cell["execution_count"] is None, f"{path.name}: a code cell has an execution count"
    bin_dir = Path(sys.executable).parent
    verify = subprocess.run([str(bin_dir / "nbstripout"), "--verify", str(path)], capture_output=True, text=True)
    assert verify.returncode == 0, f"{path.name}: nbstripout --verify failed: {verify.stdout}{verify.stderr}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_opens_with_one_parameters_cell(path):
    cells = json.loads(path.read_text())["cells"]
    first = "".join(cells[0]["source"])
    assert cells[0]["cell_type"] == "code", f"{path.name}: the first cell must be the parameters cell"
    for name in ("PRESET", "SEED"):
        assert re.search(rf"^{name}\s*=", first, re.M), f"{path.name}: parameters cell lacks {name}"
    assert PARAMS.search(first), f"{path.name}: SMOKE must default to on via AFTLAB_SMOKE"
    later = ["".join(c["source"]) for c in cells[1:] if c["cell_type"] == "code"]
    assert not any(PARAMS.search(src) for src in later), f"{path.name}: a second parameters cell"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_checks_claims_and_installs_nothing(path):
    code = "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
    assert re.search(r"^\s*assert ", code, re.M), f"{path.name}: no assert checks the lesson's claims"
    assert "pip install" not in code and not re.search(r"\beval\(|\bexec\(", code), path.name


def test_workdir_follows_the_stage_configs(tmp_path):
    from aftlab.notebook import config, workdir
    a, b = config("tiny", 0, smoke=True), config("tiny", 0, smoke=True)
    assert workdir(a, tmp_path) == workdir(b, tmp_path)
    b.vft.steps += 1
    assert workdir(a, tmp_path) != workdir(b, tmp_path)
    assert workdir(config("tiny", 1, smoke=True), tmp_path) != workdir(a, tmp_path)
    c = config("tiny", 0, smoke=True)
    c.align.beta = 0.5  # alignment settings are cached per model, not per folder
    assert workdir(c, tmp_path) == workdir(a, tmp_path)
