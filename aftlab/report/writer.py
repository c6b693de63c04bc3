"""A self-contained HTML report of a run folder: what the run found, its settings, the figures and tables.

Place in the data path: … → metrics → stats → plots → **report**.

The report opens with one sentence on what the run shows (each method against RFT, the control, by
the differences its paired 95% intervals tell from noise) and where it came from (commit, date,
machine); then each comparison in plain words with its interval, and the noise floor of this run's
question counts. Then the run's settings (per method: constraint, β in nats/token, γ, λ, lr) and
the files they come from; the metrics tables with every column defined (from
``metrics.DEFINITIONS``, the one home of the definitions); the figures, methods in the colours of
``plots.method_colors``, each with its caption beneath it and no axis zoomed into the noise; the
wrong COTs VFT prefers; and greedy generations beside their questions and gold answers.
``aftlab report RUN`` rewrites it from the run's files.

The page is the Jinja2 template ``templates/report.html.j2`` (autoescaped: every text from the run
folder is escaped; only the figures' and tables' own HTML goes in as markup); this module gathers
what it shows.

>>> "<table" in metrics_table({"vft": {"task_accuracy": 0.5}})
True
>>> headline({"aft_bc": {"rft": {"assessment_accuracy_strict": {"diff": 0.004, "lo": -0.003, "hi": 0.011}}}})[0]
'AFT-BC − RFT on strict assessment: +0.4 [−0.3, +1.1] points — not distinguishable'
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import jinja2
from markupsafe import Markup

from ..align.methods import REGISTRY
from ..config import ConfigError, from_dict
from ..eval.metrics import DEFINITIONS, label
from ..eval.stats import describe, method_intervals
from ..sampling.samples import read_samples
from . import plots
from .plots import method_label
from .provenance import line

ACCURACY_COLUMNS = ("task_accuracy", "assessment_accuracy", "assessment_per_question", "assessment_accuracy_strict",
                    "rerank_accuracy", "self_consistency")
SCORE_COLUMNS = ("mean_pos_score", "mean_neg_score", "perplexity", "repetition_rate", "unfinished_rate",
                 "ranking_tau")
COLUMNS = ACCURACY_COLUMNS + SCORE_COLUMNS
PRIMARY = ("assessment_accuracy_strict", "rerank_accuracy")  # the pre-registered primary metrics of E2
SECONDARY = ("task_accuracy",)
BASELINES = {"rft": "the control, NLL on the positive samples only", "vft": "the starting model, vanilla fine-tuning"}
FILES = ("metrics.json", "config.json", "per_question.json", "align_logs.json", "greedy.json")


@functools.cache
def _env() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("aftlab.report", "templates"), autoescape=True,
                              trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)


def _macros():
    """The table macros of ``templates/tables.html.j2``, callable from Python (they return markup)."""
    return _env().get_template("tables.html.j2").module


def metrics_table(methods: dict[str, dict], columns=None, std: dict[str, dict] | None = None,
                  digits: int = 3) -> str:
    """An HTML table of metrics per method (mean ± std when ``std`` is given): the one metrics table of
    the report and the notebooks. ``columns``: metric keys to show (default: ``COLUMNS`` present);
    a missing value is left blank. Headers are the metrics' plain names, their definitions on hover."""
    cols = list(columns) if columns else [c for c in COLUMNS if any(c in m for m in methods.values())]
    rows = []
    for name, m in methods.items():
        cells = []
        for c in cols:
            v = m.get(c)
            cells.append("" if not isinstance(v, (int, float)) else f"{v:.{digits}f}" + (
                f" ± {std[name][c]:.{digits}f}" if std and c in std.get(name, {}) else ""))
        rows.append((name, cells))
    head = [(label(c), DEFINITIONS.get(c, "")) for c in cols]
    return str(_macros().metrics_table(head, rows))


def _compared(comparisons: dict, vs: str, baselines) -> list[str]:
    """Methods compared with ``vs``; one baseline appears against another only once (RFT − VFT, not VFT − RFT)."""
    return [m for m in comparisons if vs in comparisons[m]
            and not (m in baselines and list(baselines).index(m) > list(baselines).index(vs))]


def headline(comparisons: dict, metrics=PRIMARY + SECONDARY, baselines=tuple(BASELINES)) -> list[str]:
    """Every method against each baseline on ``metrics``, as plain sentences with their 95% intervals."""
    return [describe(method_label(m), method_label(vs), label(k), comparisons[m][vs][k]) for vs in baselines
            for m in _compared(comparisons, vs, baselines) for k in metrics if k in comparisons[m][vs]]


def _and(words: list[str], conjunction: str = "and") -> str:
    """``["a", "b", "c"]`` → ``"a, b and c"``."""
    return f"{', '.join(words[:-1])} {conjunction} {words[-1]}" if len(words) > 1 else "".join(words)


def verdict(comparisons: dict, n_questions: int | None = None, metrics=PRIMARY + SECONDARY,
            baselines=tuple(BASELINES)) -> str:
    """What the run shows, in one sentence: each method against the first baseline it was compared
    with (RFT, the control, else VFT), by the differences whose paired 95% interval excludes zero;
    methods with the same outcome share a clause. The numbers and intervals are in the tables.

    >>> verdict({"aft_bc": {"rft": {"task_accuracy": {"diff": -0.05, "lo": -0.08, "hi": -0.02},
    ...                             "rerank_accuracy": {"diff": 0.03, "lo": 0.01, "hi": 0.05}}},
    ...          "aft_dc": {"rft": {"task_accuracy": {"diff": 0.0, "lo": -0.02, "hi": 0.02}}},
    ...          "align_only": {"rft": {"task_accuracy": {"diff": 0.01, "lo": -0.01, "hi": 0.03}}}},
    ...         600)  # doctest: +NORMALIZE_WHITESPACE
    'Against RFT on 600 held-out questions, AFT-BC is higher on rerank accuracy but lower on task accuracy,
     and AFT-DC and alignment only do not differ beyond the noise.'
    >>> verdict({"aft_bc": {"rft": {"task_accuracy": {"diff": 0.0, "lo": -0.02, "hi": 0.02}}}})
    'Against RFT, no method differs beyond the noise on strict assessment, rerank accuracy or task accuracy.'
    """
    vs = next((b for b in baselines if _compared(comparisons, b, baselines)), None)
    if vs is None:
        return "No paired comparison: this run has no RFT or VFT baseline to compare with."
    outcomes: dict[str, list[str]] = {}
    for m in _compared(comparisons, vs, baselines):
        found = [(k, d) for k in metrics if (d := comparisons[m][vs].get(k))]
        higher = [label(k) for k, d in found if d["lo"] > 0]
        lower = [label(k) for k, d in found if d["hi"] < 0]
        what = " but ".join(f"{way} on {_and(ks)}" for way, ks in (("higher", higher), ("lower", lower)) if ks)
        outcomes.setdefault(what, []).append(method_label(m))
    where = f"Against {method_label(vs)}" + (f" on {n_questions:,} held-out questions" if n_questions else "")
    if list(outcomes) == [""]:
        return f"{where}, no method differs beyond the noise on {_and([label(k) for k in metrics], 'or')}."
    clauses = [f"{_and(names)} {'is' if len(names) == 1 else 'are'} {what}" for what, names in outcomes.items() if what]
    if "" in outcomes:
        names = outcomes[""]
        clauses.append(f"{_and(names)} {'does' if len(names) == 1 else 'do'} not differ beyond the noise")
    return f"{where}, {', and '.join([', '.join(clauses[:-1]), clauses[-1]] if len(clauses) > 1 else clauses)}."


def noise_floor(comparisons: dict, metrics=PRIMARY + SECONDARY) -> dict[str, float]:
    """Median half-width (points) of the 95% intervals per metric: differences smaller than this are
    not distinguishable from noise at this run's question counts."""
    out = {}
    for k in metrics:
        w = sorted(50 * (d[k]["hi"] - d[k]["lo"]) for m in comparisons.values() for d in m.values() if k in d)
        if w:
            out[k] = w[len(w) // 2]
    return out


def _found(comps: dict) -> list[dict]:
    """Per baseline, every comparison in plain words and whether its interval excludes zero."""
    out = []
    for vs, what in BASELINES.items():
        items = [(describe(method_label(m), method_label(vs), label(k), d), d["lo"] > 0 or d["hi"] < 0)
                 for m in _compared(comps, vs, tuple(BASELINES)) for k in PRIMARY + SECONDARY
                 if (d := comps[m][vs].get(k))]
        if items:
            out.append({"vs": method_label(vs), "what": what, "items": items})
    return out


def _g(x) -> str:
    """A setting or count for the page: floats short (``0.0001``), counts with thousands separators (``3,000``)."""
    if x is None:
        return "—"
    return f"{x:g}" if isinstance(x, float) else f"{x:,}" if isinstance(x, int) else str(x)


def _settings(out: Path, metrics: dict, logs: dict, n_records: int | None) -> dict:
    """The run's settings for the page: rows of the run table, the files, and each method's alignment
    settings, read from ``config.json`` (what the run used) and ``metrics.json`` (the counts it saw)."""
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
                if d.source == "synthetic" else d.source)
        model = (f"tiny (hidden {mo.hidden}, {mo.layers} layers, {mo.heads} heads)" if mo.name == "tiny"
                 else mo.name + (f", LoRA r = {mo.lora_r}" if mo.lora else ""))
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
    per = []
    for m in cfg.methods if cfg else ():
        a, entry = cfg.align_for(m), REGISTRY.get(m)
        aligns = entry is not None and entry.loss is not None and a.lam > 0
        bounded = aligns and a.constraint == "boundary"  # β places the boundary; no boundary, no β
        beta = a.beta if not a.beta_quantile else (logs.get(m) or [{}])[0].get("beta")
        note = f" (calibrated: quantile {a.beta_quantile:g})" if a.beta_quantile else ""
        per.append((m, [_g(a.constraint or "none") if aligns else "—", (_g(beta) + note) if bounded else "—",
                        _g(a.gamma) if aligns and not entry.reference else "—",  # DPO scales by dpo_beta instead
                        _g(a.lam), _g(a.nll_weight), _g(a.lr), entry.doc if entry else ""]))
    # relative links: the report travels with its folder, and a reader's machine has other absolute paths
    return {"rows": rows, "files": [f for f in FILES if (out / f).is_file()], "per_method": per}


def settings(out: Path, metrics: dict, logs: dict | None = None, n_records: int | None = None) -> str:
    """The run's settings as two HTML tables: the run (data, model, counts, files) and each method's
    alignment settings (constraint, β in nats/token, γ, λ, NLL weight, lr)."""
    return str(_macros().settings(_settings(Path(out), metrics, logs or {}, n_records)))


def _figure(fig, first: bool) -> Markup:
    fig.update_layout(autosize=True, margin=dict(l=60, r=20))
    return Markup(fig.to_html(full_html=False, include_plotlyjs=first, default_width="100%",
                              config={"responsive": True, "displaylogo": False}))


def _points(x: float) -> str:
    """A span in points: one decimal below 10 (``2.4``), whole above (``28``)."""
    return f"{x:.1f}" if x < 10 else f"{x:.0f}"


def _figures(metrics: dict, logs: dict, scores: dict, records: list, per_q: dict) -> list[dict]:
    """The report's figures, each with a caption whose numbers are read from the figure itself."""
    comps, figs = metrics.get("comparisons", {}), []
    for vs in BASELINES:
        if any(vs in c for c in comps.values()):
            fig = plots.comparison_forest(comps, vs)
            panels = [a.text for a in fig.layout.annotations]
            widths = [_points(w) for w in plots.spans(fig, "x").values()]
            figs.append((fig, f"Each method minus {method_label(vs)} in points, with its paired 95% interval. "
                              "The x axes span " + _and([f"{w} points ({p})" for w, p in zip(widths, panels)]) + "."))
    cis = method_intervals(per_q) if per_q else {}
    fig = plots.assessment_vs_task(
        {m: (v["task_accuracy"], v["assessment_accuracy"]) for m, v in metrics["methods"].items()},
        {m: {"task": c.get("task_accuracy"), "assess": c.get("assessment_accuracy")}
         for m, c in cis.items() if "task_accuracy" in c and "assessment_accuracy" in c})
    (x,), (y,) = plots.spans(fig, "x").values(), plots.spans(fig, "y").values()
    figs.append((fig, f"Each point is one model{', with its 95% intervals' if cis else ''}. The x axis spans "
                      f"{_points(100 * x)} points and the y axis {_points(100 * y)}, so a gap inside the noise does "
                      "not fill the plot."))
    correct = [[s["correct"] for s in r["samples"]] for r in records]
    dist = {m: ([x for s, c in zip(sc, correct) for x, ok in zip(s, c) if ok],
                [x for s, c in zip(sc, correct) for x, ok in zip(s, c) if not ok]) for m, sc in scores.items()}
    fig = plots.score_distributions(dist)
    lo = fig.layout.yaxis.range[0] if fig.layout.yaxis.range else None
    n = sum(len(p) + len(q) for p, q in dist.values())
    below = sum(v < lo for p, q in dist.values() for v in p + q) if lo is not None else 0
    figs.append((fig, "Every sampled COT of the fixed set, scored by each model; dashed lines are the means."
                      + (f" The axis starts at {lo:.2f} nats/token, where the scores' mass begins: {below:,} of {n:,} "
                         "scores lie below it and still shape the violins." if below else "")))
    if logs:
        figs.append((plots.training_curves(logs, ("neg_score", "gap", "pos_score")),
                     "Per AFT step, one line per method; the faint lines are the raw values."))
    return [{"html": _figure(fig, i == 0), "caption": caption} for i, (fig, caption) in enumerate(figs)]


def _greedy(greedy: dict[str, list[dict]], records: dict[str, dict], n: int) -> list[dict]:
    names = list(greedy)
    out = []
    for j in range(min(n, *(len(g) for g in greedy.values()))):
        q = greedy[names[0]][j]
        rec = records.get(q["id"], {})
        out.append({"question": q["question"], "gold": str(rec.get("answer", "?")), "reference": rec.get("reference"),
                    "cots": [(m, greedy[m][j]["correct"], greedy[m][j]["cot"]) for m in names]})
    return out


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
    present = [c for c in COLUMNS if any(c in m for m in metrics["methods"].values())]
    accuracy, health = [c for c in present if c in ACCURACY_COLUMNS], [c for c in present if c in SCORE_COLUMNS]
    page = _env().get_template("report.html.j2").render(
        preset=metrics["preset"], seed=metrics["seed"], n_eval=metrics.get("n_eval_questions"),
        smoke=str(metrics["preset"]).endswith("smoke") or metrics.get("n_eval_questions", 0) < 200,
        verdict=verdict(comps, metrics.get("n_eval_questions")), provenance=line(metrics.get("provenance")),
        found=_found(comps), floor=[(w, label(k)) for k, w in noise_floor(comps).items()],
        primary=[label(k) for k in PRIMARY], settings=_settings(out, metrics, logs, len(records)),
        accuracy=(Markup(metrics_table(metrics["methods"], accuracy)), [(label(c), DEFINITIONS[c]) for c in accuracy]),
        health=(Markup(metrics_table(metrics["methods"], health)), [(label(c), DEFINITIONS[c]) for c in health]),
        figures=_figures(metrics, logs, scores, records, per_q), examples=metrics.get("misranked_examples", []),
        greedy=_greedy(greedy, {r["id"]: r for r in records}, 5))
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
