"""A self-contained HTML report of a run folder: what the run found, its settings, the figures and tables.

Place in the data path: … → metrics → stats → plots → **report**.

The report opens with the run's answer to "does each method beat RFT and VFT?": paired differences
with 95% intervals in plain words, and the noise floor of this run's question counts. Then the run's
settings, the metrics table with every column defined, the figures (each comparison with its interval),
the wrong COTs VFT prefers, and greedy generations beside their questions and gold answers.

>>> "<table" in metrics_table({"vft": {"task_accuracy": 0.5}})
True
>>> headline({"aft_bc": {"rft": {"rerank_accuracy": {"diff": 0.01, "lo": 0.002, "hi": 0.02}}}})[0]
'aft_bc − rft on rerank_accuracy: +1.0 [+0.2, +2.0] points — distinguishable'
"""
from __future__ import annotations

import html
import json
from pathlib import Path

from . import plots
from .sampling import read_samples
from .stats import describe, method_intervals

COLUMNS = ("task_accuracy", "assessment_accuracy", "assessment_per_question", "assessment_accuracy_strict",
           "rerank_accuracy", "self_consistency", "mean_pos_score", "mean_neg_score", "perplexity",
           "repetition_rate", "unfinished_rate", "ranking_tau")

# What every column of the metrics table means (shown under it; the README repeats them)
DEFINITIONS = {
    "task_accuracy": "share of held-out questions whose greedy COT ends in the right answer",
    "assessment_accuracy": "over (right, wrong) pairs of sampled COTs of the same held-out question, the share "
                           "where the model scores the right one higher (ties count ½), pooled over pairs",
    "assessment_per_question": "the same share averaged per question (questions with a right and a wrong COT)",
    "assessment_accuracy_strict": "assessment over pairs whose right COT also has every arithmetic step right "
                                  "(lucky COTs — right answer, a wrong step — left out)",
    "rerank_accuracy": "share of held-out questions whose top-scored sampled COT is right (the model as its "
                       "own verifier over the fixed sample set)",
    "self_consistency": "share of questions whose majority answer over the model's own k samples is right",
    "mean_pos_score": "mean score (nats/token) of the right sampled COTs",
    "mean_neg_score": "mean score (nats/token) of the wrong sampled COTs",
    "perplexity": "exp of the mean token NLL of the held-out reference COTs",
    "repetition_rate": "mean share of repeated word 3-grams in greedy COTs (near 1: the model loops)",
    "unfinished_rate": "share of greedy COTs that hit the token cap without an end-of-sequence token",
    "ranking_tau": "Kendall τ between the model's scores and the samples' quality levels (ranking feedback)",
}
PRIMARY = ("assessment_accuracy_strict", "rerank_accuracy")  # the pre-registered primary metrics of E2
SECONDARY = ("task_accuracy",)


def metrics_table(methods: dict[str, dict], columns=None, std: dict[str, dict] | None = None,
                  digits: int = 3) -> str:
    """An HTML table of metrics per method (mean ± std when ``std`` is given): the one metrics table of
    the report and the notebooks. ``columns``: metric keys to show (default: ``COLUMNS`` present);
    a missing value is left blank."""
    cols = list(columns) if columns else [c for c in COLUMNS if any(c in m for m in methods.values())]
    head = "".join(f"<th title='{html.escape(DEFINITIONS.get(c, ''))}'>{c.replace('_', ' ')}</th>" for c in cols)
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


def headline(comparisons: dict, metrics=PRIMARY + SECONDARY, baselines=("rft", "vft")) -> list[str]:
    """Every method against each baseline on ``metrics``, as sentences with their 95% intervals."""
    return [describe(m, vs, k, comparisons[m][vs][k]) for vs in baselines for m in comparisons
            if vs in comparisons[m] for k in metrics if k in comparisons[m][vs]]


def noise_floor(comparisons: dict, metrics=PRIMARY + SECONDARY) -> dict[str, float]:
    """Median half-width (points) of the 95% intervals per metric: differences smaller than this are
    not distinguishable from noise at this run's question counts."""
    out = {}
    for k in metrics:
        w = sorted(50 * (d[k]["hi"] - d[k]["lo"]) for m in comparisons.values() for d in m.values() if k in d)
        if w:
            out[k] = w[len(w) // 2]
    return out


def _settings(out: Path, metrics: dict) -> str:
    cfg = json.loads((out / "config.json").read_text()) if (out / "config.json").is_file() else {}
    a, s, v = cfg.get("align", {}), cfg.get("sample", {}), cfg.get("vft", {})
    items = [("preset", metrics.get("preset")), ("seed", metrics.get("seed")),
             ("methods", ", ".join(metrics.get("methods", {}))),
             ("β (boundary margin)", a.get("beta")), ("γ (score scale)", a.get("gamma")), ("λ (alignment weight)", a.get("lam")),
             ("NLL weight", a.get("nll_weight")), ("AFT lr / epochs", f"{a.get('lr')} / {a.get('epochs')}"),
             ("VFT steps × batch", f"{v.get('steps')} × {v.get('batch_size')}"),
             ("k samples per question (T)", f"{s.get('k')} ({s.get('temperature')})"),
             ("training questions sampled", metrics.get("n_train_questions_sampled")),
             ("held-out questions: task / assessment", f"{metrics.get('n_eval_questions')} / "
                                                       f"{metrics.get('n_assess_questions', '—')}"),
             ("files", f"{out / 'metrics.json'}, {out / 'config.json'}")]
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td class='l'>{html.escape(str(x))}</td></tr>" for k, x in items)
    return f"<table class='settings'>{rows}</table>"


def _examples(examples: list[dict]) -> str:
    items = []
    for e in examples:
        items.append(
            f"<div class='ex'><p><b>Q:</b> {html.escape(e['question'])} (gold {html.escape(str(e['gold']))})</p>"
            f"<p class='neg'>wrong, score {e['wrong_score']:.3f}: <code>{html.escape(e['wrong_cot'])}</code></p>"
            f"<p class='pos'>right, score {e['right_score']:.3f}: <code>{html.escape(e['right_cot'])}</code></p></div>")
    return "".join(items) or "<p>No wrong COT outscored a right one.</p>"


def _greedy(greedy: dict[str, list[dict]], gold: dict[str, str], n: int = 5) -> str:
    names = list(greedy)
    rows = []
    for j in range(min(n, *(len(g) for g in greedy.values()))):
        q = greedy[names[0]][j]
        cots = "".join(f"<div><b>{html.escape(m)}</b> {'✓' if greedy[m][j]['correct'] else '✗'} "
                       f"<code>{html.escape(greedy[m][j]['cot'])}</code></div>" for m in names)
        rows.append(f"<div class='ex'><p><b>Q:</b> {html.escape(q['question'])} "
                    f"<b>gold:</b> {html.escape(str(gold.get(q['id'], '?')))}</p>{cots}</div>")
    return "".join(rows)


STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:auto;padding:0 12px}table{border-collapse:collapse}"
         ".scroll{overflow-x:auto}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{max-width:9em}"
         "td.l{text-align:left}.neg{color:#b3402a}.pos{color:#1d7268}code{white-space:pre-wrap}"
         ".ex{border-left:3px solid #ccc;padding-left:8px;margin:8px 0}.headline{background:#f4f6fb;padding:8px 14px;"
         "border-left:4px solid #1f77b4}.warn{background:#fff3f3;border:3px solid #d62728;padding:8px}"
         "dl{font-size:.9em}dt{font-weight:bold}dd{margin:0 0 4px 16px}.plotly-graph-div{max-width:100%}")


def write_report(out: str | Path) -> Path:
    """Write ``out/report.html`` from the files ``aftlab.pipeline.run`` left in ``out``."""
    out = Path(out)
    metrics = json.loads((out / "metrics.json").read_text())
    logs = json.loads((out / "align_logs.json").read_text())
    scores = json.loads((out / "eval_scores.json").read_text())
    records = read_samples(out / "eval_samples.jsonl")
    greedy = json.loads((out / "greedy.json").read_text())
    per_q = json.loads((out / "per_question.json").read_text()) if (out / "per_question.json").is_file() else {}
    comps = metrics.get("comparisons", {})
    gold = {r["id"]: r["answer"] for r in records}
    body = [f"<h1>aftlab run: preset {html.escape(str(metrics['preset']))}, seed {metrics['seed']}</h1>"]
    if str(metrics["preset"]).endswith("smoke") or metrics.get("n_eval_questions", 0) < 200:
        body.append("<p class='warn'><b>⚠ A smoke-sized run: its figures are not meaningful</b> — "
                    f"{metrics.get('n_eval_questions')} held-out questions; intervals below say how little it can tell.</p>")
    body.append("<h2>What this run found</h2><div class='headline'>")
    lines = headline(comps)
    body.append("<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in lines) + "</ul>" if lines else
                "<p>No paired comparison (this run has no RFT or VFT baseline to compare with).</p>")
    floor = noise_floor(comps)
    if floor:
        body.append("<p><b>Noise floor:</b> with these question counts a 95% interval reaches about "
                    + ", ".join(f"±{w:.1f} points on {k.replace('_', ' ')}" for k, w in floor.items())
                    + "; smaller differences cannot be told from noise. Intervals resample held-out questions "
                      "jointly for both methods (paired bootstrap); one seed, so batch-order and seed variation "
                      "are not in them (<code>aftlab run --seeds</code> pools seeds).</p>")
    body.append("</div><h2>Settings</h2>" + _settings(out, metrics))
    body.append("<h2>Accuracy and scores per method</h2>" + metrics_table(metrics["methods"]))
    cols = [c for c in COLUMNS if any(c in m for m in metrics["methods"].values())]
    body.append("<dl>" + "".join(f"<dt>{c.replace('_', ' ')}</dt><dd>{html.escape(DEFINITIONS[c])}</dd>"
                                 for c in cols) + "</dl>")
    correct = [[s["correct"] for s in r["samples"]] for r in records]
    dist = {m: ([x for s, c in zip(sc, correct) for x, ok in zip(s, c) if ok],
                [x for s, c in zip(sc, correct) for x, ok in zip(s, c) if not ok]) for m, sc in scores.items()}
    figs = []
    for vs in ("rft", "vft"):
        if any(vs in c for c in comps.values()):
            figs.append(plots.comparison_forest(comps, vs))
    figs.append(plots.score_distributions(dist))
    if logs:
        figs.append(plots.training_curves(logs, ("neg_score", "gap", "pos_score")))
    cis = method_intervals(per_q) if per_q else {}
    figs.append(plots.assessment_vs_task(
        {m: (v["task_accuracy"], v["assessment_accuracy"]) for m, v in metrics["methods"].items()},
        {m: {"task": c.get("task_accuracy"), "assess": c.get("assessment_accuracy")} for m, c in cis.items()
         if "task_accuracy" in c and "assessment_accuracy" in c}))
    for i, fig in enumerate(figs):
        fig.update_layout(autosize=True, margin=dict(l=60, r=20))
        body.append(fig.to_html(full_html=False, include_plotlyjs="inline" if i == 0 else False,
                                config={"responsive": True}, default_width="100%"))
    body.append("<h2>Assessment misalignment under VFT: wrong COTs scored above right ones</h2>")
    body.append(_examples(metrics.get("misranked_examples", [])))
    body.append("<h2>Greedy generations (first 5 held-out questions)</h2>" + _greedy(greedy, gold))
    doc = (f"<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' "
           f"content='width=device-width, initial-scale=1'><title>aftlab report</title><style>{STYLE}</style>"
           f"</head><body>{''.join(body)}</body></html>")
    path = out / "report.html"
    path.write_text(doc, encoding="utf-8")
    return path
