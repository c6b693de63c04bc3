"""Scale-out: VFT and AFT on many processes (``torchrun`` / ``accelerate launch``), unchanged on one.

Place in the data path: a service of **VFT**, **AFT**, **sampling** and **evaluate**; the loops ask
``runner()`` for the few things that differ between one plain process and many (prepare, backward,
clip, which rows of the step's batch this process takes, each process's share of the step's loss,
averaging or gathering a logged number, saving a checkpoint, waiting for the others).

``Plain`` does exactly what the loops did before (``loss.backward()``, ``clip_grad_norm_``, the whole
batch, shares of 1.0), so single-process runs are bit-for-bit the same. ``Accelerated`` wraps
``accelerate.Accelerator``: the step's global batch (a pure function of seed and step, as before)
is split across processes by rank, DDP/FSDP/DeepSpeed average the gradients, and only the main
process logs and writes. It is chosen when ``WORLD_SIZE`` > 1 (set by ``accelerate launch``/torchrun)
or when asked for (``--accelerate``, ``accelerate=True``).

Why shares: DDP averages the processes' gradients with equal weights, but the global batch's loss
is a mean over tokens (NLL) or questions/pairs (alignment terms), and an uneven split (7 questions on
2 processes, or simply COTs of different lengths) gives the processes unequal parts of it. Each
process scales its local mean by ``world * part / whole`` (``shares``), so the average of the
scaled losses, and of their gradients, is the one-process global-batch loss and gradient.

Checkpoints: under DDP the main process writes its (whole) model; under FSDP2 the parameters are
shards, so every process takes part in gathering the full weights and optimizer state
(``Accelerated.save``), which the main process writes in the one-process layout. Everyone then
waits, so nobody reads a checkpoint that is not yet in place.

>>> r = runner(False)
>>> (r.world, r.rank, r.is_main), r.shard([4, 5, 6]), r.shares(3, 5)
((1, 0, True), [4, 5, 6], [1.0, 1.0])
>>> wanted(None, {"WORLD_SIZE": "4"}), wanted(None, {})
(True, False)
>>> scaled_shares([3, 5], [7, 10], world=2)   # this process holds 3 of 7 tokens and 5 of 10 questions
[0.8571428571428571, 1.0]
"""
from __future__ import annotations

import os

import torch

from . import checkpoint


def wanted(flag: bool | None = None, env=None) -> bool:
    """Whether to use accelerate: the explicit flag if given, else ``WORLD_SIZE`` > 1."""
    if flag is not None:
        return flag
    env = os.environ if env is None else env
    return int(env.get("WORLD_SIZE", "1") or 1) > 1


def cpu_launch(env=None) -> bool:
    """Whether accelerate's process state must be set up with ``cpu=True``: several processes and no GPU.

    Without a GPU, accelerate ignores torchrun's WORLD_SIZE unless told cpu=True (`accelerate launch
    --cpu` says so through ACCELERATE_USE_CPU): each process then trained the whole batch alone,
    believed itself the main one and raced the others writing the same checkpoint. Whoever sets the
    state up first (``Accelerated``, or the trackers of ``aftlab.report.trackers``) must say it alike.

    >>> cpu_launch({}), cpu_launch({"WORLD_SIZE": "2"}) == (not torch.cuda.is_available())
    (False, True)
    """
    env = os.environ if env is None else env
    return int(env.get("WORLD_SIZE", "1") or 1) > 1 and not torch.cuda.is_available()


def main_process(env=None) -> bool:
    """Whether this process reports (always, unless it is a non-zero rank of a launch), before any
    process group exists: from the launcher's ``RANK``.

    >>> main_process({}), main_process({"RANK": "1"})
    (True, False)
    """
    env = os.environ if env is None else env
    return int(env.get("RANK", "0") or 0) == 0


def scaled_shares(parts, wholes, world: int) -> list[float]:
    """``world * part / whole`` per pair; 0 where the whole batch has none (its mean is 0 then)."""
    return [world * p / w if w else 0.0 for p, w in zip(parts, wholes)]


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

    def shares(self, *parts: float) -> list[float]:
        return [1.0] * len(parts)

    def mean(self, value: float) -> float:
        return value

    def gather(self, obj) -> list:
        """Every process's ``obj``, in rank order."""
        return [obj]

    def gather_rows(self, *tensors: torch.Tensor) -> tuple:
        """(B, K) tensors of every process stacked along B (K padded with zeros / False)."""
        return tensors

    def save(self, path, lm, optimizer=None, scheduler=None, step: int = 0, history=None, extra=None):
        """:func:`aftlab.train.checkpoint.save`, by the processes the engine needs; all return together."""
        return checkpoint.save(path, lm, optimizer, scheduler, step, history, extra)

    def wait(self) -> None:
        pass


class Accelerated(Plain):
    """``accelerate.Accelerator`` behind the same methods; configure it with ``accelerate launch
    --config_file configs/accelerate_fsdp.yaml`` (or ``_deepspeed``, or ``accelerate config``)."""

    def __init__(self):
        from accelerate import Accelerator
        expected = int(os.environ.get("WORLD_SIZE", "1") or 1)
        self.acc = Accelerator(cpu=cpu_launch())
        self.world, self.rank = self.acc.num_processes, self.acc.process_index
        self.is_main = self.acc.is_main_process
        if self.world != expected:
            raise RuntimeError(f"launched as {expected} processes but accelerate set up {self.world}; "
                               "check the launcher's backend (gloo on CPU, nccl on GPUs)")

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

    def shares(self, *parts: float) -> list[float]:
        t = torch.tensor([float(p) for p in parts], dtype=torch.float64, device=self.acc.device)
        wholes = self.acc.reduce(t, reduction="sum").tolist()
        return scaled_shares(parts, wholes, self.world)

    def mean(self, value: float) -> float:
        t = torch.tensor([float(value)], dtype=torch.float64, device=self.acc.device)
        return float(self.acc.reduce(t, reduction="mean"))

    def gather(self, obj) -> list:
        import torch.distributed as td
        if self.world == 1:  # accelerate in one process (``--accelerate``) starts no process group
            return [obj]
        out = [None] * self.world
        td.all_gather_object(out, obj)
        return out

    def gather_rows(self, *tensors: torch.Tensor) -> tuple:
        parts = self.gather([t.detach().cpu() for t in tensors])
        rows = max(p[0].shape[0] for p in parts)
        cols = max(p[0].shape[1] for p in parts)
        out = []
        for i in range(len(tensors)):
            padded = [torch.nn.functional.pad(p[i], (0, cols - p[i].shape[1], 0, rows - p[i].shape[0]))
                      for p in parts]  # zeros / False: masked out of every statistic
            out.append(torch.cat(padded))
        return tuple(out)

    def save(self, path, lm, optimizer=None, scheduler=None, step: int = 0, history=None, extra=None):
        model_state = optim_state = None
        if sharded(lm.model):
            # FSDP2: the full state is gathered from every rank's shard, so all must take part (only
            # the main process calling it would hang); it arrives on the main process only
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
            model_state = get_model_state_dict(lm.model, options=StateDictOptions(full_state_dict=True,
                                                                                     cpu_offload=True))
            optim_state = _full_optimizer_state(lm.model, optimizer) if optimizer is not None else None
        if self.is_main:
            checkpoint.save(path, lm, optimizer, scheduler, step, history, extra,
                            model_state=model_state, optimizer_state=optim_state)
        self.wait()  # nobody reads (resume, the next stage) a checkpoint that is not yet in place
        return path

    def wait(self) -> None:
        self.acc.wait_for_everyone()


def sharded(model) -> bool:
    """Whether ``model``'s parameters are FSDP2 shards (DTensors) rather than whole tensors."""
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch before 2.5 has no public DTensor, and no FSDP2 for accelerate to apply
        return False
    return any(isinstance(p, DTensor) for p in model.parameters())


def _full_optimizer_state(model, optimizer) -> dict:
    """An FSDP optimizer's full state in ``optimizer.state_dict()`` layout (parameters numbered in
    group order, as a fresh ``make_optimizer`` numbers them), so a resume loads it before ``prepare``."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict
    optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper holds the torch one
    full = get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True,
                                                                               cpu_offload=True))
    if not full:  # off the main process the full state is not materialised (cpu_offload)
        return {}
    number, groups, i = {}, [], 0
    for g in full["param_groups"]:
        ids = []
        for name in g["params"]:
            number[name] = i
            ids.append(i)
            i += 1
        groups.append({**g, "params": ids})
    return {"state": {number[k]: v for k, v in full["state"].items()}, "param_groups": groups}


def runner(accelerate: bool | None = None) -> Plain:
    """``Accelerated()`` when :func:`wanted`, else ``Plain()``."""
    return Accelerated() if wanted(accelerate) else Plain()
