"""Sampling k COTs per question: batched ``sampling.generate`` (k rows per prompt, KV cache) vs one at a time.

The naive arm calls ``generate`` for one question and one sample per call; ``unshared`` is the batched
call before prompt sharing (the prompt run k times, ``share_prompt=False``); ``dynamic`` the batched call
with transformers' ``DynamicCache``, which concatenates the whole cache at every token
(``grow_cache=False``); ``greedy`` is evaluation's greedy pass (``evaluate.greedy``, one batch of
``evaluate.GREEDY_BATCH`` = 512 questions on tiny). On smol, after those arms, the model gets the preset's
LoRA adapters and greedy decoding runs with them as PEFT wraps them vs folded into the weights
(``model.lora_merged``, as ``evaluate`` and ``sample_cots`` run; same COTs, tested), and, under the preset's
autocast, with the linear weights cast to bf16 once per call vs at every token (``generate(cast_once=...)``,
``model.linears_cast``; the same COTs bit for bit, tested; 1.0 where "auto" chose fp32). From the rates:
projected seconds for the goals (k = 8 for 3,000 training questions, greedy on 5,000 held-out questions).
Both arms sample at T = 0.8 up to ``max_new_tokens``; the table reports COTs/s and the ratio. An untrained ``tiny``
model rarely emits EOS, so both arms generate the full ``max_new_tokens`` per COT (a fair, fixed
workload); the naive arm runs on the first questions only, its rate is what is compared. With ``--model``
a trained checkpoint samples instead (the demo's ``runs/demo/vft``; ``make bench`` passes it where it exists):
its COTs end where the model ends them, so the projections are those of the real workload.

    python benchmarks/bench_sampling.py --preset tiny
    python benchmarks/bench_sampling.py --preset tiny --model runs/demo/vft
"""
from __future__ import annotations

import torch
from common import bench_config, cli_main, interleaved, load


def run(preset: str = "tiny", device: str = "cpu", k: int = 8, n_questions: int | None = None,
        max_new_tokens: int = 48, reps: int = 3, model: str | None = None) -> dict:
    from aftlab.sampling.samples import generate
    lm, train, _ = load(preset, device)
    if model:  # a trained checkpoint (e.g. runs/demo/vft): COTs end where the model ends them
        from aftlab.model.lm import load_lm_from_config
        lm = load_lm_from_config(bench_config(preset, device).model, model)
    n_questions = n_questions or (64 if preset == "tiny" else 2)  # tiny: one batch of sample.batch_questions
    qs = [e.question for e in train[:n_questions]]
    n_naive = max(1, k // 2) if preset == "tiny" else 2  # naive COTs timed per rep (its rate is what counts)

    last = {}  # the batched arm's COTs (the same every call: seed 0), to report how many ended

    def batched():
        last["cots"] = generate(lm, qs, k=k, temperature=0.8, max_new_tokens=max_new_tokens, seed=0)
        return last["cots"]

    def dynamic():
        return generate(lm, qs, k=k, temperature=0.8, max_new_tokens=max_new_tokens, seed=0, grow_cache=False)

    def unshared():
        return generate(lm, qs, k=k, temperature=0.8, max_new_tokens=max_new_tokens, seed=0, share_prompt=False)

    n_greedy = 512 if preset == "tiny" else 8
    greedy_qs = [e for e in train[:n_greedy]]

    def greedy():
        from aftlab.eval.evaluate import greedy as eval_greedy
        return eval_greedy(lm, greedy_qs, max_new_tokens)

    def naive():
        return [generate(lm, [qs[j % len(qs)]], k=1, temperature=0.8, max_new_tokens=max_new_tokens, seed=j)
                for j in range(n_naive)]

    t = interleaved({"naive": naive, "unshared": unshared, "dynamic": dynamic, "batched": batched, "greedy": greedy},
                    reps=reps)
    ended = [done for row in last["cots"] for _, done in row]
    rate = {"naive": n_naive / t["naive"], "unshared": n_questions * k / t["unshared"],
            "dynamic": n_questions * k / t["dynamic"],
            "batched": n_questions * k / t["batched"], "greedy": n_greedy / t["greedy"]}
    out = {}
    if preset == "smol":  # last: add_lora wraps the model in place
        from aftlab.config import preset as preset_cfg
        from aftlab.model.lm import add_lora, lora_merged
        mcfg = preset_cfg("smol").model
        lm = add_lora(lm, mcfg.lora_r, mcfg.lora_alpha)

        def greedy_merged():
            with lora_merged(lm.model):
                return greedy()
        tl = interleaved({"greedy_lora": greedy, "greedy_lora_merged": greedy_merged}, reps=reps)
        out = {"lora_seconds": tl, "lora_merged_vs_unmerged_greedy": tl["greedy_lora"] / tl["greedy_lora_merged"]}
        # the preset's autocast ("auto": bf16 where it pays): weights cast once per call vs at every token
        from aftlab.model.runtime import resolve_autocast
        lm.autocast = mcfg.autocast
        greedy_q = [e.question for e in greedy_qs]

        def decode(once):
            with lora_merged(lm.model):
                return generate(lm, greedy_q, max_new_tokens=max_new_tokens, cast_once=once)
        tc = interleaved({"per_token": lambda: decode(False), "once": lambda: decode(True)}, reps=reps)
        out |= {"autocast": resolve_autocast(lm.autocast, lm.device.type), "cast_seconds": tc,
                "cast_once_vs_per_token_greedy": tc["per_token"] / tc["once"]}
    return out | {"preset": preset, "k": k, "n_questions": n_questions, "max_new_tokens": max_new_tokens,
            "threads": torch.get_num_threads(), "seconds": t, "cots_per_s": rate,
            "batched_vs_naive": rate["batched"] / rate["naive"], "shared_vs_unshared": rate["batched"] / rate["unshared"],
            "grown_vs_dynamic_cache": rate["batched"] / rate["dynamic"],
            "model": model or "untrained", "share_ended": sum(ended) / len(ended),
            "projected_s": {"sample_3000q_k8": 3000 * k / rate["batched"], "greedy_5000q": 5000 / rate["greedy"]}}


def main(argv=None):
    cli_main(run, __doc__, argv, options={"model": "a trained checkpoint folder (e.g. runs/demo/vft) instead of "
                                                   "the preset's untrained model"})


if __name__ == "__main__":
    main()
