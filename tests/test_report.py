"""The run report says what was found: plain-word comparisons, the run's own settings, every column
defined, honest axes, one colour per method, greedy COTs beside their questions and gold answers."""
import html
import json
import random
import re

import pytest
import torch

from aftlab.align.methods import REGISTRY
from aftlab.cli import main
from aftlab.config import preset, replace_path, to_dict
from aftlab.eval.metrics import DEFINITIONS, LABELS, assessment_accuracy, rerank_accuracy, strict_view, task_accuracy
from aftlab.eval.stats import comparisons_for_run
from aftlab.report import plots
from aftlab.report.writer import headline, settings, verdict, write_report

METHODS = ("vft", "rft", "aft_bc", "aft_dc", "align_only")


def fake_run(out, n=40, seed=0, **overrides):
    """A run folder with every file ``write_report`` reads, written without training: ``n`` held-out
    questions of three sampled COTs each (right and step-valid, right by luck, wrong), scores and
    greedy outcomes drawn at random per method, and ``overrides`` (dotted config fields) in config.json."""
    rng = random.Random(seed)
    cfg = preset("smoke", seed=seed)
    for key, value in overrides.items():
        cfg = replace_path(cfg, key.replace("__", "."), str(value))
    records = [{"id": f"test-{i}", "question": f"Ann has {i + 3} apples. She eats 2. How many are left?",
                "answer": str(i + 1), "reference": f"{i + 3} - 2 = {i + 1}. #### {i + 1}",
                "samples": [dict(cot=f"{i + 3} - 2 = {i + 1}. #### {i + 1}", answer=str(i + 1), correct=True,
                                 strict=True, quality=1.0, finished=True, label="pos", count=1),
                            dict(cot=f"{i + 3} - 3 = {i + 1}. #### {i + 1}", answer=str(i + 1), correct=True,
                                 strict=False, quality=0.0, finished=True, label="pos", count=1),
                            dict(cot=f"{i + 3} + 2 = {i + 5}. #### {i + 5}", answer=str(i + 5), correct=False,
                                 strict=False, quality=0.0, finished=True, label="neg", count=1)]}
               for i in range(n)]
    results, metrics, logs = {}, {}, {}
    for k, m in enumerate(METHODS):
        scores = [[rng.gauss(-0.2, 0.1) for _ in r["samples"]] for r in records]
        greedy = [{"id": r["id"], "question": r["question"], "cot": f"{m} cot {i}. #### {r['answer']}",
                   "finished": True, "correct": rng.random() < 0.5 + 0.05 * k} for i, r in enumerate(records)]
        correct = [[s["correct"] for s in r["samples"]] for r in records]
        a, st = assessment_accuracy(scores, correct), assessment_accuracy(*strict_view(scores, records))
        results[m] = {"greedy": greedy, "scores": scores}
        metrics[m] = {"task_accuracy": task_accuracy([g["correct"] for g in greedy]),
                      "assessment_accuracy": a["pairs"], "assessment_per_question": a["per_question"],
                      "n_pairs": a["n_pairs"], "assessment_accuracy_strict": st["pairs"],
                      "assessment_strict_per_question": st["per_question"], "n_pairs_strict": st["n_pairs"],
                      "lucky_share": 0.5, "rerank_accuracy": rerank_accuracy(scores, correct),
                      "mean_pos_score": -0.15, "mean_neg_score": -0.25, "ranking_tau": 0.3, "repetition_rate": 0.01,
                      "unfinished_rate": 0.0, "perplexity": 1.5, "self_consistency": 0.6, "sample_accuracy": 0.55}
        if m != "vft":
            logs[m] = [{"step": s, "neg_score": -0.2 - 0.01 * s, "pos_score": -0.1, "gap": 0.1 + 0.01 * s,
                        "beta": cfg.align_for(m).beta} for s in range(1, 6)]
    paired = comparisons_for_run(results, records, n_resamples=500)
    out.mkdir(parents=True, exist_ok=True)
    files = {"config.json": to_dict(cfg), "align_logs.json": logs, "per_question.json": paired["per_question"],
             "eval_scores.json": {m: r["scores"] for m, r in results.items()},
             "greedy.json": {m: r["greedy"] for m, r in results.items()},
             "metrics.json": {"preset": "smoke", "seed": seed, "methods": metrics, "misranked_examples": [],
                              "n_train_questions_sampled": 48, "comparisons": paired["comparisons"],
                              "n_eval_questions": paired["n_eval_questions"],
                              "n_assess_questions": paired["n_assess_questions"]}}
    for name, obj in files.items():
        (out / name).write_text(json.dumps(obj))
    (out / "eval_samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return out, records


@pytest.fixture()
def report(tmp_path):
    out, records = fake_run(tmp_path / "run", align__beta=0.37, align__gamma=2.5)
    return write_report(out).read_text(), records


def _section(doc: str, title: str) -> str:
    """The HTML from the heading ``title`` to the next h2."""
    start = doc.index(f"<h2>{title}")
    end = doc.find("<h2>", start + 4)
    return doc[start:end if end > 0 else None]


def test_settings_show_the_runs_beta_gamma_and_counts(tmp_path):
    out, _ = fake_run(tmp_path / "run", align__beta=0.37, align__gamma=2.5)
    cfg = json.loads((out / "config.json").read_text())
    cfg["method_overrides"] = {"align_only": {"constraint": "boundary", "beta": 0.05}}  # shown as the method runs
    (out / "config.json").write_text(json.dumps(cfg))
    part = _section(write_report(out).read_text(), "Settings")
    rows = {m: re.search(rf"<b>{m}</b>(.*?)</tr>", part).group(1) for m in ("rft", "aft_bc", "aft_dc", "align_only")}
    cells = {m: re.findall(r"<td class='l'>(.*?)</td>", r) for m, r in rows.items()}
    assert "β (nats/token)" in part and cells["aft_bc"][:3] == ["boundary", "0.37", "2.5"]
    assert cells["aft_dc"][:3] == ["detach", "—", "2.5"]  # no boundary, so β does not enter the loss
    assert cells["align_only"][:3] == ["boundary", "0.05", "2.5"]
    assert cells["rft"][:3] == ["—", "—", "—"] and cells["rft"][3] == "0"  # no alignment term: no β, no γ, λ 0
    assert "40 for greedy task accuracy" in part and "40 in the fixed sample set" in part
    assert "48 sampled, k = 4" in part and "2,000 generated" in part
    metrics = json.loads((out / "metrics.json").read_text())
    big = settings(out, dict(metrics, n_train_questions_sampled=3000, n_eval_questions=5000), n_records=2000)
    assert "3,000 sampled" in big and "5,000 for greedy" in big and "2,000 in the fixed sample set" in big
    assert "then more until" not in big  # the smoke preset's set has a fixed size
    cfg["assess_mixed"] = 600
    (out / "config.json").write_text(json.dumps(cfg))
    grown = settings(out, metrics, n_records=2100)
    assert "2,100 in the fixed sample set" in grown and "(the first 2,000, then more until 600 had a right" in grown
    doc = write_report(out).read_text()
    assert "href='metrics.json'" in part and "href='config.json'" in part and "href='per_question.json'" in part
    assert str(out.resolve()) not in doc and str(out) not in doc  # relative links: the folder may move machines


def test_every_column_of_the_metrics_tables_has_a_definition(report):
    doc, _ = report
    for title in ("Accuracy per method", "Scores and health"):
        part = _section(doc, title)
        headers = re.findall(r"<th title='[^']*'>(.*?)</th>", part)
        defined = re.findall(r"<dt>(.*?)</dt>", part)
        assert len(headers) >= 5 and headers == defined
    assert {k for k in LABELS} == set(DEFINITIONS)  # one entry per metric in both dicts


def test_greedy_section_shows_question_gold_answer_and_each_methods_cot(report):
    doc, records = report
    part = _section(doc, "Greedy generations")
    blocks = part.split("<div class='ex'>")[1:]
    assert len(blocks) == 5
    for block, rec in zip(blocks, records):
        assert rec["question"] in block and f"<b>gold answer:</b> {rec['answer']}" in block
        assert rec["reference"] in block
        i = int(rec["id"].split("-")[1])
        for m in METHODS:
            assert re.search(rf"<th>{m}</th><td class='(pos|neg)'>[✓✗]</td><td class='l'><code>{m} cot {i}\.", block)


def test_headline_reads_in_plain_words_against_rft_and_vft(report):
    doc, _ = report
    part = _section(doc, "What this run found")
    for m in ("AFT-BC", "AFT-DC", "alignment only"):
        for vs in ("RFT", "VFT"):
            for metric in ("strict assessment", "rerank accuracy", "task accuracy"):
                assert re.search(rf"{m} − {vs} on {metric}: [+−]\d+\.\d \[[+−]\d+\.\d, [+−]\d+\.\d\] points — "
                                 r"(not )?distinguishable", part), (m, vs, metric)
    assert "RFT − VFT on strict assessment" in part and "VFT − RFT" not in part  # each pair of baselines once
    assert "Noise floor:" in part and part.count("<h3>Against ") == 2


def test_verdict_is_one_sentence_naming_what_differs_from_rft():
    comps = {"aft_bc": {"rft": {"assessment_accuracy_strict": {"diff": 0.021, "lo": 0.005, "hi": 0.037},
                                "task_accuracy": {"diff": -0.004, "lo": -0.02, "hi": 0.012}}},
             "aft_dc": {"rft": {"task_accuracy": {"diff": -0.03, "lo": -0.05, "hi": -0.01},
                                "rerank_accuracy": {"diff": -0.02, "lo": -0.03, "hi": -0.01}}},
             "align_only": {"rft": {"task_accuracy": {"diff": -0.03, "lo": -0.05, "hi": -0.01},
                                    "rerank_accuracy": {"diff": -0.02, "lo": -0.03, "hi": -0.01}}},
             "pro": {"rft": {"task_accuracy": {"diff": 0.0, "lo": -0.01, "hi": 0.01}}},
             "vft": {"rft": {"task_accuracy": {"diff": -0.1, "lo": -0.2, "hi": -0.05}}}}
    assert verdict(comps, 1200) == ("Against RFT on 1,200 held-out questions, AFT-BC is higher on strict assessment, "
                                    "AFT-DC and alignment only are lower on rerank accuracy and task accuracy, and PRO "
                                    "does not differ beyond the noise.")
    assert verdict({m: {"vft": c["rft"]} for m, c in comps.items() if m != "vft"}).startswith("Against VFT, AFT-BC is")
    assert verdict({}) == "No paired comparison: this run has no RFT or VFT baseline to compare with."
    assert headline(comps)[:2] == ["AFT-BC − RFT on strict assessment: +2.1 [+0.5, +3.7] points — distinguishable",
                                   "AFT-BC − RFT on task accuracy: −0.4 [−2.0, +1.2] points — not distinguishable"]


def test_report_opens_with_the_verdict_and_where_it_came_from(tmp_path):
    out, _ = fake_run(tmp_path / "run")
    metrics = json.loads((out / "metrics.json").read_text())
    first = re.search(r"<body>\s*<h1>[^<]*</h1>\s*<p class='verdict'>([^<]*)</p>\s*<p class='from'>([^<]*)</p>",
                      write_report(out).read_text())
    assert first and first.group(1) == verdict(metrics["comparisons"], 40)
    assert first.group(1).count(".") == 1 and ";" not in first.group(1)  # one sentence, its numbers in the tables
    assert first.group(2) == "From commit unknown, date unknown, machine unknown."  # a run from before provenance
    metrics["provenance"] = {"commit": "0123456789ab-dirty", "date": "2026-12-07T18:50:12+00:00",
                             "machine": {"cpu": "AMD EPYC 7B13", "cores": 2, "threads": 1, "torch": "2.13.0+cpu"}}
    (out / "metrics.json").write_text(json.dumps(metrics))
    assert ("<p class='from'>From commit 0123456789ab-dirty, 2026-12-07 18:50 UTC, AMD EPYC 7B13 (2 cores, 1 torch "
            "thread), torch 2.13.0+cpu.</p>") in write_report(out).read_text()  # a record from before the ISA was kept
    metrics["provenance"]["machine"]["isa"] = "AVX2"
    (out / "metrics.json").write_text(json.dumps(metrics))
    assert ("<p class='from'>From commit 0123456789ab-dirty, 2026-12-07 18:50 UTC, AMD EPYC 7B13 (2 cores, 1 torch "
            "thread), AVX2, torch 2.13.0+cpu.</p>") in write_report(out).read_text()


def test_report_escapes_what_comes_from_the_run_folder(tmp_path):
    out, records = fake_run(tmp_path / "run")
    records[0]["question"] = "Is <script>alert(1)</script> & 2 < 3?"
    (out / "eval_samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    greedy = json.loads((out / "greedy.json").read_text())
    for rows in greedy.values():
        rows[0]["question"], rows[0]["cot"] = records[0]["question"], "1 < 2 = <b>3</b>. #### 3"
    (out / "greedy.json").write_text(json.dumps(greedy))
    doc = write_report(out).read_text()
    assert "Is &lt;script&gt;alert(1)&lt;/script&gt; &amp; 2 &lt; 3?" in doc and "<script>alert(1)" not in doc
    assert "<code>1 &lt; 2 = &lt;b&gt;3&lt;/b&gt;. #### 3</code>" in doc


def _delta_e(a: str, b: str) -> float:
    """CIE76 colour difference of two hex colours (about 2.3: just noticeable; over 20: clearly different)."""
    def lab(h):
        def lin(c):
            return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4
        r, g, b = (lin(int(h[i:i + 2], 16) / 255) for i in (1, 3, 5))
        xyz = ((0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047, 0.2126 * r + 0.7152 * g + 0.0722 * b,
               (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883)
        f = [v ** (1 / 3) if v > 0.008856 else 7.787 * v + 16 / 116 for v in xyz]
        return 116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])
    return sum((p - q) ** 2 for p, q in zip(lab(a), lab(b))) ** 0.5


def test_every_method_gets_its_own_clearly_different_colour():
    names = ["vft", *REGISTRY]
    colors = plots.method_colors(names)
    assert set(REGISTRY) <= set(plots.METHOD_COLORS)  # a new registry entry needs its colour
    palette = list(colors.values()) + [plots.POS, plots.NEG]  # methods never look like right/wrong COTs
    for i, a in enumerate(palette):
        for b in palette[i + 1:]:
            assert _delta_e(a, b) > 20, (a, b)
    fig = plots.assessment_vs_task({m: (0.5, 0.5) for m in names})
    assert len({t.marker.color for t in fig.data}) == len(names)
    others = plots.method_colors([f"checkpoint {i}" for i in range(12)] + ["aft_bc", "runs/x/aft_bc"])
    assert len(set(others.values())) == len(others)  # names outside the registry, or twice: still no repeat


def _traces(doc: str) -> list[dict]:
    """Every trace of every Plotly figure in an HTML page."""
    dec, out = json.JSONDecoder(), []
    for m in re.finditer(r'Plotly\.newPlot\(\s*"[^"]+",\s*', doc):
        out += dec.raw_decode(doc, m.end())[0]
    return out


def _layouts(doc: str) -> list[dict]:
    """The layout of every Plotly figure in an HTML page, in page order."""
    dec, out = json.JSONDecoder(), []
    for m in re.finditer(r'Plotly\.newPlot\(\s*"[^"]+",\s*', doc):
        _, end = dec.raw_decode(doc, m.end())
        out.append(dec.raw_decode(doc, re.compile(r",\s*").match(doc, end).end())[0])
    return out


def test_report_figures_draw_each_method_in_its_own_colour(report):
    doc, _ = report
    seen: dict[str, set] = {}
    for t in _traces(doc):
        if t.get("name") in METHODS:
            seen.setdefault(t["name"], set()).add((t.get("marker") or {}).get("color") or (t.get("line") or {}).get("color"))
    assert set(seen) == set(METHODS)  # the scatter names every method, the training curves every continuation
    assert all(len(c) == 1 for c in seen.values()), seen
    assert len({c for cs in seen.values() for c in cs}) == len(METHODS)


def test_assessment_vs_task_axes_span_the_noise_not_the_gap():
    points = {"vft": (0.745, 0.750), "rft": (0.760, 0.767), "aft_bc": (0.755, 0.762)}  # the 2-point spread
    cis = {m: {"task": (x - 0.03, x + 0.03), "assess": (y - 0.02, y + 0.02)} for m, (x, y) in points.items()}
    fig = plots.assessment_vs_task(points, cis)
    (x0, x1), (y0, y1) = fig.layout.xaxis.range, fig.layout.yaxis.range
    assert x1 - x0 >= 0.1 and y1 - y0 >= 0.1
    assert x0 <= 0.715 and x1 >= 0.79 and y0 <= 0.73 and y1 >= 0.787  # every interval inside the axes
    bar = fig.data[1].error_x
    assert bar.array[0] == pytest.approx(0.03) and bar.arrayminus[0] == pytest.approx(0.03)
    assert "x spans" in fig.layout.title.text and "95% intervals" in fig.layout.title.text
    wide = plots.assessment_vs_task({"a": (0.1, 0.2), "b": (0.9, 0.8)})
    assert wide.layout.xaxis.range[0] < 0.1 and wide.layout.xaxis.range[1] > 0.9  # wide data: no clipping


def test_each_caption_sits_under_its_own_figure_and_reads_its_spans_from_it(report):
    doc, _ = report
    blocks = re.findall(r"<figure>(.*?)</figure>", doc, re.S)
    assert len(blocks) == len(_layouts(doc)) >= 5
    for block in blocks:  # one figure, then its own caption
        assert block.count("Plotly.newPlot(") == 1 and block.rstrip().endswith("</figcaption>")
    captions = [re.search(r"<figcaption>(.*?)</figcaption>", b, re.S).group(1) for b in blocks]
    layouts = _layouts(doc)
    for caption, layout in zip(captions[:2], layouts[:2]):  # the forest plots: each panel's own span
        for name, axis in sorted(layout.items()):
            if name.startswith("xaxis"):
                span = axis["range"][1] - axis["range"][0]
                assert f"{span:.1f} points" in caption or f"{span:.0f} points" in caption, (caption, span)
    x, y = (layouts[2][a]["range"] for a in ("xaxis", "yaxis"))
    assert f"x axis spans {100 * (x[1] - x[0]):.0f} points and the y axis {100 * (y[1] - y[0]):.0f}" in captions[2]
    assert "never spans less than" not in doc


def test_score_axis_starts_where_the_scores_mass_does_and_counts_what_lies_below(tmp_path):
    pos, neg = [-0.01 * (i % 30) for i in range(1000)], [-0.1, -0.2, -3.5, -3.2, -3.4]
    fig = plots.score_distributions({"vft": (pos, neg)})
    lo, hi = fig.layout.yaxis.range
    assert -0.4 < lo < -0.29 and 0 < hi < 0.05  # the mass, not the three COTs near −3.5
    assert sorted(x for t in fig.data for x in t.y) == sorted(pos + neg)  # nothing dropped from the violins
    assert "3 of 1,005 scores lie below (lowest -3.50)" in fig.layout.title.text
    assert plots.score_distributions({"vft": ([-0.1, -0.2], [-0.3])}).layout.yaxis.range is None  # nothing to clip
    out, _ = fake_run(tmp_path / "run")
    scores = json.loads((out / "eval_scores.json").read_text())
    scores["vft"][0][2] = -3.5  # one wrong COT of the 600 scores the model finds absurd
    (out / "eval_scores.json").write_text(json.dumps(scores))
    doc = write_report(out).read_text()
    caption = html.unescape(re.search(r"<figcaption>(Every sampled COT.*?)</figcaption>", doc, re.S).group(1))
    lo = next(lay for lay in _layouts(doc) if "Scores of right vs wrong" in lay["title"]["text"])["yaxis"]["range"][0]
    below = sum(x < lo for rows in scores.values() for row in rows for x in row)
    assert -0.6 < lo < -0.3 and 1 <= below <= 3  # −3.5 and at most the Gaussian's lowest two
    assert f"The axis starts at {lo:.2f} nats/token, where the scores' mass begins: {below} of 600 scores lie below" \
        in caption, caption


def test_the_report_templates_ship_in_the_wheel(tmp_path):
    """``pip install .`` (not editable) must carry the Jinja2 templates: build the wheel from a copy."""
    import shutil
    import subprocess
    import sys
    import zipfile
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    src = tmp_path / "src"
    shutil.copytree(root / "aftlab", src / "aftlab", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "wheel"), str(src)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "wheel").glob("aftlab-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"aftlab/report/templates/{p.name}" for p in (root / "aftlab" / "report" / "templates").iterdir()}
    assert "aftlab/report/templates/report.html.j2" in shipped and shipped <= names


def test_aftlab_report_rewrites_reports_from_run_files(tmp_path, capsys):
    one, _ = fake_run(tmp_path / "one")
    seeds = tmp_path / "seeds"
    for s in (0, 1):
        fake_run(seeds / f"seed-{s}", seed=s)
    assert main(["report", str(one), str(seeds)]) == 0
    for folder in (one, seeds / "seed-0", seeds / "seed-1"):
        assert "What this run found" in (folder / "report.html").read_text()
    assert capsys.readouterr().out.count("wrote ") == 3
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "not a finished run folder" in capsys.readouterr().err


def test_real_run_metrics_are_all_defined_and_its_report_shows_its_beta(smoke_run):
    out, metrics = smoke_run
    for m in metrics["methods"].values():
        assert set(m) <= set(DEFINITIONS), set(m) - set(DEFINITIONS)
    doc = write_report(out).read_text()
    beta = json.loads((out / "config.json").read_text())["align"]["beta"]
    made = metrics["provenance"]  # recorded at run time, shown by the report
    assert made["machine"]["torch"] == torch.__version__ and made["machine"]["cores"] >= 1 and made["commit"]
    assert made["machine"]["isa"] == torch.backends.cpu.get_cpu_capability()
    assert f"<p class='from'>From commit {made['commit']}, " in doc and made["machine"]["cpu"] in doc
    assert re.search(rf"<b>aft_bc</b></th><td class='l'>boundary</td><td class='l'>{beta:g}</td>", doc), \
        re.findall(r"<b>aft_bc</b>.{0,120}", doc)


@pytest.mark.browser
def test_report_reads_at_800_px_in_headless_chromium(tmp_path):
    """No sideways scrolling of the page, every figure drawn, no figure title cut off at its edge."""
    import importlib.util
    from pathlib import Path
    pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    if not Path("/usr/bin/chromium").is_file():
        pytest.skip("no /usr/bin/chromium (`make browser` installs Debian's chromium)")
    spec = importlib.util.spec_from_file_location("report_screenshot", Path(__file__).parents[1] / "docs" /
                                                  "report_screenshot.py")
    shots = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shots)
    out, _ = fake_run(tmp_path / "run")
    facts = shots.render(write_report(out), tmp_path / "report.png", width=800)
    assert facts["page_width"] <= 800 and facts["figures"] == facts["drawn"] >= 5, facts
    assert facts["clipped_titles"] == [], facts
    assert (tmp_path / "report.png").stat().st_size > 10_000
