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
import warnings
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
    os.replace(tmp, path)
    if old.exists():
        shutil.rmtree(old)
    return path


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


def same_parameters(optimizer: torch.optim.Optimizer, saved: dict) -> bool:
    """Whether an optimizer state dict ``saved`` was made for ``optimizer``'s parameters: as many groups,
    as many parameters in each, and every saved moment shaped like its parameter.

    >>> w = torch.nn.Parameter(torch.zeros(2, 3))
    >>> opt = torch.optim.AdamW([w])
    >>> w.grad = torch.ones(2, 3); opt.step()
    >>> same_parameters(opt, opt.state_dict()), same_parameters(torch.optim.AdamW([w, w]), opt.state_dict())
    (True, False)
    """
    groups = saved.get("param_groups", [])
    if [len(g["params"]) for g in groups] != [len(g["params"]) for g in optimizer.param_groups]:
        return False
    params = {i: p for g, mine in zip(groups, optimizer.param_groups) for i, p in zip(g["params"], mine["params"])}
    return all(not torch.is_tensor(v) or v.dim() == 0 or v.shape == params[i].shape
               for i, moments in saved.get("state", {}).items() for v in moments.values())


def continue_optimizer(optimizer: torch.optim.Optimizer, state: dict | None, lr: float, weight_decay: float):
    """Load a previous run's optimizer moments (if any) and set a new peak lr and weight decay.

    Moments saved for another parameter set (LoRA adapters added after a full fine-tune, another model
    size) cannot continue: the optimizer starts fresh moments, with a warning that says so. Any other
    failure to load them raises.

    ``state`` is left untouched: ``load_state_dict`` keeps the given tensors (it copies only where
    dtype or device differ), so without the deep copy every step of this optimizer would rewrite the
    caller's moments, and the next method started from the same VFT state would inherit them.
    """
    if state and "optimizer" in state:
        if same_parameters(optimizer, state["optimizer"]):
            optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        else:
            warnings.warn("the starting checkpoint's optimizer moments belong to a different parameter set "
                          "(e.g. LoRA adapters after a full fine-tune): training starts with fresh moments")
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] = lr
        group["weight_decay"] = weight_decay
    return optimizer
