"""Evaluate one model: greedy task accuracy, and a fixed set of sampled COTs rescored by the model.

Place in the data path: … → AFT → **evaluate** (metrics of a model) → report.

The fixed assessment set is sampled once (by the VFT model) on held-out questions; every model
rescores the same COTs, so differences in assessment and rerank accuracy come from the scores
alone. Assessment is reported twice: with the task's labels (a COT is right when its final
answer is, as in the paper) and ``_strict``, where the right side of each pair must also have every
arithmetic step check out — "lucky" COTs that reach the right answer through wrong steps are left
out. The tiny model writes many of those (its final answer does not always follow its chain), and
a model that learns the arithmetic better ranks them lower, which the answer-labelled figure counts
as an error.

>>> self_consistency_of([{"answer": "1", "samples": [{"answer": "1", "correct": True, "count": 2},
...                                                  {"answer": "2", "correct": False, "count": 1}]}])
{'self_consistency': 1.0, 'sample_accuracy': 0.6666666666666666}
"""
from __future__ import annotations

import math

from ..data.answers import is_correct
from ..data.questions import Example
from ..model.lm import LM, lora_merged
from ..model.scoring import score, score_grouped
from ..records import EvalResult, GreedyRow, Record
from ..sampling.samples import generate, quality_level, sample_cots
from ..train.shards import map_batches
from .metrics import (
    answered_view,
    assessment_accuracy,
    mean_kendall_tau,
    repetition_rate,
    rerank_accuracy,
    self_consistency,
    strict_view,
    task_accuracy,
    unfinished_samples,
)


def rescore(lm: LM, records: list[Record], dist=None) -> list[list[float]]:
    """Scores of every sample of every record under ``lm``, grouped per record; each question is encoded
    once and its samples continue from its KV cache (``scoring.score_grouped``, equal to scoring every
    (question, COT) row in full up to float rounding). With ``dist`` (an ``aftlab.train.distributed`` runner)
    each process scores a contiguous block of records."""
    def block(recs):
        prompts = lm.prompt_ids_batch([r["question"] for r in recs])
        flat = iter(lm.cot_ids_batch([s["cot"] for r in recs for s in r["samples"]]))
        groups = [[next(flat) for _ in r["samples"]] for r in recs]
        return [s.tolist() for s in score_grouped(lm, prompts, groups)[0]]
    world = dist.world if dist else 1
    return map_batches(block, records, -(-len(records) // world), dist)


def n_mixed(records: list[Record]) -> int:
    """How many records have both a right and a wrong sample: the questions assessment is computed on
    (a question whose COTs are all right, or all wrong, has no pair to rank).

    >>> n_mixed([{"samples": [{"correct": True}, {"correct": False}]}, {"samples": [{"correct": True}]},
    ...          {"samples": [{"correct": False}, {"correct": False}]}])
    1
    """
    return sum(len({s["correct"] for s in r["samples"]}) == 2 for r in records)


def assessment_set(lm: LM, test: list[Example], n: int, k: int, min_mixed: int = 0, block: int = 1024,
                   **sample_kw) -> list[Record]:
    """The fixed assessment set: ``k`` samples (``sampling.sample_cots``, ``sample_kw`` passed on) of
    each of the first ``n`` held-out questions, then of the following ones, ``block`` at a time,
    until ``min_mixed`` of them have a right and a wrong COT (:func:`n_mixed`) or ``test`` runs out.

    The more accurate the model, the fewer of its questions are mixed, so a fixed size gives a fixed
    number of questions to rerank but a varying number to *assess*; growing to ``min_mixed`` keeps the
    assessment's power the same whatever the model's accuracy. Which questions join depends only on this
    model's samples, never on the models later compared on them. Every batch of every piece draws with
    the seed of its first question's position in ``test`` (``first_index``), and a cache file given in
    ``sample_kw`` is shared by the pieces, so a run resumed from it gets the same set.
    """
    records = sample_cots(lm, test[:n], k=k, **sample_kw)
    while n_mixed(records) < min_mixed and len(records) < len(test):
        records += sample_cots(lm, test[len(records):len(records) + block], k=k, first_index=len(records),
                               **sample_kw)
    return records


GREEDY_BATCH = 512  # questions per generate() call: 1.15x the rate of 128 on tiny at 1 thread, same answers


def greedy(lm: LM, examples: list[Example], max_new_tokens: int = 48, batch: int = GREEDY_BATCH, dist=None
           ) -> list[GreedyRow]:
    """Greedy COT, answer correctness and whether it finished, per example; with ``dist`` each process
    decodes whole batches of ``batch`` questions (``aftlab.train.shards``), so the answers are those of one process."""
    def run(chunk):
        gens = generate(lm, [e.question for e in chunk], k=1, temperature=0.0, max_new_tokens=max_new_tokens)
        return [{"id": e.id, "question": e.question, "cot": text, "finished": finished,
                 "correct": finished and is_correct(text, e.answer)} for e, [(text, finished)] in zip(chunk, gens)]
    return map_batches(run, list(examples), batch, dist)


def perplexity(lm: LM, examples: list[Example]) -> float:
    """exp(mean token NLL) of the examples' reference COTs given their questions (EOS included)."""
    prompts = [lm.prompt_ids(e.question) for e in examples]
    _, per_token = score(lm, prompts, [lm.cot_ids(e.solution) for e in examples])
    total = sum(float(t.sum()) for t in per_token)
    return math.exp(-total / max(sum(len(t) for t in per_token), 1))


def self_consistency_of(records: list[Record]) -> dict[str, float]:
    """Majority-vote accuracy over each question's samples (duplicates counted by their ``count``) and
    the share of samples that are right, from sample records (``sampling.sample_cots``)."""
    sc = self_consistency([[s["answer"] for s in r["samples"]] for r in records], [r["answer"] for r in records],
                          [[s["count"] for s in r["samples"]] for r in records],
                          equal=lambda a, b: is_correct(f"#### {a}", b))
    drawn = sum(s["count"] for r in records for s in r["samples"])
    return {"self_consistency": sc,
            "sample_accuracy": sum(s["correct"] * s["count"] for r in records for s in r["samples"]) / max(drawn, 1)}


def own_sampling(cfg) -> dict:
    """The self-consistency keywords of :func:`evaluate` a ``RunConfig`` asks for."""
    return {"own_k": cfg.eval_k, "temperature": cfg.sample.temperature, "seed": cfg.seed,
            "own_questions": cfg.sc_questions}


def evaluate(lm: LM, test: list[Example], eval_records: list[Record], max_new_tokens: int = 48, own_k: int = 0,
             temperature: float = 0.8, seed: int = 0, own_records: list[Record] | None = None,
             own_questions: int | None = None, dist=None) -> EvalResult:
    """Metrics of ``lm`` on the held-out ``test`` questions and the fixed sample set ``eval_records``.

    Self-consistency (majority vote over k samples) and sample accuracy come from the model's own
    samples of the first ``own_questions`` held-out questions: ``own_records`` when given (the VFT
    model's are the fixed sample set itself), else ``own_k`` drawn now at ``temperature``.
    ``dist``: shard decoding, rescoring and sampling over the processes of a launch (same figures)."""
    n = len(test) if own_questions is None else min(own_questions, len(test))
    with lora_merged(lm.model):  # the model's work, inference only: LoRA adapters folded into the weights meanwhile
        g = greedy(lm, test, max_new_tokens, dist=dist)
        scores = rescore(lm, eval_records, dist)
        ppl = perplexity(lm, test)
        if own_records is None and own_k and n:
            own_records = sample_cots(lm, test[:n], k=own_k, temperature=temperature, max_new_tokens=max_new_tokens,
                                      seed=seed + 7, progress=False, dist=dist)
    correct = [[s["correct"] for s in r["samples"]] for r in eval_records]
    levels = [[quality_level(s) for s in r["samples"]] for r in eval_records]
    assess = assessment_accuracy(*answered_view(scores, eval_records))  # unfinished COTs have no answer: no pair
    strict = assessment_accuracy(*strict_view(scores, eval_records))  # lucky COTs left out too
    n_right = sum(s["correct"] for r in eval_records for s in r["samples"])
    pos = [x for s, c in zip(scores, correct) for x, ok in zip(s, c) if ok]
    neg = [x for s, c in zip(scores, correct) for x, ok in zip(s, c) if not ok]
    m = {"task_accuracy": task_accuracy([x["correct"] for x in g]),
         "assessment_accuracy": assess["pairs"], "assessment_per_question": assess["per_question"],
         "n_pairs": assess["n_pairs"], "assessment_accuracy_strict": strict["pairs"],
         "assessment_strict_per_question": strict["per_question"], "n_pairs_strict": strict["n_pairs"],
         "lucky_share": 1 - sum(s["strict"] for r in eval_records for s in r["samples"]) / max(n_right, 1),
         "unfinished_samples": unfinished_samples(eval_records),
         "rerank_accuracy": rerank_accuracy(scores, correct),
         "mean_pos_score": sum(pos) / max(len(pos), 1), "mean_neg_score": sum(neg) / max(len(neg), 1),
         "ranking_tau": mean_kendall_tau(scores, levels),
         "repetition_rate": repetition_rate([x["cot"] for x in g]),
         "unfinished_rate": sum(not x["finished"] for x in g) / len(g)}
    m["perplexity"] = ppl
    if own_records:
        m |= self_consistency_of(own_records[:n])
    return {"metrics": m, "greedy": g, "scores": scores}
