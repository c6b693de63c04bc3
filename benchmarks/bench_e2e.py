"""End to end: wall time of the pipeline by stage (``stage_seconds`` in a run's metrics.json).

Reads the demo run's metrics (``--run``, default runs/tiny-0) instead of re-running the ~10 min
demo, and runs the ``smoke`` preset end to end into a temporary folder for a fresh breakdown.

    python benchmarks/bench_e2e.py --run runs/tiny-0
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def read_run(path) -> dict | None:
    """Total and per-stage seconds of a finished run folder, or None when it has none yet."""
    f = Path(path) / "metrics.json"
    if not f.is_file():
        return None
    m = json.loads(f.read_text())
    return {"run": str(path), "seconds": m.get("seconds"), "stage_seconds": m.get("stage_seconds")}


def run(demo_run: str | None = None, device: str = "cpu", smoke: bool = True) -> dict:
    from aftlab.config import preset
    from aftlab.pipeline import run as run_pipeline
    out = {"demo": read_run(demo_run or ROOT / "runs" / "tiny-0")}
    if smoke:
        cfg = preset("smoke")
        cfg.model.device = device
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            m = run_pipeline(cfg, tmp, progress=False, log=lambda *_: None)
            out["smoke"] = {"seconds": time.perf_counter() - t, "stage_seconds": m.get("stage_seconds")}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=None, help="finished run folder with metrics.json (default runs/tiny-0)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-smoke", action="store_true")
    a = ap.parse_args(argv)
    print(json.dumps(run(a.run, a.device, not a.no_smoke), indent=1))


if __name__ == "__main__":
    main()
