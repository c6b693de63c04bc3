"""Run every benchmark, write ``benchmarks/results.json`` and print a table with the goals.

    python benchmarks/run_all.py [--device cuda] [--presets tiny smol] [--reps 3] [--only scoring sampling]

Each measurement compares against its baseline in the same process (interleaved, median of
``--reps``), so the ratios hold on a busy machine even when absolute times do not. ``smol`` is
skipped with the reason printed when its model cannot be loaded.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_core  # noqa: E402
import bench_e2e  # noqa: E402
import bench_mfu  # noqa: E402
import bench_profile  # noqa: E402
import bench_sampling  # noqa: E402
import bench_scoring  # noqa: E402
import bench_train  # noqa: E402
from common import Skip, set_bench_threads  # noqa: E402

BENCHES = {"scoring": bench_scoring.run, "sampling": bench_sampling.run, "train": bench_train.run,
           "mfu": bench_mfu.run, "core": bench_core.run, "profile": bench_profile.run}


def table(res: dict) -> str:
    """The figures and goals as a Markdown table."""
    rows = [("measurement", "preset", "figure", "goal", "met")]

    def add(name, preset, figure, goal, met):
        rows.append((name, preset, figure, goal, "-" if met is None else ("yes" if met else "no")))

    for preset, r in res.get("presets", {}).items():
        s = r.get("scoring", {})
        if "batched_vs_naive" in s:
            add("scoring: batched vs naive loop (COT tok/s)", preset, f"{s['batched_vs_naive']:.2f}x", ">= 3x (k=8)",
                s["batched_vs_naive"] >= 3)
            add("scoring: prefix-shared vs naive", preset, f"{s['grouped_vs_naive']:.2f}x", ">= 3x",
                s["grouped_vs_naive"] >= 3)
            add("scoring: prefix sharing gain over batched", preset, f"{s['grouped_vs_batched']:.2f}x", "report", None)
            add("scoring: max |diff| vs naive", preset, f"{s['max_abs_diff']:.1e}", "<= 1e-4", s["max_abs_diff"] <= 1e-4)
        g = r.get("sampling", {})
        if "batched_vs_naive" in g:
            add("sampling: batched k/question vs one at a time (COTs/s)", preset, f"{g['batched_vs_naive']:.2f}x",
                ">= 5x", g["batched_vs_naive"] >= 5)
            add("sampling: prompt prefilled once vs k times", preset, f"{g['shared_vs_unshared']:.2f}x", "report", None)
            if "grown_vs_dynamic_cache" in g:
                add("sampling: KV cache grown in place vs concatenated", preset, f"{g['grown_vs_dynamic_cache']:.2f}x",
                    "report", None)
            if "lora_merged_vs_unmerged_greedy" in g:
                add("greedy decoding: LoRA folded into the weights vs PEFT-wrapped", preset,
                    f"{g['lora_merged_vs_unmerged_greedy']:.2f}x", "report", None)
            for name, sec in g["projected_s"].items():
                add(f"projected {name} ({g['threads']} threads, {g.get('model', 'untrained')} model)", preset,
                    f"{sec:.0f} s", "< 60 s", sec < 60)
        t = r.get("train", {})
        if "aft_vs_dpo_pairs_per_s" in t:
            a, d = t["arms"]["aft"], t["arms"]["dpo"]
            add("AFT(BC) step vs TRL DPOTrainer step, same pairs (pairs/s)", preset,
                f"{t['aft_vs_dpo_pairs_per_s']:.2f}x", ">= 1.5x", t["aft_vs_dpo_pairs_per_s"] >= 1.5)
            add("  peak RSS AFT / DPO (MiB)", preset, f"{a['peak_mb']:.0f} / {d['peak_mb']:.0f}", "AFT <= DPO",
                a["peak_mb"] <= d["peak_mb"])
            add("AFT(BC) k=8 groups vs DPO pairs (pairs/s)", preset, f"{t['aft_groups_vs_dpo_pairs_per_s']:.2f}x",
                "report", None)
        m = r.get("mfu", {})
        if "mfu" in m:
            add("matmul fp32 (GFLOP/s)", preset, f"{m['matmul_gflops']:.1f}", "machine limit", None)
            for k, v in m["mfu"].items():
                add(f"MFU {k} ({m['s_per_step'][k]:.3f} s/step)", preset, f"{100 * v:.1f}%", ">= 50% (smol)",
                    v >= 0.5 if preset == "smol" else None)
            add("VFT step: 2 length buckets vs 1", preset, f"{m['vft_bucket_speedup']:.2f}x", "report", None)
            if m.get("vft_default_buckets", 2) > 2:
                add(f"VFT step: {m['vft_default_buckets']} length buckets (default) vs 2", preset,
                    f"{m['vft_default_vs_2buckets']:.2f}x", "report", None)
        c = r.get("core", {})
        for stage, sp in c.get("speedup", {}).items():
            goal = 0.5 if preset == "smol" else 0.6
            for arm, ratio in sp.items():
                if arm not in c["mfu"][stage]:  # a ratio between two arms (cast_once_vs_bf16), not a step
                    add(f"{stage} step: {arm.replace('_vs_', ' vs ')}", preset, f"{ratio:.2f}x", "report", None)
                    continue
                mfu = c["mfu"][stage][arm]
                add(f"{stage} step: {arm} vs plain head (MFU {100 * mfu:.0f}% of fp32 peak)", preset, f"{ratio:.2f}x",
                    f"MFU >= {100 * goal:.0f}%", mfu >= goal)
        for stage, p in r.get("profile", {}).items():
            add(f"profile {stage}: matmul share of op time", preset, f"{100 * p['matmul_share']:.0f}%", "report", None)
        for name, err in r.get("skipped", {}).items():
            add(name, preset, "skipped", err[:70], None)
    e = res.get("e2e", {})
    if (e.get("demo") or {}).get("seconds"):
        st = ", ".join(f"{k} {v:.0f}s" for k, v in (e["demo"]["stage_seconds"] or {}).items())
        add(f"end to end demo ({st})", "tiny", f"{e['demo']['seconds'] / 60:.1f} min", "<= 8 min",
            e["demo"]["seconds"] <= 480)
    if e.get("smoke"):
        st = ", ".join(f"{k} {v:.0f}s" for k, v in (e["smoke"]["stage_seconds"] or {}).items())
        add(f"end to end smoke ({st})", "smoke", f"{e['smoke']['seconds']:.0f} s", "report", None)
    w = [max(len(str(r[i])) for r in rows) for i in range(5)]
    lines = ["| " + " | ".join(str(c).ljust(w[i]) for i, c in enumerate(r)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (x + 2) for x in w) + "|")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--presets", nargs="+", default=["tiny", "smol"])
    ap.add_argument("--only", nargs="+", default=list(BENCHES) + ["e2e"], choices=list(BENCHES) + ["e2e"])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--run", default=None, help="finished demo run folder to read stage times from")
    ap.add_argument("--sampling-model", default=None,
                    help="a trained tiny checkpoint (e.g. runs/demo/vft) for the sampling arms: COTs that end")
    ap.add_argument("--out", default=str(HERE / "results.json"))
    a = ap.parse_args(argv)
    threads = set_bench_threads()
    os.environ.setdefault("AFTLAB_BENCH_THREADS", str(threads))  # subprocess arms use the same count
    res = {"date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "device": a.device, "threads": threads,
           "load_avg_1min": os.getloadavg()[0], "reps": a.reps, "presets": {}}
    t0 = time.time()
    for preset in a.presets:
        r = res["presets"].setdefault(preset, {"skipped": {}})
        for name in [b for b in BENCHES if b in a.only]:
            print(f"[{time.time() - t0:6.0f}s] {preset}: {name}", flush=True)
            try:
                kw = {"model": a.sampling_model} if name == "sampling" and preset == "tiny" and a.sampling_model else {}
                r[name] = BENCHES[name](preset=preset, device=a.device, reps=a.reps, **kw)
            except Skip as e:
                r["skipped"][name] = str(e)
                print(f"  skipped: {e}", flush=True)
                if "smol" in str(e):
                    break  # the model is missing: every smol measurement would skip for the same reason
            except Exception as e:  # noqa: BLE001 - record and go on with the other measurements
                r["skipped"][name] = f"error: {type(e).__name__}: {e}"
                traceback.print_exc()
    if "e2e" in a.only:
        print(f"[{time.time() - t0:6.0f}s] end to end", flush=True)
        res["e2e"] = bench_e2e.run(a.run, a.device)
    res["total_seconds"] = time.time() - t0
    Path(a.out).write_text(json.dumps(res, indent=1))
    print(table(res))
    print(f"\nwritten {a.out} ({res['total_seconds'] / 60:.1f} min, {threads} threads, load {res['load_avg_1min']:.1f})")


if __name__ == "__main__":
    main()
