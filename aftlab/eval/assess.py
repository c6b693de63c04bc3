"""Assessment on real COTs (E6): does a model score GSM8K's right solutions above its wrong ones?

Place in the data path: data (``aftlab.data.solutions``) → sampling (``aftlab.sampling.solutions``: the rows
as sample records) → model → scoring → **metrics** — any model (``smol``, smol + a LoRA adapter, a run's
checkpoint) judges COTs written by other models.

Each question is encoded once and its solutions and its reference solution (``ground_truth``) continue from
its KV cache (``scoring.score_grouped``). Every metric is a ratio of sums over questions, Σnum/Σden, kept
per question as ``[num, den]`` rows (:func:`metric_rows`), so each gets a bootstrap interval and two models
a paired difference (``aftlab.eval.stats``):

- ``assessment``: over (right, wrong) pairs of a question's answered solutions, the share the model
  scores the right one higher (ties ½);
- ``assessment_same_size`` / ``assessment_cross_size``: the same over pairs whose two solutions were
  written by models of one size (6B with 6B, 175B with 175B) / of different sizes. 175B solutions are
  right far more often than 6B ones, so a judge that merely prefers 175B *style* wins cross-size pairs
  without reading an answer: the same-size figure is the one that style cannot explain;
- ``rerank``: the top-scored solution of a question is right (chance: the share of right solutions);
- ``ref_nll``: NLL per token of the reference solutions (EOS included) — how much a model lost of the
  language it is trained towards (E3 on a real LM).

>>> rec = {"id": "q", "samples": [{"correct": True, "source": "6b_a"}, {"correct": False, "source": "6b_b"},
...        {"correct": False, "source": "175b_c"}]}
>>> rows = metric_rows([rec], [{"id": "q", "scores": [-1.0, -2.0, -0.5], "ref_nll": 30.0, "ref_tokens": 20}])
>>> rows["assessment"], rows["assessment_same_size"], rows["rerank"], rows["ref_nll"]
([[1.0, 2]], [[1.0, 1]], [[0.0, 1]], [[30.0, 20]])
"""
from __future__ import annotations

import time
from typing import TypedDict

from ..data.solutions import size_of
from ..records import Record
from .metrics import pair_wins, right_wrong_pairs
from .stats import interval

METRICS = ("assessment", "assessment_same_size", "assessment_cross_size", "rerank", "ref_nll")
DEFINITIONS = {
    "assessment": "share of (right, wrong) solution pairs of a question scored right above wrong (ties ½)",
    "assessment_same_size": "the same over pairs written by models of one size (6B-6B, 175B-175B): free of "
                            "the 175B-writes-right-more-often style confound",
    "assessment_cross_size": "the same over pairs written by a 6B and a 175B model",
    "rerank": "share of questions whose top-scored solution is right",
    "ref_nll": "NLL per token (nats) of the held-out reference solutions, EOS included; lower is better",
}


class Scored(TypedDict):
    """One question as a model scored it (what the E6 result files keep per question)."""

    id: str
    scores: list[float]  # length-normalised score of each sample of the record, in its order
    ref_nll: float  # summed NLL of the reference solution's tokens (EOS included)
    ref_tokens: int


def mixed(record: Record) -> bool:
    """Whether a record has a right and a wrong sample: only then do a model's scores decide any metric of it
    (all right: rerank picks a right one whatever the scores; all wrong: a wrong one; no pair either way).

    >>> mixed({"samples": [{"correct": True}, {"correct": False}]}), mixed({"samples": [{"correct": True}]})
    (True, False)
    """
    return len({s["correct"] for s in record["samples"]}) == 2


def score_records(lm, records: list[Record], batch_tokens: int | None = None, chunk: int | None = None,
                  on_chunk=None, mixed_only: bool = False) -> list[Scored]:
    """Every sample's score and the reference's NLL under ``lm``, per record; with ``chunk``, ``on_chunk``
    is called with the questions scored so far after each ``chunk`` of them (a long CPU run saves as it goes).
    ``mixed_only``: score the samples of :func:`mixed` records only (the others get ``scores`` [] and still
    their reference's NLL): the same metrics, at ~40% less scoring on GSM8K's model_solutions."""
    from ..model.scoring import score_grouped

    out: list[Scored] = []
    step = chunk or max(len(records), 1)
    for i in range(0, len(records), step):
        part = records[i:i + step]
        prompts = lm.prompt_ids_batch([r["question"] for r in part])
        kept = [r["samples"] if mixed(r) or not mixed_only else [] for r in part]
        flat = iter(lm.cot_ids_batch([c for r, k in zip(part, kept) for c in [s["cot"] for s in k] + [r["reference"]]]))
        groups = [[next(flat) for _ in range(len(k) + 1)] for k in kept]  # samples, then the reference
        scores, per_token = score_grouped(lm, prompts, groups, batch_tokens)
        out += [{"id": r["id"], "scores": s[:-1].tolist(), "ref_nll": -float(t[-1].sum()), "ref_tokens": len(t[-1])}
                for r, s, t in zip(part, scores, per_token)]
        if on_chunk is not None and len(out) < len(records):
            on_chunk(out)
    return out


def _size_wins(scores: list[float], correct: list[bool], sizes: list[str], same: bool) -> tuple[float, int]:
    pairs = [(i, j) for i, j in right_wrong_pairs(correct, [not c for c in correct]) if (sizes[i] == sizes[j]) == same]
    return sum(1.0 if scores[i] > scores[j] else 0.5 if scores[i] == scores[j] else 0.0 for i, j in pairs), len(pairs)


def metric_rows(records: list[Record], scored: list[Scored]) -> dict[str, list[list[float]]]:
    """Per metric (:data:`METRICS`), one ``[numerator, denominator]`` row per question that enters it. Which
    questions enter depends only on the labels, never on the scores, so two models' rows line up."""
    rows: dict[str, list[list[float]]] = {m: [] for m in METRICS}
    for r, sc in zip(records, scored):
        if r["id"] != sc["id"]:
            raise ValueError(f"metric_rows: record {r['id']!r} met the scores of {sc['id']!r}")
        correct = [s["correct"] for s in r["samples"]]
        sizes = [size_of(s.get("source", "")) for s in r["samples"]]
        for name, (w, p) in (("assessment", pair_wins(sc["scores"], correct)),
                             ("assessment_same_size", _size_wins(sc["scores"], correct, sizes, True)),
                             ("assessment_cross_size", _size_wins(sc["scores"], correct, sizes, False))):
            if p:
                rows[name].append([float(w), p])
        if correct and not sc["scores"] and mixed(r):
            raise ValueError(f"metric_rows: record {r['id']!r} has right and wrong samples but no scores")
        if correct:  # unscored (not mixed): every sample has the label of the first
            top = max(range(len(correct)), key=sc["scores"].__getitem__) if sc["scores"] else 0
            rows["rerank"].append([float(correct[top]), 1])
        rows["ref_nll"].append([sc["ref_nll"], sc["ref_tokens"]])
    return rows


def summarise(records: list[Record], scored: list[Scored], seconds: float = float("nan"), n_resamples: int = 4000
              ) -> dict:
    """Every metric with its 95% bootstrap interval over questions (``{"value", "lo", "hi", "n"}``), the
    mean score and share of right solutions per source, and the counts behind them."""
    records = records[:len(scored)]
    out: dict = {}
    for name, rows in metric_rows(records, scored).items():
        if rows:
            d = interval(rows, n_resamples=n_resamples)
            out[name] = {"value": d["diff"], "lo": d["lo"], "hi": d["hi"], "n": len(rows)}
    by_source: dict[str, list[tuple[float, bool]]] = {}
    for r, sc in zip(records, scored):
        for s, x in zip(r["samples"], sc["scores"]):
            by_source.setdefault(s.get("source", "?"), []).append((x, s["correct"]))
    n_cots = sum(len(r["samples"]) for r in records)
    return {"metrics": out, "n_questions": len(records), "n_cots": n_cots,
            "n_unfinished": sum(r.get("n_sampled", len(r["samples"])) - len(r["samples"]) for r in records),
            "share_correct": sum(s["correct"] for r in records for s in r["samples"]) / max(n_cots, 1),
            "by_source": {k: {"mean_score": sum(x for x, _ in v) / len(v), "share_correct": sum(c for _, c in v) / len(v)}
                          for k, v in by_source.items()},
            "seconds": seconds}


def assess(lm, records: list[Record], chunk: int | None = None, on_chunk=None) -> dict:
    """:func:`summarise` of ``lm``'s scores of ``records`` (``on_chunk`` gets the summary so far)."""
    start = time.perf_counter()

    def partial(part: list[Scored]) -> None:
        on_chunk(summarise(records, part, time.perf_counter() - start))
    scored = score_records(lm, records, chunk=chunk, on_chunk=partial if on_chunk else None)
    return summarise(records, scored, time.perf_counter() - start) | {"scored": scored}


def markdown(summary: dict, title: str = "Assessment on GSM8K model_solutions") -> str:
    """The Markdown tables of a :func:`summarise` result: each metric with its 95% interval, then per source.

    >>> print(markdown({"metrics": {"rerank": {"value": 0.5, "lo": 0.25, "hi": 0.75, "n": 8}}, "n_questions": 8,
    ...                 "n_cots": 32, "n_unfinished": 0, "share_correct": 0.4, "by_source": {}, "seconds": 1.0}))
    ... # doctest: +NORMALIZE_WHITESPACE
    ### Assessment on GSM8K model_solutions
    <BLANKLINE>
    | metric | value | 95% CI | questions |
    |---|---|---|---|
    | rerank | 0.500 | [0.250, 0.750] | 8 |
    <BLANKLINE>
    8 questions, 32 answered solutions (0 unfinished left out), 40.0% of them right; scored in 1 s.
    <BLANKLINE>
    | source | mean score | share right |
    |---|---|---|
    """
    lines = [f"### {title}", "", "| metric | value | 95% CI | questions |", "|---|---|---|---|"]
    lines += [f"| {name} | {m['value']:.3f} | [{m['lo']:.3f}, {m['hi']:.3f}] | {m['n']} |"
              for name, m in summary["metrics"].items()]
    lines += ["", f"{summary['n_questions']} questions, {summary['n_cots']} answered solutions "
                  f"({summary['n_unfinished']} unfinished left out), {summary['share_correct']:.1%} of them right; "
                  f"scored in {summary['seconds']:.0f} s.", "",
              "| source | mean score | share right |", "|---|---|---|"]
    lines += [f"| {k} | {v['mean_score']:.3f} | {v['share_correct']:.3f} |" for k, v in summary["by_source"].items()]
    return "\n".join(lines) + "\n"
