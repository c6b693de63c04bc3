"""VFT: vanilla fine-tuning, next-token MLE on (question, reference COT) with the prompt masked.

Place in the data path: data → model → **VFT** → sampling → scoring → losses → AFT → metrics.

The batch for step t is a pure function of (seed, t), so a resumed run sees exactly the batches
an uninterrupted run would; checkpoints carry optimizer and scheduler state.

>>> from aftlab.data.questions import synthetic_splits
>>> from aftlab.model.lm import tiny_lm
>>> from aftlab.config import VFTConfig
>>> train, _ = synthetic_splits(64, 1, seed=0)
>>> lm = tiny_lm([e.question + " " + e.solution for e in train], hidden=32, layers=1, heads=2, ffn=64)
>>> hist = train_vft(lm, train, VFTConfig(steps=20, batch_size=16, lr=3e-3, warmup=2, log_every=5), progress=False)
>>> hist[-1]["loss"] < hist[0]["loss"]
True
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..data.questions import Example
from ..model.lm import LM
from ..model.scoring import token_logprobs
from ..records import LogRow
from . import checkpoint
from . import loop as train
from .loop import batch_indices
from .losses import nll_loss

if TYPE_CHECKING:  # the config sits above the stages; they only name its types
    from ..config import VFTConfig


def default_buckets(n_pairs: int) -> int:
    """Length buckets for a step of ``n_pairs``: about 16 pairs each (~1,000 tokens on tiny), at least 2.

    On tiny at batch 64 the padded share falls from 9.7% (2 buckets) to 4.8% (4) and the step runs
    1.11-1.28x faster at 1 thread (``benchmarks/bench_mfu.py``); smaller micro-batches lose more to
    per-call overhead than they save in padding.

    >>> default_buckets(8), default_buckets(32), default_buckets(64)
    (2, 2, 4)
    """
    return max(2, n_pairs // 16)


def nll_backward(model, pairs: list[tuple[list[int], list[int]]], pad: int = 0, buckets: int | None = None,
                 backward=torch.Tensor.backward) -> torch.Tensor:
    """Backpropagate the token-mean NLL of (prompt, COT) id pairs; returns the loss, detached, on the model's device.

    The pairs are sorted by length and run as ``buckets`` micro-batches (default:
    :func:`default_buckets`), each loss weighted by its share of the batch's COT tokens, so the
    accumulated gradient is the one-batch gradient up to float rounding (tested) while short
    sequences are not padded to the batch's longest. ``buckets=1`` is the plain single forward.
    """
    buckets = default_buckets(len(pairs)) if buckets is None else buckets
    pairs = sorted(pairs, key=lambda pc: len(pc[0]) + len(pc[1]))
    n_tokens = sum(len(c) for _, c in pairs)
    buckets = max(1, min(buckets, len(pairs)))
    total = None  # summed on the model's device: reading each part back would make the host wait for it
    for b in range(buckets):
        part = pairs[b * len(pairs) // buckets:(b + 1) * len(pairs) // buckets]
        lp, mask = token_logprobs(model, [p for p, _ in part], [c for _, c in part], pad)  # (n, C)
        loss = nll_loss(lp, mask) * (mask.sum() / n_tokens)
        backward(loss)
        total = loss.detach() if total is None else total + loss.detach()
    return total


def fingerprint(cfg: VFTConfig, examples: list[Example], seed: int) -> str:
    """What a resumable VFT checkpoint must agree with: the settings that shape its weights (all but how
    often it checkpoints and logs), the batch-order seed and the training pairs."""
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("checkpoint_every", "log_every")}
    blob = json.dumps([settings, [(e.question, e.solution) for e in examples], seed], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def train_vft(lm: LM, examples: list[Example], cfg: VFTConfig, out: str | Path | None = None, seed: int = 0, resume: bool = True,
              progress=True, stop_after: int | None = None, length_buckets: int | None = None,
              accelerate: bool | None = None, on_log: train.OnLog | None = None, snapshots: int = 0) -> list[LogRow]:
    """Train ``lm`` in place on ``examples``; returns the loss history.

    ``out``: checkpoint folder (written every ``cfg.checkpoint_every`` steps and at the end);
    with ``resume`` an existing checkpoint there is continued when it was trained with the same settings,
    seed and examples (:func:`fingerprint`); one from others is ignored with a warning, and overwritten.
    ``stop_after`` ends early after that many steps (to simulate an interruption in tests).
    ``length_buckets``: micro-batches per step (see :func:`nll_backward`: the same gradient, less padding;
    None: :func:`default_buckets`). ``progress`` and ``on_log``: as :func:`aftlab.train.loop.fit` takes them.
    ``snapshots`` > 0 (with ``out``): the model after each of that many equal parts of the schedule is kept in
    :func:`snapshot_dir`\ ``/step_N`` (the last is the final model), for curves across training.
    """
    pairs = list(zip(lm.prompt_ids_batch([e.question for e in examples]), lm.cot_ids_batch([e.solution for e in examples])))
    pad = lm.tokenizer.pad_token_id or 0
    opt = checkpoint.make_optimizer(lm.model, cfg.lr, cfg.betas, cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, checkpoint.warmup_cosine(cfg.warmup, cfg.steps, cfg.min_lr_ratio))

    def step_fn(model, step: int, dist):
        idx = dist.shard(batch_indices(len(pairs), cfg.batch_size, step, seed))
        share, = dist.shares(sum(len(pairs[i][1]) for i in idx))  # of the step's COT tokens (1.0 alone)
        loss = nll_backward(model, [pairs[i] for i in idx], pad, length_buckets, lambda x: dist.backward(x * share))
        return loss * share, {}  # this process's part of the global batch's loss: the mean over processes sums them

    fp = fingerprint(cfg, examples, seed)
    start = train.resume(out, lm, opt, sched, fingerprint=fp) if resume else (0, [], {})
    return train.fit(lm, opt, sched, cfg.steps, step_fn, clip=cfg.clip, what="VFT", out=out,
                     checkpoint_every=cfg.checkpoint_every, log_every=cfg.log_every,
                     extra={"kind": "vft", "seed": seed, "fingerprint": fp}, start=start, progress=progress,
                     stop_after=stop_after, accelerate=accelerate, on_log=on_log,
                     snapshots=snapshot_steps(cfg.steps, snapshots, out) if out and snapshots else None)


def snapshot_dir(out: str | Path) -> Path:
    """Where :func:`train_vft` keeps the snapshots of a VFT checkpoint folder ``out``: ``vft_steps`` beside it.

    >>> snapshot_dir("runs/demo/vft").as_posix()
    'runs/demo/vft_steps'
    """
    return Path(out).with_name(Path(out).name + "_steps")


def snapshot_steps(total: int, n: int, out: str | Path) -> dict[int, Path]:
    """``{step: folder}`` of ``n`` snapshots over a ``total``-step schedule, the last at its end.

    >>> {s: p.name for s, p in snapshot_steps(1200, 4, "runs/x/vft").items()}
    {300: 'step_300', 600: 'step_600', 900: 'step_900', 1200: 'step_1200'}
    """
    return {s: snapshot_dir(out) / f"step_{s}" for s in (total * (k + 1) // n for k in range(n))}
