"""Every entry point loads a run's model with its config's settings (``model.lm.load_lm_from_config``):
``aftlab sample``, ``eval`` and ``align``, the notebooks and the app all run a model with the autocast, prompt
cap and dtype its config names. ``aftlab sample --preset smol`` once sampled in fp32 while ``aftlab run
--preset smol`` sampled in bf16 on the same CPU."""
import json

import pytest

from aftlab.cli import main
from aftlab.config import preset, to_dict
from aftlab.model import lm as lm_module

SETTINGS = ["--set", "model.autocast=bfloat16", "--set", "model.max_prompt_tokens=80", "--set", "model.dtype=float32"]


@pytest.fixture()
def loads(monkeypatch):
    """The (model, device, dtype, max_prompt_tokens, autocast) of every ``load_lm`` call, which still loads."""
    seen, real = [], lm_module.load_lm

    def spy(name_or_path, device="auto", dtype="auto", trust_remote_code=False, max_prompt_tokens=96, autocast="off"):
        seen.append((str(name_or_path), device, dtype, max_prompt_tokens, autocast))
        return real(name_or_path, device, dtype, trust_remote_code, max_prompt_tokens, autocast)
    monkeypatch.setattr(lm_module, "load_lm", spy)
    return seen


def test_load_lm_from_config_passes_every_setting(trained, loads):
    cfg = preset("smoke").model
    cfg.autocast, cfg.max_prompt_tokens, cfg.device = "bfloat16", 80, "cpu"
    lm = lm_module.load_lm_from_config(cfg, trained[1])
    assert loads == [(str(trained[1]), "cpu", "auto", 80, "bfloat16")]
    assert (lm.autocast, lm.max_prompt_tokens) == ("bfloat16", 80)


def test_cli_stage_commands_load_with_the_configs_settings(trained, small_task, tmp_path, loads, monkeypatch):
    from aftlab.align import aft
    from aftlab.eval import evaluate
    from aftlab.sampling import samples
    _, vft_dir, _ = trained
    monkeypatch.setattr(samples, "sample_cots", lambda *a, **kw: [])  # what runs after the load is not the point
    monkeypatch.setattr(evaluate, "evaluate", lambda *a, **kw: {"metrics": {}})
    monkeypatch.setattr(aft, "train_align", lambda *a, **kw: [{"step": 1}])
    recs = tmp_path / "s.jsonl"
    recs.write_text(json.dumps({"id": "q", "question": "1 + 1 ?", "answer": "2", "reference": "1 + 1 = 2. #### 2",
                                "samples": [{"cot": "#### 2", "correct": True, "strict": True, "quality": 1.0}]}) + "\n")
    for argv in (["sample", "--out", str(tmp_path / "new.jsonl")], ["eval", "--eval-samples", str(recs)],
                 ["align", "--samples", str(recs), "--out", str(tmp_path / "bc")]):
        assert main([*argv, "--preset", "smoke", "--model", str(vft_dir), "--no-progress", *SETTINGS]) == 0, argv
    assert [x[1:] for x in loads] == [("auto", "float32", 80, "bfloat16")] * 3


def test_notebooks_and_the_app_load_a_runs_model_with_its_settings(trained, tmp_path, loads):
    from aftlab.app.ranker import ModelCache
    from aftlab.notebook import _load
    _, vft_dir, _ = trained
    cfg = preset("smoke")
    cfg.model.autocast, cfg.model.max_prompt_tokens = "bfloat16", 80
    assert _load(cfg, vft_dir).autocast == "bfloat16"
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(to_dict(cfg)))
    (run / "vft").symlink_to(vft_dir, target_is_directory=True)
    cache = ModelCache({"r/vft": run / "vft"}, device="cpu", smol=False, root=tmp_path / "runs")
    with cache.use("r/vft") as lm:
        assert (lm.autocast, lm.max_prompt_tokens) == ("bfloat16", 80)
    assert [x[3:] for x in loads] == [(80, "bfloat16")] * 2
