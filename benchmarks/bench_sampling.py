"""Sampling k COTs per question: batched ``sampling.generate`` (k rows per prompt, KV cache) vs one at a time.

The naive arm calls ``generate`` for one question and one sample per call. Both arms sample at
T = 0.8 up to ``max_new_tokens``; the table reports COTs/s and the ratio. An untrained ``tiny``
model rarely emits EOS, so both arms generate the full ``max_new_tokens`` per COT (a fair, fixed
workload); the naive arm runs on the first questions only, its rate is what is compared.

    python benchmarks/bench_sampling.py --preset tiny
"""
from __future__ import annotations


from common import cli_main, interleaved, load


def run(preset: str = "tiny", device: str = "cpu", k: int = 8, n_questions: int | None = None,
        max_new_tokens: int = 48, reps: int = 3) -> dict:
    from aftlab.sampling import generate
    lm, train, _ = load(preset, device)
    n_questions = n_questions or (16 if preset == "tiny" else 2)
    qs = [e.question for e in train[:n_questions]]
    n_naive = max(1, k // 2) if preset == "tiny" else 2  # naive COTs timed per rep (its rate is what counts)

    def batched():
        return generate(lm, qs, k=k, temperature=0.8, max_new_tokens=max_new_tokens, seed=0)

    def naive():
        return [generate(lm, [qs[j % len(qs)]], k=1, temperature=0.8, max_new_tokens=max_new_tokens, seed=j)
                for j in range(n_naive)]

    t = interleaved({"naive": naive, "batched": batched}, reps=reps)
    rate = {"naive": n_naive / t["naive"], "batched": n_questions * k / t["batched"]}
    return {"preset": preset, "k": k, "n_questions": n_questions, "max_new_tokens": max_new_tokens,
            "seconds": t, "cots_per_s": rate, "batched_vs_naive": rate["batched"] / rate["naive"]}


def main(argv=None):
    cli_main(run, __doc__, argv)


if __name__ == "__main__":
    main()
