"""External COTs as sample records: GSM8K ``model_solutions`` rows in the form sampling writes.

Place in the data path: data (``aftlab.data.solutions``) → **sampling** (records and groups) → align → eval.

No model samples here: the COTs were written by other models and labelled by the file. Each row becomes a
:class:`~aftlab.records.Record` whose samples went through the same :func:`~aftlab.sampling.samples.label` as
sampled ones (its answer check agrees with the file's ``is_correct``: ``aftlab.data.solutions`` refused any
row where they do not), carrying their ``source``; the records then pass the samples cache's checks
(:func:`write_records` / ``samples.read_samples``) and become AFT's groups with ``samples.groups``, as a
sampled cache does (``aftlab align --samples FILE`` trains on the file). Texts are whitespace-normalised
(``data.canonical``) like every cached COT, so the reference and the solutions share one layout.

Unfinished solutions (no final answer line) have no answer: they are left out of the records, and counted
(``n_sampled`` - ``len(samples)``).

>>> row = {"id": "line-1", "question": "q?", "reference": "1 + 1 = 2\\n#### 2", "gold": "2",
...        "sources": ["6b_a", "175b_b", "6b_c"], "cots": ["1 + 1 = 2\\n#### 2", "1 + 1 = 3\\n#### 3", "1 + 1 ="],
...        "correct": [True, False, False], "finished": [True, True, False]}
>>> rec = records_of([row])[0]
>>> [(s["cot"], s["label"], s["source"]) for s in rec["samples"]], rec["n_sampled"]
([('1 + 1 = 2 #### 2', 'pos', '6b_a'), ('1 + 1 = 3 #### 3', 'neg', '175b_b')], 3)
"""
from __future__ import annotations

import json
from pathlib import Path

from ..data.questions import DataError, canonical
from ..data.solutions import Solutions
from ..records import Record
from .samples import label


def records_of(rows: list[Solutions]) -> list[Record]:
    """One sample record per row: its finished solutions labelled, in file order, with their source."""
    out = []
    for r in rows:
        if r["gold"] is None:
            raise DataError(f"{r['id']}: no 'ground_truth' to take the gold answer and the reference from")
        samples = []
        for c, s, ok, done in zip(r["cots"], r["sources"], r["correct"], r["finished"]):
            if not done:
                continue
            smp = label(canonical(c), r["gold"])
            if smp["correct"] != ok:  # the loader's check, again: records are never trained on a contradicted label
                raise DataError(f"{r['id']}: field '{s}.is_correct' is {str(ok).lower()} but the answer "
                                f"{smp['answer']} {'does not match' if ok else 'matches'} the gold answer {r['gold']}")
            samples.append({**smp, "source": s, "count": 1})
        out.append({"id": r["id"], "question": r["question"], "answer": r["gold"],
                    "reference": canonical(r["reference"]), "samples": samples, "n_sampled": len(r["cots"]),
                    "n_duplicates": 0})
    return out


def write_records(records: list[Record], path: str | Path) -> Path:
    """The records as a samples JSONL file (what ``aftlab align --samples`` and ``read_samples`` read)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path
