"""The speed-ups give the same numbers: prefix-shared scoring, length-bucketed VFT steps, thread helper."""
import torch

from aftlab.model.runtime import auto_threads, threads
from aftlab.model.scoring import score, score_grouped
from aftlab.train.vft import nll_backward


def _groups(lm, train):
    """Six questions with 1-4 COTs each, of mixed lengths (one COT a single token)."""
    prompts = [lm.prompt_ids(e.question) for e in train[:6]]
    groups = [[lm.cot_ids(train[(3 * b + j) % len(train)].solution if j % 2 else "#### 3") for j in range(1 + b % 4)]
              for b in range(6)]
    groups[0].append([lm.tokenizer.eos_token_id])
    return prompts, groups


def test_prefix_shared_scores_equal_full_scoring(tiny, small_task):
    train, _ = small_task
    prompts, groups = _groups(tiny, train)
    shared, shared_tok = score_grouped(tiny, prompts, groups, batch_tokens=60)  # several batches
    full, full_tok = score(tiny, [p for p, g in zip(prompts, groups) for _ in g], [c for g in groups for c in g])
    assert torch.allclose(torch.cat(shared), full, atol=1e-4)
    for a, b in zip([t for g in shared_tok for t in g], full_tok):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-4)


def test_prefix_shared_scores_equal_with_lora(tiny, small_task):
    from aftlab.model.lm import add_lora
    train, _ = small_task
    lm = add_lora(tiny, r=4, alpha=8)
    prompts, groups = _groups(lm, train)
    shared, _ = score_grouped(lm, prompts, groups)
    full, _ = score(lm, [p for p, g in zip(prompts, groups) for _ in g], [c for g in groups for c in g])
    assert torch.allclose(torch.cat(shared), full, atol=1e-4)


def test_length_bucketed_vft_gradient_equals_one_batch(tiny, small_task):
    train, _ = small_task
    pairs = [(tiny.prompt_ids(e.question), tiny.cot_ids(e.solution)) for e in train[:64]]
    tiny.model.train()
    grads = []
    for buckets in (1, 3, None):  # None: the default, 4 buckets for 64 pairs
        tiny.model.zero_grad()
        loss = nll_backward(tiny.model, pairs, tiny.tokenizer.pad_token_id, buckets)
        grads.append((loss, [p.grad.clone() for p in tiny.model.parameters()]))
    (l1, g1), *others = grads
    for loss, g in others:
        assert abs(l1.item() - loss.item()) < 1e-5
        assert all(torch.allclose(a, b, atol=1e-5, rtol=1e-4) for a, b in zip(g1, g))


def test_thread_helper_restores_and_respects_load():
    before = torch.get_num_threads()
    with threads(1) as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    assert auto_threads(cores=2, busy=3.0) == 1 and auto_threads(cores=4, busy=0.0) == 4


def test_auto_threads_ignores_a_load_average_that_remembers_finished_work(monkeypatch):
    """A fresh `make demo` runs right after pip: the 1-minute load is high, the CPU idle. Two idle
    /proc/stat snapshots must give every core, whatever the load average says."""
    import aftlab.model.runtime as rt
    snaps = iter(["cpu 1000 0 500 8000 10 0 0 0 0 0\n", "cpu 1001 0 501 8198 10 0 0 0 0 0\n"])
    monkeypatch.setattr(rt, "open", lambda *_: __import__("io").StringIO(next(snaps)), raising=False)
    monkeypatch.setattr(rt.os, "getloadavg", lambda: (3.5, 2.0, 1.0))
    monkeypatch.setattr(rt.os, "cpu_count", lambda: 2)
    assert rt.auto_threads(cores=2) == 2


def test_auto_threads_leaves_the_cores_a_running_process_keeps_busy():
    import subprocess
    import sys

    from aftlab.model.runtime import busy_cores, usable_cores
    cores = usable_cores()
    spin = "import time\nt = time.time()\nwhile time.time() - t < 20: pass"
    hogs = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(cores)]
    try:
        busy = busy_cores(window=0.5)
        assert busy > cores - 0.6, busy  # every core held by a spinning process
        assert auto_threads(cores=cores, busy=busy) == 1
    finally:
        for h in hogs:
            h.kill()
            h.wait()


def test_prefix_shared_aft_step_gives_the_same_loss_and_gradient(tiny, small_task):
    from aftlab.align.aft import _matrix, align_loss, pack, step_logprobs
    from aftlab.config import AlignConfig
    from aftlab.model.scoring import normalised
    from aftlab.train.losses import nll_loss
    train, _ = small_task
    groups = [{"question": e.question, "pos": [e.solution], "neg": [train[i + 1].solution, "#### 3"],
               "levels": [1.0, 0.0, 0.0]} for i, e in enumerate(train[:5])]
    batch, _ = pack(tiny, groups, max_cots=16)
    cfg = AlignConfig(method="aft_bc", constraint="boundary", gamma=10.0)
    tiny.model.train()
    out = []
    for share in (False, True):
        tiny.model.zero_grad()
        lp, mask = step_logprobs(tiny.model, batch, tiny.tokenizer.pad_token_id, share)
        s, pos, neg, lev = _matrix(batch, normalised(lp, mask))
        loss = nll_loss(lp[pos[pos | neg]], mask[pos[pos | neg]]) + align_loss(cfg, s, None, None, pos, neg, lev)
        loss.backward()
        out.append((loss.item(), [p.grad.clone() for p in tiny.model.parameters()]))
    (l_full, g_full), (l_shared, g_shared) = out
    assert abs(l_full - l_shared) < 1e-5
    assert all(torch.allclose(a, b, atol=1e-5, rtol=1e-4) for a, b in zip(g_full, g_shared))
    assert any(g.abs().sum() > 0 for g in g_shared)


def _tokenize_both(lm, questions, cots):
    return ((lm.prompt_ids_batch(questions), lm.cot_ids_batch(cots)),
            ([lm.prompt_ids(q) for q in questions], [lm.cot_ids(c) for c in cots]))


def test_batched_tokenization_equals_one_at_a_time(tiny, small_task):
    train, _ = small_task
    long_q = " ".join(e.question for e in train[:6])  # over max_prompt_tokens: truncated from the left
    questions = [e.question for e in train[:20]] + [long_q, "", "Tom  has\t3 ½ apples.\n  How many?"]
    cots = [e.solution for e in train[:20]] + ["", "  7 + 5 = 12.  ", "words the vocab lacks #### 3",
                                               "a\tb  c\n\n7+5=12.#### 3", "½ é x\u0301y \u00a0 12\u200b3 —"]
    batched, single = _tokenize_both(tiny, questions, cots)
    assert len(single[0][-3]) == tiny.max_prompt_tokens  # the truncation is exercised
    assert batched == single
    assert tiny.prompt_ids_batch([]) == [] and tiny.cot_ids_batch([]) == []


def test_batched_tokenization_equals_one_at_a_time_for_a_chat_model(small_task):
    import pytest

    from aftlab.app.ranker import smol_available
    from aftlab.model.smol import INSTALL_HINT
    if not smol_available():
        pytest.skip(f"the smol weights are not installed: {INSTALL_HINT}")
    from transformers import AutoTokenizer

    from aftlab.model.lm import LM
    from aftlab.model.smol import smol_path
    lm = LM(torch.nn.Linear(1, 1), AutoTokenizer.from_pretrained(smol_path()), chat=True, max_prompt_tokens=160)
    train, _ = small_task
    batched, single = _tokenize_both(lm, [e.question for e in train[:5]], [e.solution for e in train[:5]] + [""])
    assert batched == single


def test_word_tokenizer_vocabulary_is_the_words_of_each_text(small_task):
    """The vocabulary, collected from the distinct space-separated pieces, equals the one collected text
    by text with the pre-tokenizer (plus the numbers, the fixed symbols and the specials)."""
    from tokenizers import pre_tokenizers

    from aftlab.model.lm import SPECIALS, build_word_tokenizer
    train, _ = small_task
    texts = [e.question + " " + e.solution for e in train] + ["a\tb  c\n\n7+5=12.#### 3", "½ é x\u0301y \u00a0 12\u200b3 —"]
    splitter, words = pre_tokenizers.Whitespace(), set()
    for t in texts:
        words.update(w for w, _ in splitter.pre_tokenize_str(t))
    fixed = {str(i) for i in range(21)} | {"####", "=", ".", "+", "-", "*", "/", "Question", "Answer", ":", "?"}
    assert set(build_word_tokenizer(texts, max_number=20).get_vocab()) == words | fixed | set(SPECIALS)


def test_auto_autocast_follows_the_measured_bf16_speed(monkeypatch):
    """``model.autocast="auto"``: bf16 where this device's bf16 matmuls measure faster, else fp32 — the
    forward then runs in that precision, and the run's choice is what the measurement says."""
    import aftlab.model.runtime as rt
    from aftlab.model.lm import autocast_context
    x = torch.randn(8, 64)
    w = torch.nn.Linear(64, 64)
    for speedup, dtype in ((2.2, torch.bfloat16), (0.08, torch.float32)):
        monkeypatch.setattr(rt, "bf16_speedup", lambda device_type="cpu", s=speedup: s)
        with autocast_context("auto", torch.device("cpu")):
            assert w(x).dtype == dtype
    monkeypatch.undo()
    measured = rt.bf16_speedup("cpu")
    assert measured > 0 and rt.resolve_autocast("auto", "cpu") == ("bfloat16" if measured >= rt.BF16_GAIN else "off")


def test_measuring_auto_autocast_leaves_the_global_generator_alone():
    """The bf16 speed check behind ``autocast="auto"`` runs at the first forward, which can come after a seed
    was set (``sampling.generate`` seeds, then enters the model's precision): it must not draw from the
    global generator, or the first call's COTs would differ from the same call's later in the process."""
    import aftlab.model.runtime as rt
    rt.bf16_speedup.cache_clear()  # measure now, even if an earlier test measured already
    torch.manual_seed(3)
    before = torch.get_rng_state()
    assert rt.bf16_speedup("cpu") > 0
    assert torch.equal(torch.get_rng_state(), before)
