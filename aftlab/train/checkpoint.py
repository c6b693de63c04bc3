"""Checkpoints and schedules shared by the VFT and AFT loops.

Place in the data path: used by VFT and AFT training (model → **VFT/AFT checkpoints**).

A checkpoint is a folder in ``save_pretrained`` layout (safetensors weights + tokenizer) plus
``trainer_state.pt`` (optimizer, scheduler, step, history; tensors and plain values only, loaded
with ``weights_only=True``). It is written to a temporary folder and renamed into place, so a
process killed mid-write leaves either the previous checkpoint or the new one, never a torn one.

>>> f = warmup_cosine(warmup=2, total=10, min_ratio=0.1)
>>> [round(f(s), 2) for s in (0, 1, 2, 10)]
[0.5, 1.0, 1.0, 0.1]
"""
from __future__ import annotations

import copy
import json
import math
import os
import shutil
from pathlib import Path

import torch

STATE = "trainer_state.pt"


def warmup_cosine(warmup: int, total: int, min_ratio: float):
    """LR multiplier: linear warmup to 1 over ``warmup`` steps, then cosine to ``min_ratio`` at ``total``.

    Not transformers' ``get_cosine_with_min_lr_schedule_with_warmup``: it warms up from 0 (step 0 of 50 → 0.0,
    here 0.02) and its ``_lr_rate`` variant runs one step ahead on the cosine (step 50 → 0.9999989, here 1.0);
    recorded models and E2's outcomes depend on this schedule bit for bit (tests/test_schedule.py).
    """
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return f


def make_optimizer(model, lr: float, betas=(0.9, 0.98), weight_decay: float = 0.0) -> torch.optim.AdamW:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)


def save(path: str | Path, lm, optimizer=None, scheduler=None, step: int = 0, history: list | None = None,
         extra: dict | None = None, model_state: dict | None = None, optimizer_state: dict | None = None) -> Path:
    """Atomically write a checkpoint folder at ``path``.

    ``model_state`` / ``optimizer_state``: full state dicts gathered from a sharded engine (FSDP,
    see :meth:`aftlab.train.distributed.Accelerated.save`) to write instead of ``lm``'s and ``optimizer``'s own.
    """
    path = Path(path)
    for stale in path.parent.glob(path.name + ".tmp-*"):  # left by a writer killed mid-save
        shutil.rmtree(stale, ignore_errors=True)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    if model_state is None:
        lm.save(tmp)
    else:
        lm.save(tmp, state_dict=model_state)
    _test_pause()
    state = {"step": step, "history": history or [], "extra": extra or {}}
    if optimizer_state is not None or optimizer is not None:
        state["optimizer"] = optimizer_state if optimizer_state is not None else optimizer.state_dict()
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    torch.save(state, tmp / STATE)
    (tmp / "history.json").write_text(json.dumps(history or []))
    old = path.with_name(path.name + ".old")
    if path.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(path, old)
        _test_pause()
    os.replace(tmp, path)
    if old.exists():
        shutil.rmtree(old)
    return path


def _test_pause() -> None:
    """Test hook: sleep ``$AFTLAB_TEST_CKPT_PAUSE`` seconds at the two points where a kill is most
    harmful (new weights written but no trainer state yet; old checkpoint moved aside, new one not
    yet in place), so interruption tests can SIGKILL there deterministically."""
    pause = os.environ.get("AFTLAB_TEST_CKPT_PAUSE")
    if pause:
        import time
        time.sleep(float(pause))


def write_atomic(path: str | Path, text: str) -> None:
    """Write a text file so readers (and a re-run after a kill) see the old file or the whole new one."""
    path = Path(path)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def find(path: str | Path) -> Path | None:
    """The complete checkpoint at ``path``, or the previous one if a kill interrupted the swap."""
    path = Path(path)
    for p in (path, path.with_name(path.name + ".old")):
        if (p / STATE).is_file():
            return p
    return None


def load_state(path: str | Path) -> dict:
    """The trainer state of a checkpoint folder (tensors and plain values only)."""
    from ..model.lm import ModelLoadError
    try:
        return torch.load(Path(path) / STATE, map_location="cpu", weights_only=True)
    except Exception as e:  # weights_only refuses arbitrary pickles: report, never fall back to a full unpickle
        raise ModelLoadError(f"{Path(path) / STATE}: not a loadable trainer state "
                             f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})") from None


def continue_optimizer(optimizer: torch.optim.Optimizer, state: dict | None, lr: float, weight_decay: float):
    """Load a previous run's optimizer moments (if any) and set a new peak lr and weight decay.

    ``state`` is left untouched: ``load_state_dict`` keeps the given tensors (it copies only where
    dtype or device differ), so without the deep copy every step of this optimizer would rewrite the
    caller's moments, and the next method started from the same VFT state would inherit them.
    """
    if state and "optimizer" in state:
        try:
            optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        except ValueError:
            pass  # different parameter set (e.g. LoRA added after a full fine-tune): start fresh moments
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] = lr
        group["weight_decay"] = weight_decay
    return optimizer
