"""Scale-out: the VFT and AFT loops on many processes under ``accelerate launch``, unchanged on one.

Place in the data path: a service of **VFT** and **AFT**; both loops ask ``runner()`` for the few
things that differ between one plain process and many (prepare, backward, clip, which rows of the
step's batch this process takes, averaging a logged number, who writes checkpoints).

``Plain`` does exactly what the loops did before (``loss.backward()``, ``clip_grad_norm_``, the whole
batch), so single-process CPU runs are bit-for-bit the same. ``Accelerated`` wraps
``accelerate.Accelerator``: the step's global batch (a pure function of seed and step, as before)
is split across processes by rank, DDP/FSDP/DeepSpeed average the gradients, and only the main
process logs and saves. It is chosen when ``WORLD_SIZE`` > 1 (set by ``accelerate launch``/torchrun)
or when asked for (``--accelerate``, ``accelerate=True``).

>>> r = runner(False)
>>> (r.world, r.rank, r.is_main), r.shard([4, 5, 6])
((1, 0, True), [4, 5, 6])
>>> wanted(None, {"WORLD_SIZE": "4"}), wanted(None, {})
(True, False)
"""
from __future__ import annotations

import os

import torch


def wanted(flag: bool | None = None, env=None) -> bool:
    """Whether to use accelerate: the explicit flag if given, else ``WORLD_SIZE`` > 1."""
    if flag is not None:
        return flag
    env = os.environ if env is None else env
    return int(env.get("WORLD_SIZE", "1") or 1) > 1


class Plain:
    """One process, no wrapping: what the training loops always did."""

    world, rank, is_main = 1, 0, True

    def prepare(self, model, optimizer):
        return model, optimizer

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def clip(self, model, max_norm: float) -> torch.Tensor:
        return torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)

    def shard(self, idx: list[int]) -> list[int]:
        return idx

    def mean(self, value: float) -> float:
        return value

    def wait(self) -> None:
        pass


class Accelerated(Plain):
    """``accelerate.Accelerator`` behind the same methods; configure it with ``accelerate launch
    --config_file configs/accelerate_fsdp.yaml`` (or ``_deepspeed``, or ``accelerate config``)."""

    def __init__(self):
        from accelerate import Accelerator
        self.acc = Accelerator()
        self.world, self.rank = self.acc.num_processes, self.acc.process_index
        self.is_main = self.acc.is_main_process

    def prepare(self, model, optimizer):
        return self.acc.prepare(model, optimizer)

    def backward(self, loss: torch.Tensor) -> None:
        self.acc.backward(loss)  # applies mixed-precision scaling and DeepSpeed's engine step logic

    def clip(self, model, max_norm: float) -> torch.Tensor:
        norm = self.acc.clip_grad_norm_(model.parameters(), max_norm)
        # DeepSpeed clips inside its engine (``gradient_clipping`` in its config) and reports no norm
        return torch.zeros(()) if norm is None else norm

    def shard(self, idx: list[int]) -> list[int]:
        if len(idx) < self.world:
            raise ValueError(f"a step's batch ({len(idx)} items) is smaller than the {self.world} processes; "
                             "raise the batch size (vft.batch_size / align.questions_per_step)")
        return idx[self.rank::self.world]

    def mean(self, value: float) -> float:
        t = torch.tensor([float(value)], device=self.acc.device)
        return float(self.acc.reduce(t, reduction="mean"))

    def wait(self) -> None:
        self.acc.wait_for_everyone()


def runner(accelerate: bool | None = None) -> Plain:
    """``Accelerated()`` when :func:`wanted`, else ``Plain()``."""
    return Accelerated() if wanted(accelerate) else Plain()
