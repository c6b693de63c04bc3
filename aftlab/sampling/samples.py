"""Sampling: k COTs per question, batched with the KV cache, de-duplicated, labelled, cached as JSONL.

Place in the data path: data → model → VFT → **sampling** → scoring → losses → AFT → metrics.

Each batch of questions is seeded from (seed, index of its first question), so the same seed
gives the same COTs, and a resumed run (the JSONL cache already holds some questions) produces
the rest exactly as an uninterrupted run would. Under a launcher each process draws whole batches
(``aftlab.train.shards``), so the process count does not change the COTs either.

>>> rec = label("3 * 4 = 12. 12 + 5 = 17. #### 17", "17")
>>> rec["correct"], rec["strict"], rec["label"]
(True, True, 'pos')
>>> label("3 * 4 = 13. 13 + 5 = 18. #### 18", "17")["label"]
'neg'
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import torch

from ..data.answers import extract_answer, is_correct, is_strict_correct, step_quality
from ..data.questions import DataError, Example, canonical, iter_records
from ..model.lm import LM, cache_arg, growing_cache, left_pad, linears_cast, lora_merged
from ..records import Group, Record, Sample


def label(cot: str, reference: str, finished: bool = True) -> Sample:
    """Answer, correctness, strict correctness (every step checks out) and step quality of a COT.

    A COT that did not finish (no EOS within the token cap) has no answer, whatever number its text
    happens to end in: answer None, label "unfinished", never correct.

    >>> label("Steps: 1.", "1", finished=False)["answer"], label("Steps: 1.", "1", finished=False)["label"]
    (None, 'unfinished')
    """
    correct = finished and is_correct(cot, reference)
    strict = correct and is_strict_correct(cot, reference)
    return {"cot": cot, "answer": extract_answer(cot) if finished else None, "correct": correct, "strict": strict,
            "quality": step_quality(cot), "finished": finished,
            "label": "pos" if correct else "neg" if finished else "unfinished"}


def quality_level(rec: Sample) -> float:
    """A ranking-feedback level: 2 + step quality for a correct answer, step quality otherwise."""
    return (2.0 if rec["correct"] else 0.0) + (1.0 if rec["strict"] else rec["quality"])


def prefill(model, ids: torch.Tensor, att: torch.Tensor, repeats: int, reserve: int | None = None):
    """The KV cache of the left-padded prompts ``ids`` (B, P), at the positions ``generate`` gives them,
    repeated to ``repeats`` rows per prompt (B * repeats, ...); with ``reserve``, a cache that has room
    for that many more tokens (``model.growing_cache``), else transformers' ``DynamicCache``."""
    from transformers import DynamicCache
    pos = (att.cumsum(-1) - 1).masked_fill(att == 0, 0)
    out = model(input_ids=ids, attention_mask=att, position_ids=pos, use_cache=True, logits_to_keep=1,
                **{cache_arg(): DynamicCache() if reserve is None else growing_cache(reserve)})
    cache = getattr(out, cache_arg())
    cache.batch_repeat_interleave(repeats)
    return cache


@torch.inference_mode()
def generate(lm: LM, questions: list[str], k: int = 1, temperature: float = 0.0, top_p: float = 1.0,
             max_new_tokens: int = 48, seed: int = 0, share_prompt: bool = True, grow_cache: bool = True,
             cast_once: bool = True) -> list[list[tuple[str, bool]]]:
    """k completions per question as (text, finished) pairs; ``temperature`` 0 means greedy.

    ``share_prompt``: with k > 1 samples per question, the prompt (all but its last token) is run once
    per question and its KV cache repeated k times (:func:`prefill`), instead of k times; the samples
    for a seed are those of ``share_prompt=False`` (tested), the prompt's FLOPs k times fewer.
    ``grow_cache``: keys and values go into a buffer with room for the new tokens (``model.growing_cache``)
    instead of being concatenated at every token; the same tokens as ``grow_cache=False`` (tested).
    ``cast_once``: under autocast, the linear layers' weights are cast to its dtype once for the call
    (``model.linears_cast``) instead of at every token; the same tokens as ``cast_once=False`` (tested)."""
    model, tok = lm.model, lm.tokenizer
    was_training = model.training
    model.eval()
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    ids, att = left_pad([lm.prompt_ids(q) for q in questions], pad)  # (N, P)
    ids, att = ids.to(lm.device), att.to(lm.device)
    width = ids.shape[1]
    torch.manual_seed(seed)
    sample = temperature > 0
    rows = k if sample else 1
    reserve = max_new_tokens + 1 if grow_cache else None
    extra = {}
    # opt-in bf16 autocast (model.autocast), with the linear weights cast once per call rather than per token
    with lm.precision(), linears_cast(model, lm.autocast if cast_once else "off"):
        if share_prompt and rows > 1 and width > 1:
            extra[cache_arg()] = prefill(model, ids[:, :-1], att[:, :-1], rows, reserve)
            ids, att = ids.repeat_interleave(rows, 0), att.repeat_interleave(rows, 0)
            rows = 1
        elif grow_cache:
            extra[cache_arg()] = growing_cache(reserve)
        out = model.generate(input_ids=ids, attention_mask=att, do_sample=sample,
                             temperature=temperature if sample else None, top_p=top_p if sample else None,
                             top_k=None, num_return_sequences=rows, max_new_tokens=max_new_tokens,
                             eos_token_id=tok.eos_token_id, pad_token_id=pad, use_cache=True, **extra)
    new = out[:, width:].cpu()
    if not sample:  # greedy: the k copies are identical, decode once
        new = new.repeat_interleave(k, dim=0)
    results = []
    for i in range(len(questions)):
        row = []
        for j in range(k):
            toks = new[i * k + j].tolist()
            row.append((lm.decode(toks), tok.eos_token_id in toks))
        results.append(row)
    model.train(was_training)
    return results


def sample_cots(lm: LM, examples: list[Example], k: int = 8, temperature: float = 0.8, top_p: float = 1.0,
                max_new_tokens: int = 48,
                seed: int = 0, batch_questions: int = 64, cache: str | Path | None = None,
                progress: bool = True, sampler="hf", dist=None, first_index: int = 0) -> list[Record]:
    """One record per question: its k samples de-duplicated and labelled against the gold answer.

    A record is ``{"id", "question", "answer", "reference", "samples": [label(...) + {"count"}],
    "n_sampled", "n_duplicates"}``; ``count`` says how many of the k draws gave that COT, so
    nothing is dropped silently. With ``cache`` the records are appended to a JSONL file as batches
    finish, and questions already there are not sampled again.

    ``sampler`` draws the COTs: ``"hf"`` (``generate`` above), ``"vllm"`` (one vLLM engine for this
    call, ``aftlab.sampling.vllm``) or any callable with ``generate``'s signature; records, labels
    and cache are the same whichever draws.

    ``dist`` (an ``aftlab.train.distributed`` runner, under a launcher): each process samples whole batches
    (``aftlab.train.shards``), so the records, and the merged cache, are those of one process.

    ``first_index``: the position of ``examples[0]`` in a longer list sampled piece by piece, so each
    batch draws with the seed it has in that list (pieces of whole batches: the records of one call).
    """
    from ..model.runtime import progress_bar
    from ..train import shards
    from ..train.distributed import Plain

    dist = dist or Plain()
    done: dict[str, dict] = {}
    leftover = shards.parts(cache) if cache is not None else []  # a sharded run killed before its merge
    for path in ([Path(cache)] if cache is not None else []) + leftover:
        if path.is_file():
            for rec in read_samples(path):
                done[rec["id"]] = rec
    dist.wait()  # every process has read the same caches before any appends to one
    target = None if cache is None else Path(cache) if dist.world == 1 else shards.part_path(cache, dist.rank)
    if target is not None and target.is_file():
        _end_with_newline(target)
    gen, close = open_sampler(sampler)
    f = open(target, "a", encoding="utf-8") if target is not None else None
    mine = []
    # the batches of an uninterrupted run; one a kill left half done is drawn again whole, so its
    # missing questions get the COTs they would have had
    grid = [c for c in shards.batches(list(enumerate(examples)), batch_questions)
            if any(e.id not in done for _, e in c)]
    bar = progress_bar(total=len(examples), initial=sum(e.id in done for e in examples), desc="sampling",
               disable=not (progress and dist.is_main and grid))  # no bar for a cache read back whole
    try:
        with lora_merged(lm.model) if grid else contextlib.nullcontext():  # inference only
            for chunk in grid[dist.rank::dist.world]:
                gens = gen(lm, [e.question for _, e in chunk], k, temperature, top_p, max_new_tokens,
                           seed=seed * 1_000_003 + first_index + chunk[0][0])
                for (_, e), row in zip(chunk, gens):
                    if e.id in done:
                        continue
                    rec = _record(e, row)
                    mine.append(rec)
                    if f is not None:
                        f.write(json.dumps(rec) + "\n")
                if f is not None:
                    f.flush()
                    os.fsync(f.fileno())
                bar.update(sum(e.id not in done for _, e in chunk) * dist.world)
    finally:
        bar.close()
        close()
        if f is not None:
            f.close()
    for part in dist.gather(mine):
        done.update((rec["id"], rec) for rec in part)
    if cache is not None and (dist.world > 1 or leftover):
        if dist.is_main:
            ids = {e.id for e in examples}
            shards.merge(cache, [done[e.id] for e in examples if e.id in done]
                         + [r for i, r in done.items() if i not in ids])  # kept, as a single process keeps them
        dist.wait()
    return [done[e.id] for e in examples]


SAMPLERS = ("hf", "vllm")


def open_sampler(sampler):
    """``(generate-like callable, close)`` for a ``sample_cots`` sampler: a name or a callable.

    A caller that samples several times with one engine opens it here and passes the callable on
    (``sample_cots`` leaves a callable's lifetime to its owner)."""
    if callable(sampler):
        return sampler, lambda: None  # the caller owns its lifetime
    if sampler == "hf":
        return generate, lambda: None
    if sampler == "vllm":
        from .vllm import VLLMSampler
        vs = VLLMSampler()  # fails here, before any sampling, when vllm is missing
        return vs, vs.close
    from ..errors import ConfigError
    raise ConfigError(f"sampler {sampler!r}: choose from {', '.join(SAMPLERS)}")


def _end_with_newline(path: Path) -> None:
    """Make the cache end at a record boundary before appending: a torn last line (a killed writer)
    is cut off, a complete one missing its newline gets it; otherwise the next record would be glued
    onto it and the cache would break in the middle."""
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return
    cut = data.rfind(b"\n") + 1
    try:
        json.loads(data[cut:])
    except (json.JSONDecodeError, UnicodeDecodeError):
        os.truncate(path, cut)
        return
    with open(path, "ab") as f:
        f.write(b"\n")


def _record(e: Example, row: list[tuple[str, bool]]) -> Record:
    seen: dict[str, dict] = {}
    for text, finished in row:
        key = canonical(text)
        if key in seen:
            seen[key]["count"] += 1
            continue
        seen[key] = {**label(key, e.answer, finished), "count": 1}
    samples = list(seen.values())
    return {"id": e.id, "question": e.question, "answer": e.answer, "reference": e.solution,
            "samples": samples, "n_sampled": len(row), "n_duplicates": len(row) - len(samples)}


RECORD_FIELDS = {"id": str, "question": str, "answer": str, "reference": str, "samples": list}
SAMPLE_FIELDS = {"cot": str, "correct": bool, "strict": bool, "quality": (int, float)}


def _check_record(rec, path: Path, lineno: int) -> dict:
    if not isinstance(rec, dict):
        raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
    for name, kind in RECORD_FIELDS.items():
        if not isinstance(rec.get(name), kind):
            got = "missing" if name not in rec else f"a {type(rec[name]).__name__}"
            raise DataError(f"{path}:{lineno}: field {name!r} must be a {kind.__name__}, got {got}")
    for i, smp in enumerate(rec["samples"]):
        for name, kind in SAMPLE_FIELDS.items():
            if not isinstance(smp, dict) or not isinstance(smp.get(name), kind):
                raise DataError(f"{path}:{lineno}: field 'samples[{i}].{name}' is missing or has the wrong type")
    return rec


def read_samples(path: str | Path) -> list[Record]:
    """Records of a samples JSONL file; a torn last line (a killed writer) is reported and skipped.

    Any other bad line (invalid JSON, a missing or mistyped field) raises DataError naming file,
    line and field: a corrupt cache is never silently shortened."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such samples file")
    return [_check_record(rec, path, lineno)
            for lineno, rec in iter_records(path, torn_tail="that question will be sampled again")]


def groups(records: list[Record], strict: bool = True, include_reference: bool = True,
           sample_positives: bool = True) -> list[Group]:
    """Positive and negative COT texts per question, as AFT trains on them.

    Positives are correct samples (also step-valid when ``strict``; none when not ``sample_positives``)
    plus, optionally, the reference; negatives are samples with a wrong or missing answer. Correct
    samples with a bad step are left out of both groups when ``strict``.

    >>> rec = {"id": "q", "question": "?", "reference": "2 + 2 = 4. #### 4",
    ...        "samples": [{"cot": "4 = 4. #### 4", "correct": True, "strict": True, "quality": 1.0},
    ...                    {"cot": "2 + 2 = 5. #### 5", "correct": False, "strict": False, "quality": 0.0}]}
    >>> [(g["pos"], g["neg"]) for g in groups([rec]) + groups([rec], sample_positives=False)]
    [(['4 = 4. #### 4', '2 + 2 = 4. #### 4'], ['2 + 2 = 5. #### 5']), (['2 + 2 = 4. #### 4'], ['2 + 2 = 5. #### 5'])]
    """
    out = []
    for r in records:
        pos = [s["cot"] for s in r["samples"] if sample_positives and (s["strict"] if strict else s["correct"])]
        neg = [s["cot"] for s in r["samples"] if not s["correct"]]
        if include_reference and canonical(r["reference"]) not in pos:
            pos.append(canonical(r["reference"]))
        levels = {s["cot"]: quality_level(s) for s in r["samples"]}
        levels.setdefault(canonical(r["reference"]), 3.0)
        out.append({"id": r["id"], "question": r["question"], "pos": pos, "neg": neg,
                    "levels": [levels[c] for c in pos + neg]})
    return out
