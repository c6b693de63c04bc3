"""Export sampled, labelled COTs for other tools: flat JSONL rows and TRL-style preference pairs.

Place in the data path: sampling (``samples.jsonl``) → **export** → ``datasets.load_dataset("json", ...)``
or TRL's ``DPOTrainer`` (columns ``prompt``/``chosen``/``rejected``). Trained models and adapters
need no export: they are already in ``save_pretrained`` layout.

``jsonl`` writes one row per (question, distinct COT) with a fixed schema (every key in every row,
no nulls in typed columns) so ``datasets`` infers one set of features. ``pairs`` writes every
(positive, negative) pair of a question, positives and negatives chosen exactly as AFT trains on
them (``sampling.groups``: strict positives plus the reference). The prompt is the text our
plain-prompt models see; ``conversational=True`` writes TRL's message-list form instead, with the
user turn our chat models get, so a chat template applies it the same way.

>>> recs = [{"id": "q1", "question": "1 + 1?", "answer": "2", "reference": "1 + 1 = 2. #### 2",
...          "samples": [{"cot": "1 + 1 = 3. #### 3", "correct": False, "strict": False, "quality": 0.0}]}]
>>> preference_pairs(recs)[0]["rejected"]
' 1 + 1 = 3. #### 3'
>>> cot_rows(recs)[0]["label"]
'neg'
"""
from __future__ import annotations

import json
from pathlib import Path

from ..model.lm import CHAT_INSTRUCTION, PLAIN_PROMPT
from ..sampling.samples import groups

FORMATS = ("jsonl", "pairs")


def cot_rows(records: list[dict]) -> list[dict]:
    """One flat row per sampled COT: question, gold answer, reference, COT and its labels (an unfinished COT,
    no EOS within the cap, is labelled "unfinished": it has no answer).

    >>> rec = {"id": "q", "question": "1 + 1?", "answer": "2", "reference": "1 + 1 = 2. #### 2", "samples": [
    ...     {"cot": "1 + 1 =", "correct": False, "strict": False, "quality": 1.0, "finished": False}]}
    >>> cot_rows([rec])[0]["label"]
    'unfinished'
    """
    rows = []
    for r in records:
        for s in r["samples"]:
            rows.append({"id": r["id"], "question": r["question"], "answer": r["answer"], "reference": r["reference"],
                         "cot": s["cot"], "predicted": s.get("answer") or "", "correct": bool(s["correct"]),
                         "strict": bool(s["strict"]), "quality": float(s["quality"]),
                         "label": "pos" if s["correct"] else "neg" if s.get("finished", True) else "unfinished",
                         "count": int(s.get("count", 1))})
    return rows


def preference_pairs(records: list[dict], strict: bool = True, include_reference: bool = True,
                     conversational: bool = False, max_pairs: int | None = None) -> list[dict]:
    """Every (positive, negative) COT pair per question as ``{prompt, chosen, rejected, id}``;
    ``max_pairs`` caps the pairs taken per question (in positive-major order)."""
    out = []
    for g in groups(records, strict, include_reference):
        pairs = [(p, n) for p in g["pos"] for n in g["neg"]][:max_pairs]
        for p, n in pairs:
            if conversational:
                prompt = [{"role": "user", "content": g["question"] + CHAT_INSTRUCTION}]
                chosen, rejected = [{"role": "assistant", "content": p}], [{"role": "assistant", "content": n}]
            else:  # TRL concatenates prompt + completion, so the completion keeps our leading space
                prompt, chosen, rejected = PLAIN_PROMPT.format(question=g["question"]), " " + p, " " + n
            out.append({"prompt": prompt, "chosen": chosen, "rejected": rejected, "id": g["id"]})
    return out


def export(records: list[dict], fmt: str, out: str | Path, **kw) -> int:
    """Write ``records`` (from ``sampling.read_samples``) as ``fmt`` to ``out``; returns the row count."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose from {FORMATS}")
    rows = cot_rows(records) if fmt == "jsonl" else preference_pairs(records, **kw)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(out)
    return len(rows)
