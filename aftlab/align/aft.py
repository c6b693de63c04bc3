"""AFT: the alignment objective, L = nll_weight * L_VFT + lam * L_align(gamma * s), trained by ``train.fit``.

Place in the data path: data → model → VFT → sampling → scoring → losses → methods → **AFT** → metrics.

Each step scores all COTs of ``questions_per_step`` questions in one forward pass (each question once,
its COTs from its KV cache), builds the (B, K) score matrix with group masks, and calls the loss of
``AlignConfig.method`` from the registry (``aftlab.align.methods``). It logs mean positive/negative score,
gap, boundary, share of negatives below the boundary, and grad norm per step. ``neg_scope`` and
``neg_credit`` choose which tokens of a negative its score covers and which the gradient reaches
(``aftlab.align.credit``).

Like VFT, the batch of step t is a pure function of (seed, t), so with ``out`` a killed run resumes
from its last checkpoint (weights, optimizer, scheduler, step, log) and ends where an uninterrupted
run would.

>>> from aftlab.config import AlignConfig
>>> alignment_term(AlignConfig(method="rft")) is None
True
>>> alignment_term(AlignConfig(method="aft_bc", constraint="boundary")).__name__
'_pairwise'
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..model.lm import LM
from ..model.scoring import (
    gap_quantile,
    grouped_token_logprobs,
    normalised,
    score,
    score_grouped,
    summed,
    token_logprobs,
)
from ..records import Group, LogRow, Packed, Record
from ..train import checkpoint, distributed, losses
from ..train import loop as train
from ..train.loop import batch_indices
from .credit import credit_bounds, credited, error_span, flat, scope_mask, shared_prefix, step_end, step_end_ids
from .methods import REGISTRY, Scores

if TYPE_CHECKING:  # the config sits above the stages; they only name its types
    from ..config import AlignConfig, ModelConfig


def alignment_term(cfg: AlignConfig):
    """The loss function of ``cfg.method`` (None for the RFT control)."""
    return REGISTRY[cfg.method].loss


def pack(lm, groups: list[Group], max_cots: int, error_spans: bool = False) -> tuple[list[Packed], int]:
    """Token ids of every group's COTs (positives first), at most ``max_cots`` per question, and how many
    COTs that cap left out. For each COT: the number of leading tokens a negative shares with a positive
    (``skip``, 0 for positives) and one past the end of the step where it leaves them (``stop``, the
    COT's length for positives)."""
    out, ends, dropped = [], step_end_ids(lm.tokenizer), 0
    for g in groups:
        cots = (g["pos"] + g["neg"])[:max_cots]
        dropped += len(g["pos"]) + len(g["neg"]) - len(cots)
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
    return out, dropped


def _matrix(packed: list[Packed], values: torch.Tensor):
    """Scatter flat per-COT values (N,) into (B, K) with positive/negative masks and levels, all on
    ``values``' device (a mask made on the CPU would meet scores on the GPU in the losses)."""
    B, K = len(packed), max(len(p["cots"]) for p in packed)
    dev = values.device
    rows = torch.tensor([b for b, p in enumerate(packed) for _ in p["cots"]], device=dev)  # (N,)
    cols = torch.tensor([j for p in packed for j in range(len(p["cots"]))], device=dev)  # (N,)
    mat = values.new_zeros(B, K)
    mat[rows, cols] = values
    pos = torch.tensor([[j < p["n_pos"] for j in range(K)] for p in packed], device=dev)  # (B, K)
    neg = torch.tensor([[p["n_pos"] <= j < len(p["cots"]) for j in range(K)] for p in packed], device=dev)
    lev = torch.tensor([[float(x) for x in p["levels"]] + [0.0] * (K - len(p["levels"])) for p in packed],
                       device=dev)  # (B, K)
    return mat, pos, neg, lev


def step_logprobs(model, batch: list[Packed], pad: int, share_prefix: bool = True):
    """Per-token log-probs (N, C) and mask of every COT of ``batch`` (packed groups), in flat order."""
    if share_prefix:
        return grouped_token_logprobs(model, [p["prompt"] for p in batch], [p["cots"] for p in batch], pad)
    return token_logprobs(model, [p["prompt"] for p in batch for _ in p["cots"]],
                          [c for p in batch for c in p["cots"]], pad)


def align_loss(cfg: AlignConfig, s, summed_lp, ref, pos, neg, lev) -> torch.Tensor:
    """The alignment term of ``cfg.method`` for one batch: s, summed_lp, ref, masks, levels all (B, K)."""
    fn = alignment_term(cfg)
    if fn is None:
        return s.new_zeros(())
    return fn(cfg, Scores(s, pos, neg, lev, summed_lp, ref))


def calibrated_beta(lm: LM, packed: list[Packed], q: float, limit: int = 1000) -> float:
    """BC's margin beta (nats/token) from the starting model's own scores of the first ``limit`` training
    questions: the ``q``-quantile of its per-negative gaps ``min(s_p) - s_n`` (``scoring.gap_quantile``)."""
    part = packed[:limit]
    with torch.no_grad():
        scores = score_grouped(lm, [p["prompt"] for p in part], [p["cots"] for p in part])[0]
    return gap_quantile([s.tolist() for s in scores], [p["n_pos"] for p in part], q)


def balance_gradients(params: list[torch.Tensor], main: torch.Tensor, aux: torch.Tensor, fraction: float) -> float:
    """Set ``p.grad`` to ∇main + c·∇aux with c = fraction·|∇main| / |∇aux| (0 when ∇aux is 0): the auxiliary
    (alignment) gradient at a fixed share of the main (NLL) one, whatever their natural sizes. Returns c.

    >>> w = torch.tensor([1.0, 2.0], requires_grad=True)
    >>> c = balance_gradients([w], (3 * w).sum(), (w ** 2).sum(), 0.5)   # ∇main = (3, 3), ∇aux = (2, 4)
    >>> round(c, 4), [round(x, 4) for x in w.grad.tolist()]              # |∇main| 4.243, |∇aux| 4.472
    (0.4743, [3.9487, 4.8974])
    """
    def grads(t, retain):
        if not t.requires_grad:
            return [torch.zeros_like(p) for p in params]
        return [torch.zeros_like(p) if g is None else g
                for p, g in zip(params, torch.autograd.grad(t, params, retain_graph=retain, allow_unused=True))]
    g_main, g_aux = grads(main, True), grads(aux, False)
    n_main = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in g_main]))
    n_aux = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in g_aux]))
    c = float(fraction * n_main / n_aux) if float(n_aux) > 0 else 0.0
    for p, a, b in zip(params, g_main, g_aux):
        p.grad = a + c * b
    return c


def fingerprint(cfg: AlignConfig, groups: list[Group], seed: int, weight_decay: float, start: str = "") -> str:
    """What a resumable AFT checkpoint must agree with: settings (bar checkpoint frequency), data, and the
    fingerprint ``start`` of the checkpoint it started from (a VFT model trained again changes it)."""
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "checkpoint_every"}
    blob = json.dumps([settings, groups, seed, weight_decay] + ([start] if start else []), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def batch_seed(run_seed: int, round_: int = 1) -> int:
    """Batch-order seed of alignment round ``round_`` in a run seeded ``run_seed``. Every caller that
    aligns from a run's VFT model uses it, so a stage run by hand reproduces the run's model.

    >>> batch_seed(0), batch_seed(0, round_=2)
    (1, 2)
    """
    return run_seed + round_


def _reference_logprobs(lm: LM, packed: list[Packed]) -> list[torch.Tensor]:
    """The starting model's summed log-prob of every COT, per packed question (DPO's frozen reference), on
    the model's device, where the step's scores meet them."""
    _, per_tok = score(lm, [p["prompt"] for p in packed for _ in p["cots"]], [c for p in packed for c in p["cots"]])
    sums, out = torch.tensor([float(t.sum()) for t in per_tok], device=lm.device), []
    i = 0
    for p in packed:
        out.append(sums[i:i + len(p["cots"])])
        i += len(p["cots"])
    return out


def train_align(lm: LM, groups: list[Group], cfg: AlignConfig, init_state: dict | None = None, seed: int = 0,
                progress: bool = True, weight_decay: float = 0.0, out: str | Path | None = None,
                resume: bool = True, stop_after: int | None = None, accelerate: bool | None = None,
                share_prefix: bool = True, on_log: train.OnLog | None = None) -> list[LogRow]:
    """Continue training ``lm`` in place with ``cfg.method``; returns the per-step log.

    ``init_state``: a VFT checkpoint's trainer state, whose AdamW moments are continued (the new
    peak lr and zero weight decay replace the old ones), and whose fingerprint joins this run's.
    ``out``: checkpoint folder, written atomically every ``cfg.checkpoint_every`` steps and at the end;
    with ``resume`` a checkpoint there from the same settings, groups and starting checkpoint is
    continued (one from others is ignored with a warning, and overwritten).
    ``stop_after`` ends after that many steps (simulated interruption).
    NaN/inf in the loss or gradients raises ``NonFiniteError`` naming the step, before the bad
    update, so the last checkpoint stays good. ``share_prefix``: run each question once and its COTs
    from its KV cache (:func:`~aftlab.model.scoring.grouped_token_logprobs`; the same loss and gradient up
    to float rounding, tested, and ~2x faster on the tiny preset where the question is longer than
    the COT); ``False`` runs every (question, COT) row in full. COTs over ``cfg.max_cots`` per
    question are left out with a warning that counts them. ``on_log``: see :func:`aftlab.train.loop.fit`.
    """
    if not groups:
        raise ValueError("train_align: no questions to train on (empty samples)")
    packed, dropped = pack(lm, groups, cfg.max_cots, error_spans=cfg.neg_credit == "first_error")
    # of the settings as given (a calibrated beta follows from them) and of the starting checkpoint
    fp = fingerprint(cfg, groups, seed, weight_decay, (init_state or {}).get("extra", {}).get("fingerprint", ""))
    if cfg.beta_quantile > 0:
        beta = calibrated_beta(lm, packed, cfg.beta_quantile)
        if beta < 0:  # most negatives start above the worst positive: a boundary above it would pull them up
            warnings.warn(f"align.beta_quantile={cfg.beta_quantile}: the calibrated margin is {beta:.4f} nats/token "
                          "(that share of negatives starts above the worst positive); using 0, the boundary at the "
                          "worst positive")
            beta = 0.0
        cfg = dataclasses.replace(cfg, beta=beta)
    if cfg.balance and distributed.wanted(accelerate):
        raise ValueError("align.balance: the balanced gradient runs in one process (plain, not under a launcher): "
                         "its gradient norms would be per process")
    if dropped:
        warnings.warn(f"AFT ({cfg.method}): {dropped} COTs over align.max_cots={cfg.max_cots} per question "
                      "left out of training (negatives first); raise align.max_cots to keep them")
    pad = lm.tokenizer.pad_token_id or 0
    method = REGISTRY[cfg.method]
    ref_all = _reference_logprobs(lm, packed) if method.reference else None  # the starting model, frozen
    opt = checkpoint.make_optimizer(lm.model, cfg.lr, weight_decay=weight_decay)
    checkpoint.continue_optimizer(opt, init_state, cfg.lr, weight_decay)
    total = max(1, math.ceil(cfg.epochs * len(packed) / cfg.questions_per_step))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, checkpoint.warmup_cosine(cfg.warmup, total, cfg.min_lr_ratio))

    def step_fn(model, step: int, dist):
        idx = dist.shard(batch_indices(len(packed), cfg.questions_per_step, step, seed))
        batch = [packed[i] for i in idx]
        lp, mask = step_logprobs(model, batch, pad, share_prefix)  # (N, C)
        s_mask = mask if cfg.neg_scope == "all" else scope_mask(mask, flat(batch, "skip"))
        if cfg.neg_credit == "all":
            per_cot = normalised(lp, s_mask)
        else:  # the score keeps every token; the push lands on the divergent tokens or the first wrong step
            per_cot = credited(lp, s_mask, scope_mask(s_mask, *credit_bounds(batch, cfg.neg_credit)))
        s, pos, neg, lev = _matrix(batch, per_cot)
        sum_lp = ref = None
        if ref_all is not None:
            sum_lp = _matrix(batch, summed(lp, mask))[0]
            ref = _matrix(batch, torch.cat([ref_all[i] for i in idx]))[0]
        pos_rows = pos[pos | neg]  # which flat rows are positives (flat order = (B, K) valid order)
        l_nll = losses.nll_loss(lp[pos_rows], mask[pos_rows]) if pos_rows.any() else s.new_zeros(())
        l_align = align_loss(cfg, s, sum_lp, ref, pos, neg, lev)
        w_nll, w_align = dist.shares(float(mask[pos_rows].sum()),  # this process's part of the step (1.0 alone)
                                     losses.averaged_over(method.unit, cfg.gamma * s, pos, neg, lev, cfg.gamma * cfg.beta,
                                                          cfg.truncate))
        nll_term, align_term = cfg.nll_weight * l_nll * w_nll, cfg.lam * l_align * w_align
        scale = {}
        if cfg.balance:  # the alignment gradient at a set share of the NLL one (one process: checked above)
            c = balance_gradients([p for p in model.parameters() if p.requires_grad], nll_term, align_term,
                                  cfg.balance)
            loss, scale = nll_term + c * align_term, {"align_scale": c}
        else:
            loss = nll_term + align_term
            dist.backward(loss)
        return loss.detach(), {"align_loss": dist.mean(l_align.item() * w_align), **scale,
                               **step_stats(*dist.gather_rows(s.detach(), pos, neg), cfg)}

    start = train.resume(out, lm, opt, sched, fingerprint=fp) if resume else (0, [], {})
    return train.fit(lm, opt, sched, total, step_fn, clip=cfg.clip, what=f"AFT ({cfg.method})", out=out,
                     checkpoint_every=cfg.checkpoint_every, extra={"kind": "align", "method": cfg.method,
                                                                  "fingerprint": fp},
                     start=start, progress=progress, stop_after=stop_after, accelerate=accelerate, on_log=on_log)


def align_from_vft(vft_dir: str | Path, records: list[Record], cfg: AlignConfig, seed: int, model: ModelConfig, *,
                   device: str | None = None, **kw) -> tuple[LM, list[LogRow]]:
    """The one way to align from a run's VFT checkpoint: load it as the run's ``model`` config says
    (``model.lm.load_lm_from_config``; ``device`` overrides the config's) and its optimizer moments, build the
    groups of ``records`` as ``cfg`` asks, and train; returns ``(lm, per-step log)``. ``seed`` is the
    batch-order seed (:func:`batch_seed` of the run's seed); ``kw`` go to :func:`train_align`."""
    from ..model.lm import load_lm_from_config
    from ..sampling.samples import groups

    lm = load_lm_from_config(model, vft_dir, device)
    found = checkpoint.find(vft_dir)
    state = checkpoint.load_state(found) if found else None
    g = groups(records, cfg.strict_positives, cfg.include_reference, cfg.sample_positives)
    return lm, train_align(lm, g, cfg, init_state=state, seed=seed, **kw)


def step_stats(s, pos, neg, cfg: AlignConfig) -> dict[str, float]:
    """Mean positive and negative score, their gap, the mean boundary (raw score units) and the share
    of negatives below it, over one step's (B, K) scores."""
    both = pos.any(1) & neg.any(1)
    big = torch.finfo(s.dtype).max
    bound = torch.where(pos, s, big).min(1).values - cfg.beta  # (B,), nats/token
    below = (neg & (s < bound.unsqueeze(1)))[both].sum() / neg[both].sum().clamp(min=1)
    mp, mn = float(s[pos].mean()), float(s[neg].mean()) if neg.any() else float("nan")
    return {"pos_score": mp, "neg_score": mn, "gap": mp - mn, "beta": cfg.beta,
            "boundary": float(bound[both].mean()) if both.any() else float("nan"), "neg_below_boundary": float(below)}
