"""docs/notebook_screenshots.py takes the figure a notebook itself displayed (not a redrawing) and
photographs it; the full-mode execution behind ``make screenshots-notebooks`` is not run here."""
import importlib.util
import sys
from pathlib import Path

import plotly.graph_objects as go
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs"))
import notebook_screenshots as shots  # noqa: E402


def _notebook():
    first = go.Figure(go.Bar(x=["a"], y=[1]), layout={"title": {"text": "first figure"}})
    last = go.Figure(go.Scatter(x=[1, 2], y=[3, 4]), layout={"title": {"text": "the plateau"}})
    table = "<table><tr><td>2 * 2 = 5</td><td>✘ step</td></tr></table>"
    def out(fig):
        return {"output_type": "display_data", "data": {shots.PLOTLY: fig.to_plotly_json(), "text/plain": ""}}
    return {"cells": [{"cell_type": "markdown", "source": "# title"},
                      {"cell_type": "code", "outputs": [out(first)]},
                      {"cell_type": "code", "outputs": [{"output_type": "stream", "text": "x"}, out(last)]}],
            "metadata": {"widgets": {shots.WIDGETS: {"state": {
                "m1": {"model_name": "DropdownModel", "state": {"value": 0}},
                "m2": {"model_name": "HTMLModel", "state": {"value": table}}}}}}}


def test_main_output_is_the_notebooks_own_figure_or_widget_table():
    nb = _notebook()
    assert [f["layout"]["title"]["text"] for f in shots.figures(nb)] == ["first figure", "the plateau"]
    assert "the plateau" in shots.page(nb, "plotly", -1) and "first figure" not in shots.page(nb, "plotly", -1)
    assert "2 * 2 = 5" in shots.page(nb, "widget_html", 0)
    assert set(shots.MAIN) == {p.stem for p in (ROOT / "notebooks").glob("0*.ipynb")}  # every notebook has one
    with pytest.raises(SystemExit, match="no plotly figure"):
        shots.page({"cells": []}, "plotly", 0)


@pytest.mark.browser
def test_screenshot_of_a_figure_is_written(tmp_path):
    from report_screenshot import CHROMIUM
    if importlib.util.find_spec("playwright") is None or not Path(CHROMIUM).is_file():
        pytest.skip("needs playwright and Debian's chromium (`make browser`)")
    png = tmp_path / "fig.png"
    shots.shoot(shots.page(_notebook(), "plotly", -1), png)
    assert png.stat().st_size > 5000 and png.read_bytes()[:4] == b"\x89PNG"
