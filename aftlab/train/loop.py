"""The one training loop. VFT and AFT both call :func:`fit`, each with its own step function.

Place in the data path: data → model → **train** (this loop; ``vft`` and ``align`` are its two
objectives) → sampling → scoring → losses → AFT → metrics.

:func:`fit` reads top to bottom like nanoGPT's ``train.py``: per step, zero the gradients, let the
stage's step function run forward and backward on batch ``step`` (a pure function of seed and step,
so a resumed run sees exactly the batches an uninterrupted one would), clip, check the loss and the
gradient norm for NaN/inf *before* the update, step optimizer and schedule, log, checkpoint. That check
is the step's one wait for the device; losses are read back at log and checkpoint steps only.
Everything that differs between one process and many goes through ``distributed.runner()``.

>>> from aftlab.model.lm import tiny_lm
>>> lm = tiny_lm(["1 + 1 = 2"], hidden=16, layers=1, heads=2, ffn=32)
>>> opt = torch.optim.SGD(lm.model.parameters(), lr=0.1)
>>> sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
>>> def step_fn(model, step, dist):  # any objective: here, shrink the weights
...     loss = sum((p ** 2).sum() for p in model.parameters())
...     dist.backward(loss)
...     return loss.detach(), {}
>>> log = fit(lm, opt, sched, 3, step_fn, clip=1.0, what="demo", progress=False)
>>> [r["step"] for r in log], log[-1]["loss"] < log[0]["loss"]
([1, 2, 3], True)
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable

import torch

from ..model.lm import linears_cast
from ..records import LogRow
from . import checkpoint, distributed

# (model, step, dist) -> (loss detached, extra log fields); runs forward and backward on this process's share
StepFn = Callable[[torch.nn.Module, int, "distributed.Plain"], tuple[torch.Tensor, dict]]
# called with each new log entry on the main process (e.g. ``aftlab.report.trackers``); the returned log stays the record
OnLog = Callable[[LogRow], None]


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
    """Indices of the examples in batch ``step``: epochs are seeded permutations of range(n).

    >>> sorted(batch_indices(4, 2, 0, seed=0) + batch_indices(4, 2, 1, seed=0))
    [0, 1, 2, 3]
    """
    per_epoch = max(1, n // batch_size)
    epoch, pos = divmod(step, per_epoch)
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g)
    return perm[pos * batch_size:(pos + 1) * batch_size].tolist()


def resume(out: str | Path | None, lm, optimizer, scheduler, fingerprint: str | None = None
           ) -> tuple[int, list[LogRow], dict]:
    """``(step, history, extra)`` of the checkpoint in ``out``, its weights, optimizer and schedule
    loaded into ``lm``, ``optimizer``, ``scheduler``; ``(0, [], {})`` when there is none, or when its
    ``extra["fingerprint"]`` differs from ``fingerprint`` (other settings or data: warned, started afresh)."""
    found = checkpoint.find(out) if out else None
    if found is None:
        return 0, [], {}
    state = checkpoint.load_state(found)
    if fingerprint is not None and state.get("extra", {}).get("fingerprint") != fingerprint:
        warnings.warn(f"{found}: checkpoint was written with other settings or samples; training afresh")
        return 0, [], {}
    from ..model.lm import load_lm
    lm.model.load_state_dict(load_lm(found, device=str(lm.device)).model.state_dict())
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return state["step"], state["history"], state["extra"]


def fit(lm, optimizer, scheduler, total: int, step_fn: StepFn, *, clip: float, what: str,
        out: str | Path | None = None, checkpoint_every: int = 0, log_every: int = 1, extra: dict | None = None,
        start: tuple[int, list[LogRow], dict] = (0, [], {}), progress=True, stop_after: int | None = None,
        accelerate: bool | None = None, on_log: OnLog | None = None,
        snapshots: dict[int, str | Path] | None = None) -> list[LogRow]:
    """Train ``lm.model`` in place for steps ``start[0]`` … ``total - 1``; returns the log.

    ``step_fn(model, step, dist)`` runs forward and backward on this process's share of batch
    ``step`` and returns the loss (detached) and extra fields for the log. A log entry is written
    every ``log_every`` steps (and at the end): the completed step count, the mean loss since the
    previous entry, the gradient norm, the learning rate, and the step function's fields of the
    step that closed it. ``out``: checkpoint folder, written every ``checkpoint_every`` steps and at
    the end, its trainer state carrying ``extra``; ``start``: what :func:`resume` returned.
    ``what`` names the stage in errors ("VFT", "AFT (aft_bc)"). ``stop_after`` ends after that step
    (a simulated interruption, or one segment of a longer run). ``progress``: show a bar over the
    ``total`` steps, or an open tqdm bar to advance and leave open (one bar across segments, which
    would otherwise each end short of their total and be drawn as failed). ``on_log``: called with
    each new log entry on the main process (``aftlab.report.trackers`` mirrors them to TensorBoard & co.).
    ``snapshots``: ``{step: folder}``: after that step, a checkpoint of the model as it is then (what a
    curve of the model across training reads; training itself goes on unchanged).
    """
    from ..model.runtime import progress_bar

    step, history, saved = start
    running = list(saved.get("running", []))  # losses since the last log entry, so its mean is exact
    pending: list[torch.Tensor] = []  # the newest of them, still on the device: read back at log and save steps

    def flush() -> None:
        if pending:
            running.extend(dist.mean(x) for x in torch.stack([t.float() for t in pending]).tolist())
            pending.clear()
    dist = distributed.runner(accelerate)  # plain single process unless WORLD_SIZE > 1 or asked
    model, optimizer = dist.prepare(lm.model, optimizer)  # after any resume: checkpoints hold the unwrapped state
    model.train()
    own_bar = not hasattr(progress, "update")
    bar = progress_bar(total=total, initial=step, desc=what, disable=not (progress and dist.is_main)) if own_bar else progress
    while step < total:
        optimizer.zero_grad(set_to_none=True)
        # opt-in bf16 autocast (model.autocast; a no-op by default), frozen weights cast once per step
        # (one process: a launcher's wrapper may own the parameters)
        with lm.precision(), linears_cast(lm.model, lm.autocast if dist.world == 1 else "off", frozen_only=True):
            loss, fields = step_fn(model, step, dist)
        gnorm = dist.clip(model, clip)
        # the step's one host sync: a non-finite loss or gradient must stop training before the update
        if not bool(torch.isfinite(loss).all() & torch.isfinite(gnorm.to(loss.device)).all()):
            check_finite(loss, f"{what} step {step}: loss", out)
            check_finite(gnorm, f"{what} step {step}: gradient norm", out)
        optimizer.step()
        scheduler.step()
        step += 1
        pending.append(loss.detach())
        if step % log_every == 0 or step == total:
            flush()
            history.append({"step": step, "loss": sum(running) / len(running), "grad_norm": float(gnorm),
                            "lr": scheduler.get_last_lr()[0], **fields})
            bar.set_postfix(loss=f"{history[-1]['loss']:.3f}", refresh=False)  # shown at the next timed redraw
            running = []
            if on_log is not None and dist.is_main:
                on_log(history[-1])
        bar.update(1)
        # the checkpoint when due, and a snapshot when asked for at this step (every rank: FSDP gathers)
        targets = [out] if out and ((checkpoint_every and step % checkpoint_every == 0) or step == total) else []
        targets += [snapshots[step]] if snapshots and step in snapshots else []
        if targets:
            flush()
            for target in targets:
                dist.save(target, lm, optimizer, scheduler, step, history, {**(extra or {}), "running": running})
        if stop_after is not None and step >= stop_after:
            break
    if own_bar:
        bar.close()
    lm.model.eval()
    return history
