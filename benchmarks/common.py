"""Shared helpers for the benchmarks: models per preset, interleaved timing, peak memory.

Every benchmark compares against its baseline in the same process, interleaving the variants and
taking the median of ``reps`` repetitions, because the 2-core machines this runs on are shared
and absolute timings drift by 2-10x from one minute to the next.
"""
from __future__ import annotations

import os
import resource
import statistics
import sys
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class Skip(Exception):
    """A measurement that cannot run here (e.g. the smol model is not installed); the message says why."""


def task(n_train: int = 2000, seed: int = 0):
    """Synthetic train/test questions of the tiny preset's task (3-4 steps, numbers up to 12)."""
    from aftlab.config import preset
    from aftlab.data.questions import synthetic_from_config
    cfg = preset("tiny", seed=seed)
    cfg.data.n_train, cfg.data.n_test = n_train, 64
    return synthetic_from_config(cfg.data)


def bench_config(preset_name: str, device: str = "cpu"):
    """The preset's config as the benchmarks run it: on ``device``, fp32, smol without LoRA."""
    from aftlab.config import preset
    cfg = preset(preset_name)
    cfg.model.device = device
    cfg.model.autocast = "off"  # fp32 arms measure fp32 (smol's preset says "auto"); bf16 has its own arms
    if preset_name == "smol":
        cfg.model.lora = False  # bench the full model; LoRA is measured where it matters (training)
    return cfg


def load(preset_name: str, device: str = "cpu"):
    """The preset's model (tiny: random init over the task's words; smol: pretrained, if installed)."""
    from aftlab.model.lm import build_lm
    train, test = task()
    cfg = bench_config(preset_name, device)
    if preset_name == "smol":
        try:
            lm = build_lm(cfg.model, train + test, cfg.seed)
        except Exception as e:  # noqa: BLE001 - any failure to load smol means: skip it, say why
            raise Skip(f"smol model not available ({type(e).__name__}: {str(e).splitlines()[0][:160]})") from None
    else:
        lm = build_lm(cfg.model, train + test, cfg.seed)
    return lm, train, test


def interleaved(variants: dict, reps: int = 3, warmup: int = 1) -> dict[str, float]:
    """Median seconds per call of each zero-argument callable, run round-robin ``reps`` times."""
    for _ in range(warmup):
        for f in variants.values():
            f()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(reps):
        for k, f in variants.items():
            sync()
            t = time.perf_counter()
            f()
            sync()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def sync():
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024 * 1024) if sys.platform == "darwin" else r / 1024


def matmul_flops(n: int = 2048, device: str = "cpu", reps: int = 3) -> float:
    """Achieved FLOP/s of a large fp32 square matmul: the machine limit MFU is measured against."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    sec = interleaved({"mm": lambda: a @ b}, reps=reps)["mm"]
    return 2 * n ** 3 / sec


def fmt(x, nd=2):
    return "-" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))


def set_bench_threads() -> int:
    """Threads for a benchmark process: ``AFTLAB_BENCH_THREADS`` if set, else the load-aware default."""
    from aftlab.model.runtime import set_threads
    return set_threads(os.environ.get("AFTLAB_BENCH_THREADS", "auto"))


def cli_main(run, doc: str, argv=None, with_k: bool = True, options: dict[str, str] | None = None) -> None:
    """The command line every single benchmark script shares: ``--preset --device [--k] --reps``, plus
    ``options`` (name → help) passed to ``run`` as keyword strings where given."""
    import argparse
    import json
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--preset", default="tiny", choices=["tiny", "smol"])
    ap.add_argument("--device", default="cpu")
    if with_k:
        ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3)
    for name, text in (options or {}).items():
        ap.add_argument(f"--{name}", help=text)
    a = ap.parse_args(argv)
    set_bench_threads()
    kw = {"k": a.k} if with_k else {}
    kw |= {name: getattr(a, name) for name in options or {} if getattr(a, name) is not None}
    try:
        print(json.dumps(run(a.preset, a.device, reps=a.reps, **kw), indent=1))
    except Skip as e:
        print(f"skipped: {e}")
