"""Alignment losses: data → model → VFT → sampling → scoring → **losses** → align → metrics.

Pure functions of score tensors (a COT's score is its length-normalised log-likelihood, see
`aftlab.model.scoring`). The training loop (`aftlab.align.aft`) calls them; nothing here touches a model.

    >>> import torch
    >>> s = torch.tensor([[0.0, -1.0, -0.5]])               # (B=1, K=3) scores
    >>> pos, neg = torch.tensor([[True, False, False]]), torch.tensor([[False, True, True]])
    >>> round(float(aft_loss_batched(s, pos, neg, "boundary")), 4)
    1.7138

`constraint` (AFT §3): ``None`` — unconstrained; ``"detach"`` (DC) — worse items' scores are
detached so only better items are pushed up; ``"boundary"`` (BC) — a mirror term whose pull on a
worse item cancels the loss's own at the boundary B = min(better scores) − β, so negatives are pushed
down above B and back up below it instead of running to −∞.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Constraint = Literal[None, "detach", "boundary"]
_CONSTRAINTS = (None, "detach", "boundary")


def _check(constraint: Constraint) -> None:
    if constraint not in _CONSTRAINTS:
        raise ValueError(f"constraint must be one of {_CONSTRAINTS}, got {constraint!r}")


def _log1p_sumexp(x: Tensor, keep: int) -> Tensor:
    """log(1 + Σ exp(x)) over all dims after the first `keep`; -inf entries count as absent."""
    flat = x.flatten(start_dim=keep)                                       # (..., M)
    return torch.logsumexp(torch.cat([flat.new_zeros(flat.shape[:-1] + (1,)), flat], -1), -1)


def _zero_pad(scores: Tensor, mask: Tensor) -> Tensor:
    """Scores with padded slots set to 0, so a NaN/inf there (e.g. an empty COT) cannot leak into grads."""
    return torch.where(mask, scores, torch.zeros_like(scores))


def _masked_mean(per_q: Tensor, valid: Tensor, scores: Tensor) -> Tensor:
    """Mean of per-question losses over `valid` questions; 0 (still in the graph) if none."""
    if not valid.any():
        return scores.sum() * 0.0
    return per_q[valid].mean()


def _min_above(scores: Tensor, better: Tensor) -> Tensor:
    """(B,K),(B,K,K) -> (B,K): row j's min of scores[m] over m with better[b,j,m]; 0 where none (detached)."""
    vals = scores.detach()[:, None, :].masked_fill(~better, float("inf")).amin(-1)
    return torch.where(better.any(-1), vals, torch.zeros_like(vals))


def _bc_terms(s: Tensor, pair: Tensor, bound: Tensor, constraint: Constraint) -> Tensor:
    """Log-terms of BC for pairs (i better, j worse): (B,K),(B,K,K),(B,K) -> (B,K,K,2), -inf off `pair`.

    `bound[b, i]` is the boundary B that applies to positive i; T_i = 2B - s_i is detached.
    """
    s_neg = s.detach() if constraint == "detach" else s
    direct = s_neg[:, None, :] - s[:, :, None]                             # (B,K,K) s_j - s_i
    if constraint == "boundary":
        t = (2 * bound - s).detach()                                       # (B,K) T_i
        mirror = t[:, :, None] - s[:, None, :]                             # (B,K,K) T_i - s_j
    else:
        mirror = torch.full_like(direct, float("-inf"))
    terms = torch.stack([direct, mirror], -1)                              # (B,K,K,2)
    return terms.masked_fill(~pair[..., None], float("-inf"))


def nll_loss(token_logprobs: Tensor, mask: Tensor) -> Tensor:
    """Token-mean negative log-likelihood over masked tokens: (N,T),(N,T) -> scalar.

    >>> nll_loss(torch.tensor([[-1.0, -3.0], [-2.0, -99.0]]), torch.tensor([[1, 1], [1, 0]]))
    tensor(2.)
    """
    mask = mask.bool()
    picked = torch.where(mask, token_logprobs, torch.zeros_like(token_logprobs))  # (N,T)
    return -picked.sum() / mask.sum().clamp_min(1)


def boundary(pos_scores: Tensor, beta: float) -> Tensor:
    """BC's boundary min(pos) - beta over the last dim, detached: (P,) -> () or (B,P) -> (B,); NaN if empty.

    >>> boundary(torch.tensor([-1.0, -0.5]), 0.1)
    tensor(-1.1000)
    """
    if pos_scores.shape[-1] == 0:
        return torch.full(pos_scores.shape[:-1], float("nan"), dtype=pos_scores.dtype,
                          device=pos_scores.device)
    return pos_scores.detach().amin(-1) - beta


def aft_loss(pos_scores: Tensor, neg_scores: Tensor, constraint: Constraint = None,
             beta: float = 0.1) -> Tensor:
    """AFT alignment loss for one question: (P,),(N,) -> scalar.

    None: L_A = log(1 + Σ_p Σ_n exp(s_n - s_p)); "detach": the same with s_n detached (DC);
    "boundary": B = min(s_p) - beta, T_p = 2B - s_p (both detached, our reading) and
    L_BC = log(1 + Σ_p Σ_n [exp(s_n - s_p) + exp(T_p - s_n)]). Empty group -> 0.

    >>> round(float(aft_loss(torch.tensor([0.0]), torch.tensor([0.0]))), 6)   # ln 2
    0.693147
    >>> round(float(aft_loss(torch.tensor([0.0]), torch.tensor([-0.1]), "boundary", 0.1)), 4)
    1.0331
    """
    _check(constraint)
    if pos_scores.numel() == 0 or neg_scores.numel() == 0:
        return (pos_scores.sum() + neg_scores.sum()) * 0.0
    s_n = neg_scores.detach() if constraint == "detach" else neg_scores
    terms = [(s_n[None, :] - pos_scores[:, None]).flatten()]               # (P*N,)
    if constraint == "boundary":
        t_p = (2 * boundary(pos_scores, beta) - pos_scores).detach()       # (P,)
        terms.append((t_p[:, None] - neg_scores[None, :]).flatten())
    return _log1p_sumexp(torch.cat(terms)[None], 1)[0]


def aft_loss_batched(scores: Tensor, pos_mask: Tensor, neg_mask: Tensor,
                     constraint: Constraint = None, beta: float = 0.1, truncate: bool = False) -> Tensor:
    """`aft_loss` for B questions at once: scores (B,K), masks (B,K) bool -> scalar.

    Mean over questions having at least one positive and one negative (0 if none). ``truncate``
    drops the pairs whose negative is already below the boundary B = min(pos) - beta: a negative is
    pushed down until it passes B and then left alone, neither pushed further nor pulled back up
    (BC's mirror term pulls it up; the plain loss pushes it on forever).

    >>> s = torch.tensor([[0.0, -0.05, -2.0]])
    >>> p, n = torch.tensor([[True, False, False]]), torch.tensor([[False, True, True]])
    >>> round(float(aft_loss_batched(s, p, n, truncate=True)), 4) == round(float(aft_loss(s[0, :1], s[0, 1:2])), 4)
    True

    >>> s = torch.tensor([[0.0, 0.0, 9.0], [1.0, 0.0, 0.0]])
    >>> round(float(aft_loss_batched(s, s.new_tensor([[1, 0, 0], [1, 0, 0]]).bool(),
    ...                              s.new_tensor([[0, 1, 0], [0, 0, 0]]).bool())), 6)
    0.693147
    """
    _check(constraint)
    pos_mask, neg_mask = pos_mask.bool(), neg_mask.bool()
    if (pos_mask & neg_mask).any():
        raise ValueError("a COT cannot be both positive and negative")
    scores = _zero_pad(scores, pos_mask | neg_mask)
    pair = pos_mask[:, :, None] & neg_mask[:, None, :]                     # (B,K,K) i pos, j neg
    bound = _min_above(scores, pos_mask[:, None, :].expand_as(pair))[:, :1] - beta  # (B,1)
    if truncate:
        pair = pair & (scores.detach() >= bound)[:, None, :]                # negatives still above B
    per_q = _log1p_sumexp(_bc_terms(scores, pair, bound, constraint), 1)  # (B,)
    return _masked_mean(per_q, pair.flatten(1).any(-1), scores)


def rbc_loss(scores: Tensor, levels: Tensor, mask: Tensor, beta: float = 0.1,
             constraint: Constraint = "boundary") -> Tensor:
    """Ranking-feedback BC (RBC): scores, levels, mask (B,K) -> scalar.

    Higher level = better. For each level L present in a question, positives are the COTs at level
    L, negatives the COTs of strictly lower level, and the boundary is B_L = min score over COTs at
    level >= L, minus beta, detached (our reading). The per-level BC losses are summed per question;
    the mean runs over questions with at least two levels. With two levels this is BC.

    >>> s, lv = torch.tensor([[0.0, -0.1, -3.0]]), torch.tensor([[2.0, 1.0, 0.0]])
    >>> round(float(rbc_loss(s, lv, torch.ones_like(s).bool())), 4)
    5.7288
    """
    _check(constraint)
    mask = mask.bool()
    scores = _zero_pad(scores, mask)
    ge = mask[:, None, :] & (levels[:, None, :] >= levels[:, :, None])     # (B,K,K) m at level >= i's
    bound = _min_above(scores, ge) - beta                                  # (B,K) B_L for i at L
    lower = levels[:, None, :] < levels[:, :, None]                        # (B,K,K) j below i
    pair = mask[:, :, None] & mask[:, None, :] & lower
    terms = _bc_terms(scores, pair, bound, constraint)                     # (B,K,K,2)
    same = mask[:, None, :] & (levels[:, None, :] == levels[:, :, None])   # (B,A,K) i at a's level
    idx = torch.arange(scores.shape[1], device=scores.device)
    first = mask & ~(same & (idx[None, :] < idx[:, None])).any(-1)        # (B,A) a opens its level
    group = (same & first[:, :, None])[..., None, None]                    # (B,A,K,1,1)
    per_level = _log1p_sumexp(terms[:, None].masked_fill(~group, float("-inf")), 2)  # (B,A)
    return _masked_mean(per_level.sum(-1), pair.flatten(1).any(-1), scores)


def dpo_loss(chosen_logps: Tensor, rejected_logps: Tensor, ref_chosen_logps: Tensor,
             ref_rejected_logps: Tensor, beta: float = 0.1, constraint: Constraint = None,
             margin: float = 0.1) -> Tensor:
    """Sigmoid DPO on summed log-probs (TRL's HEAD `sigmoid`, no label smoothing): 4×(M,) -> scalar.

    u = beta·(logp - ref_logp) is the implicit reward; per pair ℓ = -log σ(u_c - u_r), mean over pairs.
    Constraint (our reading): "detach" detaches u_r (only chosen pushed up); "boundary" adds the
    mirror term -log σ(u_r - T) with B = u_c - margin, T = 2B - u_c (detached, implicit-reward
    units: rejected log-ratio margin/beta below the chosen one), whose pull on u_r cancels the main
    term's at u_r = B: rejected pushed down above B, up below it.

    >>> z = torch.zeros(2)
    >>> round(float(dpo_loss(z, z, z, z)), 6)                                # policy = reference
    0.693147
    """
    _check(constraint)
    u_c = beta * (chosen_logps - ref_chosen_logps)                         # (M,)
    u_r = beta * (rejected_logps - ref_rejected_logps)                     # (M,)
    per_pair = F.softplus(-(u_c - (u_r.detach() if constraint == "detach" else u_r)))
    if constraint == "boundary":
        t = (u_c - 2 * margin).detach()                                    # 2B - u_c
        per_pair = per_pair + F.softplus(-(u_r - t))
    return per_pair.mean()


def _ranked_pairs(scores: Tensor, rewards: Tensor, mask: Tensor, beta: float):
    """(better[b,i,j] = r_i > r_j, both valid) (B,K,K) and each worse item's boundary (B,K).

    The boundary of worse item j is min{s_m : r_m > r_j} - beta (detached): BC with everything
    ranked above j as its positives, so the net pull on j vanishes at one point.
    """
    mask = mask.bool()
    better = mask[:, :, None] & mask[:, None, :] & (rewards[:, :, None] > rewards[:, None, :])
    return better, _min_above(scores, better.transpose(1, 2)) - beta


def rrhf_loss(scores: Tensor, rewards: Tensor, mask: Tensor, constraint: Constraint = None,
              beta: float = 0.1) -> Tensor:
    """RRHF ranking term: Σ_{r_i < r_j} max(0, s_i - s_j) per question (summed, as RRHF's code),
    mean over questions with a ranked pair: (B,K)×3 -> scalar. Add SFT on the best via `nll_loss`.

    Constraint (our reading): "detach" detaches the worse score; "boundary" adds max(0, T_i - s_j)
    per pair (i better, j worse) with T_ij = 2B_j - s_i detached, B_j = min{s_m : r_m > r_j} - beta:
    a worse item is pushed down above s_i, left alone in [T_ij, s_i] (B_j lies inside), up below T_ij.

    >>> s, r = torch.tensor([[0.0, 0.5, -2.0]]), torch.tensor([[1.0, 0.0, -1.0]])
    >>> float(rrhf_loss(s, r, torch.ones_like(s).bool()))
    0.5
    """
    _check(constraint)
    scores = _zero_pad(scores, mask.bool())
    better, bound = _ranked_pairs(scores, rewards, mask, beta)            # (B,K,K), (B,K)
    s_w = scores.detach() if constraint == "detach" else scores
    hinge = F.relu(s_w[:, None, :] - scores[:, :, None])                   # (B,K,K) s_j - s_i
    if constraint == "boundary":
        t = (2 * bound[:, None, :] - scores[:, :, None]).detach()         # (B,K,K) T_i for worse j
        hinge = hinge + F.relu(t - scores[:, None, :])
    per_q = torch.where(better, hinge, torch.zeros_like(hinge)).sum((1, 2))
    return _masked_mean(per_q, better.flatten(1).any(-1), scores)


def pro_loss(scores: Tensor, rewards: Tensor, mask: Tensor, constraint: Constraint = None,
             beta: float = 0.1) -> Tensor:
    """PRO listwise ranking term (as PRO's code, via logsumexp): (B,K)×3 -> scalar.

    Sort valid items by reward, descending (stable: ties keep input order). For k = 0..n-2, with
    T_kj = r_k - r_j (j > k) and T_kk = max_j T_kj:
    L_k = log(exp(T_kk·s_k) + Σ_{j>k} exp(T_kj·s_j)) - T_kk·s_k
        = log(1 + Σ_{j>k} exp(T_kj·s_j - T_kk·s_k)).
    Sum over k, mean over questions with >= 2 valid items. Add PRO's SFT term via `nll_loss`.
    Constraint (our reading): "detach" detaches s_j (j > k); "boundary" adds inside L_k's
    log(1 + Σ ...), for each j with r_j < r_k (ties get none), the term
    exp(T_kj·(2B_j - s_j) - T_kk·sg(s_k)) = exp(T_kj·(T'_kj - s_j)), T'_kj = 2B_j - (T_kk/T_kj)·sg(s_k),
    B_j = min{s_m : r_m > r_j} - beta (detached). Its pull on s_j cancels that of
    exp(T_kj·s_j - T_kk·s_k) exactly at s_j = B_j, in every L_k; it does not move s_k. With all
    T = 1 this is BC's exp(T_p - s_n).

    >>> s, r = torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 0.0]])
    >>> round(float(pro_loss(s, r, torch.ones_like(s).bool())), 6)       # ln 2
    0.693147
    """
    _check(constraint)
    mask = mask.bool()
    scores, rewards = _zero_pad(scores, mask), _zero_pad(rewards, mask)
    key = rewards.masked_fill(~mask, float("-inf"))
    order = torch.sort(key, dim=-1, descending=True, stable=True).indices  # (B,K)
    s, r, v = scores.gather(1, order), rewards.gather(1, order), mask.gather(1, order)
    better, bound = _ranked_pairs(s, r, v, beta)                           # (B,K,K), (B,K)
    k_idx = torch.arange(s.shape[1], device=s.device)
    later = v[:, :, None] & v[:, None, :] & (k_idx[None, :] > k_idx[:, None])  # (B,K,K) j after k
    temp = r[:, :, None] - r[:, None, :]                                   # (B,K,K) T_kj
    has = later.any(-1)                                                    # (B,K) k has a suffix
    t_kk = temp.masked_fill(~later, float("-inf")).amax(-1)
    t_kk = torch.where(has, t_kk, torch.zeros_like(t_kk))                  # (B,K)
    own = t_kk * s                                                         # (B,K) T_kk·s_k
    s_j = s.detach() if constraint == "detach" else s
    rest = temp * s_j[:, None, :] - own[:, :, None]                        # (B,K,K) T_kj·s_j - T_kk·s_k
    parts = [rest.masked_fill(~later, float("-inf"))]
    if constraint == "boundary":
        mirror = temp * (2 * bound[:, None, :] - s[:, None, :]) - own.detach()[:, :, None]
        parts.append(mirror.masked_fill(~(later & better), float("-inf")))
    l_k = _log1p_sumexp(torch.stack(parts, -1), 2)                        # (B,K)
    per_q = torch.where(has, l_k, torch.zeros_like(l_k)).sum(-1)
    return _masked_mean(per_q, has.any(-1), scores)


def averaged_over(unit: str | None, scores: Tensor, pos_mask: Tensor, neg_mask: Tensor, levels: Tensor,
                  beta: float = 0.1, truncate: bool = False) -> int:
    """How many items a loss averages over in a batch: (B,K)×4 -> int. ``unit`` (a method's
    ``aftlab.align.methods.Method.unit``): ``"pair_questions"`` — questions with a (positive, negative) pair
    (after ``truncate``), ``"pairs"`` — every pair (DPO), ``"level_questions"`` — questions with two
    levels (RBC, RRHF), ``"list_questions"`` — questions with two COTs (PRO), ``None`` — nothing (RFT).
    A process that holds part of a step's batch weights its mean by its part of this count
    (`aftlab.train.distributed`). ``scores`` are the scaled scores the loss sees (``gamma * s``).

    >>> s = torch.tensor([[0.0, -1.0, -0.01], [0.0, 0.0, 0.0]])
    >>> p = torch.tensor([[True, False, False], [True, True, False]])
    >>> n = torch.tensor([[False, True, True], [False, False, False]])
    >>> lv = torch.tensor([[3.0, 0.0, 0.0], [3.0, 3.0, 0.0]])
    >>> [averaged_over(u, s, p, n, lv) for u in ("pair_questions", "pairs", "level_questions", "list_questions", None)]
    [1, 2, 1, 2, 0]
    >>> averaged_over("pair_questions", s, p, n, lv, beta=0.005, truncate=True)  # both negatives already below
    0
    """
    pos_mask, neg_mask = pos_mask.bool(), neg_mask.bool()
    valid = pos_mask | neg_mask
    pair = pos_mask[:, :, None] & neg_mask[:, None, :]                     # (B,K,K)
    if unit == "pair_questions":
        if truncate:  # as aft_loss_batched: pairs whose negative is still above the boundary
            s = _zero_pad(scores.detach(), valid)
            bound = _min_above(s, pos_mask[:, None, :].expand_as(pair))[:, :1] - beta
            pair = pair & (s >= bound)[:, None, :]
        return int(pair.flatten(1).any(-1).sum())
    if unit == "pairs":
        return int(pair.sum())
    if unit == "level_questions":
        lower = valid[:, :, None] & valid[:, None, :] & (levels[:, None, :] < levels[:, :, None])
        return int(lower.flatten(1).any(-1).sum())
    if unit == "list_questions":
        return int((valid.sum(-1) >= 2).sum())
    if unit is None:
        return 0
    raise ValueError(f"unit {unit!r}: choose pair_questions, pairs, level_questions, list_questions or None")
