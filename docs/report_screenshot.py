"""A run report as headless Chromium renders it 800 px wide: the screenshot in docs/ (``make screenshots-report``).

    python docs/report_screenshot.py                      # smoke run in runs/report-smoke (seconds) → docs/report_smoke.png
    python docs/report_screenshot.py --run runs/demo --out docs/report_tiny_seed0.png   # a finished run's report

The report is rewritten from the run's files first (``aftlab report``), so the picture shows the
current report code. Needs the ``playwright`` package and Debian's ``chromium`` (``make browser``);
never ``playwright install``.
"""
from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
         "--disable-component-update", "--no-first-run"]
ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def opened(html_file: Path, width: int, height: int = 1000):
    """A Playwright page of Debian's headless Chromium showing ``html_file``, ``width`` px wide."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(Path(html_file).resolve().as_uri(), wait_until="load")
            yield page
        finally:
            browser.close()


def render(report: Path, png: Path | None = None, width: int = 800) -> dict:
    """Open ``report`` at ``width`` px; return what a reader would hit (page width, figures drawn, titles
    wider than their figure) and, with ``png``, save a full-page screenshot there."""
    with opened(report, width) as page:
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length > 0")
        facts = page.evaluate("""() => ({
            page_width: document.documentElement.scrollWidth,
            figures: document.querySelectorAll('.js-plotly-plot').length,
            drawn: [...document.querySelectorAll('.js-plotly-plot')].filter(f => f.querySelector('.main-svg')).length,
            clipped_titles: [...document.querySelectorAll('.js-plotly-plot')].flatMap(f => {
                const box = f.getBoundingClientRect();
                return [...f.querySelectorAll('.gtitle, .annotation-text')].filter(t => {
                    const r = t.getBoundingClientRect(); return r.right > box.right + 1 || r.left < box.left - 1;
                }).map(t => t.textContent);
            }),
        })""")
        if png:
            page.screenshot(path=str(png), full_page=True)
    return facts


def main(argv: list[str] | None = None) -> int:
    from aftlab.cli import main as aftlab
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=ROOT / "runs" / "report-smoke", help="an `aftlab run` folder")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "report_smoke.png")
    ap.add_argument("--width", type=int, default=800)
    args = ap.parse_args(argv)
    if not (args.run / "metrics.json").is_file():
        if aftlab(["run", "--preset", "smoke", "--out", str(args.run), "--no-progress"]):
            return 1
    elif aftlab(["report", str(args.run)]):
        return 1
    facts = render(args.run / "report.html", args.out, args.width)
    print(f"wrote {args.out}: {facts}")
    return 0 if facts["page_width"] <= args.width and not facts["clipped_titles"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
