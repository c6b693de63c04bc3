"""aftlab's warmup-cosine LR schedule, and why it is not transformers' own: every recorded model and
the committed E2 outcomes were trained under it, so it must stay bit for bit (tests/test_refactor_golden.py)."""
import pytest
import torch
from transformers.optimization import (
    get_cosine_with_min_lr_schedule_with_warmup,
    get_cosine_with_min_lr_schedule_with_warmup_lr_rate,
)

from aftlab.config import AlignConfig, VFTConfig
from aftlab.train.checkpoint import warmup_cosine


def multipliers(make, steps: int) -> list[float]:
    """The LR multiplier at steps 0 … ``steps`` - 1 of a transformers schedule built by ``make(optimizer)``."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched, out = make(opt), []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_ours_warms_up_from_one_step_and_holds_the_floor():
    f = warmup_cosine(warmup=50, total=1500, min_ratio=0.05)
    assert [f(s) for s in (0, 1, 49)] == [0.02, 0.04, 1.0]
    assert f(50) == 1.0 and f(1500) == f(1501) == f(3000) == pytest.approx(0.05)


@pytest.mark.parametrize("cfg", [VFTConfig(), AlignConfig()], ids=["vft", "align"])
def test_transformers_cosine_with_min_lr_differs_from_ours(cfg):
    """The default VFT and AFT schedules: transformers' warmup starts at 0 (ours at 1/warmup) and its
    ``_lr_rate`` variant, which warms up as ours does, is one step ahead on the cosine."""
    warmup, total = cfg.warmup, 1500
    ours = [warmup_cosine(warmup, total, cfg.min_lr_ratio)(s) for s in range(total + 2)]
    plain = multipliers(lambda o: get_cosine_with_min_lr_schedule_with_warmup(
        o, warmup, total, min_lr_rate=cfg.min_lr_ratio), total + 2)
    rate = multipliers(lambda o: get_cosine_with_min_lr_schedule_with_warmup_lr_rate(
        o, warmup, total, min_lr_rate=cfg.min_lr_ratio), total + 2)
    assert plain[0] == 0.0 and ours[0] == 1 / warmup
    assert [s for s in range(warmup) if plain[s] != ours[s]] == list(range(warmup))  # every warmup step
    assert plain[warmup:total + 1] == ours[warmup:total + 1]  # the cosine itself agrees bit for bit
    assert plain[total + 1] > ours[total + 1] == pytest.approx(cfg.min_lr_ratio)  # past the end it climbs back
    assert rate[:warmup] == ours[:warmup]
    assert rate[warmup] < ours[warmup] == 1.0 and rate[total] > ours[total]  # one step ahead on the cosine
