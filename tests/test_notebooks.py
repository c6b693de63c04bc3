"""The guided notebooks are committed clean and keep the house layout; the notebook helpers cache by config
and open on ``make demo``'s run.

Running the notebooks themselves, on the real default with every claim asserted, is nbval's job (``make test``).
"""
import contextlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
PARAMS = re.compile(r'^PRESET\s*=', re.M)


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
    later = ["".join(c["source"]) for c in cells[1:] if c["cell_type"] == "code"]
    assert not any(PARAMS.search(src) for src in later), f"{path.name}: a second parameters cell"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_checks_claims_and_installs_nothing(path):
    code = "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
    assert re.search(r"^\s*assert ", code, re.M), f"{path.name}: no assert checks the lesson's claims"
    assert "SMOKE" not in code, f"{path.name}: every claim is checked on the real default, in CI too"
    assert "pip install" not in code and not re.search(r"\beval\(|\bexec\(", code), path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_setup_cell_shows_the_settings_banner(path):
    code = "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
    assert "display(views.banner(cfg, work))" in code, f"{path.name}: the setup cell must show the settings banner"


def test_banner_says_whether_the_notebook_reads_the_demo_run_or_computes(tmp_path):
    from aftlab.notebook import config
    from aftlab.report.views import banner
    cfg = config("tiny", 0)
    assert "preset <b>tiny</b>" in banner(cfg).data and "computing into" in banner(cfg, tmp_path).data
    (tmp_path / "metrics.json").write_text("{}")
    assert "reading the run" in banner(cfg, tmp_path).data


def test_workdir_follows_the_stage_configs(tmp_path):
    from aftlab.notebook import config, workdir
    no_demo = tmp_path / "no-demo"
    a, b = config("smoke", 0), config("smoke", 0)
    assert workdir(a, tmp_path, no_demo) == workdir(b, tmp_path, no_demo)
    b.vft.steps += 1
    assert workdir(a, tmp_path, no_demo) != workdir(b, tmp_path, no_demo)
    assert workdir(config("smoke", 1), tmp_path, no_demo) != workdir(a, tmp_path, no_demo)
    c = config("smoke", 0)
    c.align.beta = 0.5  # alignment settings are cached per model, not per folder
    assert workdir(c, tmp_path, no_demo) == workdir(a, tmp_path, no_demo)
    d = config("smoke", 0)
    d.assess_questions = 10  # the held-out samples' settings (once missing from the key)
    assert workdir(d, tmp_path, no_demo) != workdir(a, tmp_path, no_demo)
    e = config("smoke", 0)
    e.vft.checkpoint_every, e.vft.log_every = 7, 3  # cannot change a result: the same folder
    assert workdir(e, tmp_path, no_demo) == workdir(a, tmp_path, no_demo)


def test_notebooks_open_on_the_demo_run_made_with_their_config_and_reuse_its_models(tmp_path, monkeypatch):
    """After `aftlab run` (make demo) the notebooks' work folder is that run: its VFT model, samples, methods
    and evaluations are read, not recomputed; a run made with other settings is not used; what the notebooks
    add (prepare) is keyed so that it is computed once."""
    from aftlab import notebook
    from aftlab.align import aft
    from aftlab.pipeline import run
    cfg = notebook.config("smoke", 0)
    cfg.vft.steps, cfg.sample.n_questions, cfg.methods = 40, 16, ("rft", "aft_bc")
    demo = tmp_path / "demo"
    assert notebook.workdir(cfg, tmp_path / "nb", demo).parent == tmp_path / "nb"  # no run yet
    run(cfg, demo, progress=False, log=lambda *_: None)
    assert notebook.workdir(cfg, tmp_path / "nb", demo) == demo
    other = notebook.config("smoke", 0)
    other.vft.steps = 41
    assert notebook.workdir(other, tmp_path / "nb", demo) != demo  # another VFT: its own folder
    assert sorted(notebook.vft_snapshots(demo)) == [10, 20, 30, 40]  # the pipeline keeps the snapshots

    trained = []
    real = aft.align_from_vft
    monkeypatch.setattr(aft, "align_from_vft", lambda *a, **k: trained.append(a[2].method) or real(*a, **k))
    _, log = notebook.ensure_aligned(cfg, demo, "aft_bc")
    vft_eval = notebook.ensure_eval(cfg, demo, "vft")
    assert trained == [] and log and vft_eval["metrics"] == json.loads((demo / "metrics.json").read_text())[
        "methods"]["vft"]  # the run's own model and evaluation
    notebook.ensure_aligned(cfg, demo, "aft_bc_strong", method="aft_bc", lr=1e-3)
    notebook.ensure_aligned(cfg, demo, "aft_bc_strong", method="aft_bc", lr=1e-3)
    assert trained == ["aft_bc"]  # a notebook's own model: trained once, then read back


def test_code_version_keeps_docstring_and_comment_edits_and_follows_code(tmp_path, monkeypatch):
    """A docstring fix must not throw away every cached notebook run; a code change must."""
    import shutil

    import aftlab
    from aftlab import notebook
    pkg = tmp_path / "aftlab"
    shutil.copytree(Path(aftlab.__file__).parent, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(notebook, "__file__", str(pkg / "notebook.py"))
    base = notebook.code_version()
    losses = pkg / "train" / "losses.py"
    src = losses.read_text()
    losses.write_text(src.replace("Pure functions of score tensors", "Pure functions of the score tensors", 1)
                      .replace("def nll_loss(", "# why: a comment\ndef nll_loss(", 1))
    assert notebook.code_version() == base
    losses.write_text(src.replace("mask.sum().clamp_min(1)", "mask.sum().clamp_min(2)", 1))
    assert notebook.code_version() != base


def test_beta_slider_shows_the_chosen_runs_metrics_and_curve_without_output_capture(monkeypatch):
    """The curve is put into the Output widget's state (no ``with out:`` capture, which hung
    nbconvert); moving the slider swaps in the other run's table row and figure."""
    pytest.importorskip("ipywidgets")
    import plotly.io as pio
    monkeypatch.setattr(pio.renderers, "default", "plotly_mimetype")  # what a Jupyter kernel picks
    from aftlab.report.views import beta_slider

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


PROBE = ("import json, aftlab, torch, transformers.utils.logging as hf\n"
         "print(json.dumps({'preset': cfg.preset, 'threads': torch.get_num_threads(),\n"
         "                  'bars': hf.is_progress_bar_enabled(), 'aftlab': aftlab.__file__}))")


def _setup_cells_in_a_kernel(env: dict) -> list[tuple[str, dict]]:
    """Each notebook's parameters and setup cells (its first two code cells: no stage runs there), run
    in one Jupyter kernel with ``env``: per notebook, the setup cell's HTML and what a probe cell saw."""
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient
    cells = []
    for path in NOTEBOOKS:
        code = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
        cells += [nbformat.v4.new_code_cell(src) for src in (code[0].source, code[1].source, PROBE)]
    nb = nbformat.v4.new_notebook(cells=cells)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS[0].parent)}}).execute(env=env)
    out = []
    for i in range(len(NOTEBOOKS)):
        setup, probe = nb.cells[3 * i + 1], nb.cells[3 * i + 2]
        html = "".join(o["data"].get("text/html", "") for o in setup.outputs if o.get("output_type") == "display_data")
        text = "".join(o.get("text", "") for o in probe.outputs if o.get("output_type") == "stream")
        out.append((html, json.loads(text.strip().splitlines()[-1])))
    return out


@pytest.mark.slow
def test_each_notebooks_setup_cell_in_a_kernel_runs_the_default_with_its_banner():
    """What a reader of JupyterLab gets, from the notebooks' own first cells in a real kernel, without running
    any stage: the default preset, the threads the CLI would pick, transformers' bars off."""
    import os
    root = str(NOTEBOOKS[0].parents[1])
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])  # this checkout's aftlab
    for (html, seen), path in zip(_setup_cells_in_a_kernel(env), NOTEBOOKS):
        assert seen["aftlab"].startswith(root), seen["aftlab"]
        assert seen["preset"] == "tiny" and "preset <b>tiny</b>" in html, path.name
        assert f"{seen['threads']} torch thread" in html and seen["bars"] is False, path.name


def test_setup_picks_threads_like_the_cli_and_quiets_transformers(monkeypatch):
    import torch
    import transformers.utils.logging as hf

    from aftlab import notebook
    from aftlab.model import runtime
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(runtime, "busy_cores", lambda window=0.3: runtime.usable_cores() - 1)  # all but one busy
    with _restored():
        torch.set_num_threads(max(2, runtime.usable_cores()))
        hf.enable_progress_bar()
        cfg = notebook.setup("tiny", 3)
        assert torch.get_num_threads() == 1 and not hf.is_progress_bar_enabled()
        assert (cfg.preset, cfg.seed) == ("tiny", 3)
        monkeypatch.setenv("OMP_NUM_THREADS", "2")  # an explicit setting wins, as in the CLI
        torch.set_num_threads(2)
        notebook.setup("tiny", 0)
        assert torch.get_num_threads() == 2


def test_vft_with_snapshots_shows_one_bar_that_ends_complete_and_none_when_cached(tmp_path, monkeypatch):
    """ensure_vft keeps snapshots (for notebooks 01 and 03) as it trains; once each training segment's own bar
    stopped at 25/50/75% and the notebook drew it red, and every checkpoint reload and save added a "Loading
    weights" / "Writing model shards" bar of transformers'. One bar over the whole schedule, complete,
    once transformers is quieted as ``notebook.setup`` does; a cached stage none."""
    import tqdm.auto

    from aftlab import notebook
    from aftlab.model.lm import quiet_transformers
    closed = []

    class Recorded(tqdm.auto.tqdm):
        def close(self):
            if not self.disable and not getattr(self, "_seen", False):
                self._seen = True
                closed.append((self.desc, self.n, self.total))
            super().close()

    monkeypatch.setattr(tqdm.auto, "tqdm", Recorded)
    cfg = notebook.config("smoke", 0)
    cfg.vft.steps, cfg.vft.log_every = 8, 2
    with _restored():
        quiet_transformers()  # as notebook.setup does
        _, history = notebook.ensure_vft(cfg, tmp_path, progress=True)
        assert closed == [("VFT", 8, 8)]
        assert [r["step"] for r in history] == [2, 4, 6, 8] and sorted(notebook.vft_snapshots(tmp_path)) == [2, 4, 6, 8]
        notebook.ensure_vft(cfg, tmp_path, progress=True)
        assert closed == [("VFT", 8, 8)]  # read back from the work folder: no bar


@contextlib.contextmanager
def _restored():
    """Torch's thread count and transformers' bars and verbosity put back after a block that changes them."""
    import torch
    import transformers.utils.logging as hf
    threads, bars, level = torch.get_num_threads(), hf.is_progress_bar_enabled(), hf.get_verbosity()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        (hf.enable_progress_bar if bars else hf.disable_progress_bar)()
        hf.set_verbosity(level)


@pytest.fixture(scope="module")
def exported_probe(tmp_path_factory):
    """A notebook that calls ``notebook.setup``, shows two plotly figures and formulas, executed in a kernel
    and exported by ``aftlab.report.offline`` (``make notebooks-html``)."""
    import os

    import nbformat

    from aftlab.report.offline import export_html
    root = str(NOTEBOOKS[0].parents[1])
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# Probe\nThe score $s(c) = \\frac{1}{|c|}\\sum_j \\log P(c_j \\mid q, c_{<j})$ "
                                      "and a display\n$$L_A = \\log\\big(1 + \\sum_{p}\\sum_{n} e^{s_n - s_p}\\big)$$\n"
                                      "cost $5 and `$HOME`."),
        nbformat.v4.new_code_cell("from aftlab import notebook as nb\ncfg = nb.setup('tiny', 0)"),
        nbformat.v4.new_code_cell("import plotly.graph_objects as go\n"
                                  "go.Figure(go.Scatter(x=[1, 2, 3], y=[4.25, 5.5, 6.75], name='probe-one'))"),
        nbformat.v4.new_code_cell("from IPython.display import display\n"
                                  "display(go.Figure(go.Bar(x=['a', 'b'], y=[0.125, 0.375], name='probe-two')))")])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))  # this checkout's aftlab
        mp.delenv("PLOTLY_RENDERER", raising=False)
        return export_html(nb, tmp_path_factory.mktemp("html") / "probe.html", execute=True, timeout=300)


def test_an_exported_notebook_keeps_its_figures_and_formulas_offline(exported_probe):
    """The HTML holds each figure's data and plotly.js once, the formulas as MathML, and loads nothing from
    a CDN (plain ``jupyter nbconvert --to html`` dropped the figures and fetched MathJax, require.js and
    mermaid from cdnjs). The embedded plotly.js itself names map-tile servers: what counts is what the
    page loads, its script and link tags and the CDN addresses of nbconvert's and plotly's defaults."""
    from nbconvert import HTMLExporter
    page = exported_probe.read_text()
    plots = [m.group(0) for m in re.finditer(r"Plotly\.newPlot\([^;]*", page)]
    assert len(plots) == 2 and "probe-one" in plots[0] and "4.25" in plots[0] and "6.75" in plots[0]
    assert "probe-two" in plots[1] and "0.375" in plots[1]
    assert page.count("plotly.js v") == 1  # the library's banner: embedded once, before the first figure
    assert page.index("plotly.js v") < page.index("Plotly.newPlot(")
    assert page.count("<math") == 2 and 'display="block"' in page and "\\frac" not in page
    assert "cost $5 and" in page and "$HOME" in page  # money and code are not formulas
    tags = re.findall(r"<(?:script|link)\b[^>]*>", page)
    assert tags and not [t for t in tags if re.search(r"(?:src|href)\s*=\s*[\"']?(?:https?:)?//", t)]
    defaults = HTMLExporter()
    for url in (defaults.mathjax_url, defaults.require_js_url, defaults.mermaid_js_url, "cdn.plot.ly/plotly-"):
        assert url.split("?")[0] not in page, url


@pytest.mark.browser
def test_an_exported_notebook_draws_its_figures_and_formulas_with_the_network_cut(exported_probe):
    pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    if not Path("/usr/bin/chromium").is_file():
        pytest.skip("no /usr/bin/chromium (`make browser` installs Debian's chromium)")
    sys.path.insert(0, str(NOTEBOOKS[0].parents[1] / "docs"))
    from report_screenshot import opened
    outside = []

    def cut(route):  # the page's own file passes; anything from the network is recorded and refused
        if route.request.url.startswith(("file:", "data:", "blob:")):
            return route.continue_()
        outside.append(route.request.url)
        return route.abort()
    with opened(exported_probe, 900) as page:
        page.context.route("**/*", cut)
        page.reload(wait_until="load")
        page.wait_for_function("[...document.querySelectorAll('.js-plotly-plot')].filter(f => f.querySelector('.main-svg'))"
                               ".length === 2", timeout=20000)
        drawn = page.evaluate("""() => ({
            bars: document.querySelectorAll('.js-plotly-plot .bars path').length,
            math: [...document.querySelectorAll('math')].map(m => m.getBoundingClientRect().width)})""")
    assert drawn["bars"] == 2 and len(drawn["math"]) == 2 and min(drawn["math"]) > 20, drawn
    assert outside == []
