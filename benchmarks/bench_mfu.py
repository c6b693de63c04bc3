"""Machine limit and MFU: large fp32 matmul FLOP/s, then the VFT and AFT steps as a share of it.

Model FLOPs of a training step (:func:`train_flops`): k x non-embedding parameters x tokens, plus
k x (hidden x vocab) x the positions where the LM head runs (``logits_to_keep``: COT positions
only); k = 6 when the base weights train (forward 2, weight grads 2, input grads 2) and 4 under
LoRA (frozen base: no weight grads). The embedding lookup costs nothing; attention's T^2 terms are
left out (T ~ 60: under 3% here). Also times the VFT step with and without length-bucketed
micro-batches (``vft.nll_backward``: 1, 2 and the default ``vft.default_buckets``), same process.

    python benchmarks/bench_mfu.py --preset tiny
"""
from __future__ import annotations

import torch
from common import cli_main, interleaved, load, matmul_flops


def train_flops(model, tokens: float, logit_positions: float) -> float:
    """FLOPs of one training step over ``tokens`` input tokens with the LM head at ``logit_positions``."""
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    total = sum(p.numel() for p in model.parameters())
    body = total - emb.numel() - (0 if head is emb else head.numel())
    lora = any("lora_" in n for n, _ in model.named_parameters())
    k = 4 if lora else 6
    return k * body * tokens + k * head.numel() * logit_positions


def run(preset: str = "tiny", device: str = "cpu", reps: int = 3) -> dict:
    from aftlab.config import preset as get_preset
    from aftlab.train.loop import batch_indices
    from aftlab.train.vft import nll_backward
    peak = matmul_flops(2048 if device == "cpu" else 8192, device)
    lm, train, _ = load(preset, device)
    cfg = get_preset(preset)
    if preset == "smol":
        from aftlab.model.lm import add_lora
        lm = add_lora(lm, cfg.model.lora_r, cfg.model.lora_alpha)
    model = lm.model
    model.train()
    params = sum(p.numel() for p in model.parameters())
    pairs = [(lm.prompt_ids(e.question), lm.cot_ids(e.solution)) for e in train]
    bs = cfg.vft.batch_size
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    pad = lm.tokenizer.pad_token_id or 0
    batches = [[pairs[i] for i in batch_indices(len(pairs), bs, s, 0)] for s in range(reps + 1)]
    state = {"i": 0}

    def vft(buckets):
        def f():
            batch = batches[state["i"] % len(batches)]
            state["i"] += 1
            opt.zero_grad(set_to_none=True)
            nll_backward(model, batch, pad, buckets)
            opt.step()
        return f

    from aftlab.train.vft import default_buckets
    n_default = default_buckets(bs)
    arms = {"vft_1bucket": vft(1), "vft_2buckets": vft(2)}
    if n_default > 2:
        arms["vft_default_buckets"] = vft(n_default)
    t = interleaved(arms, reps=reps)
    tokens = sum(len(p) + len(c) for b in batches for p, c in b) / len(batches)
    heads = sum(len(c) + 1 for b in batches for _, c in b) / len(batches)
    from bench_train import _aft, _groups
    groups = _groups(train, cfg.align.questions_per_step, 4, 4)
    aft_step, _, aft_tokens = _aft(lm, groups)
    aft_heads = sum(len(lm.cot_ids(c)) + 1 for g in groups for c in g["pos"] + g["neg"])
    t.update(interleaved({"aft_step": aft_step}, reps=reps))
    vft_flops, aft_flops = train_flops(model, tokens, heads), train_flops(model, aft_tokens, aft_heads)
    mfu = {k: (aft_flops if k == "aft_step" else vft_flops) / v / peak for k, v in t.items()}
    return {"preset": preset, "threads": torch.get_num_threads(), "matmul_gflops": peak / 1e9, "params": params,
            "vft_batch": bs, "vft_tokens_per_step": tokens, "aft_tokens_per_step": aft_tokens,
            "vft_gflop_per_step": vft_flops / 1e9, "aft_gflop_per_step": aft_flops / 1e9,
            "s_per_step": t, "mfu": mfu, "vft_bucket_speedup": t["vft_1bucket"] / t["vft_2buckets"],
            "vft_default_buckets": n_default,
            "vft_default_vs_2buckets": t["vft_2buckets"] / t.get("vft_default_buckets", t["vft_2buckets"])}


def main(argv=None):
    cli_main(run, __doc__, argv, with_k=False)


if __name__ == "__main__":
    main()
