"""Runtime settings: which device, and how many CPU threads torch's kernels use.

Place in the data path: beside ``model`` (it changes how fast every stage runs, never what it computes
beyond float rounding). Nothing here runs at import; call :func:`set_threads` once at the start of
a script, or use :func:`threads` around a block.

Why it matters: torch's OpenMP workers spin while they wait for each other. When the cores are
already busy (other jobs, a second experiment), a 2-thread step can be several times slower than a
1-thread one; on an idle machine 2 threads win. ``"auto"`` therefore takes the usable cores minus
the cores other work keeps busy *now*: the machine's busy share over a short window
(:func:`busy_cores`, from ``/proc/stat``), not the 1-minute load average, which still remembers the
``pip install`` that ran just before ``make demo`` and made every fresh demo run single-threaded.

>>> with threads(1):
...     torch.get_num_threads()
1
>>> auto_threads(cores=2, busy=1.9), auto_threads(cores=2, busy=0.1), auto_threads(cores=16, busy=3.6)
(1, 2, 12)
>>> busy_between("cpu 100 0 100 800 0 0 0 0 0 0", "cpu 150 0 150 900 0 0 0 0 0 0", cores=2)
1.0
"""
from __future__ import annotations

import contextlib
import functools
import os
import time

import torch

STAT = "/proc/stat"


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, else ``os.cpu_count()``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _cpu_line(text: str) -> list[int]:
    return [int(x) for x in text.split("\n", 1)[0].split()[1:]]


def busy_between(before: str, after: str, cores: int) -> float:
    """Cores kept busy between two ``/proc/stat`` snapshots (their aggregate ``cpu`` line):
    ``cores`` × (1 − idle share), where idle counts the ``idle`` and ``iowait`` columns."""
    a, b = _cpu_line(before), _cpu_line(after)
    delta = [y - x for x, y in zip(a, b)]
    total = sum(delta[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
    if total <= 0:
        return 0.0
    return round(cores * (1 - (delta[3] + delta[4]) / total), 3)


def busy_cores(window: float = 0.3) -> float:
    """Cores other work keeps busy, measured over ``window`` seconds while this process sleeps.

    Falls back to the 1-minute load average where ``/proc/stat`` does not exist (macOS, Windows)."""
    try:
        with open(STAT) as f:
            before = f.read()
        time.sleep(window)
        with open(STAT) as f:
            after = f.read()
    except OSError:
        try:
            return os.getloadavg()[0]
        except (AttributeError, OSError):
            return 0.0
    return busy_between(before, after, os.cpu_count() or 1)


def auto_threads(cores: int | None = None, busy: float | None = None) -> int:
    """Threads worth using: usable cores minus the cores other work keeps busy, at least 1."""
    cores = usable_cores() if cores is None else cores
    busy = busy_cores() if busy is None else busy
    return max(1, min(cores, round(cores - busy)))


def set_threads(n: int | str = "auto") -> int:
    """Set torch's intra-op thread count (``"auto"``: :func:`auto_threads`); returns the count used."""
    n = auto_threads() if n == "auto" else int(n)
    torch.set_num_threads(max(1, n))
    return torch.get_num_threads()


def pick_device(name: str = "auto") -> torch.device:
    """The device to use: ``auto`` prefers CUDA, then MPS, then CPU; anything else is taken as given.
    Under a launcher (``LOCAL_RANK`` set) ``auto`` is this process's own GPU, not every process's GPU 0."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        rank = os.environ.get("LOCAL_RANK")
        return torch.device(f"cuda:{rank}") if rank else torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@contextlib.contextmanager
def threads(n: int | str = "auto"):
    """Run a block with ``n`` threads, then restore the previous count."""
    old = torch.get_num_threads()
    try:
        yield set_threads(n)
    finally:
        torch.set_num_threads(old)


BF16_GAIN = 1.3  # "auto" autocast picks bf16 where its matmuls run at least this much faster than fp32


def _matmul_seconds(dtype: torch.dtype, device: str, n: int = 512, reps: int = 5) -> float:
    gen = torch.Generator(device).manual_seed(0)  # never the global generator: a seeded run draws what it would
    a, b = (torch.randn(n, n, device=device, generator=gen).to(dtype) for _ in range(2))
    best = float("inf")
    for _ in range(reps):
        if device != "cpu":
            torch.cuda.synchronize()
        t = time.perf_counter()
        a @ b
        if device != "cpu":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best


@functools.lru_cache(maxsize=None)
def bf16_speedup(device_type: str = "cpu") -> float:
    """fp32 / bf16 time of a 512×512 matmul on this device (best of 5 each, ~50 ms once per process):
    ~2.2 on a CPU with AVX512-BF16 or AMX, ~0.08 on one without (bf16 emulated), > 1 on a bf16 GPU."""
    if device_type == "cuda" and not torch.cuda.is_bf16_supported():
        return 0.0
    if device_type not in ("cpu", "cuda"):
        return 0.0
    _matmul_seconds(torch.bfloat16, device_type, reps=1)  # warm-up (kernel selection, first touch)
    return _matmul_seconds(torch.float32, device_type) / _matmul_seconds(torch.bfloat16, device_type)


def resolve_autocast(name: str, device_type: str = "cpu", speedup: float | None = None) -> str:
    """The autocast a ``model.autocast`` setting means here: ``"auto"`` is ``"bfloat16"`` where bf16
    matmuls measure at least :data:`BF16_GAIN` times faster than fp32 on this device (:func:`bf16_speedup`),
    else ``"off"``; any other name is itself.

    >>> resolve_autocast("auto", speedup=2.2), resolve_autocast("auto", speedup=0.08), resolve_autocast("off")
    ('bfloat16', 'off', 'off')
    """
    if name != "auto":
        return name
    speedup = bf16_speedup(device_type) if speedup is None else speedup
    return "bfloat16" if speedup >= BF16_GAIN else "off"


# How often a progress bar may redraw, in seconds: in a terminal, and as a notebook widget
BAR_INTERVAL_S = {"terminal": 1.0, "notebook": 3.0}


def progress_bar(**kw):
    """A ``tqdm.auto`` bar (a widget in a notebook, text elsewhere) that redraws at most every
    :data:`BAR_INTERVAL_S` seconds; ``kw`` goes to tqdm (``mininterval`` included, to override).

    Why: each redraw of a notebook widget is a message to the Jupyter client. At tqdm's default 0.1 s a
    minutes-long cell sends thousands, and a client that reads them only once the cell has finished (nbval, as
    ``make test`` runs the notebooks) keeps the first ~2,000 (ZeroMQ's queues) and loses the rest, the cell's
    end-of-output message among them: the cell then fails on a timeout after running fine.

    >>> import io
    >>> bar = progress_bar(total=5000, file=io.StringIO())
    >>> bar.mininterval
    1.0
    >>> for _ in range(5000):
    ...     bar.update()
    >>> bar.close(); bar.fp.getvalue().count("\\r") <= 4    # start, end, and a redraw per second at most
    True
    """
    from tqdm.auto import tqdm
    from tqdm.notebook import tqdm_notebook

    kind = "notebook" if issubclass(tqdm, tqdm_notebook) else "terminal"
    kw.setdefault("mininterval", BAR_INTERVAL_S[kind])
    return tqdm(**kw)
