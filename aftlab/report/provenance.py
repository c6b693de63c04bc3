"""Where a run's numbers came from: the commit of the code, the date, and the machine.

Place in the data path: beside the **report**, which shows it; ``pipeline.run`` records it into
``metrics.json`` as the run ends. Figures move across CPUs (float rounding, thread counts, speed),
so a number is checkable only with the commit and the machine that produced it.

>>> p = provenance()
>>> sorted(p), sorted(p["machine"])[:5]
(['commit', 'date', 'machine'], ['cores', 'cpu', 'isa', 'platform', 'python'])
>>> line({"commit": "a1b2c3d4e5f6", "date": "2026-12-07T18:50:12+00:00",
...       "machine": {"cpu": "Xeon 6338", "cores": 2, "threads": 1, "isa": "AVX512", "torch": "2.13.0"}})
'commit a1b2c3d4e5f6, 2026-12-07 18:50 UTC, Xeon 6338 (2 cores, 1 torch thread), AVX512, torch 2.13.0'
>>> line({})
'commit unknown, date unknown, machine unknown'
"""
from __future__ import annotations

import datetime
import platform
import subprocess
from pathlib import Path

import torch

from ..model.runtime import usable_cores

UNKNOWN = "unknown"


def commit(root: str | Path | None = None) -> str:
    """``git describe --always --dirty`` of the checkout that holds this ``aftlab`` (a commit hash, with
    ``-dirty`` when tracked files differ from it); ``"unknown"`` for an installed package or without git.
    The checkout must be the package's own: a virtual environment inside some other repository must not
    lend it that repository's commit."""
    root = Path(root or Path(__file__).resolve().parents[2])
    try:
        top = subprocess.run(["git", "-C", str(root), "rev-parse", "--show-toplevel"], capture_output=True,
                             text=True, timeout=10)
        if top.returncode or Path(top.stdout.strip()).resolve() != root.resolve():
            return UNKNOWN
        described = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty", "--abbrev=12"],
                                   capture_output=True, text=True, timeout=10)
        if described.returncode:
            return UNKNOWN
        return described.stdout.strip() or UNKNOWN
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    try:
        for row in Path("/proc/cpuinfo").read_text().splitlines():
            if row.startswith("model name"):
                return row.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or UNKNOWN


def provenance() -> dict:
    """The commit, the date (UTC, ISO 8601) and the machine of this process, for ``metrics.json``.

    ``isa`` is the instruction set torch's CPU kernels use here (``torch.backends.cpu.get_cpu_capability()``: e.g.
    AVX2, AVX512). It decides how float sums are grouped, so the same code, seed and settings train bit-identical
    models on two machines of one ISA and different ones across ISAs: over `--preset e2`'s 3,000 VFT steps that
    moved seed 0's greedy accuracy from 0.9699 to 0.9766 (``experiments/e2_powered.md``)."""
    machine = {"cpu": cpu_model(), "isa": torch.backends.cpu.get_cpu_capability(), "cores": usable_cores(),
               "threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
               "platform": f"{platform.system()} {platform.machine()}"}
    if torch.cuda.is_available():
        machine["gpu"] = torch.cuda.get_device_name(0)
    return {"commit": commit(), "machine": machine,
            "date": datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()}


def line(p: dict | None) -> str:
    """A provenance record in words (the report's "from" line); what a record lacks reads ``unknown``."""
    p = p or {}
    date = p.get("date")
    when = (datetime.datetime.fromisoformat(date).astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
            if date else "date unknown")
    m = p.get("machine")
    if m:
        threads = m.get("threads")
        parts = [f"{m.get('cores', '?')} cores"] + ([f"{threads} torch thread{'s' * (threads != 1)}"] if threads else [])
        where = f"{m.get('cpu', 'CPU unknown')} ({', '.join(parts)})" + (f", GPU {m['gpu']}" if m.get("gpu") else "")
        where += (f", {m['isa']}" if m.get("isa") else "") + f", torch {m.get('torch', UNKNOWN)}"
    else:
        where = "machine unknown"
    return f"commit {p.get('commit', UNKNOWN)}, {when}, {where}"
