"""Scoring k COTs per question: naive one-at-a-time loop vs ``scoring.score`` vs prefix-shared ``score_grouped``.

The naive loop runs one sequence per forward with a full ``log_softmax`` (the obvious way). All
three must agree to 1e-4; the table reports COT tokens scored per second and the ratios.

    python benchmarks/bench_scoring.py --preset tiny
"""
from __future__ import annotations

import torch
from common import cli_main, interleaved, load


def naive(model, prompts, cots):
    """Scores one sequence at a time: full forward over all positions, log_softmax, mean over COT tokens."""
    out = []
    with torch.inference_mode():
        for p, c in zip(prompts, cots):
            ids = torch.tensor([p + c], device=model.device)
            logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)  # (T, V)
            tgt = ids[0, len(p):]
            out.append(logp[len(p) - 1:-1].gather(-1, tgt[:, None])[:, 0].mean().item())
    return torch.tensor(out)


def workload(lm, train, n_questions: int, k: int):
    """n questions, each with k COTs of varied length (reference solutions of other questions)."""
    prompts = [lm.prompt_ids(e.question) for e in train[:n_questions]]
    groups = [[lm.cot_ids(train[(n_questions + b * k + j) % len(train)].solution) for j in range(k)]
              for b in range(n_questions)]
    return prompts, groups


def run(preset: str = "tiny", device: str = "cpu", k: int = 8, n_questions: int | None = None, reps: int = 3) -> dict:
    from aftlab.model.scoring import score, score_grouped
    lm, train, _ = load(preset, device)
    lm.model.eval()
    n_questions = n_questions or (24 if preset == "tiny" else 3)
    prompts, groups = workload(lm, train, n_questions, k)
    flat_p = [p for p, g in zip(prompts, groups) for _ in g]
    flat_c = [c for g in groups for c in g]
    s_naive = naive(lm.model, flat_p, flat_c)
    s_batch = score(lm, flat_p, flat_c)[0]
    s_group = torch.cat(score_grouped(lm, prompts, groups)[0])
    err = max((s_batch - s_naive).abs().max().item(), (s_group - s_naive).abs().max().item())
    t = interleaved({"naive": lambda: naive(lm.model, flat_p, flat_c),
                     "batched": lambda: score(lm, flat_p, flat_c),
                     "grouped": lambda: score_grouped(lm, prompts, groups)}, reps=reps)
    cot_tokens = sum(len(c) for c in flat_c)
    res = {"preset": preset, "k": k, "n_cots": len(flat_c), "cot_tokens": cot_tokens,
           "prompt_tokens_mean": sum(map(len, prompts)) / len(prompts), "cot_tokens_mean": cot_tokens / len(flat_c),
           "max_abs_diff": err, "equal_1e-4": err < 1e-4, "seconds": t,
           "tok_per_s": {v: cot_tokens / s for v, s in t.items()},
           "batched_vs_naive": t["naive"] / t["batched"], "grouped_vs_naive": t["naive"] / t["grouped"],
           "grouped_vs_batched": t["batched"] / t["grouped"]}
    return res


def main(argv=None):
    cli_main(run, __doc__, argv)


if __name__ == "__main__":
    main()
