"""A self-contained HTML report of a run folder: what the run found, its settings, the figures and tables.

Place in the data path: … → metrics → stats → plots → **report**.

The report opens with the run's answer to "does each method beat RFT and VFT?": paired differences
with 95% intervals in plain words, and the noise floor of this run's question counts. Then the run's
settings (per method: constraint, β in nats/token, γ, λ, lr) and the files they come from; the
metrics tables with every column defined (from ``metrics.DEFINITIONS``, the one home of the
definitions); the figures, methods in the colours of ``plots.method_colors``, each comparison with
its interval and no axis zoomed into the noise; the wrong COTs VFT prefers; and greedy generations
beside their questions and gold answers. ``aftlab report RUN`` rewrites it from the run's files.

>>> "<table" in metrics_table({"vft": {"task_accuracy": 0.5}})
True
>>> headline({"aft_bc": {"rft": {"assessment_accuracy_strict": {"diff": 0.004, "lo": -0.003, "hi": 0.011}}}})[0]
'AFT-BC − RFT on strict assessment: +0.4 [−0.3, +1.1] points — not distinguishable'
"""
from __future__ import annotations

import html
import json
from pathlib import Path

from ..align.methods import REGISTRY
from ..config import ConfigError, from_dict
from ..eval.metrics import DEFINITIONS, label
from ..eval.stats import describe, method_intervals
from ..sampling.samples import read_samples
from . import plots
from .plots import method_label

ACCURACY_COLUMNS = ("task_accuracy", "assessment_accuracy", "assessment_per_question", "assessment_accuracy_strict",
                    "rerank_accuracy", "self_consistency")
SCORE_COLUMNS = ("mean_pos_score", "mean_neg_score", "perplexity", "repetition_rate", "unfinished_rate",
                 "ranking_tau")
COLUMNS = ACCURACY_COLUMNS + SCORE_COLUMNS
PRIMARY = ("assessment_accuracy_strict", "rerank_accuracy")  # the pre-registered primary metrics of E2
SECONDARY = ("task_accuracy",)
BASELINES = {"rft": "the control, NLL on the positive samples only", "vft": "the starting model, vanilla fine-tuning"}


def metrics_table(methods: dict[str, dict], columns=None, std: dict[str, dict] | None = None,
                  digits: int = 3) -> str:
    """An HTML table of metrics per method (mean ± std when ``std`` is given): the one metrics table of
    the report and the notebooks. ``columns``: metric keys to show (default: ``COLUMNS`` present);
    a missing value is left blank. Headers are the metrics' plain names, their definitions on hover."""
    cols = list(columns) if columns else [c for c in COLUMNS if any(c in m for m in methods.values())]
    head = "".join(f"<th title='{html.escape(DEFINITIONS.get(c, ''))}'>{html.escape(label(c))}</th>" for c in cols)
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


def definitions(columns) -> str:
    """The definitions of ``columns`` as an HTML list (what the report prints under its tables)."""
    return "<dl>" + "".join(f"<dt>{html.escape(label(c))}</dt><dd>{html.escape(DEFINITIONS[c])}</dd>"
                            for c in columns) + "</dl>"


def _compared(comparisons: dict, vs: str, baselines) -> list[str]:
    """Methods compared with ``vs``; one baseline appears against another only once (RFT − VFT, not VFT − RFT)."""
    return [m for m in comparisons if vs in comparisons[m]
            and not (m in baselines and list(baselines).index(m) > list(baselines).index(vs))]


def headline(comparisons: dict, metrics=PRIMARY + SECONDARY, baselines=tuple(BASELINES)) -> list[str]:
    """Every method against each baseline on ``metrics``, as plain sentences with their 95% intervals."""
    return [describe(method_label(m), method_label(vs), label(k), comparisons[m][vs][k]) for vs in baselines
            for m in _compared(comparisons, vs, baselines) for k in metrics if k in comparisons[m][vs]]


def verdict(comparisons: dict, vs: str, metrics=PRIMARY + SECONDARY, baselines=tuple(BASELINES)) -> str:
    """One sentence: which methods differ from ``vs`` beyond the noise, and in which direction.

    >>> verdict({"aft_bc": {"rft": {"task_accuracy": {"diff": -0.05, "lo": -0.08, "hi": -0.02}}}}, "rft")
    'Against RFT: AFT-BC is lower on task accuracy (−5.0 points); every other difference is within the noise.'
    """
    found = []
    for m in _compared(comparisons, vs, baselines):
        for k in metrics:
            d = comparisons[m][vs].get(k)
            if d and (d["lo"] > 0 or d["hi"] < 0):
                pts = f"{100 * d['diff']:+.1f}".replace("-", "−")
                way = "higher" if d["lo"] > 0 else "lower"
                found.append(f"{method_label(m)} is {way} on {label(k)} ({pts} points)")
    if not found:
        return (f"Against {method_label(vs)}: no method differs beyond the noise on "
                f"{', '.join(label(k) for k in metrics)}.")
    return f"Against {method_label(vs)}: {'; '.join(found)}; every other difference is within the noise."


def noise_floor(comparisons: dict, metrics=PRIMARY + SECONDARY) -> dict[str, float]:
    """Median half-width (points) of the 95% intervals per metric: differences smaller than this are
    not distinguishable from noise at this run's question counts."""
    out = {}
    for k in metrics:
        w = sorted(50 * (d[k]["hi"] - d[k]["lo"]) for m in comparisons.values() for d in m.values() if k in d)
        if w:
            out[k] = w[len(w) // 2]
    return out


def _headline_html(comps: dict) -> str:
    parts = []
    for vs, what in BASELINES.items():
        names = _compared(comps, vs, tuple(BASELINES))
        if not names:
            continue
        items = []
        for m in names:
            for k in PRIMARY + SECONDARY:
                d = comps[m][vs].get(k)
                if d:
                    sig = d["lo"] > 0 or d["hi"] < 0
                    items.append(f"<li{' class=sig' if sig else ''}>"
                                 f"{html.escape(describe(method_label(m), method_label(vs), label(k), d))}</li>")
        parts.append(f"<h3>Against {method_label(vs)}: {html.escape(what)}</h3>"
                     f"<p><b>{html.escape(verdict(comps, vs))}</b></p><ul>{''.join(items)}</ul>")
    if not parts:
        return "<p>No paired comparison (this run has no RFT or VFT baseline to compare with).</p>"
    floor = noise_floor(comps)
    if floor:
        parts.append("<p><b>Noise floor:</b> with these question counts a 95% interval reaches about "
                     + ", ".join(f"±{w:.1f} points on {label(k)}" for k, w in floor.items())
                     + "; smaller differences cannot be told from noise. Intervals resample held-out questions "
                       "jointly for both methods (paired bootstrap); one seed, so batch-order and seed variation "
                       "are not in them (<code>aftlab run --seeds</code> pools seeds). Differences are "
                       "method − baseline in points (1 point = 0.01 of accuracy); the primary metrics are "
                     + " and ".join(label(k) for k in PRIMARY) + ".</p>")
    return "".join(parts)


def _table(rows, head=None) -> str:
    """A left-aligned HTML table of already-escaped cells, the first cell of each row its header."""
    h = "<tr>" + "".join(f"<th class='l'>{html.escape(x)}</th>" for x in head) + "</tr>" if head else ""
    body = "".join("<tr>" + "".join(f"<{t} class='l'>{x}</{t}>" for t, x in zip(["th"] + ["td"] * len(r), r))
                   + "</tr>" for r in rows)
    return f"<div class='scroll'><table class='settings'>{h}{body}</table></div>"


def _g(x) -> str:
    """A setting or count for the page: floats short (``0.0001``), counts with thousands separators (``3,000``)."""
    if x is None:
        return "—"
    return html.escape(f"{x:g}" if isinstance(x, float) else f"{x:,}" if isinstance(x, int) else str(x))


def settings(out: Path, metrics: dict, logs: dict | None = None, n_records: int | None = None) -> str:
    """The run's settings as two HTML tables: the run (data, model, counts, files) and each method's
    alignment settings (constraint, β in nats/token, γ, λ, NLL weight, lr), read from ``config.json``
    (what the run used) and ``metrics.json`` (the counts it saw)."""
    out, logs = Path(out), logs or {}
    try:
        cfg = from_dict(json.loads((out / "config.json").read_text())) if (out / "config.json").is_file() else None
    except (ConfigError, TypeError, ValueError):  # a config from another version: show what metrics.json has
        cfg = None
    vft = metrics.get("methods", {}).get("vft", {})
    n_task, n_assess = metrics.get("n_eval_questions"), metrics.get("n_assess_questions")
    rows = [("preset, seed", f"{_g(metrics.get('preset'))}, seed {_g(metrics.get('seed'))}")]
    if cfg:
        d, mo, v, s = cfg.data, cfg.model, cfg.vft, cfg.sample
        task = (f"synthetic word problems, {d.min_steps}–{d.max_steps} steps, numbers up to {d.max_number}"
                if d.source == "synthetic" else html.escape(d.source))
        model = (f"tiny (hidden {mo.hidden}, {mo.layers} layers, {mo.heads} heads)" if mo.name == "tiny"
                 else html.escape(mo.name) + (f", LoRA r = {mo.lora_r}" if mo.lora else ""))
        rows += [("task", task), ("model", model),
                 ("VFT", f"{v.steps:,} steps × batch {v.batch_size}, lr {v.lr:g}"),
                 ("training questions", f"{d.n_train:,} generated; {_g(metrics.get('n_train_questions_sampled'))} "
                                        f"sampled, k = {s.k} COTs each at T = {s.temperature:g}")]
    held = f"{_g(n_task)} for greedy task accuracy"
    if n_records is not None:
        held += (f"; {n_records:,} in the fixed sample set (drawn once from VFT"
                 + (f", {cfg.eval_k} COTs each" if cfg else "") + ") for assessment and rerank")
        if cfg and cfg.assess_mixed:
            held += (f" (the first {cfg.assess_questions:,}, then more until {cfg.assess_mixed:,} had a right and "
                     "a wrong COT)")
    if n_assess is not None:
        held += (f", of which {_g(n_assess)} have a right and a wrong COT ({_g(vft.get('n_pairs'))} pairs, "
                 f"{_g(vft.get('n_pairs_strict'))} with a step-valid right COT)")
    rows.append(("held-out questions", held))
    if cfg:
        a = cfg.align
        rows.append(("AFT, every method", f"lr {a.lr:g}, {a.epochs:g} epoch(s), {a.questions_per_step} questions "
                                          f"per step, NLL weight {a.nll_weight:g}; positives: "
                                          + ("step-valid" if a.strict_positives else "right-answer")
                                          + " samples" + (" + the reference" if a.include_reference else "")))
    rows.append(("files", " · ".join(f"<a href='{f}'>{f}</a> (<code>{html.escape(str((out / f).resolve()))}</code>)"
                                     for f in ("metrics.json", "config.json") if (out / f).is_file())))
    parts = [_table([(html.escape(k), v) for k, v in rows])]
    if cfg:
        per = []
        for m in cfg.methods:
            a, entry = cfg.align_for(m), REGISTRY.get(m)
            aligns = entry is not None and entry.loss is not None and a.lam > 0
            bounded = aligns and a.constraint == "boundary"  # β places the boundary; no boundary, no β
            beta = a.beta if not a.beta_quantile else (logs.get(m) or [{}])[0].get("beta")
            note = f" (calibrated: quantile {a.beta_quantile:g})" if a.beta_quantile else ""
            per.append((f"<b>{html.escape(m)}</b>", _g(a.constraint or "none") if aligns else "—",
                        (_g(beta) + note) if bounded else "—",
                        _g(a.gamma) if aligns and not entry.reference else "—",  # DPO scales by dpo_beta instead
                        _g(a.lam), _g(a.nll_weight), _g(a.lr), html.escape(entry.doc if entry else "")))
        parts.append("<p>Per method (β: boundary margin below the worst right COT, in nats/token, the scores' "
                     "units; γ: score scale inside the loss; λ: weight of the alignment term; —: the setting "
                     "does not enter this method's loss):</p>"
                     + _table(per, ("method", "constraint", "β (nats/token)", "γ", "λ", "NLL weight", "lr",
                                    "what it trains")))
    return "".join(parts)


def _examples(examples: list[dict]) -> str:
    items = []
    for e in examples:
        items.append(
            f"<div class='ex'><p><b>Q:</b> {html.escape(e['question'])} <b>gold:</b> {html.escape(str(e['gold']))}</p>"
            f"<p class='neg'>wrong, score {e['wrong_score']:.3f}: <code>{html.escape(e['wrong_cot'])}</code></p>"
            f"<p class='pos'>right, score {e['right_score']:.3f}: <code>{html.escape(e['right_cot'])}</code></p></div>")
    return "".join(items) or "<p>No wrong COT outscored a right one.</p>"


def greedy_section(greedy: dict[str, list[dict]], records: dict[str, dict], n: int = 5) -> str:
    """The first ``n`` held-out questions, each with its gold answer and reference COT, then every
    method's greedy COT marked right (✓) or wrong (✗). ``records``: question id → sample record."""
    names = list(greedy)
    rows = []
    for j in range(min(n, *(len(g) for g in greedy.values()))):
        q = greedy[names[0]][j]
        rec = records.get(q["id"], {})
        ref = f" <span class='ref'>reference: <code>{html.escape(rec['reference'])}</code></span>" \
            if rec.get("reference") else ""
        cots = "".join(f"<tr><th>{html.escape(m)}</th><td class='{'pos' if greedy[m][j]['correct'] else 'neg'}'>"
                       f"{'✓' if greedy[m][j]['correct'] else '✗'}</td>"
                       f"<td class='l'><code>{html.escape(greedy[m][j]['cot'])}</code></td></tr>" for m in names)
        rows.append(f"<div class='ex'><p><b>Q:</b> {html.escape(q['question'])}<br><b>gold answer:</b> "
                    f"{html.escape(str(rec.get('answer', '?')))}{ref}</p><table class='greedy'>{cots}</table></div>")
    return "".join(rows)


STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:auto;padding:0 12px;line-height:1.35}"
         "table{border-collapse:collapse;margin:4px 0}.scroll{overflow-x:auto}"
         "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right;vertical-align:top}th{max-width:9em}"
         "td.l,th.l{text-align:left}table.settings th.l{white-space:nowrap}table.settings td.l{max-width:none}"
         ".neg{color:#b3402a}.pos{color:#1d7268}code{white-space:pre-wrap;word-break:break-word}"
         ".ex{border-left:3px solid #ccc;padding-left:8px;margin:10px 0}.ex p{margin:4px 0}.ref{color:#555}"
         "table.greedy td,table.greedy th{border:none;padding:1px 6px}"
         ".headline{background:#f4f6fb;padding:4px 14px;border-left:4px solid #1f77b4}.headline h3{margin:10px 0 4px}"
         ".headline ul{margin:4px 0;padding-left:20px}li.sig{font-weight:bold}"
         ".warn{background:#fff3f3;border:3px solid #d62728;padding:8px}.caption{color:#444;font-size:.92em}"
         "dl{font-size:.9em}dt{font-weight:bold}dd{margin:0 0 4px 16px}.plotly-graph-div{max-width:100%}")


def _figure(fig, first: bool) -> str:
    fig.update_layout(autosize=True, margin=dict(l=60, r=20))
    return fig.to_html(full_html=False, include_plotlyjs="inline" if first else False, default_width="100%",
                       config={"responsive": True, "displaylogo": False})


def write_report(out: str | Path) -> Path:
    """Write ``out/report.html`` from the files ``aftlab.pipeline.run`` left in ``out`` (no model runs)."""
    out = Path(out)
    if not (out / "metrics.json").is_file():
        raise FileNotFoundError(f"{out / 'metrics.json'}: not a finished run folder (`aftlab run --out` writes it)")
    metrics = json.loads((out / "metrics.json").read_text())
    logs = json.loads((out / "align_logs.json").read_text())
    scores = json.loads((out / "eval_scores.json").read_text())
    records = read_samples(out / "eval_samples.jsonl")
    greedy = json.loads((out / "greedy.json").read_text())
    per_q = json.loads((out / "per_question.json").read_text()) if (out / "per_question.json").is_file() else {}
    comps = metrics.get("comparisons", {})
    body = [f"<h1>aftlab run: preset {html.escape(str(metrics['preset']))}, seed {metrics['seed']}</h1>"]
    if str(metrics["preset"]).endswith("smoke") or metrics.get("n_eval_questions", 0) < 200:
        body.append("<p class='warn'><b>⚠ A smoke-sized run: its figures are not meaningful</b> — "
                    f"{metrics.get('n_eval_questions')} held-out questions; the intervals below say how little it "
                    "can tell.</p>")
    body.append("<h2>What this run found</h2><div class='headline'>" + _headline_html(comps) + "</div>")
    body.append("<h2>Settings</h2>" + settings(out, metrics, logs, len(records)))
    accuracy = [c for c in ACCURACY_COLUMNS if any(c in m for m in metrics["methods"].values())]
    health = [c for c in SCORE_COLUMNS if any(c in m for m in metrics["methods"].values())]
    body.append("<h2>Accuracy per method</h2><p class='caption'>Shares of held-out questions or pairs "
                "(0.5 = 50%); the intervals of the differences are in the headline.</p>"
                + metrics_table(metrics["methods"], accuracy) + definitions(accuracy))
    body.append("<h2>Scores and health of the generations</h2>"
                + metrics_table(metrics["methods"], health) + definitions(health))
    figs = []
    for vs in BASELINES:
        if any(vs in c for c in comps.values()):
            figs.append(("", plots.comparison_forest(comps, vs)))
    cis = method_intervals(per_q) if per_q else {}
    figs.append(("Each point is one model; an axis never spans less than 10 points, so gaps inside the "
                 "noise do not fill the plot.", plots.assessment_vs_task(
                     {m: (v["task_accuracy"], v["assessment_accuracy"]) for m, v in metrics["methods"].items()},
                     {m: {"task": c.get("task_accuracy"), "assess": c.get("assessment_accuracy")}
                      for m, c in cis.items() if "task_accuracy" in c and "assessment_accuracy" in c})))
    correct = [[s["correct"] for s in r["samples"]] for r in records]
    dist = {m: ([x for s, c in zip(sc, correct) for x, ok in zip(s, c) if ok],
                [x for s, c in zip(sc, correct) for x, ok in zip(s, c) if not ok]) for m, sc in scores.items()}
    figs.append(("", plots.score_distributions(dist)))
    if logs:
        figs.append(("", plots.training_curves(logs, ("neg_score", "gap", "pos_score"))))
    body.append("<h2>Figures</h2>")
    for i, (caption, fig) in enumerate(figs):
        body.append((f"<p class='caption'>{html.escape(caption)}</p>" if caption else "") + _figure(fig, i == 0))
    body.append("<h2>Assessment misalignment under VFT: wrong COTs scored above right ones</h2>")
    body.append(_examples(metrics.get("misranked_examples", [])))
    body.append("<h2>Greedy generations (first 5 held-out questions)</h2>"
                + greedy_section(greedy, {r["id"]: r for r in records}))
    doc = (f"<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' "
           f"content='width=device-width, initial-scale=1'><title>aftlab report</title><style>{STYLE}</style>"
           f"</head><body>{''.join(body)}</body></html>")
    path = out / "report.html"
    path.write_text(doc, encoding="utf-8")
    return path
