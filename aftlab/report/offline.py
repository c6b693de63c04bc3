"""Notebooks that read offline: figures that carry their own HTML, formulas as MathML, and an HTML export
that loads nothing from the network (``make notebooks-html``).

Place in the data path: the top, beside ``views``; ``aftlab.notebook.setup`` calls :func:`use_offline_figures`.

Two things went missing when a notebook was exported with ``jupyter nbconvert --to html``: every Plotly
figure (a kernel shows them as plotly's own mimetype only, which nbconvert does not render) and every
formula (nbconvert loads MathJax from a CDN; no MathJax is installed here — JupyterLab bundles its own
inside its webpack chunks). So:

* figures: in a Jupyter kernel, plotly's ``notebook`` renderer beside its mimetype
  (``plotly_mimetype+aftlab_offline``), so each figure also carries an HTML view of its data, and
  plotly.js is embedded once, by the first figure a kernel shows, instead of fetched from a CDN;
  plotly's own ``notebook`` renderer would add a MathJax ``<script src=https://cdn…>`` to every
  figure, so this one leaves MathJax out;
* formulas: ``$…$`` and ``$$…$$`` in markdown cells become MathML (``latex2mathml``), which browsers
  draw natively: no script at all;
* the page: nbconvert's ``lab`` template without its CDN scripts (require.js, MathJax, mermaid, the
  widget manager). ipywidgets therefore show as their saved text, not as live widgets.

>>> print(mathml("gap $s_p$ costs $5 and $6; `$HOME` stays"))  # doctest: +NORMALIZE_WHITESPACE
gap <math xmlns="http://www.w3.org/1998/Math/MathML" display="inline"><mrow><msub><mi>s</mi><mi>p</mi></msub></mrow></math>
costs $5 and $6; `$HOME` stays
"""
from __future__ import annotations

import argparse
import copy
import re
from pathlib import Path

import plotly.io as pio
from plotly.io.base_renderers import NotebookRenderer

RENDERER = "aftlab_offline"
TEMPLATES = Path(__file__).resolve().parent / "templates"
# code (fenced, then inline) is left alone; display math before inline; an inline $ opens before a
# non-space and closes after one, not before a digit (pandoc's rule: "$5 and $6" is money, not math)
_CODE = re.compile(r"(```.*?```|~~~.*?~~~|`[^`\n]*`)", re.S)
_DISPLAY = re.compile(r"\$\$(.+?)\$\$", re.S)
_INLINE = re.compile(r"(?<![\\$])\$(?=\S)([^$\n]+?)(?<=\S)\$(?!\d)")


class OfflineNotebookRenderer(NotebookRenderer):
    """plotly's ``notebook`` renderer (plotly.js embedded once, when activated) whose figures load no MathJax."""

    def to_mimebundle(self, fig_dict):
        return {"text/html": pio.to_html(fig_dict, config=self.config, include_plotlyjs=False, include_mathjax=False,
                                         full_html=False, default_width="100%", default_height=525, validate=False)}


def use_offline_figures() -> bool:
    """In a Jupyter kernel, show plotly figures both as plotly's mimetype (JupyterLab draws that) and as HTML
    with plotly.js embedded once (what an HTML export keeps); whether that renderer is on.

    Only where plotly itself chose its bare mimetype (a Jupyter kernel): Colab, VS Code, a ``PLOTLY_RENDERER``
    the user set or a script keep their own renderer. Called again, it changes nothing, so plotly.js is not
    embedded a second time."""
    wanted = f"plotly_mimetype+{RENDERER}"
    if pio.renderers.default not in ("plotly_mimetype", wanted):
        return False
    if RENDERER not in pio.renderers:
        pio.renderers[RENDERER] = OfflineNotebookRenderer()
    if pio.renderers.default != wanted:
        pio.renderers.default = wanted
    return True


def mathml(markdown: str) -> str:
    """``markdown`` with its ``$$…$$`` and ``$…$`` formulas as MathML, its code spans and blocks untouched."""
    from latex2mathml.converter import convert

    def formulas(text: str) -> str:
        text = _DISPLAY.sub(lambda m: convert(m.group(1).strip(), display="block"), text)
        return _INLINE.sub(lambda m: convert(m.group(1)), text)
    return "".join(part if i % 2 else formulas(part) for i, part in enumerate(_CODE.split(markdown)))


def export_html(notebook, out: str | Path, execute: bool = False, timeout: int = 3600) -> Path:
    """Write ``notebook`` (a path, or an nbformat node with its outputs) as one HTML file at ``out`` that
    needs no network; with ``execute``, run it first in a ``python3`` kernel from its own folder."""
    import nbformat
    from nbconvert import HTMLExporter

    if isinstance(notebook, (str, Path)):
        folder, nb = Path(notebook).resolve().parent, nbformat.read(notebook, as_version=4)
    else:
        folder, nb = Path.cwd(), copy.deepcopy(notebook)
    if execute:
        from nbclient import NotebookClient
        NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(folder)}}).execute()
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = mathml(cell.source)
    exporter = HTMLExporter(template_name="lab", template_file="offline.html.j2", extra_template_paths=[str(TEMPLATES)])
    body, _ = exporter.from_notebook_node(nb)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(body, encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Export notebooks as HTML that needs no network (figures and formulas "
                                             "included).")
    ap.add_argument("notebooks", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=Path("runs/notebooks-html"), help="folder for the .html files")
    ap.add_argument("--execute", action="store_true", help="run each notebook first (committed notebooks have no outputs)")
    args = ap.parse_args(argv)
    for path in args.notebooks:
        print(f"wrote {export_html(path, args.out / (path.stem + '.html'), execute=args.execute)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
