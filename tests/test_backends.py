"""Optional backends: the vLLM sampler (with a fake ``vllm`` module) and hub datasets (with a fake
``datasets.load_dataset``). Neither package is needed, nor any network."""
import json
import sys
import types
from pathlib import Path

import pytest

from aftlab.cli import _config, build_parser, main
from aftlab.data.questions import DataError, load_hf, load_jsonl, synthetic_from_config
from aftlab.sampling.samples import read_samples, sample_cots


# ---------------------------------------------------------------- vLLM
def _ids(lm, text, finished=True):
    ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    return list(ids) + ([lm.tokenizer.eos_token_id] if finished else [])


def _canned(lm, e):
    """Four completions for a question as (token ids, finish reason): the reference twice (once with
    other spacing), a wrong COT, and one cut off at max_tokens."""
    sol = e.solution
    return [(_ids(lm, sol), "stop"), (_ids(lm, sol.replace(" ", "  ")), "stop"),
            (_ids(lm, "2 + 3 = 6. #### 6"), "stop"), (_ids(lm, "2 + 3 =", finished=False), "length")]


def fake_vllm(lm, examples, log):
    """A ``vllm`` module whose LLM.generate returns the canned outputs of the prompt's question."""
    by_prompt = {tuple(lm.prompt_ids(e.question)): _canned(lm, e) for e in examples}

    class SamplingParams:
        def __init__(self, **kw):
            self.kw = kw
            log["params"].append(kw)

    class LLM:
        def __init__(self, **kw):
            log["llm"].append(kw)
            log["weights_at_start"] = sorted(p.name for p in Path(kw["model"]).glob("*.safetensors"))

        def generate(self, prompts, sampling_params, use_tqdm=True):
            assert len(prompts) == len(sampling_params)
            log["prompts"].append([p["prompt_token_ids"] for p in prompts])
            outs = []
            for p, sp in zip(prompts, sampling_params):
                canned = by_prompt[tuple(p["prompt_token_ids"])][:sp.kw["n"]]
                outs.append(types.SimpleNamespace(outputs=[
                    types.SimpleNamespace(token_ids=ids, finish_reason=why, text="ignored") for ids, why in canned]))
            return outs

    return types.SimpleNamespace(LLM=LLM, SamplingParams=SamplingParams)


def _log():
    return {"params": [], "llm": [], "prompts": []}


def test_vllm_records_match_hf_path(tiny, small_task, tmp_path, monkeypatch):
    _, test = small_task
    ex = test[:3]
    log = _log()
    monkeypatch.setitem(sys.modules, "vllm", fake_vllm(tiny, ex, log))

    def hf_like(lm, questions, k, temperature, top_p, max_new_tokens, seed):
        # what aftlab.sampling.samples.generate returns for the same tokens: lm.decode, finished = EOS seen
        by_q = {e.question: _canned(lm, e) for e in ex}
        return [[(lm.decode(ids), lm.tokenizer.eos_token_id in ids) for ids, _ in by_q[q][:k]] for q in questions]

    kw = dict(k=4, temperature=0.7, top_p=0.9, max_new_tokens=20, seed=5, batch_questions=2, progress=False)
    want = sample_cots(tiny, ex, sampler=hf_like, **kw)
    cache = tmp_path / "v.jsonl"
    got = sample_cots(tiny, ex, sampler="vllm", cache=cache, **kw)
    assert got == want
    assert read_samples(cache) == got  # the JSONL cache round-trips
    for r, e in zip(got, ex):
        assert r["n_sampled"] == 4 and r["n_duplicates"] == 1
        assert [s["count"] for s in r["samples"]] == [2, 1, 1]  # the respaced reference counted, not dropped
        assert [s["label"] for s in r["samples"]] == ["pos", "neg", "unfinished"]  # an unfinished COT has no answer
        assert r["samples"][2]["answer"] is None
        assert [s["finished"] for s in r["samples"]] == [True, True, False]
        assert r["samples"][0]["cot"] == " ".join(e.solution.split())
    # prompts are the LM's own token ids, one engine for the call, its weights saved then removed
    assert log["prompts"] == [[tiny.prompt_ids(e.question) for e in ex[:2]], [tiny.prompt_ids(ex[2].question)]]
    assert len(log["llm"]) == 1 and log["weights_at_start"] == ["model.safetensors"]
    assert not Path(log["llm"][0]["model"]).exists()
    base = 5 * 1_000_003
    assert log["params"] == [dict(n=4, temperature=0.7, top_p=0.9, max_tokens=20, seed=base + i,
                                  stop_token_ids=[tiny.tokenizer.eos_token_id]) for i in range(3)]
    # a resumed call samples nothing new and starts no engine
    again = sample_cots(tiny, ex, sampler="vllm", cache=cache, **kw)
    assert again == got and len(log["llm"]) == 1


def test_vllm_greedy_is_one_completion_repeated(tiny, small_task, monkeypatch):
    from aftlab.sampling.vllm import VLLMSampler
    _, test = small_task
    log = _log()
    monkeypatch.setitem(sys.modules, "vllm", fake_vllm(tiny, test[:2], log))
    vs = VLLMSampler(model_path="/some/folder", dtype="float32")
    rows = vs(tiny, [e.question for e in test[:2]], k=3, temperature=0.0, top_p=0.5, max_new_tokens=9, seed=7)
    vs.close()
    assert all(len(row) == 3 and len(set(row)) == 1 and row[0][1] for row in rows)
    assert [p["n"] for p in log["params"]] == [1, 1] and log["params"][0]["temperature"] == 0.0
    assert log["params"][0]["top_p"] == 1.0 and [p["seed"] for p in log["params"]] == [7, 8]
    assert log["llm"][0]["model"] == "/some/folder" and log["llm"][0]["dtype"] == "float32"  # no temp copy


def test_vllm_saves_lora_models_merged(tiny, tmp_path):
    from safetensors import safe_open

    from aftlab.model.lm import add_lora
    from aftlab.sampling.vllm import model_folder, save_merged
    lm = add_lora(tiny, r=2, alpha=4)
    save_merged(lm, tmp_path / "m")
    with safe_open(tmp_path / "m" / "model.safetensors", "pt") as f:
        keys = list(f.keys())
    assert keys and not any("lora" in k for k in keys)
    assert any("lora" in n for n, _ in lm.model.named_parameters())  # the LM keeps its adapters
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    assert model_folder(tmp_path / "adapter") is None  # adapters are merged into a temp folder
    assert model_folder(tmp_path / "m") == str(tmp_path / "m")


def test_vllm_missing_is_a_clear_error(tiny, small_task, tmp_path, monkeypatch, capsys):
    from aftlab.sampling.vllm import VLLMUnavailable
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm fails, installed or not
    _, test = small_task
    cache = tmp_path / "s.jsonl"
    with pytest.raises(VLLMUnavailable) as e:
        sample_cots(tiny, test[:2], k=2, sampler="vllm", cache=cache, progress=False)
    msg = str(e.value)
    assert "vllm package is not installed" in msg and "pip install vllm" in msg and "CUDA GPU" in msg
    assert not cache.exists()
    tiny.save(tmp_path / "model")
    capsys.readouterr()
    out = tmp_path / "cli.jsonl"
    assert main(["sample", "--preset", "smoke", "--model", str(tmp_path / "model"), "--sampler", "vllm",
                 "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("aftlab: error: --sampler vllm:") and "pip install vllm" in err
    assert "Traceback" not in err and not out.exists()
    run_dir = tmp_path / "run"
    assert main(["run", "--preset", "smoke", "--sampler", "vllm", "--out", str(run_dir), "--no-progress"]) == 2
    assert "pip install vllm" in capsys.readouterr().err and not run_dir.exists()  # failed before any training


# ---------------------------------------------------------------- hub datasets
GSM = [{"question": "Tom has 3 apples and buys 4 more. How many?", "answer": "3 + 4 = 7\n#### 7"},
       {"question": "A box holds 1,200 pens; 200 are sold. How many are left?", "answer": "1200 - 200 = 1000\n#### 1,000"},
       {"id": "own-id", "question": "What is 6 times 7?", "answer": "6 * 7 = 42 #### 42"}]
AQUA = {"question": "What is 2 + 2?", "options": ["A)3", "B)4", "C)5"], "rationale": "2 + 2 = 4", "correct": "B"}
ECQA = {"q_text": "Where do fish live?", **{f"q_op{i}": o for i, o in enumerate(["sea", "tree", "car", "sky", "hat"], 1)},
        "q_ans": "sea", "taskA_pos": "Fish live in water."}


def fake_datasets(rows_by_split, calls, error=None):
    def load_dataset(name, config=None, split=None):
        calls.append((name, config, split))
        if error is not None:
            raise error
        return list(rows_by_split[split])
    return types.SimpleNamespace(load_dataset=load_dataset)


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_hf_dataset_gives_the_jsonl_loaders_examples(tmp_path, monkeypatch):
    rows = GSM + [AQUA, ECQA]
    calls = []
    monkeypatch.setitem(sys.modules, "datasets", fake_datasets({"train": rows}, calls))
    got = load_hf("openai/gsm8k:main", "train")
    assert got == load_jsonl(_write(tmp_path / "train.jsonl", rows))
    assert calls == [("openai/gsm8k", "main", "train")]
    assert [e.id for e in got] == ["train-1", "train-2", "own-id", "train-4", "train-5"]
    assert [e.answer for e in got] == ["7", "1000", "42", "B", "A"]
    calls.clear()
    monkeypatch.setitem(sys.modules, "datasets", fake_datasets({"test": GSM}, calls))
    assert load_hf("gsm8k", "test") == load_jsonl(_write(tmp_path / "test.jsonl", GSM))
    assert calls == [("gsm8k", None, "test")]


def test_cli_hf_dataset_options_set_the_data_source(tmp_path, monkeypatch):
    rows = {"train": GSM * 3, "test": GSM[:2]}
    monkeypatch.setitem(sys.modules, "datasets", fake_datasets(rows, []))
    parse = build_parser().parse_args
    cfg = _config(parse(["sample", "--model", "m", "--out", "o", "--hf-dataset", "openai/gsm8k:main",
                         "--hf-split", "train,test"]))
    assert (cfg.data.source, cfg.data.test_source) == ("hf:openai/gsm8k:main@train", "hf:openai/gsm8k:main@test")
    train, test = synthetic_from_config(cfg.data)
    assert train == load_jsonl(_write(tmp_path / "train.jsonl", rows["train"]))
    assert test == load_jsonl(_write(tmp_path / "test.jsonl", rows["test"]))
    cfg = _config(parse(["run", "--out", "o", "--hf-dataset", "gsm8k:main", "--set", "data.n_test=2"]))
    assert (cfg.data.source, cfg.data.test_source) == ("hf:gsm8k:main@train", None)
    train, test = synthetic_from_config(cfg.data)  # held out from the end of the split, as with --data
    assert len(train) == 7 and test == load_jsonl(tmp_path / "train.jsonl")[-2:]
    for argv, text in [(["--data", "x.jsonl"], "--data"), (["--hf-split", "a,b,c"], "TRAIN,TEST"),
                       (["--hf-split", "train,test", "--test-data", "t.jsonl"], "--test-data")]:
        with pytest.raises(Exception, match=text):
            _config(parse(["vft", "--out", "o", "--hf-dataset", "gsm8k", *argv]))
    with pytest.raises(Exception, match="needs --hf-dataset"):
        _config(parse(["vft", "--out", "o", "--hf-split", "test"]))


def test_hf_dataset_bad_row_names_dataset_row_and_field(monkeypatch):
    rows = [GSM[0], {"question": "No answer here?"}, GSM[1]]
    monkeypatch.setitem(sys.modules, "datasets", fake_datasets({"train": rows}, []))
    with pytest.raises(DataError) as e:
        load_hf("openai/gsm8k:main", "train")
    assert str(e.value) == ("Hugging Face dataset 'openai/gsm8k:main' (split 'train') row 1: "
                            "field 'answer' is missing")
    bad = [GSM[0], {"question": "Q?", "answer": "no final line"}]
    monkeypatch.setitem(sys.modules, "datasets", fake_datasets({"train": bad}, []))
    with pytest.raises(DataError, match=r"'gsm8k' \(split 'train'\) row 1: field 'answer' has no '#### <answer>'"):
        load_hf("gsm8k")


def test_hf_dataset_missing_package_or_offline_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(DataError) as e:
        load_hf("openai/gsm8k:main")
    msg = str(e.value)
    assert "'openai/gsm8k:main'" in msg and "pip install datasets" in msg and "--data path.jsonl" in msg
    monkeypatch.setitem(sys.modules, "datasets", fake_datasets({}, [], ConnectionError("Couldn't reach the Hub")))
    with pytest.raises(DataError) as e:
        load_hf("openai/gsm8k:main", "test")
    msg = str(e.value)
    assert "'openai/gsm8k:main' (split 'test')" in msg and "Couldn't reach the Hub" in msg
    assert "--data path.jsonl" in msg
    out = tmp_path / "run"
    assert main(["vft", "--hf-dataset", "openai/gsm8k:main", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("aftlab: error: Hugging Face dataset 'openai/gsm8k:main'") and "--data path.jsonl" in err
    assert not out.exists()
