"""A self-contained HTML report of a run folder: figures, the accuracy table, misranked examples.

Place in the data path: … → metrics → plots → **report**.

>>> "<table" in metrics_table({"vft": {"task_accuracy": 0.5}})
True
"""
from __future__ import annotations

import html
import json
from pathlib import Path

from . import plots
from .sampling import read_samples

COLUMNS = ("task_accuracy", "assessment_accuracy", "assessment_per_question", "assessment_accuracy_strict",
           "rerank_accuracy", "mean_pos_score", "mean_neg_score", "repetition_rate", "unfinished_rate", "ranking_tau")


def metrics_table(methods: dict[str, dict], columns=None, std: dict[str, dict] | None = None,
                  digits: int = 3) -> str:
    """An HTML table of metrics per method (mean ± std when ``std`` is given): the one metrics table of
    the report and the notebooks. ``columns``: metric keys to show (default: ``COLUMNS`` present);
    a missing value is left blank."""
    cols = list(columns) if columns else [c for c in COLUMNS if any(c in m for m in methods.values())]
    head = "".join(f"<th>{c.replace('_', ' ')}</th>" for c in cols)  # spaces let the headers wrap
    rows = []
    for name, m in methods.items():
        cells = []
        for c in cols:
            v = m.get(c)
            txt = "" if not isinstance(v, (int, float)) else f"{v:.{digits}f}" + (
                f" ± {std[name][c]:.{digits}f}" if std and c in std.get(name, {}) else "")
            cells.append(f"<td>{txt}</td>")
        rows.append(f"<tr><th>{html.escape(name)}</th>{''.join(cells)}</tr>")
    return f"<div class='scroll'><table><tr><th>method</th>{head}</tr>{''.join(rows)}</table></div>"


def _examples(examples: list[dict]) -> str:
    items = []
    for e in examples:
        items.append(
            f"<div class='ex'><p><b>Q:</b> {html.escape(e['question'])} (gold {html.escape(str(e['gold']))})</p>"
            f"<p class='neg'>wrong, score {e['wrong_score']:.3f}: <code>{html.escape(e['wrong_cot'])}</code></p>"
            f"<p class='pos'>right, score {e['right_score']:.3f}: <code>{html.escape(e['right_cot'])}</code></p></div>")
    return "".join(items) or "<p>No wrong COT outscored a right one.</p>"


def write_report(out: str | Path) -> Path:
    """Write ``out/report.html`` from the files ``aftlab.pipeline.run`` left in ``out``."""
    out = Path(out)
    metrics = json.loads((out / "metrics.json").read_text())
    logs = json.loads((out / "align_logs.json").read_text())
    scores = json.loads((out / "eval_scores.json").read_text())
    records = read_samples(out / "eval_samples.jsonl")
    greedy = json.loads((out / "greedy.json").read_text())
    correct = [[s["correct"] for s in r["samples"]] for r in records]
    dist = {m: ([x for s, c in zip(sc, correct) for x, ok in zip(s, c) if ok],
                [x for s, c in zip(sc, correct) for x, ok in zip(s, c) if not ok]) for m, sc in scores.items()}
    figs = [plots.score_distributions(dist), plots.accuracy_bars(metrics["methods"])]
    if logs:
        figs.append(plots.training_curves(logs, ("neg_score", "gap", "pos_score")))
    figs.append(plots.assessment_vs_task({m: (v["task_accuracy"], v["assessment_accuracy"])
                                          for m, v in metrics["methods"].items()}))
    body = [f"<h1>aftlab run: preset {html.escape(str(metrics['preset']))}, seed {metrics['seed']}</h1>",
            f"<p>{metrics['n_train_questions_sampled']} training questions sampled; "
            f"{metrics['n_eval_questions']} held-out questions; {metrics['seconds']:.0f} s in all.</p>",
            "<h2>Accuracy and scores per method</h2>", metrics_table(metrics["methods"]),
            "<p>task = greedy answer correct; assessment = share of (right, wrong) COT pairs of a held-out question "
            "where the right one scores higher (strict: only pairs whose right COT also has every step right); "
            "rerank = the top-scored of the fixed samples is right.</p>"]
    for i, fig in enumerate(figs):
        body.append(fig.to_html(full_html=False, include_plotlyjs="inline" if i == 0 else False))
    body.append("<h2>Assessment misalignment under VFT: wrong COTs scored above right ones</h2>")
    body.append(_examples(metrics.get("misranked_examples", [])))
    body.append("<h2>Greedy generations (first 5 held-out questions)</h2>")
    for m, g in greedy.items():
        rows = "".join(f"<li><code>{html.escape(x['cot'])}</code> {'✓' if x['correct'] else '✗'}</li>" for x in g[:5])
        body.append(f"<h3>{html.escape(m)}</h3><ul>{rows}</ul>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
             ".scroll{overflow-x:auto}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{max-width:9em}.neg{color:#b3402a}.pos{color:#1d7268}"
             ".ex{border-left:3px solid #ccc;padding-left:8px;margin:8px 0}")
    doc = (f"<!doctype html><html><head><meta charset='utf-8'><title>aftlab report</title><style>{style}</style>"
           f"</head><body>{''.join(body)}</body></html>")
    path = out / "report.html"
    path.write_text(doc, encoding="utf-8")
    return path
