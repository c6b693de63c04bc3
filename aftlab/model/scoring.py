"""Scores of COTs: length-normalised log-likelihood of the COT tokens given the question.

Place in the data path: data → model → VFT → sampling → **scoring** → losses → AFT → metrics.

    s(c) = (1/|c|) * sum_j log P(c_j | q, c_<j)      (COT tokens only; prompt tokens excluded)

Sequences are left-padded so every COT ends at the same position; the LM head then runs only on
the COT positions, fused with the log-prob of the taken token (``aftlab.model.head``): no ``[N, C, V]``
logits are held, only one chunk of rows at a time. ``fused=False`` is the plain path (logits of the
last ``max |c|`` positions via ``logits_to_keep``, a gather minus a logsumexp), kept for models whose
head is not a plain linear map and for the equality tests.

>>> import torch
>>> lp = torch.tensor([[-1.0, -3.0], [0.0, -2.0]]); mask = torch.tensor([[1, 1], [0, 1]])
>>> normalised(lp, mask).tolist()
[-2.0, -2.0]
"""
from __future__ import annotations

import contextlib

import torch

from .head import split_head, taken_logprobs
from .lm import cache_arg, left_pad


def normalised(token_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Length-normalised score per row: (N, C), (N, C) -> (N,)."""
    mask = mask.to(token_logprobs.dtype)
    return (token_logprobs * mask).sum(-1) / mask.sum(-1).clamp(min=1)


def summed(token_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Summed log-prob per row (DPO's score): (N, C), (N, C) -> (N,)."""
    return (token_logprobs * mask.to(token_logprobs.dtype)).sum(-1)


def _fused(weight, hidden, target, mask) -> torch.Tensor:
    """Log-probs (N, C) of ``target`` from ``hidden`` (N, C, H) at the ``mask``ed positions only, 0 elsewhere."""
    lp = taken_logprobs(hidden[mask], weight, target[mask])  # (M,): valid positions only
    return torch.zeros(mask.shape, dtype=lp.dtype, device=lp.device).masked_scatter(mask, lp)


def token_logprobs(model, prompts: list[list[int]], cots: list[list[int]], pad_id: int = 0, fused: bool = True
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable log P(c_j | q, c_<j) for each COT token.

    Returns ``(lp, mask)``, both (N, C) with C = longest COT; COT i occupies the last |c_i| columns.
    """
    device = next(model.parameters()).device
    ids, att = left_pad([p + c for p, c in zip(prompts, cots)], pad_id)  # (N, T)
    ids, att = ids.to(device), att.to(device)
    pos = (att.cumsum(-1) - 1).clamp(min=0)  # positions restart at 0 after the left padding
    n_cot = torch.tensor([len(c) for c in cots], device=device)  # (N,)
    width = max(len(c) for c in cots)  # from the host's lists: reading n_cot back would wait for the device
    target = ids[:, -width:]  # (N, C)
    col = torch.arange(width, device=device)
    mask = col.unsqueeze(0) >= (width - n_cot).unsqueeze(1)  # (N, C)
    split = split_head(model) if fused else None
    if split is not None:
        hidden = split[0](input_ids=ids, attention_mask=att, position_ids=pos, use_cache=False).last_hidden_state
        return _fused(split[1], hidden[:, -(width + 1):-1], target, mask), mask  # predictions for the last C tokens
    try:
        logits = model(input_ids=ids, attention_mask=att, position_ids=pos, logits_to_keep=width + 1).logits
    except TypeError:  # architectures without logits_to_keep
        logits = model(input_ids=ids, attention_mask=att, position_ids=pos).logits
    logits = logits[:, -(width + 1):-1].float()  # (N, C, V): predictions for the last C tokens
    lp = logits.gather(-1, target.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)  # (N, C)
    return lp * mask, mask


CPU_BATCH_TOKENS, GPU_BATCH_TOKENS = 1024, 16384


def precision(lm):
    """``lm``'s autocast context (``LM.precision``), or a no-op for a bare model."""
    return lm.precision() if hasattr(lm, "precision") else contextlib.nullcontext()


def batch_tokens_for(model, batch_tokens: int | None = None) -> int:
    """``batch_tokens`` if given, else the device's default: small batches on a CPU (they stay in
    cache: 1.7x a one-at-a-time loop at 1,024 tokens vs 1.0x at 16,384 on the tiny preset,
    ``benchmarks/bench_scoring.py``), large ones on a GPU."""
    if batch_tokens is not None:
        return batch_tokens
    return GPU_BATCH_TOKENS if next(model.parameters()).device.type != "cpu" else CPU_BATCH_TOKENS


@torch.inference_mode()
def score(lm, prompts: list[list[int]], cots: list[list[int]], batch_tokens: int | None = None
          ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Scores (N,) and per-token log-probs (one 1-D tensor per COT) without gradients.

    Sequences are sorted by length and packed into batches of about ``batch_tokens`` tokens so
    padding stays small; results come back in input order.
    """
    model = lm.model if hasattr(lm, "model") else lm
    pad = getattr(getattr(lm, "tokenizer", None), "pad_token_id", 0) or 0
    batch_tokens = batch_tokens_for(model, batch_tokens)
    was_training = model.training
    model.eval()
    order = sorted(range(len(cots)), key=lambda i: len(prompts[i]) + len(cots[i]))
    scores = torch.empty(len(cots))
    per_token: list[torch.Tensor | None] = [None] * len(cots)
    start = 0
    while start < len(order):
        end = start + 1
        while end < len(order):
            longest = len(prompts[order[end]]) + len(cots[order[end]])
            if longest * (end - start + 1) > batch_tokens:
                break
            end += 1
        idx = order[start:end]
        with precision(lm):
            lp, mask = token_logprobs(model, [prompts[i] for i in idx], [cots[i] for i in idx], pad)
        s = normalised(lp, mask).cpu()
        for row, i in enumerate(idx):
            scores[i] = s[row]
            per_token[i] = lp[row][mask[row]].cpu()
        start = end
    model.train(was_training)
    return scores, per_token


def score_texts(lm, questions: list[str], cots: list[str], batch_tokens: int | None = None) -> torch.Tensor:
    """Convenience: scores of COT texts for their questions under ``lm`` (an ``aftlab.model.lm.LM``)."""
    cache: dict[str, list[int]] = {}
    prompts = [cache.setdefault(q, lm.prompt_ids(q)) for q in questions]
    return score(lm, prompts, [lm.cot_ids(c) for c in cots], batch_tokens)[0]


def grouped_token_logprobs(model, prompts: list[list[int]], groups: list[list[list[int]]], pad_id: int = 0,
                           fused: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Like :func:`token_logprobs` for questions that each have several COTs, with every prompt run once.

    The B prompts (left-padded) go through the model once; their KV cache is repeated to one row per
    COT and the COTs (right-padded, so padding only follows real tokens) continue from it. Prompt
    tokens are thus computed B times instead of N = sum of group sizes times.
    Returns ``(lp, mask)``, both (N, C) in group order, COT tokens left-aligned (column j = token j).
    """
    from transformers import DynamicCache

    device = next(model.parameters()).device
    split = split_head(model) if fused else None
    body = model if split is None else split[0]
    ids, att = left_pad(prompts, pad_id)  # (B, P)
    ids, att = ids.to(device), att.to(device)
    pos = (att.cumsum(-1) - 1).clamp(min=0)
    key = cache_arg()
    out = body(input_ids=ids, attention_mask=att, position_ids=pos, use_cache=True,
               **({} if split else {"logits_to_keep": 1}), **{key: DynamicCache()})
    first = (out.last_hidden_state if split else out.logits)[:, -1]  # (B, H or V): predicts each COT's first token
    rows = torch.tensor([b for b, g in enumerate(groups) for _ in g], device=device)  # (N,)
    cache = getattr(out, key)
    cache.batch_select_indices(rows)  # (B, ...) -> (N, ...): one copy of its prompt's cache per COT
    cots = [c for g in groups for c in g]
    n_cot = torch.tensor([len(c) for c in cots], device=device)  # (N,)
    width = max(len(c) for c in cots)
    col = torch.arange(width, device=device)
    mask = col.unsqueeze(0) < n_cot.unsqueeze(1)  # (N, C)
    target = torch.full((len(cots), width), pad_id, dtype=torch.long)
    for i, c in enumerate(cots):
        target[i, :len(c)] = torch.tensor(c, dtype=torch.long)
    target = target.to(device)
    start = att.sum(-1)[rows]  # (N,): prompt length = position of each COT's first token
    states = first[rows].unsqueeze(1)  # (N, 1, H or V)
    if width > 1:
        rest = body(input_ids=target[:, :-1], attention_mask=torch.cat([att[rows], mask[:, :-1].long()], 1),
                    position_ids=start.unsqueeze(1) + col[:-1].unsqueeze(0), use_cache=True, **{key: cache})
        states = torch.cat([states, rest.last_hidden_state if split else rest.logits], 1)  # (N, C, H or V)
    if split is not None:
        return _fused(split[1], states, target, mask), mask
    logits = states.float()
    lp = logits.gather(-1, target.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)  # (N, C)
    return lp * mask, mask


@torch.inference_mode()
def score_grouped(lm, prompts: list[list[int]], groups: list[list[list[int]]], batch_tokens: int | None = None
                  ) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
    """Scores of each question's COTs with the question encoded once (prefix sharing).

    ``groups[b]`` holds the COTs of ``prompts[b]``. Returns one (k_b,) score tensor and k_b per-token
    log-prob tensors per question; equal to :func:`score` up to float rounding (tested to 1e-4).
    Questions are packed, shortest first, into batches of about ``batch_tokens`` COT tokens.
    """
    model = lm.model if hasattr(lm, "model") else lm
    pad = getattr(getattr(lm, "tokenizer", None), "pad_token_id", 0) or 0
    batch_tokens = batch_tokens_for(model, batch_tokens)
    was_training = model.training
    model.eval()
    order = sorted(range(len(prompts)), key=lambda b: max((len(c) for c in groups[b]), default=0))
    order = [b for b in order if groups[b]]
    scores: list[torch.Tensor] = [torch.empty(0) for _ in prompts]
    per_token: list[list[torch.Tensor]] = [[] for _ in prompts]
    start = 0
    while start < len(order):
        end, rows = start + 1, len(groups[order[start]])
        while end < len(order):
            rows += len(groups[order[end]])
            if rows * max(len(c) for c in groups[order[end]]) > batch_tokens:
                break
            end += 1
        idx = order[start:end]
        with precision(lm):
            lp, mask = grouped_token_logprobs(model, [prompts[b] for b in idx], [groups[b] for b in idx], pad)
        s = normalised(lp, mask).cpu()
        i = 0
        for b in idx:
            k = len(groups[b])
            scores[b] = s[i:i + k]
            per_token[b] = [lp[i + j][mask[i + j]].cpu() for j in range(k)]
            i += k
        start = end
    model.train(was_training)
    return scores, per_token


def gap_quantile(scores: list[list[float]], n_pos: list[int], q: float) -> float:
    """The ``q``-quantile of the gaps ``min(s_p) - s_n`` over every negative of every question that has
    positives and negatives (scores per question, positives first, ``n_pos`` of them): a boundary margin
    beta at this value leaves a share ``q`` of the negatives above B = min(s_p) - beta (in nats/token).

    >>> round(gap_quantile([[-0.1, -0.2, -0.15, -0.4], [-0.3, -0.3]], [2, 2], 0.5), 4)  # gaps -0.05, 0.2
    0.075
    """
    gaps = torch.tensor([min(s[:p]) - x for s, p in zip(scores, n_pos) if 0 < p < len(s) for x in s[p:]],
                        dtype=torch.float64)
    if not len(gaps):
        raise ValueError("gap_quantile: no question has both a positive and a negative COT")
    return float(torch.quantile(gaps, q))
