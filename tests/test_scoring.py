import torch

from aftlab.model.scoring import score, token_logprobs


def naive_score(model, prompt, cot):
    """Score one sequence the obvious way: full forward, log_softmax, mean over COT tokens."""
    ids = torch.tensor([prompt + cot])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)  # (T, V)
    idx = range(len(prompt) - 1, len(prompt) + len(cot) - 1)
    lps = torch.stack([logp[t, ids[0, t + 1]] for t in idx])
    return lps.mean().item(), lps


def test_batched_scores_equal_naive_per_sequence(tiny, small_task):
    train, _ = small_task
    tiny.model.eval()
    prompts = [tiny.prompt_ids(e.question) for e in train[:12]]
    cots = [tiny.cot_ids(e.solution if i % 2 else e.solution.split(".")[0]) for i, e in enumerate(train[:12])]
    scores, per_token = score(tiny, prompts, cots, batch_tokens=300)  # several batches of mixed lengths
    for i in range(12):
        s, lps = naive_score(tiny.model, prompts[i], cots[i])
        assert abs(scores[i].item() - s) < 1e-4
        assert torch.allclose(per_token[i], lps, atol=1e-4)


def test_scores_do_not_depend_on_batch_company(tiny, small_task):
    train, _ = small_task
    prompts = [tiny.prompt_ids(e.question) for e in train[:6]]
    cots = [tiny.cot_ids(e.solution) for e in train[:6]]
    together, _ = score(tiny, prompts, cots)
    alone = torch.stack([score(tiny, [p], [c])[0][0] for p, c in zip(prompts, cots)])
    assert torch.allclose(together, alone, atol=1e-5)


def test_token_logprobs_are_differentiable_and_masked(tiny, small_task):
    train, _ = small_task
    lp, mask = token_logprobs(tiny.model, [tiny.prompt_ids(train[0].question)] * 2,
                              [tiny.cot_ids("1 + 1 = 2. #### 2"), tiny.cot_ids("#### 2")])
    assert mask.sum(1).tolist() == [9, 3]
    assert (lp[~mask] == 0).all()
    lp.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in tiny.model.parameters())
