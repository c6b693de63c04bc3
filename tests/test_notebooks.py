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
PARAMS = re.compile(r'^SMOKE\s*=\s*os\.environ\.get\("AFTLAB_SMOKE",\s*"0"\)\s*==\s*"1"', re.M)


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
def test_notebook_opens_with_its_title_then_one_parameters_cell(path):
    cells = json.loads(path.read_text())["cells"]
    assert cells[0]["cell_type"] == "markdown" and "".join(cells[0]["source"]).startswith("# "), \
        f"{path.name}: the first cell must be the title"
    cells = [c for c in cells if c["cell_type"] == "code"]
    first = "".join(cells[0]["source"])
    for name in ("PRESET", "SEED"):
        assert re.search(rf"^{name}\s*=", first, re.M), f"{path.name}: parameters cell lacks {name}"
    assert PARAMS.search(first), f"{path.name}: SMOKE must default to off, on only with AFTLAB_SMOKE=1"
    later = ["".join(c["source"]) for c in cells[1:] if c["cell_type"] == "code"]
    assert not any(PARAMS.search(src) for src in later), f"{path.name}: a second parameters cell"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_checks_claims_and_installs_nothing(path):
    code = "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
    assert re.search(r"^\s*assert ", code, re.M), f"{path.name}: no assert checks the lesson's claims"
    assert "pip install" not in code and not re.search(r"\beval\(|\bexec\(", code), path.name


def _parameters(path: Path, env: dict) -> dict:
    """The names the notebook's parameters cell defines when run with ``env`` as the environment."""
    cell = next("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
    out = subprocess.run([sys.executable, "-c", cell + "\nimport json\nprint(json.dumps([PRESET, SEED, SMOKE]))"],
                         capture_output=True, text=True, env=env, check=True)
    preset, seed, smoke = json.loads(out.stdout.strip().splitlines()[-1])
    return {"PRESET": preset, "SEED": seed, "SMOKE": smoke}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_a_notebook_opened_by_hand_runs_full_mode_and_ci_smoke_mode_shows_a_banner(path):
    import os
    from aftlab.notebook import config
    from aftlab.views import banner
    env = {k: v for k, v in os.environ.items() if k != "AFTLAB_SMOKE"}
    by_hand = _parameters(path, env)
    assert by_hand["SMOKE"] is False  # JupyterLab without the CI setting: the real experiment
    assert config(by_hand["PRESET"], by_hand["SEED"], by_hand["SMOKE"]).preset == by_hand["PRESET"]
    ci = _parameters(path, env | {"AFTLAB_SMOKE": "1"})
    assert ci["SMOKE"] is True
    cfg = config(ci["PRESET"], ci["SEED"], ci["SMOKE"])
    assert cfg.preset == "notebook-smoke" and "SMOKE MODE: figures are not meaningful" in banner(cfg, True).data
    assert "SMOKE MODE" not in banner(config("tiny", 0, False), False).data
    code = "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
    assert "display(views.banner(cfg, SMOKE" in code, f"{path.name}: the setup cell must show the mode banner"


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


def test_beta_slider_shows_the_chosen_runs_metrics_and_curve_without_output_capture(monkeypatch):
    """The curve is put into the Output widget's state (no ``with out:`` capture, which hung
    nbconvert); moving the slider swaps in the other run's table row and figure."""
    pytest.importorskip("ipywidgets")
    import plotly.io as pio
    monkeypatch.setattr(pio.renderers, "default", "plotly_mimetype")  # what a Jupyter kernel picks
    from aftlab.views import beta_slider

    def log(neg):
        return [{"step": s, "neg_score": neg - 0.01 * s, "gap": 0.1, "boundary": -0.2} for s in range(1, 4)]

    rows = [{"beta": 1.0, "gap": 0.3, "task_accuracy": 0.5, "train_log": log(-0.5)},
            {"beta": 0.1, "gap": 0.2, "task_accuracy": 0.6, "train_log": log(-0.2)}]
    box = beta_slider(rows)
    slider, table, curve = box.children
    assert slider.value == 0.1 and "beta = 0.1" in table.value and "0.600" in table.value

    def plotted_names():
        (out,) = curve.outputs  # exactly one figure, never an appended second one
        fig = out["data"]["application/vnd.plotly.v1+json"]
        return {t["name"] for t in fig["data"]}, fig["data"][1]["y"][0]

    names, first_neg = plotted_names()
    assert names == {"BC, beta=0.1", "BC, beta=0.1 (raw)"}
    slider.value = 1.0
    names, neg = plotted_names()
    assert names == {"BC, beta=1", "BC, beta=1 (raw)"} and "0.500" in table.value
    assert neg == pytest.approx(-0.51) and first_neg == pytest.approx(-0.21)
    slider.value = 0.1
    assert plotted_names()[0] == {"BC, beta=0.1", "BC, beta=0.1 (raw)"}
