"""Runtime settings: how many CPU threads torch's kernels use.

Place in the data path: beside ``model`` (it changes how fast every stage runs, never what it computes
beyond float rounding). Nothing here runs at import; call :func:`set_threads` once at the start of
a script, or use :func:`threads` around a block.

Why it matters: torch's OpenMP workers spin while they wait for each other. When the cores are
already busy (other jobs, a second experiment), a 2-thread step can be several times slower than a
1-thread one; on an idle machine 2 threads win. ``"auto"`` therefore takes the usable cores minus
the current 1-minute load.

>>> with threads(1):
...     torch.get_num_threads()
1
>>> auto_threads(cores=2, load=2.3), auto_threads(cores=2, load=0.1), auto_threads(cores=16, load=3.6)
(1, 2, 12)
"""
from __future__ import annotations

import contextlib
import os

import torch


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, else ``os.cpu_count()``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def auto_threads(cores: int | None = None, load: float | None = None) -> int:
    """Threads worth using: usable cores minus the cores other work keeps busy, at least 1."""
    cores = usable_cores() if cores is None else cores
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            load = 0.0
    return max(1, min(cores, round(cores - load)))


def set_threads(n: int | str = "auto") -> int:
    """Set torch's intra-op thread count (``"auto"``: :func:`auto_threads`); returns the count used."""
    n = auto_threads() if n == "auto" else int(n)
    torch.set_num_threads(max(1, n))
    return torch.get_num_threads()


@contextlib.contextmanager
def threads(n: int | str = "auto"):
    """Run a block with ``n`` threads, then restore the previous count."""
    old = torch.get_num_threads()
    try:
        yield set_threads(n)
    finally:
        torch.set_num_threads(old)
