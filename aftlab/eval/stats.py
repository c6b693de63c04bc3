"""Paired statistics: how sure is "method A beats baseline B" on the same held-out questions?

Place in the data path: … → evaluate → metrics → **stats** (paired comparisons) → report.

Every method is evaluated on the same held-out questions and rescores the same sampled COTs, so
two methods are compared question by question: a bootstrap resamples questions *jointly* for both
methods (a paired bootstrap) and gives a 95% percentile interval of the difference in a metric.
Over several seeds the bootstrap is hierarchical: resample seeds with replacement, then questions
within each chosen seed. Task accuracy also gets an exact McNemar test. Differences are in the
metrics' own units, fractions (0.012 is 1.2 points); ``describe`` prints points.

Each metric is a ratio of sums over questions, Σnum/Σden: accuracies are means (den = 1), and
pair-weighted assessment accuracy is Σwins/Σpairs, so the bootstrap resamples a question's wins
and its pairs together.

>>> d = paired_bootstrap([1, 1, 1, 0, 1, 1], [0, 1, 0, 0, 1, 0], n_resamples=1000)
>>> round(d["diff"], 3), d["lo"] > 0
(0.5, True)
>>> mcnemar_exact([1, 1, 1, 0, 1, 1], [0, 1, 0, 0, 1, 0])
0.25
"""
from __future__ import annotations

import math
from typing import TypedDict

import numpy as np

from ..records import EvalResult, Record
from .metrics import answered_view, pair_wins, rerank_hits, strict_view

# With 200 questions of 0/1 outcomes an interval's ends move by ~0.25 points between bootstrap seeds,
# already at 2,000 resamples (the 0.5-point grid of the difference); more buy little. Tens of ms each.
N_RESAMPLES = 4_000
BASELINES = ("rft", "vft")


class Outcomes(TypedDict):
    """One method's per-question outcomes in one run (what ``per_question.json`` holds per method)."""
    task: list[int]                    # greedy answer right (1) or not, per held-out question
    rerank: list[int]                  # top-scored sample right, per eval question with samples
    assess: list[list[float]]          # [wins, pairs] per eval question with a right and a wrong COT
    assess_strict: list[list[float]]   # the same with lucky COTs left out (``metrics.strict_view``)


def question_outcomes(result: EvalResult, eval_records: list[Record]) -> Outcomes:
    """Per-question outcomes of an ``evaluate()`` result. Which questions enter each list depends
    only on the samples' labels, never on the scores, so every method's lists line up.

    >>> recs = [{"samples": [{"correct": True, "strict": True}, {"correct": False, "strict": False}]},
    ...         {"samples": [{"correct": True, "strict": False}, {"correct": False, "strict": False}]}]
    >>> question_outcomes({"greedy": [{"correct": True}, {"correct": False}],
    ...                    "scores": [[-1.0, -2.0], [-3.0, -3.0]]}, recs)
    {'task': [1, 0], 'rerank': [1, 1], 'assess': [[1.0, 1], [0.5, 1]], 'assess_strict': [[1.0, 1]]}
    """
    scores = result["scores"]
    correct = [[s["correct"] for s in r["samples"]] for r in eval_records]

    def wins(sc, co):
        return [[float(w), p] for w, p in map(pair_wins, sc, co) if p]
    return {"task": [int(bool(g["correct"])) for g in result["greedy"]],
            "rerank": [int(bool(h)) for h in rerank_hits(scores, correct)],
            "assess": wins(*answered_view(scores, eval_records)),  # unfinished COTs enter no pair
            "assess_strict": wins(*strict_view(scores, eval_records))}


# metrics.json key → (Outcomes list it comes from, whether it averages the per-question shares)
METRICS = {"task_accuracy": ("task", False), "assessment_accuracy": ("assess", False),
           "assessment_per_question": ("assess", True), "assessment_accuracy_strict": ("assess_strict", False),
           "rerank_accuracy": ("rerank", False)}


def _per_question(o: Outcomes, metric: str) -> np.ndarray:
    """(n, 2) rows of (numerator, denominator) whose ratio of sums is ``metric``."""
    key, shares = METRICS[metric]
    x = _rows(o[key])
    return _rows(x[:, 0] / x[:, 1]) if shares else x


def _rows(x) -> np.ndarray:
    """Values (n,) as (n, 2) rows (value, 1); (n, 2) rows of (numerator, denominator) as they are."""
    x = np.asarray(x, dtype=float)
    return np.stack([x, np.ones_like(x)], axis=1) if x.ndim == 1 else x


def _diff(a: np.ndarray, b: np.ndarray) -> float:
    return a[:, 0].sum() / a[:, 1].sum() - b[:, 0].sum() / b[:, 1].sum()


def _resampled_diffs(a: np.ndarray, b: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    """``m`` bootstrap differences, each from one draw of question indices shared by a and b."""
    n, out, ab = len(a), np.empty(m), np.concatenate([a, b], axis=1)  # (n, 4)
    step = max(1, 2_000_000 // max(n, 1))  # rows per chunk: the count matrix stays ~16 MB
    for start in range(0, m, step):
        rows = min(step, m - start)
        idx = rng.integers(0, n, size=(rows, n)) + n * np.arange(rows)[:, None]  # (rows, n), row-offset
        counts = np.bincount(idx.ravel(), minlength=rows * n).reshape(rows, n)  # times each question drawn
        s = counts @ ab                                                          # (rows, 4) resampled sums
        out[start:start + rows] = s[:, 0] / s[:, 1] - s[:, 2] / s[:, 3]
    return out


def _interval(diff: float, boots: np.ndarray, level: float) -> dict:
    lo, hi = np.percentile(boots, [50 * (1 - level), 50 * (1 + level)])
    return {"diff": float(diff), "lo": float(lo), "hi": float(hi)}


def paired_bootstrap(a, b, n_resamples: int = N_RESAMPLES, seed: int = 0, level: float = 0.95) -> dict:
    """Percentile interval of metric(a) − metric(b), resampling questions jointly; ``diff`` is the
    observed difference. ``a``/``b``: per-question values (the metric is their mean) or (n, 2) rows
    of (numerator, denominator) (the metric is Σnum/Σden, e.g. [wins, pairs] per question).

    >>> d = paired_bootstrap([[3, 4], [1, 2]], [[2, 4], [1, 2]], n_resamples=500)
    >>> round(d["diff"], 4), d["lo"] >= 0
    (0.1667, True)
    """
    a, b = _rows(a), _rows(b)
    if a.shape != b.shape or not len(a):
        raise ValueError(f"paired samples must have the same, non-zero length: {a.shape} vs {b.shape}")
    boots = _resampled_diffs(a, b, n_resamples, np.random.default_rng(seed))
    return _interval(_diff(a, b), boots, level)


def pooled_bootstrap(pairs: list[tuple], n_resamples: int = N_RESAMPLES, seed: int = 0, level: float = 0.95
                     ) -> dict:
    """Hierarchical paired bootstrap over seeds: ``pairs`` holds one ``(a, b)`` per seed (as for
    ``paired_bootstrap``; seeds may have different questions). Each resample draws seeds with
    replacement, then questions within each drawn seed, and averages the per-seed differences;
    ``diff`` is the mean over seeds of the observed differences (what ``aggregate.json``'s means give).

    >>> d = pooled_bootstrap([([1, 1, 0, 1], [0, 1, 0, 1]), ([1, 0, 1, 1], [1, 0, 0, 1])], n_resamples=500)
    >>> d["diff"], d["lo"] >= 0
    (0.25, True)
    """
    if len(pairs) == 1:
        return paired_bootstrap(*pairs[0], n_resamples=n_resamples, seed=seed, level=level)
    rows = [(_rows(a), _rows(b)) for a, b in pairs]
    if any(a.shape != b.shape or not len(a) for a, b in rows):
        raise ValueError("each seed's paired samples must have the same, non-zero length")
    rng = np.random.default_rng(seed)
    chosen = rng.integers(0, len(rows), size=(n_resamples, len(rows)))  # (B, S) seed per slot
    d = np.empty(chosen.shape)
    for s, (a, b) in enumerate(rows):
        hit = chosen == s
        d[hit] = _resampled_diffs(a, b, int(hit.sum()), rng)  # a fresh question draw per slot
    return _interval(float(np.mean([_diff(a, b) for a, b in rows])), d.mean(axis=1), level)


def interval(a, n_resamples: int = N_RESAMPLES, seed: int = 0, level: float = 0.95) -> dict:
    """Percentile bootstrap interval of one method's metric over its questions (values, or
    (numerator, denominator) rows as for ``paired_bootstrap``).

    >>> d = interval([1, 0, 1, 1], n_resamples=500)
    >>> d["diff"], 0 <= d["lo"] <= 0.75 <= d["hi"] <= 1
    (0.75, True)
    """
    a = _rows(a)
    zero = a.copy()
    zero[:, 0] = 0.0  # metric(zero) = 0 on every resample, so the difference is the metric itself
    return paired_bootstrap(a, zero, n_resamples, seed, level)


def method_intervals(per_question: dict[str, Outcomes], metrics=("task_accuracy", "assessment_accuracy"),
                     **kw) -> dict[str, dict[str, tuple[float, float]]]:
    """``{method: {metric: (lo, hi)}}``: each method's own 95% interval, for error bars."""
    return {m: {k: (d["lo"], d["hi"]) for k in metrics if len(x := _per_question(o, k))
                for d in [interval(x, **kw)]} for m, o in per_question.items()}


def mcnemar_exact(a, b) -> float:
    """Exact two-sided McNemar p for paired 0/1 outcomes: under "no difference" each discordant
    question is a fair coin, so p = P(Binomial(n_discordant, 1/2) at least as far from even).

    >>> mcnemar_exact([1, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0, 1])
    0.03125
    """
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    n01, n10 = int((a & ~b).sum()), int((~a & b).sum())
    n, k = n01 + n10, min(n01, n10)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)


def merge_orders(runs: list[Outcomes]) -> Outcomes:
    """One method's outcomes over several training runs on the same questions (e.g. batch orders):
    per question, the mean of the 0/1 outcomes and the summed wins and pairs, so each metric is its
    mean over the runs and the bootstrap still resamples questions (the runs of a question together).

    >>> merge_orders([{"task": [1, 0], "rerank": [1], "assess": [[1.0, 2]], "assess_strict": []},
    ...               {"task": [1, 1], "rerank": [0], "assess": [[2.0, 2]], "assess_strict": []}])
    {'task': [1.0, 0.5], 'rerank': [0.5], 'assess': [[3.0, 4]], 'assess_strict': []}
    """
    for key in ("task", "rerank", "assess", "assess_strict"):
        if len(lengths := {len(r[key]) for r in runs}) != 1:
            raise ValueError(f"merge_orders: runs disagree on the number of {key!r} questions: {sorted(lengths)}")

    def mean(key):  # 0/1 per question → its share over the runs
        return [float(np.mean(x)) for x in zip(*(r[key] for r in runs))]

    def summed(key):  # [wins, pairs] per question → summed over the runs
        return [[float(sum(w for w, _ in x)), sum(p for _, p in x)] for x in zip(*(r[key] for r in runs))]
    return {"task": mean("task"), "rerank": mean("rerank"), "assess": summed("assess"),
            "assess_strict": summed("assess_strict")}


def pooled_comparisons(runs: list[dict[str, Outcomes]], baselines=BASELINES, n_resamples: int = N_RESAMPLES,
                       seed: int = 0) -> dict:
    """``{method: {vs: {metric: {"diff", "lo", "hi"}}}}`` for every method against each baseline
    present, over one run or several seeds (``runs``: each run's per-method outcomes; a method is
    compared when every run has it). Task accuracy also carries ``mcnemar_p`` (seeds' questions
    pooled). A metric without questions (e.g. no question with a right and a wrong COT) is left out.
    """
    methods = [m for m in runs[0] if all(m in r for r in runs)]
    out: dict = {}
    for method in methods:
        for vs in (v for v in baselines if v in methods and v != method):
            res = {}
            for metric in METRICS:
                pairs = [(_per_question(r[method], metric), _per_question(r[vs], metric)) for r in runs]
                if any(not len(a) for a, _ in pairs):
                    continue
                res[metric] = pooled_bootstrap(pairs, n_resamples, seed)
            binary = all(x in (0, 1) for r in runs for x in r[method]["task"] + r[vs]["task"])
            if "task_accuracy" in res and binary:  # McNemar needs 0/1 outcomes (not order-averaged ones)
                res["task_accuracy"]["mcnemar_p"] = mcnemar_exact(
                    [x for r in runs for x in r[method]["task"]], [x for r in runs for x in r[vs]["task"]])
            out.setdefault(method, {})[vs] = res
    return out


def comparisons(per_method_outcomes: dict[str, Outcomes], baselines=BASELINES, n_resamples: int = N_RESAMPLES,
                seed: int = 0) -> dict:
    """Paired comparisons within one run (see ``pooled_comparisons``).

    >>> o = {"vft": {"task": [0, 1, 0], "rerank": [1], "assess": [[1, 2]], "assess_strict": []},
    ...      "aft_bc": {"task": [1, 1, 0], "rerank": [1], "assess": [[2, 2]], "assess_strict": []}}
    >>> c = comparisons(o)
    >>> list(c), list(c["aft_bc"]), round(c["aft_bc"]["vft"]["assessment_accuracy"]["diff"], 2)
    (['aft_bc'], ['vft'], 0.5)
    """
    return pooled_comparisons([per_method_outcomes], baselines, n_resamples, seed)


def comparisons_for_run(results: dict[str, EvalResult], eval_records: list[Record], **kw) -> dict:
    """What a run writes: per-question outcomes of every method (``per_question.json``), their
    ``comparisons``, and the question counts behind them, from ``{method: evaluate() result}``:
    ``n_eval_questions`` (greedy task accuracy), ``n_rerank_questions`` (the fixed assessment set, each
    question with its k samples: rerank) and ``n_assess_questions`` (those of them with a right and a
    wrong COT: assessment)."""
    per_q = {m: question_outcomes(r, eval_records) for m, r in results.items()}
    first = next(iter(per_q.values()))
    return {"per_question": per_q, "comparisons": comparisons(per_q, **kw),
            "n_eval_questions": len(first["task"]), "n_assess_questions": len(first["assess"]),
            "n_rerank_questions": len(first["rerank"])}


def describe(name: str, vs: str, metric: str, d: dict) -> str:
    """One comparison in plain words, in points (100 × fraction); "distinguishable" when the
    interval excludes 0.

    >>> describe("aft_bc", "rft", "assessment_accuracy_strict", {"diff": 0.004, "lo": -0.003, "hi": 0.011})
    'aft_bc − rft on assessment_accuracy_strict: +0.4 [−0.3, +1.1] points — not distinguishable'
    """
    def pts(x):
        return f"{100 * x:+.1f}".replace("-", "−")
    verdict = "distinguishable" if d["lo"] > 0 or d["hi"] < 0 else "not distinguishable"
    p = f", McNemar p = {d['mcnemar_p']:.3g}" if "mcnemar_p" in d else ""
    return f"{name} − {vs} on {metric}: {pts(d['diff'])} [{pts(d['lo'])}, {pts(d['hi'])}] points — {verdict}{p}"
