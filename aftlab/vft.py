"""VFT: vanilla fine-tuning, next-token MLE on (question, reference COT) with the prompt masked.

Place in the data path: data → model → **VFT** → sampling → scoring → losses → AFT → metrics.

The batch for step t is a pure function of (seed, t), so a resumed run sees exactly the batches
an uninterrupted run would; checkpoints carry optimizer and scheduler state.

>>> from aftlab.data import synthetic_splits
>>> from aftlab.model import tiny_lm
>>> from aftlab.config import VFTConfig
>>> train, _ = synthetic_splits(64, 1, seed=0)
>>> lm = tiny_lm([e.question + " " + e.solution for e in train], hidden=32, layers=1, heads=2, ffn=64)
>>> hist = train_vft(lm, train, VFTConfig(steps=20, batch_size=16, lr=3e-3, warmup=2, log_every=5), progress=False)
>>> hist[-1]["loss"] < hist[0]["loss"]
True
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from . import checkpoint, distributed
from .losses import nll_loss
from .scoring import token_logprobs


class NonFiniteError(RuntimeError):
    """Training produced NaN/inf; the message names the step."""


def check_finite(value: torch.Tensor, what: str, out: str | Path | None) -> None:
    """Raise NonFiniteError (naming ``what``, e.g. "VFT step 7: loss") if ``value`` is NaN/inf; called
    before the optimizer step, so the weights and the last checkpoint stay good."""
    if torch.isfinite(value).all():
        return
    found = checkpoint.find(out) if out else None
    kept = (f"last good checkpoint (step {checkpoint.load_state(found)['step']}) kept at {found}" if found
            else "no checkpoint written yet")
    shown = value.item() if value.numel() == 1 else "not finite"
    raise NonFiniteError(f"{what} is {shown}; training stopped; {kept}")


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> list[int]:
    """Indices of the examples in batch ``step``: epochs are seeded permutations of range(n)."""
    per_epoch = max(1, n // batch_size)
    epoch, pos = divmod(step, per_epoch)
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g)
    return perm[pos * batch_size:(pos + 1) * batch_size].tolist()


def nll_backward(model, pairs: list[tuple[list[int], list[int]]], pad: int = 0, buckets: int = 2,
                 backward=torch.Tensor.backward) -> torch.Tensor:
    """Backpropagate the token-mean NLL of (prompt, COT) id pairs; returns the loss, detached.

    The pairs are sorted by length and run as ``buckets`` micro-batches, each loss weighted by its
    share of the batch's COT tokens, so the accumulated gradient is the one-batch gradient up to
    float rounding (tested) while short sequences are not padded to the batch's longest: on the
    tiny preset 2 buckets make a step ~20% faster. ``buckets=1`` is the plain single forward.
    """
    pairs = sorted(pairs, key=lambda pc: len(pc[0]) + len(pc[1]))
    n_tokens = sum(len(c) for _, c in pairs)
    buckets = max(1, min(buckets, len(pairs)))
    total = torch.zeros(())
    for b in range(buckets):
        part = pairs[b * len(pairs) // buckets:(b + 1) * len(pairs) // buckets]
        lp, mask = token_logprobs(model, [p for p, _ in part], [c for _, c in part], pad)  # (n, C)
        loss = nll_loss(lp, mask) * (mask.sum() / n_tokens)
        backward(loss)
        total = total + loss.detach().cpu()
    return total


def train_vft(lm, examples, cfg, out: str | Path | None = None, seed: int = 0, resume: bool = True,
              progress: bool = True, stop_after: int | None = None, length_buckets: int = 2,
              accelerate: bool | None = None) -> list[dict]:
    """Train ``lm`` in place on ``examples``; returns the loss history.

    ``out``: checkpoint folder (written every ``cfg.checkpoint_every`` steps and at the end);
    with ``resume`` an existing checkpoint there is continued. ``stop_after`` ends early after that
    many steps (to simulate an interruption in tests). ``length_buckets``: micro-batches per step
    (see :func:`nll_backward`: the same gradient, less padding).
    """
    from tqdm.auto import tqdm

    pairs = [(lm.prompt_ids(e.question), lm.cot_ids(e.solution)) for e in examples]
    model = lm.model
    opt = checkpoint.make_optimizer(model, cfg.lr, cfg.betas, cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, checkpoint.warmup_cosine(cfg.warmup, cfg.steps, cfg.min_lr_ratio))
    step, history, running = 0, [], []
    found = checkpoint.find(out) if (out and resume) else None
    if found is not None:
        from .model import load_lm
        saved = load_lm(found, device=str(lm.device))
        model.load_state_dict(saved.model.state_dict())
        state = checkpoint.load_state(found)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step, history = state["step"], state["history"]
        running = state["extra"].get("running", [])  # losses since the last log entry, so its average is exact
    pad = lm.tokenizer.pad_token_id or 0
    dist = distributed.runner(accelerate)  # plain single process unless WORLD_SIZE > 1 or asked
    model, opt = dist.prepare(model, opt)  # after any resume: checkpoints hold the unwrapped state
    progress = progress and dist.is_main
    model.train()
    bar = tqdm(total=cfg.steps, initial=step, desc="VFT", disable=not progress)
    while step < cfg.steps:
        idx = dist.shard(batch_indices(len(pairs), cfg.batch_size, step, seed))
        share, = dist.shares(sum(len(pairs[i][1]) for i in idx))  # of the step's COT tokens (1.0 alone)
        opt.zero_grad(set_to_none=True)
        loss = nll_backward(model, [pairs[i] for i in idx], pad, length_buckets, lambda x: dist.backward(x * share))
        check_finite(loss, f"VFT step {step}: loss", out)
        gnorm = dist.clip(model, cfg.clip)
        check_finite(gnorm, f"VFT step {step}: gradient norm", out)
        opt.step()
        sched.step()
        step += 1
        running.append(dist.mean(loss.item() * share))
        if step % cfg.log_every == 0 or step == cfg.steps:
            history.append({"step": step, "loss": sum(running) / len(running), "grad_norm": float(gnorm),
                            "lr": sched.get_last_lr()[0]})
            bar.set_postfix(loss=f"{history[-1]['loss']:.3f}")
            running = []
        bar.update(1)
        if out and ((cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or step == cfg.steps):
            dist.save(out, lm, opt, sched, step, history, {"kind": "vft", "seed": seed, "running": running})
        if stop_after is not None and step >= stop_after:
            break
    bar.close()
    model.eval()
    return history


def perplexity(lm, examples, batch_size: int = 64) -> float:
    """exp(mean token NLL) of the reference COTs given their questions."""
    from .scoring import score
    prompts = [lm.prompt_ids(e.question) for e in examples]
    cots = [lm.cot_ids(e.solution) for e in examples]
    _, per_token = score(lm, prompts, cots)
    total = sum(float(t.sum()) for t in per_token)
    n = sum(len(t) for t in per_token)
    return math.exp(-total / max(n, 1))
