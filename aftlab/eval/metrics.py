"""Metrics: task, self-consistency, score-reranked and assessment accuracy; ranking agreement;
repetition; mean ± std over seeds. Pure functions of lists and tensors.

Place in the data path: … → AFT → **metrics** → plots/report.

>>> assessment_accuracy([[0.0, -1.0]], [[True, False]])
{'pairs': 1.0, 'per_question': 1.0, 'n_pairs': 1, 'n_questions': 1}
>>> round(repetition_rate(["a b a b a b a b", "1 + 2 = 3"], n=2), 3)
0.357
"""
from __future__ import annotations

import math
import statistics
from collections import Counter

from ..records import Record

# What every metric of ``evaluate()`` means, in one place: the report's tables and definitions, the
# notebooks and the app read them from here. ``LABELS``: the short plain name a reader sees.
LABELS = {
    "task_accuracy": "task accuracy", "assessment_accuracy": "assessment", "assessment_per_question":
    "assessment per question", "n_pairs": "pairs", "assessment_accuracy_strict": "strict assessment",
    "assessment_strict_per_question": "strict assessment per question", "n_pairs_strict": "strict pairs",
    "lucky_share": "lucky share", "unfinished_samples": "unfinished samples",
    "rerank_accuracy": "rerank accuracy", "self_consistency": "self-consistency",
    "sample_accuracy": "sample accuracy", "mean_pos_score": "mean right score", "mean_neg_score": "mean wrong score",
    "perplexity": "perplexity", "repetition_rate": "repetition", "unfinished_rate": "unfinished",
    "ranking_tau": "ranking tau",
}
DEFINITIONS = {
    "task_accuracy": "share of held-out questions whose greedy COT ends in the right answer",
    "assessment_accuracy": "over (right, wrong) pairs of sampled COTs of the same held-out question (the fixed "
                           "sample set, drawn once from VFT and rescored by every model), the share where the model "
                           "scores the right one higher (ties count ½), pooled over pairs; unfinished COTs (no "
                           "answer) enter no pair",
    "assessment_per_question": "the same share averaged per question (over questions with a right and a wrong COT)",
    "n_pairs": "(right, wrong) pairs behind assessment",
    "assessment_accuracy_strict": "assessment over pairs whose right COT also has every arithmetic step right "
                                  "(lucky COTs — right answer, a wrong step — left out)",
    "assessment_strict_per_question": "strict assessment averaged per question",
    "n_pairs_strict": "(step-valid right, wrong) pairs behind strict assessment",
    "lucky_share": "share of right-answer sampled COTs with a wrong arithmetic step",
    "unfinished_samples": "sampled COTs of the fixed set that hit the token cap without an end-of-sequence token: "
                          "no answer, so in no (right, wrong) pair (rerank still counts one picked as wrong)",
    "rerank_accuracy": "share of held-out questions whose top-scored sampled COT is right (the model as its "
                       "own verifier over the fixed sample set)",
    "self_consistency": "share of questions whose majority answer over the model's own k samples is right",
    "sample_accuracy": "share of the model's own k samples per question whose answer is right",
    "mean_pos_score": "mean score s(c) (nats/token) of the right sampled COTs",
    "mean_neg_score": "mean score s(c) (nats/token) of the wrong sampled COTs",
    "perplexity": "exp of the mean token NLL of the held-out reference COTs",
    "repetition_rate": "mean share of repeated word 3-grams in greedy COTs (near 1: the model loops)",
    "unfinished_rate": "share of greedy COTs that hit the token cap without an end-of-sequence token",
    "ranking_tau": "Kendall τ, per question, between the model's scores of the sampled COTs and their quality "
                   "levels (a right answer above a wrong one, then by the share of valid steps), averaged over "
                   "questions",
}


def label(key: str) -> str:
    """The plain name of a metric key (the key itself, spaced, when it has none).

    >>> label("assessment_accuracy_strict"), label("my_metric")
    ('strict assessment', 'my metric')
    """
    return LABELS.get(key, key.replace("_", " "))


def task_accuracy(correct: list[bool]) -> float:
    """Share of questions whose greedy COT has the right answer.

    >>> task_accuracy([True, False, True, True])
    0.75
    """
    return sum(correct) / max(len(correct), 1)


def right_wrong_pairs(right: list[bool], wrong: list[bool]) -> list[tuple[int, int]]:
    """Every (i, j) of one question's COTs with COT i marked ``right`` and COT j marked ``wrong``: the
    pairs that assessment accuracy, the app's flags and the misranked examples are all about.

    >>> right_wrong_pairs([True, False, True], [False, True, False])
    [(0, 1), (2, 1)]
    """
    return [(i, j) for i, r in enumerate(right) if r for j, w in enumerate(wrong) if w]


def pair_wins(scores: list[float], correct: list[bool]) -> tuple[float, int]:
    """One question's (wins, pairs): over its (positive, negative) pairs, how many have
    s(pos) > s(neg) (ties count one half), and how many pairs there are.

    >>> pair_wins([0.0, -1.0, 0.5], [True, False, False])
    (1.0, 2)
    """
    both = right_wrong_pairs(correct, [not ok for ok in correct])
    return sum(1.0 if scores[i] > scores[j] else 0.5 if scores[i] == scores[j] else 0.0 for i, j in both), len(both)


def assessment_accuracy(scores: list[list[float]], correct: list[list[bool]]) -> dict:
    """Over all (positive, negative) pairs of the same question, the share with s(pos) > s(neg)
    (ties count one half); also averaged per question (over questions that have both groups).

    >>> assessment_accuracy([[0.0, -1.0, 0.5], [1.0, 2.0]], [[True, False, False], [True, False]])["pairs"]
    0.3333333333333333
    """
    found = [wp for wp in map(pair_wins, scores, correct) if wp[1]]
    wins, pairs = sum(w for w, _ in found), sum(p for _, p in found)
    return {"pairs": wins / pairs if pairs else float("nan"),
            "per_question": sum(w / p for w, p in found) / len(found) if found else float("nan"),
            "n_pairs": pairs, "n_questions": len(found)}


def answered_view(scores: list[list[float]], records: list[Record]) -> tuple[list[list[float]], list[list[bool]]]:
    """(scores, labels) for assessment: COTs that did not finish (no EOS within the token cap) have no
    answer, so they are neither right nor wrong and enter no pair (``unfinished_samples`` counts them).

    >>> answered_view([[1.0, 2.0, 3.0]], [{"samples": [{"correct": True}, {"correct": False, "finished": False},
    ...     {"correct": False, "finished": True}]}])
    ([[1.0, 3.0]], [[True, False]])
    """
    kept = [[(x, s["correct"]) for x, s in zip(sc, r["samples"]) if s.get("finished", True)]
            for sc, r in zip(scores, records)]
    return [[x for x, _ in k] for k in kept], [[ok for _, ok in k] for k in kept]


def unfinished_samples(records: list[Record]) -> int:
    """How many samples of ``records`` did not finish (kept out of every right/wrong pair).

    >>> unfinished_samples([{"samples": [{"finished": False}, {"finished": True}, {}]}])
    1
    """
    return sum(not s.get("finished", True) for r in records for s in r["samples"])


def strict_view(scores: list[list[float]], records: list[Record]) -> tuple[list[list[float]], list[list[bool]]]:
    """(scores, labels) for strict assessment: a COT is right when every arithmetic step checks
    (``strict``); "lucky" ones (right answer, a wrong step) are left out, and so are unfinished ones.

    >>> strict_view([[1.0, 2.0, 3.0]], [{"samples": [{"correct": True, "strict": True},
    ...     {"correct": True, "strict": False}, {"correct": False, "strict": False}]}])
    ([[1.0, 3.0]], [[True, False]])
    """
    kept = [[(x, s["strict"]) for x, s in zip(sc, r["samples"])
             if (s["strict"] or not s["correct"]) and s.get("finished", True)]
            for sc, r in zip(scores, records)]
    return [[x for x, _ in k] for k in kept], [[ok for _, ok in k] for k in kept]


def rerank_hits(scores: list[list[float]], correct: list[list[bool]]) -> list[bool]:
    """Per question with samples: is its top-scored sample (the first, on a tie) correct?

    >>> rerank_hits([[0.1, 0.9], [], [0.5, 0.5]], [[True, False], [], [True, False]])
    [False, True]
    """
    return [c[max(range(len(s)), key=s.__getitem__)] for s, c in zip(scores, correct) if s]


def misranked_examples(records: list[Record], scores: list[list[float]], n: int = 5, strict: bool = True
                       ) -> list[dict]:
    """The wrong COTs that outscore a right COT of the same question, widest margins first, one per
    question; with ``strict`` the right COT must also have every arithmetic step valid. Unfinished COTs
    (no answer) are neither.

    >>> rec = {"question": "q", "answer": "2", "samples": [{"cot": "1 + 1 = 2. #### 2", "correct": True,
    ...        "strict": True}, {"cot": "1 + 1 = 3. #### 3", "correct": False, "strict": False}]}
    >>> [round(x["margin"], 2) for x in misranked_examples([rec], [[-0.5, -0.2]])]
    [0.3]
    """
    found = []
    for r, s in zip(records, scores):
        smp = r["samples"]
        for i, j in right_wrong_pairs([x["strict" if strict else "correct"] and x.get("finished", True) for x in smp],
                                      [not x["correct"] and x.get("finished", True) for x in smp]):
            if s[j] > s[i]:
                found.append({"question": r["question"], "gold": r["answer"], "right_cot": smp[i]["cot"],
                              "right_score": s[i], "wrong_cot": smp[j]["cot"], "wrong_score": s[j],
                              "margin": s[j] - s[i]})
    found.sort(key=lambda x: -x["margin"])
    seen, out = set(), []
    for f in found:
        if f["question"] not in seen:
            seen.add(f["question"])
            out.append(f)
        if len(out) == n:
            break
    return out


def rerank_accuracy(scores: list[list[float]], correct: list[list[bool]]) -> float:
    """Share of questions whose top-scored sample is correct (the model as its own verifier)."""
    hits = rerank_hits(scores, correct)
    return sum(hits) / max(len(hits), 1)


def self_consistency(answers: list[list[str | None]], gold: list[str], counts: list[list[int]] | None = None,
                     equal=None) -> float:
    """Share of questions whose majority answer over the samples is correct.

    >>> self_consistency([["3", "4", "3"]], ["3"])
    1.0
    """
    equal = equal or (lambda a, b: a == b)
    hits = 0
    for i, (ans, g) in enumerate(zip(answers, gold)):
        tally: Counter = Counter()
        for j, a in enumerate(ans):
            if a is not None:
                tally[a] += counts[i][j] if counts else 1
        if tally and equal(tally.most_common(1)[0][0], g):
            hits += 1
    return hits / max(len(gold), 1)


def kendall_tau(x: list[float], y: list[float]) -> float:
    """Kendall's tau-b between two rankings (nan when either is constant).

    >>> kendall_tau([1, 2, 3], [10, 20, 30]), kendall_tau([1, 2, 3], [3, 2, 1])
    (1.0, -1.0)
    """
    conc = disc = tx = ty = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                tx += 1
            elif dy == 0:
                ty += 1
            elif (dx > 0) == (dy > 0):
                conc += 1
            else:
                disc += 1
    denom = math.sqrt((conc + disc + tx) * (conc + disc + ty))
    return (conc - disc) / denom if denom else float("nan")


def mean_kendall_tau(scores: list[list[float]], levels: list[list[float]]) -> float:
    """Kendall tau between model scores and quality levels, averaged over questions where defined."""
    taus = [t for t in (kendall_tau(s, lv) for s, lv in zip(scores, levels)) if not math.isnan(t)]
    return sum(taus) / len(taus) if taus else float("nan")


def repetition_rate(texts: list[str], n: int = 3) -> float:
    """Mean share of repeated word n-grams per text (0: none repeats; near 1: a loop)."""
    rates = []
    for t in texts:
        w = t.split()
        grams = [tuple(w[i:i + n]) for i in range(len(w) - n + 1)]
        rates.append(1 - len(set(grams)) / len(grams) if grams else 0.0)
    return sum(rates) / max(len(rates), 1)


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value), ignoring NaNs."""
    v = [x for x in values if not (isinstance(x, float) and math.isnan(x))]
    if not v:
        return float("nan"), float("nan")
    return statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0


def aggregate(runs: list[dict]) -> dict:
    """Mean ± std over seeds of every numeric metric in ``metrics.json``-style ``{"methods": ...}``."""
    out: dict = {}
    for run in runs:
        for method, m in run["methods"].items():
            for key, val in m.items():
                if isinstance(val, (int, float)) and not isinstance(val, bool):
                    out.setdefault(method, {}).setdefault(key, []).append(float(val))
    return {meth: {k: dict(zip(("mean", "std"), mean_std(v))) | {"n": len(v)} for k, v in d.items()}
            for meth, d in out.items()}
