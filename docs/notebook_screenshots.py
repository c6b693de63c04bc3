"""Each notebook's main figure as headless Chromium renders it: the pictures in docs/notebooks/
(``make screenshots-notebooks``).

    python docs/notebook_screenshots.py --execute            # run 01-05 in full mode first (about 1.5-2 h on 2 cores)
    python docs/notebook_screenshots.py --executed DIR       # notebooks already executed into DIR

The figure is taken from the executed notebook's own output (a plotly figure's JSON, or the HTML a
widget showed), drawn standalone with plotly.js inlined (no network) and photographed 900 px wide, so
the picture is what the notebook computed, not a redrawing from other data. Needs ``playwright`` and
Debian's ``chromium`` (``make browser``); never ``playwright install``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs"))
from report_screenshot import opened  # noqa: E402

PLOTLY = "application/vnd.plotly.v1+json"
WIDGETS = "application/vnd.jupyter.widget-state+json"
# notebook -> (kind, which): the n-th plotly figure in output order, or the n-th table an HTML widget showed
MAIN = {"01_vft": ("plotly", -1),                    # loss and greedy accuracy over VFT steps: the plateau
        "02_sampling": ("widget_html", 0),           # one question's samples with step marks and labels
        "03_score_gap": ("plotly", 0),               # scores of right vs wrong COTs under VFT: the overlap
        "04_aft_constraint": ("plotly", 1),          # paired differences vs RFT with 95% CIs (E2)
        "05_ranking_and_baselines": ("plotly", -1)}  # the beta sweep


def figures(nb: dict) -> list[dict]:
    """The plotly figures (JSON) a notebook displayed, in output order."""
    return [o["data"][PLOTLY] for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])
            if PLOTLY in o.get("data", {})]


def widget_tables(nb: dict) -> list[str]:
    """The HTML values of the notebook's HTML widgets that hold a table (saved widget state)."""
    state = nb.get("metadata", {}).get("widgets", {}).get(WIDGETS, {}).get("state", {})
    return [m["state"]["value"] for m in state.values()
            if m.get("model_name") == "HTMLModel" and "<table" in m.get("state", {}).get("value", "")]


def page(nb: dict, kind: str, which: int) -> str:
    """A standalone HTML page holding the notebook's main figure or table."""
    if kind == "plotly":
        import plotly.graph_objects as go
        found = figures(nb)
        if not found:
            raise SystemExit("no plotly figure in the executed notebook (was it run with its outputs kept?)")
        return go.Figure(found[which]).to_html(include_plotlyjs=True, full_html=True)
    found = widget_tables(nb)
    if not found:
        raise SystemExit("no widget table in the executed notebook's saved widget state")
    return (f"<html><body style='font-family:sans-serif'><div id='main' style='display:inline-block;padding:8px;"
            f"max-width:880px'>{found[which]}</div></body></html>")


def shoot(html: str, png: Path, width: int = 900) -> None:
    """Open ``html`` in headless Chromium ``width`` px wide and save its plotly figure (else the page) to ``png``."""
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "page.html"
        f.write_text(html, encoding="utf-8")
        with opened(f, width, height=700) as view:
            target = view.locator(".js-plotly-plot").first
            if target.count():
                view.wait_for_function("document.querySelector('.js-plotly-plot .main-svg') !== null")
                target.screenshot(path=str(png))
            else:
                view.locator("#main").screenshot(path=str(png))


def execute(into: Path) -> None:
    """Run every notebook in full mode (AFTLAB_SMOKE=0) into ``into``, keeping outputs and widget state."""
    into.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "AFTLAB_SMOKE": "0"}
    for stem in MAIN:
        subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
                        "--ExecutePreprocessor.timeout=-1", "--ExecutePreprocessor.store_widget_state=True",
                        "--output-dir", str(into), str(ROOT / "notebooks" / f"{stem}.ipynb")], check=True, env=env)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--executed", type=Path, default=ROOT / "runs" / "notebooks-executed",
                    help="folder of executed notebooks (outputs kept)")
    ap.add_argument("--execute", action="store_true", help="execute the notebooks in full mode into --executed first")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "notebooks")
    args = ap.parse_args(argv)
    if args.execute:
        execute(args.executed)
    args.out.mkdir(parents=True, exist_ok=True)
    for stem, (kind, which) in MAIN.items():
        path = args.executed / f"{stem}.ipynb"
        if not path.is_file():
            print(f"skipped {stem}: {path} not found (run with --execute)")
            continue
        png = args.out / f"{stem}.png"
        shoot(page(json.loads(path.read_text(encoding="utf-8")), kind, which), png)
        print(f"wrote {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
