"""GSM8K ``model_solutions.jsonl``: real questions, each with solutions written by other models and labelled.

Place in the data path: **data** → … ; ``aftlab.sampling.solutions`` turns the rows into the sample records
AFT trains on, ``aftlab.eval.assess`` scores them with any model (E6).

A line is a GSM8K test question with its reference solution (``ground_truth``) and four solutions written
by 6B and 175B models (``{"solution": ..., "is_correct": bool}`` under keys like ``6b_finetuning``). The
solutions carry GSM8K's calculator annotations (``<<16-3=13>>``) and end in ``A: 18``; by default both are
rewritten to the plain text our prompt asks for (annotations dropped, ``#### 18``), ``raw=True`` keeps them.
A solution without the final ``A: N`` line never finished (a loop cut off by its writer's token cap): it
has **no** answer, whatever number its text ends in.

Every label is checked against the answer: the solution's extracted answer must match the gold answer
(read from ``ground_truth``) exactly when ``is_correct`` is true, so a file whose labels and answers disagree
is refused with the file, line and field of each disagreement, not trained on.

>>> clean_solution("She has 16 - 3 = <<16-3=13>>13 eggs.\\nA: 13")
'She has 16 - 3 = 13 eggs.\\n#### 13'
>>> row = parse_solutions({"question": "q?", "ground_truth": "1 + 1 = 2\\nA: 2",
...                        "x": {"solution": "1 + 1 = 2\\nA: 2", "is_correct": True},
...                        "y": {"solution": "1 + 1 = 3\\nA: 3", "is_correct": False}}, "f", 1)
>>> row["correct"], row["gold"], row["finished"]
([True, False], '2', [True, True])
>>> fold_of(["a", "b", "c", "d", "e", "f"], k=3, seed=0) == fold_of(["f", "e", "d", "c", "b", "a"], k=3, seed=0)
True
"""
from __future__ import annotations

import random
import re
from pathlib import Path
from typing import TypedDict

from .answers import extract_answer, is_correct
from .questions import DataError, iter_records

_CALC = re.compile(r"<<[^<>]*>>")
_FINAL = re.compile(r"(?:^|\n)\s*A:\s*(.+?)\s*$")
SIZE = re.compile(r"^(\d+b)_")  # the writer's size in a source key: "6b_finetuning" -> "6b"


class Solutions(TypedDict):
    """One line of ``model_solutions.jsonl``, parsed and checked (``parse_solutions``)."""

    id: str  # "line-N": the question's line in its file, stable across loads and limits
    question: str
    ground_truth: str  # the reference solution as written in the file
    reference: str  # the reference solution cleaned as the solutions are ("" when the line has none)
    gold: str | None  # the gold answer read from ground_truth (None when the line has none)
    sources: list[str]  # who wrote each solution, e.g. "175b_verification"
    cots: list[str]  # the solutions, cleaned unless raw
    correct: list[bool]  # the file's is_correct label of each solution
    finished: list[bool]  # the solution ends in its final answer line (unfinished ones have no answer)


def clean_solution(text: str) -> str:
    """GSM8K model solution in aftlab's COT format: calculator annotations dropped, ``A: N`` → ``#### N``."""
    text = _CALC.sub("", text.strip())
    return _FINAL.sub(lambda m: f"\n#### {m.group(1)}", text)


def size_of(source: str) -> str:
    """The model size that wrote a solution, from its source key (the key itself when it names none).

    >>> size_of("175b_verification"), size_of("6b_finetuning"), size_of("human")
    ('175b', '6b', 'human')
    """
    m = SIZE.match(source)
    return m.group(1) if m else source


def disagreement(cot: str, finished: bool, label: bool, gold: str) -> str | None:
    """Why a solution's ``is_correct`` label contradicts its answer, or None when they agree.

    >>> disagreement("#### 18", True, False, "18")
    'is_correct is false but its answer 18 matches the gold answer 18'
    >>> disagreement("3 * 6 = 18", False, True, "18")
    'is_correct is true but the solution has no final answer line (unfinished)'
    >>> disagreement("#### 17", True, False, "18") is None
    True
    """
    if not finished:
        return "is_correct is true but the solution has no final answer line (unfinished)" if label else None
    if is_correct(cot, gold) == label:
        return None
    verb = "matches" if not label else "does not match"
    return f"is_correct is {str(label).lower()} but its answer {extract_answer(cot)} {verb} the gold answer {gold}"


def label_errors(row: Solutions, where: str) -> list[str]:
    """``where: field '<source>.is_correct': why`` for each label of ``row`` that contradicts its answer."""
    if row["gold"] is None:
        return []
    return [f"{where}: field '{src}.is_correct': {why}"
            for src, cot, done, ok in zip(row["sources"], row["cots"], row["finished"], row["correct"])
            if (why := disagreement(clean_solution(cot), done, ok, row["gold"]))]


def parse_solutions(rec: dict, path, lineno: int, raw: bool = False, check: bool = True) -> Solutions:
    """One ``model_solutions`` line (see :class:`Solutions`); DataError names file, line and field of anything
    malformed and, with ``check``, of every label that contradicts its solution's answer."""
    where = f"{path}:{lineno}"
    if not isinstance(rec, dict) or not isinstance(rec.get("question"), str):
        raise DataError(f"{where}: field 'question': missing or not a string")
    truth = rec.get("ground_truth", "")
    if not isinstance(truth, str):
        raise DataError(f"{where}: field 'ground_truth': not a string")
    gold = extract_answer(clean_solution(truth)) if truth.strip() else None
    if truth.strip() and gold is None:
        raise DataError(f"{where}: field 'ground_truth': holds no final answer (expected a last line 'A: N')")
    sources, cots, correct, finished = [], [], [], []
    for key, val in rec.items():
        if not (isinstance(val, dict) and "solution" in val):
            continue
        if not isinstance(val["solution"], str) or not isinstance(val.get("is_correct"), bool):
            raise DataError(f"{where}: field '{key}': needs a string 'solution' and a boolean 'is_correct'")
        sources.append(key)
        cots.append(val["solution"].strip() if raw else clean_solution(val["solution"]))
        correct.append(val["is_correct"])
        finished.append(bool(_FINAL.search(val["solution"].strip())))
    if not cots:
        raise DataError(f"{where}: no solutions (objects with 'solution' and 'is_correct')")
    row: Solutions = {"id": f"line-{lineno}", "question": rec["question"], "ground_truth": truth,
                      "reference": truth.strip() if raw else clean_solution(truth) if truth.strip() else "",
                      "gold": gold, "sources": sources, "cots": cots, "correct": correct, "finished": finished}
    if check and (wrong := label_errors(row, where)):
        raise DataError(_refusal(wrong))
    return row


def _refusal(errors: list[str], shown: int = 10) -> str:
    more = f"; … and {len(errors) - shown} more" if len(errors) > shown else ""
    return (f"{len(errors)} is_correct label(s) contradict their solution's answer: " + "; ".join(errors[:shown]) + more
            + " (labels must agree with the answers: fix the file, or load it with check=False)")


def load_solutions(path: str | Path, limit: int | None = None, raw: bool = False, check: bool = True
                   ) -> list[Solutions]:
    """The first ``limit`` lines of a ``model_solutions.jsonl`` file (see :func:`parse_solutions`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (GSM8K model_solutions.jsonl; set --solutions or AFTLAB_GSM8K)")
    out, wrong = [], []
    for lineno, rec in iter_records(path):
        out.append(parse_solutions(rec, path, lineno, raw, check=False))
        if check:  # every contradiction of the file in one report, not the first alone
            wrong += label_errors(out[-1], f"{path}:{lineno}")
        if limit is not None and len(out) >= limit:
            break
    if wrong:
        raise DataError(_refusal(wrong))
    return out


def fold_of(ids: list[str], k: int, seed: int = 0) -> dict[str, int]:
    """Question-level K-fold assignment: each id's fold in 0..k-1, fold sizes within one of each other.

    Deterministic by ``seed`` and independent of the order of ``ids`` (they are sorted first), so a fold
    holds the same questions whichever process or subset asks.

    >>> f = fold_of([f"q{i}" for i in range(7)], k=3, seed=1)
    >>> sorted(f.values()).count(0), sorted(f.values()).count(2)
    (3, 2)
    """
    if not 2 <= k <= len(ids):
        raise ValueError(f"fold_of: need 2 <= k <= {len(ids)} questions, got k = {k}")
    order = sorted(set(ids))
    random.Random(seed).shuffle(order)
    return {q: i % k for i, q in enumerate(order)}


def split_folds(ids: list[str], k: int, fold: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """(training ids, held-out ids) of outer fold ``fold``, each in the order of ``ids``.

    >>> train, held = split_folds(["a", "b", "c", "d"], k=2, fold=0)
    >>> sorted(train + held), set(train) & set(held)
    (['a', 'b', 'c', 'd'], set())
    """
    if not 0 <= fold < k:
        raise ValueError(f"split_folds: fold {fold} is not in 0..{k - 1}")
    where = fold_of(ids, k, seed)
    return [q for q in ids if where[q] != fold], [q for q in ids if where[q] == fold]
