"""Sampling and evaluation on several processes: each takes whole batches, results merge in order.

Place in the data path: a service of **sampling** and **evaluate** under a launcher (the training
stages split each step's batch instead, see ``aftlab.train.distributed``).

Batch j of a stage's work goes to process j % world. A batch is exactly the one a single process
would run, seeded as it would be (by its first question's index), so the same seed gives the same
COTs and greedy answers whatever the process count, and a one-process run is unchanged. The price:
fewer batches than processes leaves some idle (``sample.batch_questions`` sets the grain).
Results are gathered to every process in question order; a sampling cache is written per process
(``<cache>.rank<r>``) and merged into the one JSONL a single process writes.

>>> batches(list(range(5)), 2)
[[0, 1], [2, 3], [4]]
>>> map_batches(lambda b: [x * 10 for x in b], list(range(5)), 2)
[0, 10, 20, 30, 40]
>>> part_path("runs/x/samples.jsonl", 1).name
'samples.jsonl.rank1'
"""
from __future__ import annotations

import json
from pathlib import Path

from . import checkpoint
from .distributed import Plain


def batches(items: list, size: int) -> list[list]:
    """``items`` cut into consecutive batches of ``size`` (the last may be shorter)."""
    return [items[i:i + size] for i in range(0, len(items), max(1, size))]


def map_batches(fn, items: list, size: int, dist=None) -> list:
    """``fn`` (a batch -> one result per item) over the batches, batch j on process j % world; every
    process gets all results in item order."""
    dist = dist or Plain()
    chunks = batches(items, size)
    mine = {j: fn(chunks[j]) for j in range(dist.rank, len(chunks), dist.world)}
    merged: dict[int, list] = {}
    for part in dist.gather(mine):
        merged.update(part)
    return [x for j in range(len(chunks)) for x in merged[j]]


def part_path(cache: str | Path, rank: int) -> Path:
    """The file process ``rank`` appends its records to while sampling into ``cache``."""
    cache = Path(cache)
    return cache.with_name(f"{cache.name}.rank{rank}")


def parts(cache: str | Path) -> list[Path]:
    """Per-process files of a sharded sampling run into ``cache`` that has not been merged yet (killed)."""
    cache = Path(cache)
    return sorted(cache.parent.glob(cache.name + ".rank*"))


def merge(cache: str | Path, records: list[dict]) -> None:
    """Write ``records`` (in question order) as ``cache``, atomically, and drop the per-process files."""
    checkpoint.write_atomic(cache, "".join(json.dumps(r) + "\n" for r in records))
    for p in parts(cache):
        p.unlink()
