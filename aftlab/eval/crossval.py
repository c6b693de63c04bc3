"""K-fold results pooled: each arm's held-out metrics with 95% intervals, paired differences against the
baselines, and the pre-registered verdicts (experiments/e6_smol_gsm8k.md).

Place in the data path: … → eval (``assess``: per-question rows) → **crossval** → report / experiments.

Every question is held out in exactly one fold, so pooling over folds concatenates the folds' per-question
``[numerator, denominator]`` rows; two arms are compared with a paired bootstrap over those questions
(``stats.paired_bootstrap``). Which questions enter a metric depends only on the labels, so two arms' rows
line up question by question. The intervals are over questions, given the trained models: one training run
per arm and fold, so training noise is not in them (say so where they are quoted).

>>> res = [{"fold": 0, "ids": ["a", "b"], "rows": {"rerank": [[1.0, 1], [0.0, 1]]},
...         "greedy": [{"finished": True, "repetition": 0.0}]}]
>>> pooled_rows(res)["rerank"], pooled_rows(res)["unfinished"]
([[1.0, 1], [0.0, 1]], [[0.0, 1]])
>>> rule({"diff": 0.02, "lo": 0.004, "hi": 0.03})
'shown'
"""
from __future__ import annotations

from .assess import DEFINITIONS as ASSESS_DEFINITIONS
from .assess import METRICS
from .stats import interval, paired_bootstrap

GREEDY = ("unfinished", "repetition")
DEFINITIONS = ASSESS_DEFINITIONS | {
    "unfinished": "share of greedy COTs (held-out questions) with no EOS within the token cap; lower is better",
    "repetition": "mean share of repeated word 3-grams in greedy COTs (near 1: the model loops); lower is better",
}
LOWER_IS_BETTER = frozenset({"ref_nll", "unfinished", "repetition"})
PRIMARY = ("assessment", "rerank")  # the E2 rule reads these (pre-registered)
BASELINES = ("rft", "base")


def pooled_rows(results: list[dict]) -> dict[str, list[list[float]]]:
    """One arm's per-question rows of every metric, over its folds' result files in fold order."""
    rows: dict[str, list[list[float]]] = {m: [] for m in METRICS + GREEDY}
    for r in sorted(results, key=lambda r: r["fold"]):
        for m in METRICS:
            rows[m] += r["rows"].get(m, [])
        rows["unfinished"] += [[0.0 if g["finished"] else 1.0, 1] for g in r["greedy"]]
        rows["repetition"] += [[g["repetition"], 1] for g in r["greedy"]]
    return rows


def rule(d: dict) -> str:
    """The pre-registered reading of a paired 95% interval of a difference: "shown" when it lies above 0."""
    return "shown" if d["lo"] > 0 else "not shown"


def table(results: dict[str, list[dict]], baselines=BASELINES, n_resamples: int = 4000) -> dict:
    """``{"folds", "arms": {arm: {metric: {value, lo, hi, n}}}, "vs": {arm: {baseline: {metric: {diff, lo, hi}}}},
    "verdicts": {...}}`` over the folds every arm has finished (``results``: arm → its result files)."""
    folds = sorted(set.intersection(*({r["fold"] for r in rs} for rs in results.values()))) if results else []
    kept = {a: [r for r in rs if r["fold"] in folds] for a, rs in results.items()}
    ids = {a: [i for r in sorted(rs, key=lambda r: r["fold"]) for i in r["ids"]] for a, rs in kept.items()}
    if len({tuple(v) for v in ids.values()}) > 1:
        raise ValueError("crossval.table: the arms' held-out questions differ (results of other designs mixed)")
    rows = {a: pooled_rows(rs) for a, rs in kept.items()}
    arms = {a: {m: {"value": d["diff"], "lo": d["lo"], "hi": d["hi"], "n": len(x)}
                for m, x in r.items() if x for d in [interval(x, n_resamples=n_resamples)]} for a, r in rows.items()}
    vs = {a: {b: {m: paired_bootstrap(rows[a][m], rows[b][m], n_resamples=n_resamples) for m in rows[a] if rows[a][m]}
              for b in baselines if b in rows and b != a} for a in rows}
    out = {"folds": folds, "arms": arms, "vs": vs}
    return out | {"verdicts": verdicts(out, rows, n_resamples)}


def verdicts(tab: dict, rows: dict, n_resamples: int = 4000) -> dict:
    """The pre-registered rules: AFT (BC, DC) beats RFT on a primary metric when the paired interval of
    AFT − RFT lies above 0; degradation is shown when align_only − AFT-BC on the held-out reference NLL per
    token lies above 0."""
    out: dict = {"aft_beats_rft": {}, "degradation": None}
    for arm in ("aft_bc", "aft_dc"):
        if arm in tab["vs"] and "rft" in tab["vs"][arm]:
            out["aft_beats_rft"][arm] = {m: tab["vs"][arm]["rft"][m] | {"verdict": rule(tab["vs"][arm]["rft"][m])}
                                         for m in PRIMARY if m in tab["vs"][arm]["rft"]}
    if "align_only" in rows and "aft_bc" in rows:
        d = paired_bootstrap(rows["align_only"]["ref_nll"], rows["aft_bc"]["ref_nll"], n_resamples=n_resamples)
        out["degradation"] = d | {"verdict": rule(d)}
    return out


def _pts(m: str, x: float) -> str:
    return f"{x:+.3f}" if m == "ref_nll" else f"{100 * x:+.1f}"


def markdown(tab: dict) -> str:
    """The pooled table, the paired differences against each baseline and the verdicts, as Markdown."""
    metrics = [m for m in METRICS + GREEDY if any(m in a for a in tab["arms"].values())]
    lines = [f"Folds pooled: {tab['folds']} (each question held out once).", "",
             "| arm | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for arm, ms in tab["arms"].items():
        lines.append(f"| {arm} | " + " | ".join(
            f"{ms[m]['value']:.3f} [{ms[m]['lo']:.3f}, {ms[m]['hi']:.3f}]" if m in ms else "—" for m in metrics) + " |")
    for b in BASELINES:
        cmp = {a: v[b] for a, v in tab["vs"].items() if b in v}
        if not cmp:
            continue
        lines += ["", f"Paired differences arm − {b} (points; ref_nll in nats/token; 95% CI):", "",
                  "| arm | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
        lines += [f"| {a} | " + " | ".join(f"{_pts(m, d[m]['diff'])} [{_pts(m, d[m]['lo'])}, {_pts(m, d[m]['hi'])}]"
                                           if m in d else "—" for m in metrics) + " |" for a, d in cmp.items()]
    v = tab["verdicts"]
    lines += ["", "Verdicts (pre-registered rules):", ""]
    for arm, ms in v["aft_beats_rft"].items():
        lines += [f"- {arm} beats RFT on {m}: **{d['verdict']}** ({_pts(m, d['diff'])} [{_pts(m, d['lo'])}, "
                  f"{_pts(m, d['hi'])}] points)" for m, d in ms.items()]
    if v["degradation"]:
        d = v["degradation"]
        lines.append(f"- degradation (align_only − aft_bc, held-out reference NLL per token): **{d['verdict']}** "
                     f"({d['diff']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}] nats/token)")
    return "\n".join(lines) + "\n"
