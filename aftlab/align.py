"""AFT: one training loop for every alignment loss, L = nll_weight * L_VFT + lam * L_align(gamma * s).

Place in the data path: data → model → VFT → sampling → scoring → losses → **AFT** → metrics.

Each step scores all COTs of ``questions_per_step`` questions in one forward pass, builds the
(B, K) score matrix with group masks, and calls a pure loss from ``aftlab.losses`` chosen by
``AlignConfig.method``. It logs mean positive/negative score, gap, boundary, share of negatives
below the boundary, and grad norm per step. With ``neg_scope="divergent"`` a negative's score in
the loss covers only its tokens after the longest prefix it shares with a positive of its question,
so the push lands on the wrong step instead of on correct steps both COTs contain. ``neg_credit``
keeps a negative's score whole (so pair weights and BC's boundary compare like with like) but lets
the gradient reach only its divergent tokens, the first step where it leaves every positive
(``"first_step"``), that step's first token (``"first_token"``), or the claimed result of its first
step whose arithmetic is wrong (``"first_error"``; a negative with every step right gets no push):
the later steps of a wrong COT are often right given its error.

Like VFT, the batch of step t is a pure function of (seed, t), so with ``out`` a killed run resumes
from its last checkpoint (weights, optimizer, scheduler, step, log) and ends where an uninterrupted
run would.

>>> from aftlab.config import AlignConfig
>>> alignment_term(AlignConfig(method="rft")) is None
True
>>> alignment_term(AlignConfig(method="aft_bc", constraint="boundary")).__name__
'aft_loss_batched'
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import warnings
from pathlib import Path

import torch

from . import checkpoint, distributed, losses
from .scoring import grouped_token_logprobs, normalised, score, summed, token_logprobs
from .vft import batch_indices, check_finite


def alignment_term(cfg):
    """The pure loss a method uses (None for the RFT control)."""
    return {"rft": None, "aft_bc": losses.aft_loss_batched, "aft_dc": losses.aft_loss_batched,
            "align_only": losses.aft_loss_batched, "aft_rbc": losses.rbc_loss, "dpo": losses.dpo_loss,
            "rrhf": losses.rrhf_loss, "pro": losses.pro_loss}[cfg.method]


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


def _step_end_ids(tokenizer) -> set[int]:
    """Ids of tokens that end a step: those whose text holds "." or a newline (word-level or BPE)."""
    vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return {i for i, t in enumerate(vocab) if t and ("." in t or "\n" in t or "Ċ" in t)}


def error_span(lm, cot: list[int], ends: set[int]) -> tuple[int, int] | None:
    """Token range of the claimed result of ``cot``'s first arithmetic step that does not check out
    (the tokens after its "=" up to the step's end), or None when every step checks out.

    The COT is cut into steps at ``ends`` tokens and each step is checked on its own
    (`aftlab.answers.check_steps`), so a step that is right given an earlier slip counts as right.
    """
    from .answers import check_steps

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


def _pack(lm, groups: list[dict], max_cots: int, error_spans: bool = False):
    """Token ids for every group's COTs (positives first), capped at ``max_cots`` per question; for
    each COT the number of leading tokens a negative shares with a positive (``skip``, 0 for
    positives) and one past the end of the step where it leaves them (``stop``, the COT's length for
    positives)."""
    out, ends = [], _step_end_ids(lm.tokenizer)
    for g in groups:
        cots = (g["pos"] + g["neg"])[:max_cots]
        n_pos = min(len(g["pos"]), max_cots)
        ids = [lm.cot_ids(c) for c in cots]
        skip = [0] * n_pos + [shared_prefix(c, ids[:n_pos]) for c in ids[n_pos:]]
        stop = [len(c) for c in ids[:n_pos]] + [step_end(c, k, ends) for c, k in zip(ids[n_pos:], skip[n_pos:])]
        rec = {"prompt": lm.prompt_ids(g["question"]), "cots": ids, "n_pos": n_pos,
               "levels": g["levels"][:len(cots)], "skip": skip, "stop": stop}
        if error_spans:  # positives: every token; negatives: their first slip's result, or none
            spans = [(0, len(c)) for c in ids[:n_pos]] + [error_span(lm, c, ends) or (len(c), len(c))
                                                          for c in ids[n_pos:]]
            rec["err_start"], rec["err_stop"] = [a for a, _ in spans], [b for _, b in spans]
        out.append(rec)
    return out


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


def _flat(batch: list[dict], key: str) -> list[int]:
    return [k for p in batch for k in p[key]]


def credit_bounds(batch: list[dict], credit: str) -> tuple[list[int], list[int] | None]:
    """Per flat COT, the first and one-past-last credited token for ``neg_credit`` (positives: all).

    >>> b = [{"n_pos": 1, "skip": [0, 2], "stop": [5, 4], "err_start": [0, 3], "err_stop": [5, 4]}]
    >>> credit_bounds(b, "first_step"), credit_bounds(b, "first_token"), credit_bounds(b, "first_error")
    (([0, 2], [5, 4]), ([0, 2], [5, 3]), ([0, 3], [5, 4]))
    """
    if credit == "first_error":
        return _flat(batch, "err_start"), _flat(batch, "err_stop")
    skips = _flat(batch, "skip")
    if credit == "first_token":  # negatives: the divergence token; positives keep every token
        return skips, [s if i < p["n_pos"] else k + 1 for p in batch
                       for i, (k, s) in enumerate(zip(p["skip"], p["stop"]))]
    return skips, {"first_step": _flat(batch, "stop"), "divergent": None}[credit]


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


def _matrix(packed: list[dict], flat: torch.Tensor):
    """Scatter flat per-COT values into (B, K) with positive/negative masks and levels."""
    B, K = len(packed), max(len(p["cots"]) for p in packed)
    mat = flat.new_zeros(B, K)
    pos = torch.zeros(B, K, dtype=torch.bool)
    neg = torch.zeros(B, K, dtype=torch.bool)
    lev = torch.zeros(B, K)
    i = 0
    for b, p in enumerate(packed):
        n = len(p["cots"])
        mat[b, :n] = flat[i:i + n]
        pos[b, :p["n_pos"]] = True
        neg[b, p["n_pos"]:n] = True
        lev[b, :n] = torch.tensor(p["levels"])
        i += n
    return mat, pos, neg, lev


def _dpo_pairs(mat, ref, pos, neg):
    """All (positive, negative) pairs per question as flat chosen/rejected tensors."""
    b, i, j = torch.nonzero(pos.unsqueeze(2) & neg.unsqueeze(1), as_tuple=True)
    return mat[b, i], mat[b, j], ref[b, i], ref[b, j]


def step_logprobs(model, batch: list[dict], pad: int, share_prefix: bool = True):
    """Per-token log-probs (N, C) and mask of every COT of ``batch`` (packed groups), in flat order."""
    if share_prefix:
        return grouped_token_logprobs(model, [p["prompt"] for p in batch], [p["cots"] for p in batch], pad)
    return token_logprobs(model, [p["prompt"] for p in batch for _ in p["cots"]],
                          [c for p in batch for c in p["cots"]], pad)


def align_loss(cfg, s, summed_lp, ref, pos, neg, lev):
    """The alignment term for one batch: s, summed_lp, ref (B, K); masks (B, K)."""
    fn = alignment_term(cfg)
    gs = cfg.gamma * s
    valid = pos | neg
    if fn is None:
        return s.new_zeros(())
    if cfg.method in ("aft_bc", "aft_dc", "align_only"):
        return fn(gs, pos, neg, constraint=cfg.constraint, beta=cfg.beta, truncate=cfg.truncate)
    if cfg.method == "aft_rbc":
        return fn(gs, lev, valid, beta=cfg.beta)
    if cfg.method == "dpo":
        c, r, rc, rr = _dpo_pairs(summed_lp, ref, pos, neg)
        if c.numel() == 0:
            return s.new_zeros(())
        return fn(c, r, rc, rr, beta=cfg.dpo_beta, constraint=cfg.constraint, margin=cfg.beta)
    return fn(gs, lev, valid, constraint=cfg.constraint, beta=cfg.beta)


def fingerprint(cfg, groups: list[dict], seed: int, max_cots: int, weight_decay: float) -> str:
    """What a resumable AFT checkpoint must agree with: settings (bar checkpoint frequency) and data."""
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "checkpoint_every"}
    blob = json.dumps([settings, groups, seed, max_cots, weight_decay], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def batch_seed(run_seed: int, round_: int = 1) -> int:
    """Batch-order seed of alignment round ``round_`` in a run seeded ``run_seed``. ``aftlab run`` and
    ``aftlab align`` both use it, so a stage run by hand reproduces the run's model.

    >>> batch_seed(0), batch_seed(0, round_=2)
    (1, 2)
    """
    return run_seed + round_


def train_align(lm, groups: list[dict], cfg, init_state: dict | None = None, seed: int = 0,
                progress: bool = True, max_cots: int = 16, weight_decay: float = 0.0,
                out: str | Path | None = None, resume: bool = True, stop_after: int | None = None,
                accelerate: bool | None = None, share_prefix: bool = True) -> list[dict]:
    """Continue training ``lm`` in place with ``cfg.method``; returns the per-step log.

    ``init_state``: a VFT checkpoint's trainer state, whose AdamW moments are continued (the new
    peak lr and zero weight decay replace the old ones). ``out``: checkpoint folder, written
    atomically every ``cfg.checkpoint_every`` steps and at the end; with ``resume`` a checkpoint
    there from the same settings and groups is continued (one from other settings is ignored with
    a warning, and overwritten). ``stop_after`` ends after that many steps (simulated interruption).
    NaN/inf in the loss or gradients raises ``NonFiniteError`` naming the step, before the bad
    update, so the last checkpoint stays good. ``share_prefix``: run each question once and its COTs
    from its KV cache (:func:`~aftlab.scoring.grouped_token_logprobs`; the same loss and gradient up
    to float rounding, tested, and ~2x faster on the tiny preset where the question is longer than
    the COT); ``False`` runs every (question, COT) row in full.
    """
    from tqdm.auto import tqdm

    if not groups:
        raise ValueError("train_align: no questions to train on (empty samples)")
    packed = _pack(lm, groups, max_cots, error_spans=cfg.neg_credit == "first_error")
    model = lm.model
    pad = lm.tokenizer.pad_token_id or 0
    ref_all = None
    if cfg.method == "dpo":  # the frozen reference is the starting model: precompute once
        flat_p = [p["prompt"] for p in packed for _ in p["cots"]]
        flat_c = [c for p in packed for c in p["cots"]]
        _, per_tok = score(lm, flat_p, flat_c)
        ref_all = torch.tensor([float(t.sum()) for t in per_tok])
        offsets = [0]
        for p in packed:
            offsets.append(offsets[-1] + len(p["cots"]))
    opt = checkpoint.make_optimizer(model, cfg.lr, weight_decay=weight_decay)
    checkpoint.continue_optimizer(opt, init_state, cfg.lr, weight_decay)
    total = max(1, math.ceil(cfg.epochs * len(packed) / cfg.questions_per_step))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, checkpoint.warmup_cosine(cfg.warmup, total, cfg.min_lr_ratio))
    fp = fingerprint(cfg, groups, seed, max_cots, weight_decay)
    step, log = 0, []
    found = checkpoint.find(out) if (out and resume) else None
    if found is not None:
        state = checkpoint.load_state(found)
        if state.get("extra", {}).get("fingerprint") != fp:
            warnings.warn(f"{found}: checkpoint was written with other settings or samples; training afresh")
        else:  # the DPO reference above was scored with the starting weights, as in an uninterrupted run
            from .model import load_lm
            model.load_state_dict(load_lm(found, device=str(lm.device)).model.state_dict())
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            step, log = state["step"], state["history"]
    dist = distributed.runner(accelerate)  # plain single process unless WORLD_SIZE > 1 or asked
    model, opt = dist.prepare(model, opt)  # after any resume: checkpoints hold the unwrapped state
    progress = progress and dist.is_main
    model.train()
    bar = tqdm(total=total, initial=step, desc=f"AFT {cfg.method}", disable=not progress)
    while step < total:
        idx = dist.shard(batch_indices(len(packed), cfg.questions_per_step, step, seed))
        batch = [packed[i] for i in idx]
        lp, mask = step_logprobs(model, batch, pad, share_prefix)  # (N, C)
        s_mask = mask if cfg.neg_scope == "all" else scope_mask(mask, _flat(batch, "skip"))
        if cfg.neg_credit == "all":
            flat = normalised(lp, s_mask)
        else:  # the score keeps every token; the push lands on the divergent tokens or the first wrong step
            flat = credited(lp, s_mask, scope_mask(s_mask, *credit_bounds(batch, cfg.neg_credit)))
        s, pos, neg, lev = _matrix(batch, flat)
        sum_lp, ref = None, None
        if ref_all is not None:
            sum_lp = _matrix(batch, summed(lp, mask))[0]
            ref = _matrix(batch, torch.cat([ref_all[offsets[i]:offsets[i + 1]] for i in idx]))[0]
        pos_rows = pos[pos | neg]  # which flat rows are positives (flat order = (B, K) valid order)
        l_nll = losses.nll_loss(lp[pos_rows], mask[pos_rows]) if pos_rows.any() else s.new_zeros(())
        l_align = align_loss(cfg, s, sum_lp, ref, pos, neg, lev)
        w_nll, w_align = dist.shares(float(mask[pos_rows].sum()),  # this process's part of the step (1.0 alone)
                                     losses.averaged_over(cfg.method, cfg.gamma * s, pos, neg, lev, cfg.beta, cfg.truncate))
        loss = cfg.nll_weight * l_nll * w_nll + cfg.lam * l_align * w_align
        check_finite(loss, f"AFT ({cfg.method}) step {step}: loss", out)
        opt.zero_grad(set_to_none=True)
        dist.backward(loss)
        gnorm = dist.clip(model, cfg.clip)
        check_finite(gnorm, f"AFT ({cfg.method}) step {step}: gradient norm", out)
        opt.step()
        sched.step()
        log.append(_step_log(step, *dist.gather_rows(s.detach(), pos, neg), cfg, dist.mean(loss.item()),
                             dist.mean(l_align.item() * w_align), float(gnorm)))
        step += 1
        bar.update(1)
        if out and ((cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or step == total):
            dist.save(out, lm, opt, sched, step, log, {"kind": "align", "method": cfg.method, "fingerprint": fp})
        if stop_after is not None and step >= stop_after:
            break
    bar.close()
    model.eval()
    return log


def _step_log(step, s, pos, neg, cfg, loss, l_align, gnorm) -> dict:
    both = pos.any(1) & neg.any(1)
    big = torch.finfo(s.dtype).max
    bound = torch.where(pos, s, big).min(1).values - cfg.beta / cfg.gamma  # (B,) in raw score units
    below = (neg & (s < bound.unsqueeze(1)))[both].sum() / neg[both].sum().clamp(min=1)
    mp, mn = float(s[pos].mean()), float(s[neg].mean()) if neg.any() else float("nan")
    return {"step": step, "loss": loss, "align_loss": l_align, "grad_norm": gnorm, "pos_score": mp,
            "neg_score": mn, "gap": mp - mn, "boundary": float(bound[both].mean()) if both.any() else float("nan"),
            "neg_below_boundary": float(below)}
