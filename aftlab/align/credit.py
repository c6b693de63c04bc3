"""Credit: which tokens of a negative COT the alignment gradient reaches.

Place in the data path: … → sampling → scoring → **credit** (token ranges of each COT) → losses → AFT.

A negative usually shares most of its tokens with a right COT and differs at one step. These
helpers find that step: the longest prefix a negative shares with a positive (``shared_prefix``),
the end of the step where it leaves them (``step_end``), or the claimed result of its first wrong
arithmetic step (``error_span``). ``align.neg_scope`` uses them to cut a negative's *score*;
``align.neg_credit`` keeps the score whole (so pair weights and BC's boundary compare like with
like) and lets only the chosen tokens carry the gradient (``credited``).

>>> shared_prefix([1, 2, 3, 4], [[1, 2, 9]]), step_end([5, 6, 0, 7, 8, 0], 3, {0})
(2, 6)
"""
from __future__ import annotations

import torch

from ..model.scoring import normalised
from ..records import Packed


def shared_prefix(cot: list[int], others: list[list[int]]) -> int:
    """Length of ``cot``'s longest common token prefix with any of ``others``, capped so one token stays.

    >>> shared_prefix([1, 2, 3, 4], [[1, 2, 9], [1, 5]]), shared_prefix([1, 2], [[1, 2, 3]]), shared_prefix([7], [])
    (2, 1, 0)
    """
    best = 0
    for o in others:
        n = 0
        for a, b in zip(cot, o):
            if a != b:
                break
            n += 1
        best = max(best, n)
    return min(best, len(cot) - 1) if cot else 0


def step_end(cot: list[int], start: int, ends: set[int]) -> int:
    """One past the first token at or after ``start`` that ends a step (an id in ``ends``: ".", a newline),
    or ``len(cot)``: the tokens ``cot[start:stop]`` are the step where a negative leaves its positives.

    >>> step_end([5, 6, 0, 7, 8, 0, 9], 3, {0}), step_end([5, 6, 0, 7], 3, {0})
    (6, 4)
    """
    for i in range(start, len(cot)):
        if cot[i] in ends:
            return i + 1
    return len(cot)


def step_end_ids(tokenizer) -> set[int]:
    """Ids of tokens that end a step: those whose text holds "." or a newline (word-level or BPE)."""
    vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return {i for i, t in enumerate(vocab) if t and ("." in t or "\n" in t or "Ċ" in t)}


def error_span(lm, cot: list[int], ends: set[int]) -> tuple[int, int] | None:
    """Token range of the claimed result of ``cot``'s first arithmetic step that does not check out
    (the tokens after its "=" up to the step's end), or None when every step checks out.

    The COT is cut into steps at ``ends`` tokens and each step is checked on its own
    (`aftlab.data.answers.check_steps`), so a step that is right given an earlier slip counts as right.
    """
    from ..data.answers import check_steps

    start = 0
    for i in range(len(cot) + 1):
        if i < len(cot) and cot[i] not in ends:
            continue
        piece = cot[start:i]
        if piece and any(not c.ok for c in check_steps(lm.tokenizer.decode(piece, skip_special_tokens=True))):
            eq = [j for j, t in enumerate(lm.tokenizer.convert_ids_to_tokens(piece)) if "=" in t]
            a = start + (eq[-1] + 1 if eq else 0)
            return (a, max(i, a + 1)) if a < len(cot) else None
        start = i + 1
    return None


def scope_mask(mask: torch.Tensor, skip: list[int], stop: list[int] | None = None) -> torch.Tensor:
    """``mask`` (N, C) keeping each row's COT tokens ``skip[i] <= j < stop[i]``, in either column layout.

    >>> scope_mask(torch.tensor([[1, 1, 1], [0, 1, 1]]).bool(), [1, 1]).long().tolist()
    [[0, 1, 1], [0, 0, 1]]
    >>> scope_mask(torch.tensor([[1, 1, 1]]).bool(), [1], [2]).long().tolist()
    [[0, 1, 0]]
    """
    index = mask.long().cumsum(-1) - 1  # (N, C): position of each COT token within its COT
    keep = index >= torch.tensor(skip, device=mask.device).unsqueeze(1)
    if stop is not None:
        keep &= index < torch.tensor(stop, device=mask.device).unsqueeze(1)
    return mask & keep


def flat(batch: list[Packed], key: str) -> list[int]:
    """The per-COT list ``key`` of every packed group in ``batch``, concatenated (flat COT order)."""
    return [k for p in batch for k in p[key]]


def credit_bounds(batch: list[Packed], credit: str) -> tuple[list[int], list[int] | None]:
    """Per flat COT, the first and one-past-last credited token for ``neg_credit`` (positives: all).

    >>> b = [{"n_pos": 1, "skip": [0, 2], "stop": [5, 4], "err_start": [0, 3], "err_stop": [5, 4]}]
    >>> credit_bounds(b, "first_step"), credit_bounds(b, "first_token"), credit_bounds(b, "first_error")
    (([0, 2], [5, 4]), ([0, 2], [5, 3]), ([0, 3], [5, 4]))
    """
    if credit == "first_error":
        return flat(batch, "err_start"), flat(batch, "err_stop")
    skips = flat(batch, "skip")
    if credit == "first_token":  # negatives: the divergence token; positives keep every token
        return skips, [s if i < p["n_pos"] else k + 1 for p in batch
                       for i, (k, s) in enumerate(zip(p["skip"], p["stop"]))]
    return skips, {"first_step": flat(batch, "stop"), "divergent": None}[credit]


def credited(lp: torch.Tensor, s_mask: torch.Tensor, c_mask: torch.Tensor) -> torch.Tensor:
    """Length-normalised scores over ``s_mask`` whose gradient flows only through ``c_mask``'s tokens.

    The value is ``normalised(lp, s_mask)``; d score / d lp is 1/len on credited tokens, 0 elsewhere.

    >>> lp = torch.tensor([[-1.0, -3.0]], requires_grad=True)
    >>> s = credited(lp, torch.tensor([[True, True]]), torch.tensor([[False, True]]))
    >>> s.sum().backward(); float(s), lp.grad.tolist()
    (-2.0, [[0.0, 0.5]])
    """
    full = normalised(lp, s_mask)
    part = (lp * c_mask.to(lp.dtype)).sum(-1) / s_mask.sum(-1).clamp(min=1)
    return full.detach() + part - part.detach()
