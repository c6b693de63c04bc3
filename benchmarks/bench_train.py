"""One AFT (BC) training step vs one TRL ``DPOTrainer`` step on the same pairs: pairs/s and peak memory.

Each arm runs in its own subprocess (``--arm``) so its peak RSS (``getrusage``; on CUDA
``max_memory_allocated``) is its own; the parent alternates the arms ``reps`` times and takes
medians. Scenario ``pairs``: Q questions with one positive and one negative COT each, i.e. the same
Q (chosen, rejected) pairs and the same sequences for both. AFT runs one forward over the 2Q
COTs, each question once and its COTs from the KV cache (as ``align.train_align`` does), and needs
no reference model; TRL runs the policy on [chosen; rejected] and a frozen reference copy (its
default, ``precompute_ref_log_probs=False``; activation checkpointing off for speed; under LoRA,
as for ``smol``, TRL's own PEFT path: the base with adapters disabled is the reference, no copy).
Scenario ``groups`` (AFT only): k = 8 COTs per question (4 positive, 4 negative) give 16 pairs from 8
sequences, which a pairwise trainer would have to run as 32.

    python benchmarks/bench_train.py --preset tiny
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def _groups(train, n_questions: int, n_pos: int, n_neg: int):
    """COT groups per question: references of this and other questions stand in for pos/neg samples."""
    out = []
    for b, e in enumerate(train[:n_questions]):
        other = [train[(n_questions + b * 8 + j) % len(train)].solution for j in range(n_pos + n_neg)]
        pos = [e.solution] + other[:n_pos - 1]
        out.append({"id": e.id, "question": e.question, "pos": pos, "neg": other[n_pos - 1:n_pos - 1 + n_neg],
                    "levels": [3.0] * n_pos + [0.0] * n_neg})
    return out


def _memory(device) -> float:
    import torch
    from common import peak_rss_mb
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2 ** 20
    return peak_rss_mb()


def arm(name: str, preset: str, device: str, n_questions: int, steps: int) -> dict:
    """Run ``steps`` training steps of one arm in this process; seconds per step and memory."""
    import torch
    from common import load, set_bench_threads
    set_bench_threads()
    lm, train, _ = load(preset, device)
    if preset == "smol":
        from aftlab.model.lm import add_lora
        lm = add_lora(lm, 16, 32)
    model = lm.model
    dev = lm.device
    n_pos, n_neg = (4, 4) if name == "aft_groups" else (1, 1)
    groups = _groups(train, n_questions, n_pos, n_neg)
    if name.startswith("aft"):
        step, n_pairs, n_tokens = _aft(lm, groups)
    else:
        step, n_pairs, n_tokens = _dpo(lm, groups)
    step()  # warm-up (allocations, lazy init)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    before = _memory(dev)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    peak = _memory(dev)
    sec = statistics.median(times)
    return {"arm": name, "s_per_step": sec, "pairs_per_step": n_pairs, "tokens_per_step": n_tokens,
            "pairs_per_s": n_pairs / sec, "peak_mb": peak, "setup_mb": before,
            "params": sum(p.numel() for p in model.parameters()),
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}


def _aft(lm, groups, share_prefix: bool = True):
    """One AFT(BC) step as ``align.train_align`` runs it; returns (step, pairs, input tokens per step)."""
    import torch

    from aftlab.align.aft import _matrix, align_loss, pack, step_logprobs
    from aftlab.config import AlignConfig
    from aftlab.model.scoring import normalised
    from aftlab.train import losses
    cfg = AlignConfig(method="aft_bc", constraint="boundary")
    batch, _ = pack(lm, groups, 16)
    model, pad = lm.model, lm.tokenizer.pad_token_id or 0
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=0.0)
    model.train()

    def step():  # the body of align.train_align's loop
        lp, mask = step_logprobs(model, batch, pad, share_prefix)
        s, pos, neg, lev = _matrix(batch, normalised(lp, mask))
        pos_rows = pos[pos | neg]
        loss = cfg.nll_weight * losses.nll_loss(lp[pos_rows], mask[pos_rows]) + cfg.lam * align_loss(
            cfg, s, None, None, pos, neg, lev)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        opt.step()

    n_pairs = sum(p["n_pos"] * (len(p["cots"]) - p["n_pos"]) for p in batch)
    cot_tokens = sum(len(c) for p in batch for c in p["cots"])
    prompt_tokens = sum(len(p["prompt"]) * (1 if share_prefix else len(p["cots"])) for p in batch)
    return step, n_pairs, prompt_tokens + cot_tokens


def _dpo(lm, groups):
    import copy
    import tempfile

    import datasets
    import torch
    import trl
    prompts = [lm.tokenizer.decode(lm.prompt_ids(g["question"]), skip_special_tokens=False) for g in groups]
    data = datasets.Dataset.from_dict({"prompt": prompts, "chosen": [" " + g["pos"][0] for g in groups],
                                       "rejected": [" " + g["neg"][0] for g in groups]})
    args = trl.DPOConfig(output_dir=tempfile.mkdtemp(), beta=0.1, per_device_train_batch_size=len(groups),
                         report_to=[], use_cpu=lm.device.type == "cpu", save_strategy="no",
                         activation_checkpointing=False, learning_rate=1e-4, max_grad_norm=1.0)
    # LoRA (smol): TRL's own PEFT path, the frozen base with adapters disabled as the reference (no copy);
    # a full model gets the usual frozen copy.
    ref = None if hasattr(lm.model, "disable_adapter") else copy.deepcopy(lm.model).eval()
    trainer = trl.DPOTrainer(model=lm.model, ref_model=ref, args=args, train_dataset=data,
                             processing_class=lm.tokenizer)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(groups))])  # [chosen; rejected]
    batch = {k: v.to(lm.device) if hasattr(v, "to") else v for k, v in batch.items()}
    opt = trainer.create_optimizer()
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer's own loop, which we bypass to time one step

    def step():
        trainer.training_step(trainer.model, batch)  # policy + reference forward, loss, backward
        torch.nn.utils.clip_grad_norm_(trainer.model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step, len(groups), int(batch["attention_mask"].sum())


def run(preset: str = "tiny", device: str = "cpu", n_questions: int | None = None, reps: int = 3,
        steps: int = 3) -> dict:
    n_questions = n_questions or (16 if preset == "tiny" else 4)
    results: dict[str, list[dict]] = {"aft": [], "dpo": [], "aft_groups": []}
    for _ in range(reps):
        for name in results:
            cmd = [sys.executable, os.path.join(HERE, "bench_train.py"), "--arm", name, "--preset", preset,
                   "--device", device, "--questions", str(n_questions), "--steps", str(steps)]
            p = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE)
            line = [x for x in p.stdout.splitlines() if x.startswith("{")]
            if p.returncode != 0 or not line:
                if "Skip:" in p.stdout + p.stderr or "skipped" in p.stdout:
                    from common import Skip
                    raise Skip(p.stdout.strip().splitlines()[-1])
                raise RuntimeError(f"{name} arm failed:\n{p.stderr[-2000:]}")
            results[name].append(json.loads(line[-1]))
    med = {n: {k: (statistics.median(r[k] for r in rs) if isinstance(rs[0][k], float) else rs[0][k])
               for k in rs[0]} for n, rs in results.items()}
    a, d, g = med["aft"], med["dpo"], med["aft_groups"]
    return {"preset": preset, "questions_per_step": n_questions, "arms": med,
            "aft_vs_dpo_pairs_per_s": a["pairs_per_s"] / d["pairs_per_s"],
            "aft_groups_vs_dpo_pairs_per_s": g["pairs_per_s"] / d["pairs_per_s"],
            "aft_peak_mb_minus_dpo": a["peak_mb"] - d["peak_mb"],
            "aft_train_mb": a["peak_mb"] - a["setup_mb"], "dpo_train_mb": d["peak_mb"] - d["setup_mb"]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny", choices=["tiny", "smol"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--questions", type=int, default=None)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--arm", choices=["aft", "dpo", "aft_groups"], help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    sys.path.insert(0, HERE)
    from common import Skip
    try:
        if a.arm:
            print(json.dumps(arm(a.arm, a.preset, a.device, a.questions, a.steps)))
        else:
            print(json.dumps(run(a.preset, a.device, a.questions, a.reps, a.steps), indent=1))
    except Skip as e:
        print(f"skipped: Skip: {e}")


if __name__ == "__main__":
    main()
