"""The faster core computes what the plain path computes: the fused log-prob head (values and gradients,
full and LoRA), and the opt-in bf16 autocast within its stated tolerance."""
import pytest
import torch

from aftlab.model.head import taken_logprobs
from aftlab.model.scoring import grouped_token_logprobs, token_logprobs

ATOL = 1e-5  # fp32 rounding of a differently ordered softmax/matmul; a wrong token or term is >1e-2


def _batch(lm, train, n=6):
    """Prompts and COTs of mixed lengths (one COT a single EOS token), grouped 1-4 per question."""
    prompts = [lm.prompt_ids(e.question) for e in train[:n]]
    groups = [[lm.cot_ids(train[(3 * b + j) % len(train)].solution if j % 2 else "#### 3") for j in range(1 + b % 4)]
              for b in range(n)]
    groups[0].append([lm.tokenizer.eos_token_id])
    return prompts, groups


def _loss_and_grads(lm, fn):
    """A loss that weights every token differently (so a misplaced log-prob shows), and its gradients."""
    lm.model.zero_grad()
    lp, mask = fn()
    weights = torch.linspace(0.5, 1.5, lp.numel()).view_as(lp)
    loss = (lp * weights * mask).sum() / mask.sum()
    loss.backward()
    return lp.detach(), loss.item(), {n: p.grad.clone() for n, p in lm.model.named_parameters() if p.grad is not None}


def _assert_same(a, b, atol=ATOL):
    (lp_a, loss_a, g_a), (lp_b, loss_b, g_b) = a, b
    assert torch.allclose(lp_a, lp_b, atol=atol), (lp_a - lp_b).abs().max()
    assert abs(loss_a - loss_b) < atol
    assert g_a.keys() == g_b.keys() and g_a
    for n in g_a:
        assert torch.allclose(g_a[n], g_b[n], atol=atol, rtol=1e-4), (n, (g_a[n] - g_b[n]).abs().max())


def test_fused_head_equals_log_softmax_gather_with_gradients():
    torch.manual_seed(0)
    h = torch.randn(300, 16, dtype=torch.float64, requires_grad=True)
    w = torch.randn(50, 16, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 50, (300,))
    g = torch.randn(300, dtype=torch.float64)
    import aftlab.model.head as head
    old, head.CHUNK_ELEMENTS = head.CHUNK_ELEMENTS, 50 * 7  # several chunks, the last one short
    try:
        (taken_logprobs(h, w, t).double() * g).sum().backward()
    finally:
        head.CHUNK_ELEMENTS = old
    fused = (h.grad.clone(), w.grad.clone())
    h.grad = w.grad = None
    (torch.log_softmax(h @ w.T, -1).gather(-1, t[:, None])[:, 0] * g).sum().backward()
    assert torch.allclose(fused[0], h.grad, atol=1e-5) and torch.allclose(fused[1], w.grad, atol=1e-5)


def test_fused_scoring_gives_the_plain_log_probs_and_gradients(tiny, small_task):
    train, _ = small_task
    prompts, groups = _batch(tiny, train)
    flat_p = [p for p, g in zip(prompts, groups) for _ in g]
    flat_c = [c for g in groups for c in g]
    pad = tiny.tokenizer.pad_token_id
    tiny.model.train()
    for fn in (lambda fused: token_logprobs(tiny.model, flat_p, flat_c, pad, fused=fused),
               lambda fused: grouped_token_logprobs(tiny.model, prompts, groups, pad, fused=fused)):
        _assert_same(_loss_and_grads(tiny, lambda: fn(True)), _loss_and_grads(tiny, lambda: fn(False)))


def test_fused_scoring_with_lora_frozen_head(tiny, small_task):
    """LoRA freezes the tied head: the fused head forms its input gradient in the forward."""
    from aftlab.model.lm import add_lora
    train, _ = small_task
    lm = add_lora(tiny, r=4, alpha=8)
    with torch.no_grad():  # LoRA's B starts at zero; make the adapters matter
        for n, p in lm.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    prompts, groups = _batch(lm, train)
    pad = lm.tokenizer.pad_token_id
    lm.model.train()
    fused = _loss_and_grads(lm, lambda: grouped_token_logprobs(lm.model, prompts, groups, pad, fused=True))
    plain = _loss_and_grads(lm, lambda: grouped_token_logprobs(lm.model, prompts, groups, pad, fused=False))
    _assert_same(fused, plain)
    assert all("lora_" in n for n in fused[2])


def test_fused_scores_without_gradients(tiny, small_task):
    from aftlab.model.scoring import score
    train, _ = small_task
    prompts, groups = _batch(tiny, train)
    flat_p = [p for p, g in zip(prompts, groups) for _ in g]
    flat_c = [c for g in groups for c in g]
    with torch.inference_mode():
        plain, mask = token_logprobs(tiny.model, flat_p, flat_c, tiny.tokenizer.pad_token_id, fused=False)
    s, per_token = score(tiny, flat_p, flat_c)
    assert torch.allclose(torch.cat(per_token), plain[mask], atol=ATOL)


BF16_RTOL = 2e-2  # bf16 keeps 8 mantissa bits (rel. 4e-3 per rounding); sums of ~100 of them stay within 2e-2


def test_bf16_autocast_keeps_loss_scores_and_gradient_direction(tiny, small_task):
    """Opt-in ``model.autocast="bfloat16"``: fp32 master weights, the same loss and scores within
    BF16_RTOL, gradients pointing the same way (cosine > 0.99)."""
    from aftlab.model.scoring import score
    train, _ = small_task
    prompts, groups = _batch(tiny, train)
    pad = tiny.tokenizer.pad_token_id
    tiny.model.train()
    fp32 = _loss_and_grads(tiny, lambda: grouped_token_logprobs(tiny.model, prompts, groups, pad))
    tiny.autocast = "bfloat16"
    with tiny.precision():
        bf16 = _loss_and_grads(tiny, lambda: grouped_token_logprobs(tiny.model, prompts, groups, pad))
    assert all(p.dtype == torch.float32 for p in tiny.model.parameters())
    assert bf16[0].dtype == torch.float32
    assert abs(bf16[1] - fp32[1]) <= BF16_RTOL * abs(fp32[1])
    flat = lambda g: torch.cat([x.flatten() for x in g.values()])  # noqa: E731
    assert torch.nn.functional.cosine_similarity(flat(bf16[2]), flat(fp32[2]), dim=0) > 0.99
    flat_p = [p for p, g in zip(prompts, groups) for _ in g]
    flat_c = [c for g in groups for c in g]
    s_bf16 = score(tiny, flat_p, flat_c)[0]
    tiny.autocast = "off"
    s_fp32 = score(tiny, flat_p, flat_c)[0]
    assert not torch.equal(s_bf16, s_fp32)  # autocast did run
    assert torch.allclose(s_bf16, s_fp32, rtol=BF16_RTOL, atol=1e-3), (s_bf16 - s_fp32).abs().max()


def test_shared_prompt_sampling_draws_the_same_cots(tiny, small_task):
    """k samples per question from one prefilled prompt cache: the same COTs for the seed as k full prompts."""
    from aftlab.sampling.samples import generate
    _, test = small_task
    qs = [e.question for e in test[:6]]
    shared = generate(tiny, qs, k=4, temperature=0.8, max_new_tokens=12, seed=3, share_prompt=True)
    full = generate(tiny, qs, k=4, temperature=0.8, max_new_tokens=12, seed=3, share_prompt=False)
    assert shared == full
    assert len({t for row in full for t, _ in row}) > 6  # really sampled, not one repeated text


def test_growing_cache_returns_what_a_dynamic_cache_returns():
    """Keys/values after a prefill, a batch repeat and single-token steps: the buffer's views equal the
    concatenated tensors of transformers' DynamicCache, and the buffer is reallocated only when needed."""
    from transformers import DynamicCache

    from aftlab.model.lm import growing_cache
    g, d = growing_cache(reserve=3), DynamicCache()
    torch.manual_seed(0)
    steps = [torch.randn(2, 2, 5, 4)] + [torch.randn(4, 2, 1, 4) for _ in range(5)]  # 5 steps > reserve 3
    for i, x in enumerate(steps):
        if i == 1:
            g.batch_repeat_interleave(2), d.batch_repeat_interleave(2)
        kg, vg = g.update(x, -x, 0)
        kd, vd = d.update(x, -x, 0)
        assert torch.equal(kg, kd) and torch.equal(vg, vd)
    assert g.get_seq_length() == d.get_seq_length() == 10
    layer = g.layers[0]
    assert layer.keys.data_ptr() == layer.key_buffer.data_ptr()  # a view, not a copy


@pytest.mark.parametrize("k,temperature", [(1, 0.0), (4, 0.8)])
def test_growing_cache_generates_the_same_tokens(tiny, small_task, k, temperature):
    from aftlab.sampling.samples import generate
    _, test = small_task
    qs = [e.question for e in test[:6]]
    grown = generate(tiny, qs, k=k, temperature=temperature, max_new_tokens=12, seed=5)
    plain = generate(tiny, qs, k=k, temperature=temperature, max_new_tokens=12, seed=5, grow_cache=False)
    assert grown == plain


def test_fused_scoring_with_an_untied_output_layer(small_task):
    """``model.tie_embeddings=false``: the fused head's gradients reach the separate output layer."""
    from aftlab.model.lm import tiny_lm
    train, test = small_task
    lm = tiny_lm([e.question + " " + e.solution for e in train + test], hidden=32, layers=1, heads=2, ffn=64,
                 tie_embeddings=False)
    prompts, groups = _batch(lm, train)
    lm.model.train()
    fn = lambda fused: grouped_token_logprobs(lm.model, prompts, groups, lm.tokenizer.pad_token_id, fused=fused)  # noqa: E731
    fused, plain = _loss_and_grads(lm, lambda: fn(True)), _loss_and_grads(lm, lambda: fn(False))
    assert "lm_head.weight" in fused[2]
    _assert_same(fused, plain)


def _lora_tiny(small_task, tie: bool = True, adapters_matter: bool = True):
    """A small ``tiny`` LM with LoRA adapters (r = 4); ``adapters_matter``: their B matrices drawn non-zero
    (LoRA starts B at zero, which would make the adapters invisible)."""
    from aftlab.model.lm import add_lora, tiny_lm
    train, test = small_task
    lm = add_lora(tiny_lm([e.question + " " + e.solution for e in train + test], hidden=32, layers=1, heads=2,
                          ffn=64, tie_embeddings=tie), r=4, alpha=8)
    if adapters_matter:
        with torch.no_grad():
            for n, p in lm.model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.2)
    return lm


def test_lora_merged_inference_gives_the_adapters_outputs_and_restores_the_weights_bit_for_bit(small_task):
    """``model.lora_merged``: greedy COTs, samples and scores equal the unmerged LoRA model's (scores to
    float rounding), the base weights come back exactly, and a nested use is a no-op."""
    from aftlab.eval.evaluate import rescore
    from aftlab.model.lm import lora_merged
    from aftlab.sampling.samples import generate, sample_cots
    _, test = small_task
    lm = _lora_tiny(small_task)
    before = {n: p.detach().clone() for n, p in lm.model.named_parameters()}
    keys, modules = list(lm.model.state_dict()), [n for n, _ in lm.model.named_modules()]
    qs = [e.question for e in test[:6]]
    records = sample_cots(lm, test[:6], k=3, temperature=1.0, max_new_tokens=12, progress=False)
    plain = (generate(lm, qs, max_new_tokens=12), generate(lm, qs, k=3, temperature=1.0, max_new_tokens=12, seed=3),
             rescore(lm, records))
    from peft.tuners.lora import LoraLayer
    with lora_merged(lm.model):
        layers = [m for m in lm.model.modules() if isinstance(m, LoraLayer)]
        assert layers and all(m.merged for m in layers)
        with lora_merged(lm.model):  # nested: nothing more to merge
            merged = (generate(lm, qs, max_new_tokens=12), generate(lm, qs, k=3, temperature=1.0, max_new_tokens=12,
                                                                     seed=3), rescore(lm, records))
        assert all(m.merged for m in layers)
    assert not any(m.merged for m in layers)
    assert merged[0] == plain[0] and merged[1] == plain[1]
    assert torch.allclose(torch.tensor(sum(merged[2], [])), torch.tensor(sum(plain[2], [])), atol=ATOL)
    for n, p in lm.model.named_parameters():
        assert torch.equal(p, before[n]), n
    assert list(lm.model.state_dict()) == keys and [n for n, _ in lm.model.named_modules()] == modules
    adapters_off = rescore(_lora_tiny(small_task, adapters_matter=False), records)
    assert not torch.allclose(torch.tensor(sum(adapters_off, [])), torch.tensor(sum(plain[2], [])), atol=1e-2)


def test_linears_cast_decodes_exactly_what_autocast_decodes_and_restores_the_parameters(small_task):
    """``model.linears_cast`` (generate under bf16 autocast with the linear weights cast once per call):
    the same greedy COTs and samples, bit for bit, as autocast casting them at every token, on a LoRA
    model with a tied head; the original parameter objects come back (the tie too), and fp32 decodes
    differently (so autocast did run)."""
    from aftlab.model.lm import linears_cast
    from aftlab.sampling.samples import generate
    _, test = small_task
    lm = _lora_tiny(small_task)
    params = dict(lm.model.named_parameters())
    head, emb = lm.model.get_output_embeddings(), lm.model.get_input_embeddings()
    assert head.weight is emb.weight
    with linears_cast(lm.model, "bfloat16"):
        assert head.weight.dtype == torch.bfloat16 and emb.weight.dtype == torch.float32
        assert {p.dtype for m in lm.model.modules() if isinstance(m, torch.nn.Linear) for p in m.parameters()} == {
            torch.bfloat16}
    assert dict(lm.model.named_parameters()) == params and head.weight is emb.weight
    assert all(p.dtype == torch.float32 for p in params.values())

    qs = [e.question for e in test[:6]]
    run = lambda once=True: (generate(lm, qs, max_new_tokens=12, cast_once=once),  # noqa: E731
                             generate(lm, qs, k=3, temperature=1.0, max_new_tokens=12, seed=3, cast_once=once))
    lm.autocast = "bfloat16"
    cast_once, cast_per_token = run(), run(once=False)
    lm.autocast = "off"
    fp32 = run()
    assert cast_once == cast_per_token
    assert cast_once != fp32
    assert dict(lm.model.named_parameters()) == params


@pytest.mark.parametrize("tie", [True, False])
def test_frozen_weights_cast_once_per_step_train_exactly_as_autocast_does(small_task, monkeypatch, tie):
    """``train.fit`` under bf16 autocast casts LoRA's frozen base weights once per step
    (``linears_cast(frozen_only=True)``), not at every forward: the same loss history and weights bit for
    bit as casting at every forward; the adapters and the output layer (tied or not) stay fp32."""
    import contextlib

    import aftlab.train.loop
    from aftlab.config import VFTConfig
    from aftlab.model.lm import linears_cast
    from aftlab.train.vft import train_vft
    train, _ = small_task

    def fresh():
        lm = _lora_tiny(small_task, tie=tie, adapters_matter=False)
        lm.autocast = "bfloat16"
        return lm
    lm = fresh()
    head = lm.model.get_output_embeddings()
    with linears_cast(lm.model, "bfloat16", frozen_only=True):
        dtypes = {n: p.dtype for n, p in lm.model.named_parameters()}
        assert {d for n, d in dtypes.items() if "base_layer" in n} == {torch.bfloat16}
        assert {d for n, d in dtypes.items() if "lora_" in n} == {torch.float32}
        assert head.weight.dtype == torch.float32
    cfg = VFTConfig(steps=3, batch_size=8, lr=1e-2, warmup=1, log_every=1, checkpoint_every=0)
    seen, real = [], aftlab.train.loop.linears_cast

    @contextlib.contextmanager
    def spy(model, autocast, frozen_only=False):  # the real cast, noting what a step's forward sees
        with real(model, autocast, frozen_only=frozen_only):
            seen.append(next(p.dtype for n, p in model.named_parameters() if "base_layer" in n))
            yield model
    monkeypatch.setattr(aftlab.train.loop, "linears_cast", spy)
    once = train_vft(lm, train[:40], cfg, progress=False)
    assert seen == [torch.bfloat16] * 3
    monkeypatch.setattr(aftlab.train.loop, "linears_cast", lambda *a, **k: contextlib.nullcontext())
    lm2 = fresh()
    per_forward = train_vft(lm2, train[:40], cfg, progress=False)
    assert [r["loss"] for r in once] == [r["loss"] for r in per_forward]
    after, after2 = dict(lm.model.named_parameters()), dict(lm2.model.named_parameters())
    assert all(p.dtype == torch.float32 for p in after.values())
    assert all(torch.equal(after[n], after2[n]) for n in after)
    assert any(not torch.equal(p, q) for (n, p), q in zip(fresh().model.named_parameters(), after.values())
               if "lora_" in n)  # the adapters did train
