"""Assessment accuracy on real COTs (E6): does a model score GSM8K's correct solutions above its wrong ones?

Place in the data path: data (GSM8K ``model_solutions.jsonl``) → model → scoring → **metrics** — no
training; any model (``smol``, a run's checkpoint, a HF folder) is a judge of other models' COTs.

Each record of ``model_solutions.jsonl`` is a GSM8K test question with four solutions written by
6B and 175B models (``{"solution": ..., "is_correct": bool}`` under keys like ``6b_finetuning``).
Every solution is scored with the length-normalised log-likelihood used everywhere in aftlab, and
``metrics.assessment_accuracy`` compares correct against wrong ones of the same question.

The solutions carry GSM8K's calculator annotations (``<<16-3=13>>``) and end in ``A: 18``; by
default both are rewritten to the plain text our prompt asks for (annotations dropped, ``#### 18``)
so the judge is not scored on a tool syntax it never saw; ``raw=True`` keeps them.

>>> clean_solution("She has 16 - 3 = <<16-3=13>>13 eggs.\\nA: 13")
'She has 16 - 3 = 13 eggs.\\n#### 13'
>>> parse_solutions({"question": "q?", "x": {"solution": "A: 1", "is_correct": True},
...                  "y": {"solution": "A: 2", "is_correct": False}}, "f", 1)["correct"]
[True, False]
"""
from __future__ import annotations

import re
import time
from pathlib import Path

from ..data.questions import DataError, iter_records
from .metrics import assessment_accuracy, rerank_accuracy

_CALC = re.compile(r"<<[^<>]*>>")
_FINAL = re.compile(r"(?:^|\n)\s*A:\s*(.+?)\s*$")


def clean_solution(text: str) -> str:
    """GSM8K model solution in aftlab's COT format: calculator annotations dropped, ``A: N`` → ``#### N``."""
    text = _CALC.sub("", text.strip())
    return _FINAL.sub(lambda m: f"\n#### {m.group(1)}", text)


def parse_solutions(rec: dict, path, lineno: int, raw: bool = False) -> dict:
    """One ``model_solutions`` record as ``{question, sources, cots, correct, ground_truth}``; DataError
    names the line."""
    if not isinstance(rec, dict) or not isinstance(rec.get("question"), str):
        raise DataError(f"{path}:{lineno}: field 'question': missing or not a string")
    sources, cots, correct = [], [], []
    for key, val in rec.items():
        if not (isinstance(val, dict) and "solution" in val):
            continue
        if not isinstance(val["solution"], str) or not isinstance(val.get("is_correct"), bool):
            raise DataError(f"{path}:{lineno}: field '{key}': needs a string 'solution' and a boolean 'is_correct'")
        sources.append(key)
        cots.append(val["solution"].strip() if raw else clean_solution(val["solution"]))
        correct.append(val["is_correct"])
    if not cots:
        raise DataError(f"{path}:{lineno}: no solutions (objects with 'solution' and 'is_correct')")
    return {"question": rec["question"], "sources": sources, "cots": cots, "correct": correct,
            "ground_truth": rec.get("ground_truth", "")}


def load_solutions(path: str | Path, limit: int | None = None, raw: bool = False) -> list[dict]:
    """The first ``limit`` records of a ``model_solutions.jsonl`` file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (GSM8K model_solutions.jsonl; set --solutions or AFTLAB_GSM8K)")
    out = []
    for lineno, rec in iter_records(path):
        out.append(parse_solutions(rec, path, lineno, raw))
        if limit is not None and len(out) >= limit:
            break
    return out


def assess(lm, items: list[dict], batch_tokens: int = 2048, chunk: int | None = None, on_chunk=None) -> dict:
    """Scores of every COT under ``lm`` and the assessment metrics over ``items``.

    Returns ``{"metrics": {...}, "scores": [[s, ...] per question]}``; metrics hold assessment
    accuracy over pairs and per question, score-reranked accuracy, mean positive/negative score,
    the same per solution source, and wall time. With ``chunk``, questions are scored ``chunk`` at a
    time and ``on_chunk(partial_result)`` is called after each, so a long CPU run shows (and can save)
    figures as it goes.
    """
    from ..model.scoring import score_grouped

    start = time.perf_counter()
    scores: list[list[float]] = []
    step = chunk or max(len(items), 1)
    for i in range(0, len(items), step):
        part = items[i:i + step]
        prompts = [lm.prompt_ids(it["question"]) for it in part]  # once per question: shared by its COTs
        cots = [[lm.cot_ids(c) for c in it["cots"]] for it in part]
        scores += [s.tolist() for s in score_grouped(lm, prompts, cots, batch_tokens)[0]]
        if on_chunk is not None and len(scores) < len(items):
            on_chunk(summarise(items[:len(scores)], scores, time.perf_counter() - start))
    return summarise(items, scores, time.perf_counter() - start)


def summarise(items: list[dict], scores: list[list[float]], seconds: float = float("nan")) -> dict:
    """Assessment metrics of per-question ``scores`` for ``items`` (see :func:`assess`)."""
    flat = [s for ss in scores for s in ss]
    correct = [it["correct"] for it in items]
    acc = assessment_accuracy(scores, correct)
    pos = [s for ss, cc in zip(scores, correct) for s, c in zip(ss, cc) if c]
    neg = [s for ss, cc in zip(scores, correct) for s, c in zip(ss, cc) if not c]
    by_source = {}
    for src in dict.fromkeys(s for it in items for s in it["sources"]):
        vals = [(s, c) for it, ss in zip(items, scores) for s, c, k in zip(ss, it["correct"], it["sources"]) if k == src]
        by_source[src] = {"mean_score": sum(v for v, _ in vals) / len(vals),
                          "share_correct": sum(c for _, c in vals) / len(vals)}
    metrics = {"assessment_pairs": acc["pairs"], "assessment_per_question": acc["per_question"],
               "n_pairs": acc["n_pairs"], "n_questions_with_both": acc["n_questions"], "n_questions": len(items),
               "n_cots": len(flat), "rerank_accuracy": rerank_accuracy(scores, correct),
               "share_correct": len(pos) / max(len(flat), 1),
               "pos_score": sum(pos) / len(pos) if pos else float("nan"),
               "neg_score": sum(neg) / len(neg) if neg else float("nan"),
               "by_source": by_source, "seconds": seconds}
    return {"metrics": metrics, "scores": scores}


def markdown(metrics: dict, title: str = "Assessment on GSM8K model_solutions") -> str:
    """A small Markdown table of ``assess`` metrics (for experiment logs)."""
    m = metrics
    rows = [("assessment accuracy (pairs)", f"{m['assessment_pairs']:.3f}"),
            ("assessment accuracy (per question)", f"{m['assessment_per_question']:.3f}"),
            ("pairs / questions with both groups", f"{m['n_pairs']} / {m['n_questions_with_both']}"),
            ("questions / COTs", f"{m['n_questions']} / {m['n_cots']}"),
            ("score-reranked accuracy (top-scored of the COTs correct)", f"{m['rerank_accuracy']:.3f}"),
            ("share of COTs correct (chance level of reranking)", f"{m['share_correct']:.3f}"),
            ("mean score positives / negatives (nats/token)", f"{m['pos_score']:.3f} / {m['neg_score']:.3f}"),
            ("scoring wall time (s)", f"{m['seconds']:.1f}")]
    lines = [f"### {title}", "", "| metric | value |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows]
    lines += ["", "| source | mean score | share correct |", "|---|---|---|"]
    lines += [f"| {k} | {v['mean_score']:.3f} | {v['share_correct']:.3f} |" for k, v in m["by_source"].items()]
    return "\n".join(lines) + "\n"
