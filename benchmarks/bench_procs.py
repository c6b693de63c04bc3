"""Processes vs threads on a CPU: the VFT step as one process with N threads vs N processes with one each.

Both arms train the same global batches and so the same gradient (to float rounding:
``tests/test_multiprocess.py``); only how the cores are used differs. The threads arm runs ``aftlab vft``
with ``OMP_NUM_THREADS=N``; the processes arm runs it under ``torchrun --nproc_per_node N`` (gloo, one
thread each, every process half the batch and an all-reduce of the gradient per step). Each arm runs for
a short and a long step count; the difference of the two wall times is the time of the extra steps, so
start-up, data generation and the process group's set-up cancel. The arms are interleaved, median of
``--reps``. Matmuls of a small model (tiny: hidden 128) split poorly over threads; two independent
processes keep each core on its own matmuls.

    python benchmarks/bench_procs.py [--preset tiny] [--procs 2] [--steps 40,160] [--reps 3]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def vft_seconds(preset: str, steps: int, procs: int, threads: int, sets: list[str]) -> float:
    """Wall seconds of one ``aftlab vft`` of ``steps`` steps (``procs`` > 1: under torchrun)."""
    out = tempfile.mkdtemp(prefix="bench-procs-")
    args = ["-m", "aftlab.cli", "vft", "--preset", preset, "--no-progress", "--out", out,
            "--set", f"vft.steps={steps}", "--set", "vft.checkpoint_every=0", *sum((["--set", s] for s in sets), [])]
    cmd = ([str(BIN / "torchrun"), "--standalone", f"--nproc_per_node={procs}", *args] if procs > 1
           else [sys.executable, *args])
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1")
    try:
        t = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return time.perf_counter() - t
    finally:
        shutil.rmtree(out, ignore_errors=True)


def run(preset: str = "tiny", procs: int = 2, steps: tuple[int, int] = (40, 160), reps: int = 3,
        sets: tuple[str, ...] = ("data.n_train=20000",)) -> dict:
    load = os.getloadavg()[0]
    arms = {"threads": (1, procs), "processes": (procs, 1)}  # (processes, threads each)
    times = {(a, s): [] for a in arms for s in steps}
    for _ in range(reps):
        for s in steps:
            for a, (p, t) in arms.items():
                times[a, s].append(vft_seconds(preset, s, p, t, list(sets)))
    med = {k: statistics.median(v) for k, v in times.items()}
    per_step = {a: (med[a, steps[1]] - med[a, steps[0]]) / (steps[1] - steps[0]) for a in arms}
    return {"preset": preset, "procs": procs, "steps": list(steps), "sets": list(sets), "reps": reps,
            "wall_s": {f"{a}@{s}": round(v, 2) for (a, s), v in med.items()},
            "s_per_step": per_step, "processes_vs_threads": per_step["threads"] / per_step["processes"],
            "load_before": load}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--steps", default="40,160", help="short,long step counts")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--set", action="append", default=None, help="extra config overrides (KEY=VALUE)")
    a = ap.parse_args(argv)
    short, long_ = (int(x) for x in a.steps.split(","))
    print(json.dumps(run(a.preset, a.procs, (short, long_), a.reps, tuple(a.set or ("data.n_train=20000",))),
                     indent=1))


if __name__ == "__main__":
    main()
