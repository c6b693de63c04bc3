"""A second device on a CPU-only machine, for tests: tensors "on" it are CPU tensors that a torch
function mode tags, so code that builds a mask on the CPU and lets it meet the model's tensors fails
here as it fails on a GPU, and every host sync (``.item()``, ``.cpu()``, ``float(t)``, ``bool(t)``) of
a device tensor is recorded with the aftlab line that asked for it.

The device answers ``.device`` with ``cpu:1``: code that follows the rule "build tensors on the device
of the tensors they meet" (``torch.zeros(..., device=x.device)``, ``x.new_zeros``, ``torch.zeros_like``,
``.to(x.device)``) creates tagged tensors; code that builds on the CPU (``torch.zeros(...)``,
``torch.tensor(list)``, ``.cpu()``) creates CPU ones. An op that mixes a tagged tensor with a CPU tensor
of one or more dimensions raises, as CUDA kernels do (0-dim CPU tensors pass, as CUDA lets them pass as
scalars). The `meta` device cannot play this part: the AFT step indexes with boolean masks and logs
floats, which meta tensors cannot do.

>>> import torch
>>> lin = torch.nn.Linear(3, 2)
>>> with VirtualDevice() as dev:
...     dev.put(lin)
...     x = torch.ones(4, 3, device=lin.weight.device)   # born on the device: fine
...     y = lin(x)
...     ok = torch.where(torch.zeros_like(y, dtype=torch.bool), y, 0.0)
...     torch.where(torch.zeros(4, 2, dtype=torch.bool), y, 0.0)   # a CPU mask meets device scores
Traceback (most recent call last):
...
RuntimeError: where: a CPU tensor of shape (4, 2) meets tensors on the device cpu:1
>>> with VirtualDevice() as dev:
...     dev.put(lin)
...     total = float(lin.weight.detach().sum())
>>> [kind for kind, _ in dev.syncs]
['__float__']
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map
from torch.utils.weak import WeakTensorKeyDictionary

DEVICE = torch.device("cpu", 1)  # what `.device` answers for a tensor on the virtual device
PKG = str(Path(__file__).resolve().parents[1] / "aftlab")
SYNCS = {"item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__", "cpu"}


def _is_device(x) -> bool:
    return isinstance(x, (torch.device, str)) and str(x) in ("cpu", "cpu:0", "cpu:1")


def _caller() -> str:
    """Where a sync was asked for: ``train/loop.py:123`` for a line of aftlab, ``ext:file.py:12`` for the
    innermost line outside torch otherwise (transformers' own checks)."""
    f = sys._getframe(2)
    while f is not None and ("/torch/" in f.f_code.co_filename or f.f_code.co_filename == __file__):
        f = f.f_back
    if f is None:
        return "ext:?"
    if f.f_code.co_filename.startswith(PKG):
        return f"{Path(f.f_code.co_filename).relative_to(PKG)}:{f.f_lineno}"
    return f"ext:{Path(f.f_code.co_filename).name}:{f.f_lineno}"


class VirtualDevice(TorchFunctionMode):
    """Inside ``with VirtualDevice() as dev:``, ``dev.put(module)`` moves a module's parameters and
    buffers to the virtual device; ``dev.syncs`` lists ``(kind, aftlab line)`` of every host sync."""

    DEVICE = DEVICE

    def __init__(self):
        super().__init__()
        self.where = WeakTensorKeyDictionary()  # tensor -> "dev" | "cpu"; absent: unknown (made by autograd)
        self.syncs: list[tuple[str, str]] = []

    def put(self, module: torch.nn.Module) -> None:
        for t in [*module.parameters(), *module.buffers()]:
            self.where[t] = "dev"

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        name = getattr(func, "__name__", str(func))
        if name == "__get__" and getattr(func, "__self__", None) is torch.Tensor.device:
            return DEVICE if self.where.get(args[0]) == "dev" else func(*args, **kwargs)
        target = None  # the device an op is told to put its result on
        if _is_device(kwargs.get("device")):
            target = "dev" if torch.device(kwargs["device"]) == DEVICE else "cpu"
            kwargs["device"] = "cpu"
        if name in ("to", "cpu"):
            if name == "cpu":
                target = "cpu"
            pos = []
            for a in args:
                if _is_device(a):
                    target = "dev" if torch.device(a) == DEVICE else "cpu"
                    a = "cpu"
                pos.append(a)
            args = tuple(pos)
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        tags = [self.where.get(t) for t in tensors]
        if "dev" in tags and name in SYNCS:
            self.syncs.append((name, _caller()))
        if target is None and "dev" in tags:
            cpu = [t for t, tag in zip(tensors, tags) if tag == "cpu" and t.dim() > 0]
            if cpu:
                raise RuntimeError(f"{name}: a CPU tensor of shape {tuple(cpu[0].shape)} meets tensors on the "
                                   f"device {DEVICE}")
        out = func(*args, **kwargs)
        tag = target or ("dev" if "dev" in tags else "cpu" if "cpu" in tags or not tensors else None)
        if name == "__get__" and getattr(func, "__self__", None) is torch.Tensor.grad:
            tag = self.where.get(args[0])  # a gradient lives where its parameter does
        if tag is None or not any(isinstance(t, torch.Tensor) for t in tree_flatten(out)[0]):
            return out
        if target is not None and out is args[0] and self.where.get(out) != tag:
            out = out.clone()  # `.to` returned its input: the copy on the other device is a new tensor

        def mark(t):
            if isinstance(t, torch.Tensor) and not (tag == "cpu" and self.where.get(t) == "dev"):
                self.where[t] = tag
            return t
        tree_map(mark, out)
        return out
