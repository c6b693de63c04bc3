"""The registry of alignment methods: one entry per method, read by config, CLI, notebooks and docs.

Place in the data path: … → scoring → losses → **methods** (which loss each method trains with, what it
needs, its defaults) → align (the AFT objective) → metrics.

The losses see scaled scores ``gamma * s`` and a boundary margin ``gamma * beta``: ``align.beta`` is in
the scores' own units, nats per token, whatever ``gamma`` is (DPO's ``beta`` margin is in its reward units).

An entry names its loss (a pure function of :class:`Scores`, built from ``aftlab.train.losses``), what it
needs beyond the scores (``reference``: a frozen copy of the starting model's summed log-probs, as
DPO uses), and the ``AlignConfig`` fields it sets on top of the run's shared ones. Adding a method
is one entry here plus its loss in ``losses`` and a test — see the README's "Extending" section.

>>> sorted(REGISTRY)[:3], REGISTRY["aft_bc"].defaults
(['aft_bc', 'aft_bc_bal', 'aft_dc'], {'constraint': 'boundary'})
>>> s = torch.tensor([[-0.1, -0.3]]); pos = torch.tensor([[True, False]]); neg = ~pos
>>> class Cfg: gamma, beta, constraint, truncate = 1.0, 0.1, "boundary", False
>>> round(float(REGISTRY["aft_bc"].loss(Cfg, Scores(s, pos, neg, levels=torch.tensor([[1.0, 0.0]])))), 4)  # log(1 + e^-0.2 + e^0)
1.0363
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import torch

from ..train import losses


class Scores(NamedTuple):
    """One AFT batch as the losses see it: B questions, K COT slots each (positives first)."""

    s: torch.Tensor  # (B, K) length-normalised scores (what every AFT loss ranks)
    pos: torch.Tensor  # (B, K) bool: slot holds a positive COT
    neg: torch.Tensor  # (B, K) bool: slot holds a negative COT
    levels: torch.Tensor  # (B, K) quality level per COT (ranking feedback)
    summed: torch.Tensor | None = None  # (B, K) summed log-probs (DPO's score), when the method needs them
    ref: torch.Tensor | None = None  # (B, K) the frozen reference model's summed log-probs


LossFn = Callable[[object, Scores], torch.Tensor]  # (AlignConfig, Scores) -> scalar


@dataclass(frozen=True)
class Method:
    """What a method is: its loss, what that loss needs, and the settings that define it."""

    doc: str  # one line for the CLI and the docs
    loss: LossFn | None  # None: the RFT control, NLL on positives only
    defaults: dict = field(default_factory=dict)  # AlignConfig fields the method sets over the shared ones
    reference: bool = False  # needs the starting model's summed log-probs of every COT (frozen reference)
    unit: str | None = "pair_questions"  # what the loss averages over (``losses.averaged_over``): splits a step


def _pairwise(cfg, b: Scores) -> torch.Tensor:
    return losses.aft_loss_batched(cfg.gamma * b.s, b.pos, b.neg, constraint=cfg.constraint,
                                   beta=cfg.gamma * cfg.beta, truncate=cfg.truncate)


def _rbc(cfg, b: Scores) -> torch.Tensor:
    return losses.rbc_loss(cfg.gamma * b.s, b.levels, b.pos | b.neg, beta=cfg.gamma * cfg.beta)


def _dpo(cfg, b: Scores) -> torch.Tensor:
    bi, i, j = torch.nonzero(b.pos.unsqueeze(2) & b.neg.unsqueeze(1), as_tuple=True)  # every (pos, neg) pair
    if bi.numel() == 0:
        return b.s.new_zeros(())
    return losses.dpo_loss(b.summed[bi, i], b.summed[bi, j], b.ref[bi, i], b.ref[bi, j], beta=cfg.dpo_beta,
                           constraint=cfg.constraint, margin=cfg.beta)


def _ranked(fn) -> LossFn:
    def loss(cfg, b: Scores) -> torch.Tensor:
        return fn(cfg.gamma * b.s, b.levels, b.pos | b.neg, constraint=cfg.constraint, beta=cfg.gamma * cfg.beta)
    loss.__name__ = fn.__name__
    return loss


REGISTRY: dict[str, Method] = {
    "rft": Method("the control: NLL on the positive samples only (the paper's RFT baseline)", None, {"lam": 0.0},
                  unit=None),
    "vft_cont": Method("VFT continued: NLL on each question's reference COT only, with RFT's budget (the control "
                       "that isolates more NLL from learning from the model's own samples)", None,
                       {"lam": 0.0, "sample_positives": False}, unit=None),
    "aft_bc": Method("AFT with the boundary constraint: negatives pushed down to B = min s_p - beta, not below",
                     _pairwise, {"constraint": "boundary"}),
    "aft_dc": Method("AFT with the detached constraint: negative scores detached, only positives pushed up",
                     _pairwise, {"constraint": "detach"}),
    "align_only": Method("alignment without constraint: every negative pushed down without bound (degrades)",
                         _pairwise, {"constraint": None}),
    "aft_bc_bal": Method("AFT-BC with a balanced gradient: each step the alignment gradient is rescaled to "
                         "align.balance times the NLL gradient's norm, so NLL progresses as in RFT",
                         _pairwise, {"constraint": "boundary", "balance": 0.25}),
    "aft_rbc": Method("ranking feedback: the boundary-constrained loss at every quality level", _rbc,
                      {"constraint": "boundary"}, unit="level_questions"),
    "dpo": Method("DPO (sigmoid, summed log-probs, frozen reference); align.constraint adds DC/BC", _dpo,
                  reference=True, unit="pairs"),
    "rrhf": Method("RRHF: hinge on ranked score differences; align.constraint adds DC/BC", _ranked(losses.rrhf_loss),
                   unit="level_questions"),
    "pro": Method("PRO: listwise softmax over ranked suffixes; align.constraint adds DC/BC", _ranked(losses.pro_loss),
                  unit="list_questions"),
}
