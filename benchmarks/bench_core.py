"""The training-step levers, each against today's code path in the same process (interleaved medians).

Arms of the tiny/smol VFT step (``vft.nll_backward``) and AFT step (the body of ``align.train_align``):
``plain`` is the code path before the fused head (logits of every COT position, gather − logsumexp);
``fused`` the default now (``aftlab.model.head``: taken-token log-probs chunk by chunk); ``bf16`` the fused
path under bf16 autocast (opt-in ``model.autocast``); ``bf16_cast`` that, with the frozen weights cast once
per step as ``train.fit`` does (``model.linears_cast(frozen_only=True)``: LoRA's base weights on smol; the same
as ``bf16`` on tiny, which has none). MFU is model FLOPs (``bench_mfu.train_flops``)
per second over the measured fp32 matmul peak (and the bf16 one for the bf16 arm).

    python benchmarks/bench_core.py --preset tiny [--reps 5]
"""
from __future__ import annotations

import contextlib
from unittest import mock

import torch
from common import cli_main, interleaved, load, matmul_flops


def _arm(step, name: str, model=None):
    """``step`` run as arm ``name``: ``plain`` without the fused head, ``bf16`` under autocast,
    ``bf16_cast`` also with ``model``'s frozen weights cast once per step."""
    from aftlab.model.lm import linears_cast

    def f():
        plain = mock.patch("aftlab.model.scoring.split_head", lambda m: None) if name == "plain" else contextlib.nullcontext()
        cast = torch.autocast("cpu", torch.bfloat16) if name.startswith("bf16") else contextlib.nullcontext()
        once = linears_cast(model, "bfloat16", frozen_only=True) if name == "bf16_cast" else contextlib.nullcontext()
        with plain, cast, once:
            step()
    return f


def bf16_matmul_flops(n: int = 2048, reps: int = 3) -> float:
    a, b = torch.randn(n, n, dtype=torch.bfloat16), torch.randn(n, n, dtype=torch.bfloat16)
    return 2 * n ** 3 / interleaved({"mm": lambda: a @ b}, reps=reps)["mm"]


def run(preset: str = "tiny", device: str = "cpu", reps: int = 3, arms=("plain", "fused", "bf16", "bf16_cast")) -> dict:
    from bench_mfu import train_flops
    from bench_train import _aft, _groups

    from aftlab.config import preset as get_preset
    from aftlab.train.loop import batch_indices
    from aftlab.train.vft import nll_backward
    peak, peak_bf16 = matmul_flops(2048, device), bf16_matmul_flops()
    lm, train, _ = load(preset, device)
    cfg = get_preset(preset)
    if preset == "smol":
        from aftlab.model.lm import add_lora
        lm = add_lora(lm, cfg.model.lora_r, cfg.model.lora_alpha)
    model, pad = lm.model, lm.tokenizer.pad_token_id or 0
    model.train()
    pairs = [(lm.prompt_ids(e.question), lm.cot_ids(e.solution)) for e in train]
    batches = [[pairs[i] for i in batch_indices(len(pairs), cfg.vft.batch_size, s, 0)] for s in range(4)]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    state = {"i": 0}

    def vft():
        opt.zero_grad(set_to_none=True)
        nll_backward(model, batches[state["i"] % len(batches)], pad)  # default buckets, as train_vft
        state["i"] += 1
        opt.step()

    groups = _groups(train, cfg.align.questions_per_step, 4, 4)
    aft, _, aft_tokens = _aft(lm, groups)
    vocab = model.get_output_embeddings().weight.shape[0]
    out = {"preset": preset, "threads": torch.get_num_threads(), "matmul_gflops": peak / 1e9,
           "matmul_bf16_gflops": peak_bf16 / 1e9, "s_per_step": {}, "mfu": {}, "speedup": {}}
    tokens = sum(len(p) + len(c) for b in batches for p, c in b) / len(batches)
    heads = sum(len(c) for b in batches for _, c in b) / len(batches)
    aft_heads = sum(len(lm.cot_ids(c)) for g in groups for c in g["pos"] + g["neg"])
    # the plain path holds fp32 logits of every COT position (the fused head: one chunk of 2^22)
    out["plain_logits_mib"] = {"vft": heads * vocab * 4 / 2 ** 20, "aft": aft_heads * vocab * 4 / 2 ** 20}
    flops = {"vft": train_flops(model, tokens, heads), "aft": train_flops(model, aft_tokens, aft_heads)}
    for stage, step in (("vft", vft), ("aft", aft)):
        t = interleaved({a: _arm(step, a, model) for a in arms}, reps=reps)
        out["s_per_step"][stage] = t
        out["mfu"][stage] = {a: flops[stage] / t[a] / peak for a in arms}
        out["speedup"][stage] = {a: t["plain"] / t[a] for a in arms if a != "plain"}
        if "bf16" in arms:
            out["mfu"][stage]["bf16_vs_bf16_peak"] = flops[stage] / t["bf16"] / peak_bf16
        if {"bf16", "bf16_cast"} <= set(arms):
            out["speedup"][stage]["cast_once_vs_bf16"] = t["bf16"] / t["bf16_cast"]
    return out


def main(argv=None):
    cli_main(run, __doc__, argv, with_k=False)  # sets the bench threads


if __name__ == "__main__":
    main()
