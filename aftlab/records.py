"""Named records: the schemas of what flows along the data path, written down once.

Place in the data path: beside ``config`` at the bottom; every stage's public functions take and return
these (sampling writes ``Record``s of ``Sample``s, ``sampling.groups`` makes ``Group``s, ``align.pack``
``Packed`` batches, ``train.fit`` ``LogRow``s, ``evaluate`` an ``EvalResult``). They are TypedDicts, so
JSON files (the samples cache, ``metrics.json``) load into them as they are.

>>> s: Sample = {"cot": "1 + 1 = 2. #### 2", "answer": "2", "correct": True, "strict": True, "quality": 1.0,
...              "finished": True, "label": "pos", "count": 1}
>>> sorted(Group.__annotations__)
['id', 'levels', 'neg', 'pos', 'question']
"""
from __future__ import annotations

from typing import TypedDict


class Sample(TypedDict, total=False):
    """One distinct sampled COT of a question, labelled (``sampling.label``)."""

    cot: str  # the COT text, whitespace-normalised (``data.canonical``)
    answer: str | None  # its extracted final answer (None when it holds none, or did not finish)
    correct: bool  # the answer matches the gold one (and the COT finished)
    strict: bool  # correct, and every arithmetic step checks out
    quality: float  # share of its arithmetic steps that check out (1.0 with none)
    finished: bool  # the model emitted EOS within the token cap
    label: str  # "pos", "neg" (a wrong answer, or none) or "unfinished" (no EOS within the cap: no answer)
    count: int  # how many of the k draws gave this COT
    source: str  # who wrote it, for COTs not sampled here (``sampling.solutions``: e.g. "175b_verification")


class Record(TypedDict, total=False):
    """One question's samples: a line of a samples JSONL cache (``sampling.sample_cots``)."""

    id: str
    question: str
    answer: str  # gold final answer
    reference: str  # the reference COT
    samples: list[Sample]
    n_sampled: int  # draws, duplicates included
    n_duplicates: int  # draws that repeated an earlier COT


class Group(TypedDict):
    """One question's COTs as AFT trains on them (``sampling.groups``)."""

    id: str
    question: str
    pos: list[str]  # positive COTs (strict-correct samples, plus the reference)
    neg: list[str]  # negative COTs (wrong or missing answer)
    levels: list[float]  # quality level of each COT of pos + neg (ranking feedback)


class Packed(TypedDict, total=False):
    """One question's COTs as token ids for an AFT step (``align.pack``)."""

    prompt: list[int]
    cots: list[list[int]]  # positives first
    n_pos: int
    levels: list[float]
    skip: list[int]  # per COT: leading tokens a negative shares with a positive (0 for positives)
    stop: list[int]  # per COT: one past the end of the step where a negative leaves the positives
    err_start: list[int]  # per COT: the credited token range of neg_credit="first_error"
    err_stop: list[int]


class LogRow(TypedDict, total=False):
    """One entry of a training log (``train.fit``); AFT adds its score statistics."""

    step: int  # optimizer steps completed
    loss: float  # mean loss since the previous entry
    grad_norm: float
    lr: float
    align_loss: float
    pos_score: float
    neg_score: float
    gap: float
    boundary: float
    neg_below_boundary: float
    round: int  # sample → align round (``aftlab run --rounds``)


class GreedyRow(TypedDict):
    """A model's greedy COT for one held-out question (``evaluate.greedy``)."""

    id: str
    question: str
    cot: str
    finished: bool
    correct: bool


class EvalResult(TypedDict):
    """What ``evaluate.evaluate`` returns for one model."""

    metrics: dict[str, float]  # metric name → value (see the README's column definitions)
    greedy: list[GreedyRow]
    scores: list[list[float]]  # the model's score of every COT of the fixed sample set, per question
