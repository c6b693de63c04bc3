"""Where the time goes: ``torch.profiler`` tables of the VFT step, the AFT step, scoring (one COT at a time,
batched, prefix-shared: why batching gains only 2-3x over the loop on a CPU), greedy evaluation and
sampling, and the share of each step spent in matmuls (``aten::mm``/``addmm``/``bmm``/``linear``) vs
everything else (softmax, gathers, cache copies, optimizer, Python/dispatch overhead).

    python benchmarks/bench_profile.py --preset tiny [--rows 12]
"""
from __future__ import annotations

import argparse
import json

import torch
from common import load, set_bench_threads
from torch.profiler import ProfilerActivity, profile

MATMUL = ("aten::mm", "aten::addmm", "aten::bmm", "aten::_scaled_dot_product_flash_attention_for_cpu",
          "mkldnn_bf16_gemm")


def workloads(preset: str, device: str = "cpu", autocast: bool = False) -> dict:
    """Zero-argument callables, one per stage, on the preset's model and task."""
    from bench_train import _aft, _groups

    from aftlab.config import preset as get_preset
    from aftlab.sampling.samples import generate
    from aftlab.train.loop import batch_indices
    from aftlab.train.vft import nll_backward
    lm, train, test = load(preset, device)
    cfg = get_preset(preset)
    if preset == "smol":
        from aftlab.model.lm import add_lora
        lm = add_lora(lm, cfg.model.lora_r, cfg.model.lora_alpha)
    model, pad = lm.model, lm.tokenizer.pad_token_id or 0
    pairs = [(lm.prompt_ids(e.question), lm.cot_ids(e.solution)) for e in train]
    batch = [pairs[i] for i in batch_indices(len(pairs), cfg.vft.batch_size, 0, 0)]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def vft():
        model.train()
        opt.zero_grad(set_to_none=True)
        nll_backward(model, batch, pad, 2)
        opt.step()

    aft, _, _ = _aft(lm, _groups(train, cfg.align.questions_per_step, 4, 4))
    from aftlab.model.scoring import score, score_grouped
    n_score = 24 if preset == "tiny" else 3  # questions x k = 8 COTs (other questions' references stand in)
    prompts = [lm.prompt_ids(e.question) for e in train[:n_score]]
    groups = [[lm.cot_ids(train[(n_score + 8 * b + j) % len(train)].solution) for j in range(8)]
              for b in range(n_score)]
    flat_p, flat_c = [p for p, g in zip(prompts, groups) for _ in g], [c for g in groups for c in g]
    n_greedy = 128 if preset == "tiny" else 8
    n_sample = 16 if preset == "tiny" else 2
    return {"vft_step": vft, "aft_step": aft,
            f"score_{n_score}q_k8_one_at_a_time": lambda: [score(lm, [p], [c]) for p, c in zip(flat_p, flat_c)],
            f"score_{n_score}q_k8_batched": lambda: score(lm, flat_p, flat_c),
            f"score_{n_score}q_k8_prefix_shared": lambda: score_grouped(lm, prompts, groups),
            f"greedy_{n_greedy}q": lambda: generate(lm, [e.question for e in train[:n_greedy]], k=1,
                                                    max_new_tokens=48),
            f"sample_{n_sample}q_k8": lambda: generate(lm, [e.question for e in train[:n_sample]], k=8,
                                                       temperature=0.8, max_new_tokens=48, seed=0)}


def profiled(fn, reps: int = 2) -> tuple[str, dict]:
    """(table of the top ops by self CPU time, {matmul share, total ms per call}) of ``reps`` calls of ``fn``."""
    fn()  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(reps):
            fn()
    ev = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in ev)
    mm = sum(e.self_cpu_time_total for e in ev if e.key in MATMUL or "gemm" in e.key)
    return ev, {"ms_per_call": total / reps / 1e3, "matmul_share": mm / max(total, 1),
                "top": {e.key: round(e.self_cpu_time_total / max(total, 1), 3)
                        for e in sorted(ev, key=lambda e: -e.self_cpu_time_total)[:8]}}


def run(preset: str = "tiny", device: str = "cpu", reps: int = 2, rows: int = 12, show: bool = True) -> dict:
    out = {}
    for name, fn in workloads(preset, device).items():
        ev, summary = profiled(fn, reps)
        out[name] = summary
        if show:
            print(f"\n## {preset} {name}: {summary['ms_per_call']:.0f} ms/call (profiled), "
                  f"matmul share {100 * summary['matmul_share']:.0f}%")
            print(ev.table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=48))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny", choices=["tiny", "smol"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--rows", type=int, default=12)
    a = ap.parse_args(argv)
    set_bench_threads()
    print(json.dumps(run(a.preset, a.device, a.reps, a.rows), indent=1))


if __name__ == "__main__":
    main()
