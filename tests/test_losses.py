"""Behaviour of aftlab.train.losses: values, gradients (what the constraints do), batching, peers' formulas."""
import doctest
import math

import pytest
import torch
import torch.nn.functional as F

from aftlab.train import losses
from aftlab.train.losses import aft_loss, aft_loss_batched, boundary, dpo_loss, nll_loss, pro_loss, rbc_loss, rrhf_loss

CONSTRAINTS = [None, "detach", "boundary"]
LN2 = math.log(2)


def grad_of(loss_fn, *xs):
    """Gradients of loss_fn(*xs) w.r.t. xs; zeros for inputs the loss does not depend on."""
    xs = [x.detach().clone().requires_grad_() for x in xs]
    return torch.autograd.grad(loss_fn(*xs), xs, allow_unused=True, materialize_grads=True)


def random_batch(seed, b=7, k=8, levels=4):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(b, k, generator=g, dtype=torch.float64)
    rewards = torch.randint(0, levels, (b, k), generator=g).double()
    mask = torch.rand(b, k, generator=g) < 0.8
    mask[0] = False                                                      # an empty question
    mask[1, 1:] = False                                                  # a single valid item
    rewards[2] = 1.0                                                     # all tied
    return scores, rewards, mask


def test_docstring_examples_run():
    assert doctest.testmod(losses).failed == 0


# ---- aft_loss: values -----------------------------------------------------------------------------

def test_aft_loss_hand_values():
    t = torch.tensor
    assert aft_loss(t([0.0]), t([0.0])).item() == pytest.approx(LN2)
    assert aft_loss(t([0.0, 0.0]), t([0.0])).item() == pytest.approx(math.log(3))
    assert aft_loss(t([1.0]), t([0.0, -1.0])).item() == pytest.approx(
        math.log(1 + math.exp(-1) + math.exp(-2)))
    # BC: B = -0.1, T = -0.2; both terms are exp(-0.1)
    assert aft_loss(t([0.0]), t([-0.1]), "boundary", 0.1).item() == pytest.approx(
        math.log(1 + 2 * math.exp(-0.1)))
    assert aft_loss(t([0.0]), t([0.0]), "detach").item() == pytest.approx(LN2)


@pytest.mark.parametrize("constraint", CONSTRAINTS)
def test_aft_loss_matches_naive_log_one_plus_sum_exp(constraint):
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        pos = torch.randn(int(torch.randint(1, 5, (1,), generator=g)), generator=g, dtype=torch.float64)
        neg = torch.randn(int(torch.randint(1, 6, (1,), generator=g)), generator=g, dtype=torch.float64)
        total = torch.exp(neg[None, :] - pos[:, None]).sum()
        if constraint == "boundary":
            t_p = 2 * (pos.min() - 0.3) - pos
            total = total + torch.exp(t_p[:, None] - neg[None, :]).sum()
        naive = torch.log(1 + total)
        assert aft_loss(pos, neg, constraint, 0.3).item() == pytest.approx(naive.item(), rel=1e-12)


def test_aft_loss_is_stable_for_extreme_scores():
    loss = aft_loss(torch.tensor([0.0]), torch.tensor([1000.0, -1000.0]), "boundary")
    assert loss.item() == pytest.approx(1000.0 + math.log(1 + math.exp(-0.2)), abs=1e-3)


def test_empty_groups_give_zero_with_a_graph():
    pos = torch.tensor([0.5], requires_grad=True)
    for c in CONSTRAINTS:
        loss = aft_loss(pos, torch.zeros(0), c)
        loss.backward()
        assert loss.item() == 0.0 and pos.grad.item() == 0.0
    s = torch.randn(2, 3, requires_grad=True)
    none = torch.zeros(2, 3, dtype=torch.bool)
    loss = aft_loss_batched(s, none, none | torch.tensor([[1, 1, 1], [0, 0, 0]]).bool())
    loss.backward()
    assert loss.item() == 0.0 and s.grad.abs().sum() == 0


def test_unknown_constraint_is_rejected():
    with pytest.raises(ValueError, match="constraint"):
        aft_loss(torch.zeros(1), torch.zeros(1), "bogus")


# ---- aft_loss: what each constraint does to the gradient -----------------------------------------

POS = torch.tensor([-0.5, -1.0, -0.8])                                  # min = -1.0, B = -1.1 at beta 0.1


def test_unconstrained_pushes_every_negative_down_and_never_stops():
    neg = torch.tensor([0.0, -1.0, -3.0, -50.0])
    g_pos, g_neg = grad_of(lambda p, n: aft_loss(p, n), POS, neg)
    assert (g_neg > 0).all()                                            # even at s_n = -50
    assert (g_pos < 0).all()


def test_detach_moves_only_positives():
    g_pos, g_neg = grad_of(lambda p, n: aft_loss(p, n, "detach"), POS, torch.tensor([0.0, -2.0]))
    assert (g_neg == 0).all() and (g_pos < 0).all()


def test_boundary_gradient_vanishes_at_b_pushes_down_above_and_up_below():
    b = boundary(POS, 0.1).item()
    assert b == pytest.approx(-1.1)
    neg = torch.tensor([b, b + 0.05, -0.2, b - 0.05, -10.0])
    _, g = grad_of(lambda p, n: aft_loss(p, n, "boundary", 0.1), POS, neg)
    assert g[0].item() == pytest.approx(0.0, abs=1e-6)
    assert (g[1:3] > 0).all() and (g[3:] < 0).all()


def test_truncate_pushes_negatives_above_the_boundary_and_leaves_the_rest_alone():
    from aftlab.train.losses import aft_loss_batched
    b = -1.0 - 0.1  # min(POS) - beta
    s = torch.tensor([[*POS.tolist(), -0.2, b + 0.01, b - 0.01, -30.0]], requires_grad=True)
    n_pos = len(POS)
    pos = torch.tensor([[True] * n_pos + [False] * 4])
    loss = aft_loss_batched(s, pos, ~pos, beta=0.1, truncate=True)
    loss.backward()
    g = s.grad[0, n_pos:]
    assert (g[:2] > 0).all() and (g[2:] == 0).all()  # above B: pushed down; below: no push, no pull-up
    assert (s.grad[0, :n_pos] < 0).all()
    s2 = torch.tensor([[*POS.tolist(), -20.0, -30.0]])  # every negative below B: nothing left to train
    p2 = torch.tensor([[True] * n_pos + [False] * 2])
    assert float(aft_loss_batched(s2, p2, ~p2, beta=0.1, truncate=True)) == 0.0


def _descend(constraint, free_pos, steps=500, lr=1.0):
    """SGD on scores s = -softplus(theta) <= 0 (log-prob-like) under aft_loss; returns final scores."""
    def inv(s):
        return torch.log(torch.expm1(-s))
    tp, tn = inv(POS).requires_grad_(free_pos), inv(torch.tensor([-0.8, -1.5, -3.0])).requires_grad_()
    opt = torch.optim.SGD([tp, tn] if free_pos else [tn], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        aft_loss(-F.softplus(tp), -F.softplus(tn), constraint, 0.1).backward()
        opt.step()
    return -F.softplus(tp).detach(), -F.softplus(tn).detach()


def test_descent_unconstrained_negatives_fall_but_boundary_holds_them():
    pos_a, neg_a = _descend(None, free_pos=True)
    pos_bc, neg_bc = _descend("boundary", free_pos=True)
    # unconstrained: the gap grows like log(steps) and never stops; negatives far below any boundary
    assert (neg_a < -5).all() and (neg_a < pos_a.min() - 4.0).all()
    # BC: positives rose (towards 0), negatives settled just below them, near the boundary
    assert (pos_bc > POS).all()
    assert (neg_bc > pos_bc.min() - 0.1 - 0.05).all() and (neg_bc < pos_bc.min()).all()
    # with positives held fixed, BC negatives converge to B from above and from below
    _, neg_fixed = _descend("boundary", free_pos=False)
    assert torch.allclose(neg_fixed, torch.full((3,), -1.1), atol=1e-4)


# ---- batching and ranking feedback ---------------------------------------------------------------

@pytest.mark.parametrize("constraint", CONSTRAINTS)
def test_batched_equals_mean_of_per_question(constraint):
    scores, rewards, mask = random_batch(1)
    pos, neg = mask & (rewards >= 2), mask & (rewards < 2)
    scores.requires_grad_()
    per_q = [aft_loss(scores[i][pos[i]], scores[i][neg[i]], constraint, 0.2)
             for i in range(len(scores)) if pos[i].any() and neg[i].any()]
    expected = torch.stack(per_q).mean()
    got = aft_loss_batched(scores, pos, neg, constraint, 0.2)
    assert got.item() == pytest.approx(expected.item(), rel=1e-12)
    g_exp, = torch.autograd.grad(expected, scores)
    g_got, = torch.autograd.grad(got, scores)
    assert torch.allclose(g_got, g_exp, atol=1e-12)


@pytest.mark.parametrize("constraint", CONSTRAINTS)
def test_rbc_with_two_levels_is_bc(constraint):
    scores, rewards, mask = random_batch(2)
    levels = (rewards >= 2).double() * 3.0 - 1.0                        # two levels: -1 and 2
    got = rbc_loss(scores, levels, mask, 0.2, constraint)
    ref = aft_loss_batched(scores, mask & (levels > 0), mask & (levels < 0), constraint, 0.2)
    assert got.item() == pytest.approx(ref.item(), rel=1e-12)


def test_rbc_matches_per_level_loop_and_ignores_order():
    scores, levels, mask = random_batch(3)
    per_q = []
    for s, lv, m in zip(scores, levels, mask):
        s, lv = s[m], lv[m]
        terms = []
        for level in lv.unique():
            pos, neg = s[lv == level], s[lv < level]
            if len(neg):
                b = s[lv >= level].min() - 0.1
                total = torch.exp(neg[None] - pos[:, None]).sum()
                total = total + torch.exp((2 * b - pos)[:, None] - neg[None]).sum()
                terms.append(torch.log(1 + total))
        if terms:
            per_q.append(sum(terms))
    assert rbc_loss(scores, levels, mask).item() == pytest.approx(torch.stack(per_q).mean().item())
    perm = torch.randperm(scores.shape[1], generator=torch.Generator().manual_seed(0))
    assert rbc_loss(scores[:, perm], levels[:, perm], mask[:, perm]).item() == pytest.approx(
        rbc_loss(scores, levels, mask).item())


@pytest.mark.parametrize("constraint", CONSTRAINTS)
def test_padded_slots_never_leak(constraint):
    scores, rewards, mask = random_batch(8)
    dirty = scores.masked_fill(~mask, float("nan"))
    calls = [lambda s: aft_loss_batched(s, mask & (rewards >= 2), mask & (rewards < 2), constraint),
             lambda s: rbc_loss(s, rewards, mask, 0.1, constraint),
             lambda s: rrhf_loss(s, rewards, mask, constraint),
             lambda s: pro_loss(s, rewards, mask, constraint)]
    for call in calls:
        (g,) = grad_of(call, dirty)
        assert call(dirty).item() == pytest.approx(call(scores).item()) and torch.isfinite(g).all()
        assert (g[~mask] == 0).all()


def test_boundary_helper_and_nll():
    pos = torch.tensor([-1.0, -0.5], requires_grad=True)
    assert not boundary(pos, 0.1).requires_grad
    assert boundary(torch.tensor([[0.0, -2.0], [1.0, 3.0]]), 0.5).tolist() == [-2.5, 0.5]
    assert torch.isnan(boundary(torch.zeros(0), 0.1))
    lp = torch.tensor([[-1.0, -3.0, float("-inf")], [-2.0, float("-inf"), float("-inf")]])
    assert nll_loss(lp, torch.tensor([[1, 1, 0], [1, 0, 0]])).item() == pytest.approx(2.0)


# ---- DPO -----------------------------------------------------------------------------------------

def test_dpo_is_ln2_at_the_reference_and_matches_trl_formula():
    g = torch.Generator().manual_seed(4)
    logps = torch.randn(4, 9, generator=g, dtype=torch.float64) * 50 - 100
    c, r, rc, rr = logps
    assert dpo_loss(c, r, c, r).item() == pytest.approx(LN2, abs=1e-12)
    for beta, scale in [(0.1, 1.0), (0.5, 20.0)]:                         # |beta*Delta| up to ~1e3
        delta = scale * ((c - rc) - (r - rr))
        trl_head = (-F.logsigmoid(beta * delta)).mean()                 # TRL 1.x `sigmoid`
        naive = torch.log1p(torch.exp(-beta * delta)).mean()
        ours = dpo_loss(scale * c, scale * r, scale * rc, scale * rr, beta)
        assert ours.item() == pytest.approx(trl_head.item(), rel=1e-12)
        if torch.isfinite(naive):
            assert ours.item() == pytest.approx(naive.item(), rel=1e-9)


def test_dpo_constraints_on_the_rejected_log_ratio():
    beta, margin = 0.5, 0.2
    c, rc, rr = torch.tensor([-4.0]), torch.tensor([-5.0]), torch.tensor([-6.0])
    # B in log-prob units: beta*(r - rr) = beta*(c - rc) - margin
    r_at_b = rr + (c - rc) - margin / beta
    g_c, g_r = grad_of(lambda c_, r_: dpo_loss(c_, r_, rc, rr, beta, "detach", margin), c, r_at_b + 3)
    assert g_r.item() == 0.0 and g_c.item() < 0
    for offset, sign in [(0.0, 0), (0.5, 1), (5.0, 1), (-0.5, -1), (-30.0, -1)]:
        _, g_r = grad_of(lambda c_, r_: dpo_loss(c_, r_, rc, rr, beta, "boundary", margin), c,
                         r_at_b + offset)
        if sign == 0:
            assert g_r.item() == pytest.approx(0.0, abs=1e-6)
        else:
            assert g_r.sign().item() == sign
        _, g_free = grad_of(lambda c_, r_: dpo_loss(c_, r_, rc, rr, beta), c, r_at_b + offset)
        assert g_free.item() > 0                                        # unconstrained: always down


@pytest.mark.filterwarnings("ignore::FutureWarning")                   # transformers' own deprecations
def test_dpo_matches_trl_dpo_trainer(tmp_path, monkeypatch):
    """Compare with TRL's own DPOTrainer.compute_loss on a tiny Llama built in code (no hub)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    trl = pytest.importorskip("trl")
    datasets = pytest.importorskip("datasets")
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = ["<pad>", "<eos>", "<unk>"] + [str(i) for i in range(20)] + list("abcdefgh+=")
    raw = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", eos_token="<eos>",
                                  unk_token="<unk>")
    cfg = LlamaConfig(vocab_size=len(words), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                      initializer_range=0.5, pad_token_id=0, bos_token_id=1, eos_token_id=1)
    torch.manual_seed(0)
    policy = LlamaForCausalLM(cfg)
    torch.manual_seed(1)
    reference = LlamaForCausalLM(cfg)                                    # differs: Delta != 0
    data = datasets.Dataset.from_dict({
        "prompt": ["1 + 2 =", "3 + 4 + 5 =", "a b", "7 ="],
        "chosen": [" 3", " 12 a b", " c d e", " 7"],
        "rejected": [" 4 c", " 11", " h", " 8 8 8 8"]})
    beta = 0.3
    args = trl.DPOConfig(output_dir=str(tmp_path), beta=beta, per_device_train_batch_size=4,
                         report_to=[], use_cpu=True, save_strategy="no", activation_checkpointing=False)
    trainer = trl.DPOTrainer(model=policy, ref_model=reference, args=args, train_dataset=data,
                             processing_class=tok)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])  # [chosen; rejected]
    trainer.model.eval()
    with torch.no_grad():
        trl_loss = trainer.compute_loss(trainer.model, batch).item()

    def summed_logps(model):                                            # (2M,) -> (M,), (M,)
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        lp = logits[:, :-1].float().log_softmax(-1).gather(-1, batch["input_ids"][:, 1:, None])[..., 0]
        return (lp * batch["completion_mask"][:, 1:]).sum(-1).chunk(2)

    (c, r), (rc, rr) = summed_logps(trainer.model), summed_logps(trainer.ref_model)
    assert (beta * ((c - rc) - (r - rr))).abs().max() > 0.5            # a non-trivial comparison
    assert dpo_loss(c, r, rc, rr, beta).item() == pytest.approx(trl_loss, abs=1e-5)


# ---- RRHF and PRO --------------------------------------------------------------------------------

def naive_rrhf(scores, rewards, mask):
    per_q = []
    for s, r, m in zip(scores, rewards, mask):
        s, r = s[m].tolist(), r[m].tolist()
        pairs = [(i, j) for i in range(len(s)) for j in range(len(s)) if r[i] < r[j]]
        if pairs:
            per_q.append(sum(max(0.0, s[i] - s[j]) for i, j in pairs))
    return sum(per_q) / len(per_q)


def naive_pro(scores, rewards, mask):
    per_q = []
    for s, r, m in zip(scores, rewards, mask):
        s, r = s[m].tolist(), r[m].tolist()
        order = sorted(range(len(s)), key=lambda i: -r[i])             # stable: ties keep order
        s, r = [s[i] for i in order], [r[i] for i in order]
        if len(s) < 2:
            continue
        total = 0.0
        for k in range(len(s) - 1):
            t = [r[k] - r[j] for j in range(k + 1, len(s))]
            t_kk = max(t)
            denom = math.exp(s[k] * t_kk) + sum(math.exp(s[j] * tj) for j, tj in zip(range(k + 1, len(s)), t))
            total += math.log(denom) - s[k] * t_kk
        per_q.append(total)
    return sum(per_q) / len(per_q)


@pytest.mark.parametrize("seed", [5, 6, 7])
def test_rrhf_and_pro_match_naive_peer_formulas(seed):
    scores, rewards, mask = random_batch(seed)
    rewards = rewards * 0.7                                              # non-integer temperatures
    assert rrhf_loss(scores, rewards, mask).item() == pytest.approx(naive_rrhf(scores, rewards, mask))
    assert pro_loss(scores, rewards, mask).item() == pytest.approx(naive_pro(scores, rewards, mask))


def test_pro_with_equal_rewards_is_a_constant():
    scores = torch.randn(3, 5, dtype=torch.float64)
    mask = torch.ones(3, 5, dtype=torch.bool)
    for c in CONSTRAINTS:
        (g,) = grad_of(lambda s: pro_loss(s, torch.ones(3, 5), mask, c), scores)
        assert (g == 0).all()
    assert pro_loss(scores, torch.ones(3, 5), mask).item() == pytest.approx(math.log(math.factorial(5)))


# better items fixed; the worst item (last) moves. Rewards have three distinct levels on purpose.
BETTER = torch.tensor([-0.5, -1.0, -0.7])
REWARDS = torch.tensor([[3.0, 2.0, 2.0, 0.5]])
B_WORST = -1.1                                                           # min(better) - beta


def worst_grad(loss_fn, constraint, s_worst):
    s = torch.cat([BETTER, torch.tensor([s_worst])])[None]
    (g,) = grad_of(lambda x: loss_fn(x, REWARDS, torch.ones_like(x).bool(), constraint, 0.1), s)
    return g[0, -1].item()


@pytest.mark.parametrize("loss_fn", [rrhf_loss, pro_loss])
def test_ranking_losses_constraints_on_the_worst_item(loss_fn):
    assert worst_grad(loss_fn, "detach", 0.0) == 0.0
    assert worst_grad(loss_fn, "boundary", B_WORST) == pytest.approx(0.0, abs=1e-6)
    assert worst_grad(loss_fn, "boundary", 0.0) > 0                      # above all better items
    assert worst_grad(loss_fn, "boundary", -5.0) < 0                     # well below (below every T_i)
    assert worst_grad(loss_fn, None, 0.0) > 0
    if loss_fn is pro_loss:                                              # smooth: also just around B
        assert worst_grad(loss_fn, "boundary", B_WORST + 0.05) > 0
        assert worst_grad(loss_fn, "boundary", B_WORST - 0.05) < 0
        assert worst_grad(loss_fn, None, -50.0) > 0                      # never stops pushing down


@pytest.mark.parametrize("loss_fn", [rrhf_loss, pro_loss])
def test_ranking_losses_under_descent_stay_bounded_with_boundary(loss_fn):
    finals = {}
    for c in [None, "boundary"]:
        worst = torch.tensor([0.0], requires_grad=True)
        opt = torch.optim.SGD([worst], lr=0.5)
        for _ in range(500):
            opt.zero_grad()
            s = torch.cat([BETTER, worst])[None]
            loss_fn(s, REWARDS, torch.ones_like(s).bool(), c, 0.1).backward()
            opt.step()
        finals[c] = worst.item()
    assert B_WORST - 0.3 < finals["boundary"] <= BETTER.min()            # hinge: dead zone [T_i, s_i]
    if loss_fn is pro_loss:
        assert finals["boundary"] == pytest.approx(B_WORST, abs=1e-3)
        assert finals[None] < B_WORST - 3                               # keeps falling
