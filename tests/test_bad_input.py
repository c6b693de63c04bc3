"""Malformed inputs at every entry point: one clear error naming file+line+field (or the argument),
exit code 2 without a traceback for user errors, and nothing partial written.

Each parametrised case below is one malformed input (JSONL files, configs via ``from_dict`` and
``--set``, CLI arguments, model folders, samples caches).
"""
import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from aftlab.cli import main
from aftlab.config import ConfigError, DataConfig, from_dict, preset, replace_path, to_dict
from aftlab.data.questions import MAX_LINE_BYTES, DataError, load_jsonl, synthetic_from_config
from aftlab.model.lm import ModelLoadError, load_lm
from aftlab.sampling.samples import label, read_samples, sample_cots
from aftlab.train import checkpoint

GOOD = {"question": "Tom has 3 apples. He buys 4 more. How many?", "answer": "3 + 4 = 7. #### 7"}

# name -> (file bytes, substring the error must contain)
JSONL_CASES = {
    "truncated_line": (json.dumps(GOOD).encode() + b'\n{"question": "a", "answ\n', ":2: invalid JSON"),
    "question_not_str": (json.dumps({"question": 5, "answer": "#### 5"}).encode(), ":1: field 'question' must be str"),
    "answer_is_list": (json.dumps({"question": "q", "answer": ["#### 5"]}).encode(), ":1: field 'answer' must be str"),
    "missing_question": (json.dumps({"answer": "#### 5"}).encode(), ":1: field 'question' is missing"),
    "missing_answer": (json.dumps(GOOD).encode() + b"\n" + json.dumps({"question": "q"}).encode(),
                       ":2: field 'answer' is missing"),
    "answer_without_marker": (json.dumps({"question": "q", "answer": "it is 5"}).encode(),
                              ":1: field 'answer' has no '#### <answer>'"),
    "empty_final_answer": (json.dumps({"question": "q", "answer": "2 + 3 = 5. ####  "}).encode(),
                           ":1: field 'answer' has an empty final answer"),
    "empty_file": (b"", "no records (empty file)"),
    "only_blank_lines": (b"\n  \n\t\n", "no records (empty file)"),
    "not_utf8": (json.dumps(GOOD).encode() + b'\n{"question": "caf\xe9", "answer": "#### 1"}\n',
                 ":2: not valid UTF-8"),
    "json_array_not_object": (b'["q", "#### 1"]\n', ":1: expected a JSON object, got list"),
    "ten_megabyte_line": (b'{"question": "' + b"x" * (10 * 2**20) + b'", "answer": "#### 1"}\n',
                          f":1: line longer than {MAX_LINE_BYTES} bytes"),
    "aqua_options_not_list": (json.dumps({"question": "q", "options": "A)1 B)2", "rationale": "r",
                                          "correct": "A"}).encode(), ":1: field 'options' must be list"),
    "ecqa_answer_not_an_option": (json.dumps({"q_text": "q", **{f"q_op{i}": f"o{i}" for i in range(1, 6)},
                                              "q_ans": "o9"}).encode(), ":1: field 'q_ans'"),
    "bad_line_after_blank_lines": (json.dumps(GOOD).encode() + b"\n\n\n{oops}\n", ":4: invalid JSON"),
}


@pytest.mark.parametrize("name", sorted(JSONL_CASES))
def test_malformed_jsonl_names_file_line_and_field(name, tmp_path):
    data, expected = JSONL_CASES[name]
    path = tmp_path / f"{name}.jsonl"
    path.write_bytes(data)
    with pytest.raises(DataError) as e:
        load_jsonl(path)
    assert str(path) in str(e.value) and expected in str(e.value), str(e.value)[:300]


def test_blank_lines_are_not_records_and_lose_nothing(tmp_path):
    path = tmp_path / "gaps.jsonl"
    path.write_text("\n" + json.dumps(GOOD) + "\n\n   \n" + json.dumps({**GOOD, "id": "b"}) + "\n")
    assert [e.id for e in load_jsonl(path)] == ["gaps-2", "b"]  # ids keep their real line numbers


def test_missing_data_file_and_too_few_records_to_hold_out(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_jsonl(tmp_path / "absent.jsonl")
    path = tmp_path / "small.jsonl"
    path.write_text("\n".join(json.dumps({**GOOD, "id": str(i)}) for i in range(5)) + "\n")
    with pytest.raises(DataError, match=r"5 records, too few to hold out data.n_test=600"):
        synthetic_from_config(DataConfig(source=str(path)))


def _user_error(err: str, expected: str) -> bool:
    """One ``aftlab: error:`` line (progress bars may precede it) containing ``expected``, no traceback."""
    lines = [ln for ln in err.splitlines() if ln.startswith("aftlab: error: ")]
    return len(lines) == 1 and expected in lines[0] and "Traceback" not in err


# ------------------------------------------------------------------ configs
FROM_DICT_CASES = {
    "unknown_top_key": ({"sedd": 1}, "sedd: unknown config key"),
    "unknown_section_key": ({"align": {"betta": 0.1}}, "align.betta: unknown config key"),
    "k_as_string": ({"sample": {"k": "8"}}, "sample.k: expected int, got str"),
    "negative_k": ({"sample": {"k": -3}}, "sample.k: must be in [1, 64]"),
    "negative_beta": ({"align": {"beta": -0.5}}, "align.beta: must be >= 0"),
    "section_not_mapping": ({"vft": 3}, "vft: expected a mapping"),
    "bool_as_string": ({"model": {"lora": "yes"}}, "model.lora: expected bool"),
    "nan_lr": ({"align": {"lr": float("nan")}}, "align.lr: expected float"),
    "methods_with_unknown": ({"methods": ["rft", "sft"]}, "methods: unknown method 'sft'"),
    "override_unknown_field": ({"method_overrides": {"aft_bc": {"bogus_field": 1}}},
                               "method_overrides.aft_bc.bogus_field: unknown config key"),
    "override_unknown_method": ({"method_overrides": {"aft_xx": {"beta": 0.1}}}, "method_overrides.aft_xx: unknown method"),
    "override_wrong_type": ({"method_overrides": {"dpo": {"dpo_beta": "high"}}},
                            "method_overrides.dpo.dpo_beta: expected float, got str"),
    "override_invalid_value": ({"method_overrides": {"aft_bc": {"beta": -1}}},
                               "method_overrides.aft_bc: align.beta: must be >= 0"),
    "override_not_mapping": ({"method_overrides": {"aft_bc": 3}}, "method_overrides.aft_bc: expected a mapping"),
    "override_of_the_method": ({"method_overrides": {"aft_bc": {"method": "rft"}}},
                               "method_overrides.aft_bc.method: set by the key"),
}


@pytest.mark.parametrize("name", sorted(FROM_DICT_CASES))
def test_from_dict_rejects_bad_configs_naming_the_field(name):
    d, expected = FROM_DICT_CASES[name]
    with pytest.raises(ConfigError) as e:
        from_dict(d)
    assert expected in str(e.value), str(e.value)


def test_from_dict_round_trips_a_preset_through_json():
    cfg = preset("smoke", seed=4)
    assert from_dict(json.loads(json.dumps(to_dict(cfg)))) == cfg


SET_CASES = {
    "negative_k": ("sample.k=-1", "sample.k: must be in [1, 64]"),
    "k_not_a_number": ("sample.k=abc", "sample.k: expected a finite int"),
    "beta_below_zero": ("align.beta=-0.1", "align.beta: must be >= 0"),
    "infinite_lr": ("align.lr=inf", "align.lr: expected a finite float"),
    "unknown_key": ("align.betta=1", "align.betta: unknown config key"),
    "unknown_section": ("optim.lr=1", "optim.lr: unknown config section"),
    "no_equals_sign": ("align.beta", "expected KEY=VALUE"),
    "bad_boolean": ("model.lora=maybe", "model.lora: expected a boolean"),
    "override_unknown_field": ("method_overrides.aft_bc.bogus_field=1",
                               "method_overrides.aft_bc.bogus_field: unknown config key"),
    "override_bad_value": ("method_overrides.aft_dc.lr=-1", "method_overrides.aft_dc: align.lr: must be > 0"),
}


@pytest.mark.parametrize("name", sorted(SET_CASES))
def test_cli_set_overrides_fail_cleanly(name, tmp_path, capsys):
    item, expected = SET_CASES[name]
    out = tmp_path / "run"
    assert main(["run", "--preset", "smoke", "--set", item, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert _user_error(err, expected), err
    assert not out.exists()  # rejected before the run folder was created


# ------------------------------------------------------------------ CLI arguments (in process)
CLI_CASES = {
    "unknown_preset": (["run", "--preset", "huge", "--out", "{tmp}/r"], "preset: unknown preset 'huge'"),
    "unknown_method": (["run", "--preset", "smoke", "--methods", "rft,magic", "--out", "{tmp}/r"],
                       "methods: unknown method 'magic'"),
    "zero_rounds": (["run", "--preset", "smoke", "--rounds", "0", "--out", "{tmp}/r"], "rounds: must be >= 1"),
    "seeds_not_ints": (["run", "--preset", "smoke", "--seeds", "0,one", "--out", "{tmp}/r"], "--seeds '0,one'"),
    "betas_not_floats": (["sweep-beta", "--run", "{tmp}/r", "--betas", "0.1,big"], "--betas '0.1,big'"),
    "negative_beta_in_sweep": (["sweep-beta", "--run", "{tmp}/r", "--betas", "0.1,-1"], "beta must be >= 0"),
    "missing_samples_file": (["align", "--preset", "smoke", "--model", "{model}", "--samples", "{tmp}/none.jsonl",
                              "--out", "{tmp}/r"], "none.jsonl: no such samples file"),
    "empty_samples_file": (["align", "--preset", "smoke", "--model", "{model}", "--samples", "{tmp}/empty.jsonl",
                            "--out", "{tmp}/r"], "empty.jsonl: no sample records"),
    "eval_samples_corrupt_middle": (["eval", "--preset", "smoke", "--model", "{model}", "--eval-samples",
                                     "{tmp}/corrupt.jsonl", "--out", "{tmp}/r"], "corrupt.jsonl:2: invalid JSON"),
    "missing_model_folder": (["sample", "--preset", "smoke", "--model", "{tmp}/no/such/model", "--out",
                              "{tmp}/r"], "no such model folder"),
    "bad_training_data": (["vft", "--preset", "smoke", "--data", "{tmp}/bad.jsonl", "--out", "{tmp}/r"],
                          "bad.jsonl:2: field 'answer' is missing"),
}


@pytest.fixture()
def saved_tiny(tiny, tmp_path):
    """A tiny model saved as a model folder (safetensors + tokenizer)."""
    path = tmp_path / "model"
    tiny.save(path)
    return path


def _records(small_task, n=4):
    train, _ = small_task
    return [{"id": e.id, "question": e.question, "answer": e.answer, "reference": e.solution,
             "samples": [{**label(e.solution, e.answer), "count": 1}, {**label("1 + 1 = 3. #### 3", e.answer),
                                                                       "count": 1}],
             "n_sampled": 2, "n_duplicates": 0} for e in train[:n]]


@pytest.mark.parametrize("name", sorted(CLI_CASES))
def test_cli_user_errors_exit_2_without_traceback_or_output(name, tmp_path, saved_tiny, small_task, capsys):
    argv, expected = CLI_CASES[name]
    (tmp_path / "empty.jsonl").write_text("")
    lines = [json.dumps(r) for r in _records(small_task)]
    (tmp_path / "corrupt.jsonl").write_text("\n".join([lines[0], lines[1][:40], lines[2]]) + "\n")
    (tmp_path / "bad.jsonl").write_text(json.dumps(GOOD) + "\n" + json.dumps({"question": "q"}) + "\n")
    argv = [a.format(tmp=tmp_path, model=saved_tiny) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert _user_error(err, expected), err
    assert not (tmp_path / "r").exists()  # no partial output (run folder, samples file or metrics JSON)


def test_argparse_errors_exit_2():
    with pytest.raises(SystemExit) as e:
        main(["run", "--preset", "smoke"])  # --out missing
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["run", "--seed", "zero", "--out", "x"])
    assert e.value.code == 2


# ------------------------------------------------------------------ CLI as a real process
def _cli(*argv, cwd):
    return subprocess.run([sys.executable, "-m", "aftlab.cli", *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})


def test_cli_process_bad_data_exits_2_with_one_line_and_no_run_folder(tmp_path):
    bad = tmp_path / "train.jsonl"
    bad.write_text(json.dumps(GOOD) + "\n" + '{"question": "q", "answer": 7}\n')
    r = _cli("run", "--preset", "smoke", "--data", str(bad), "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert r.returncode == 2 and _user_error(r.stderr, f"{bad}:2: field 'answer' must be str"), r.stderr
    assert not (tmp_path / "run").exists()


def test_cli_process_bad_config_and_bad_model_exit_2(tmp_path):
    r = _cli("vft", "--preset", "smoke", "--set", "vft.steps=-5", "--out", str(tmp_path / "a"), cwd=tmp_path)
    assert r.returncode == 2 and _user_error(r.stderr, "vft.steps: must be > 0"), r.stderr
    folder = tmp_path / "not_a_model"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello")
    r = _cli("sample", "--preset", "smoke", "--model", str(folder), "--out", str(tmp_path / "s.jsonl"), cwd=tmp_path)
    assert r.returncode == 2 and _user_error(r.stderr, "no *.safetensors weights"), r.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "s.jsonl").exists()


# ------------------------------------------------------------------ model paths and pickles
class _Trap:
    """Unpickling this touches a marker file: proof of whether a loader unpickled untrusted data."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _trap_file(path: Path, marker: Path) -> Path:
    torch.save({"weight": _Trap(marker)}, path)
    live = marker.with_name("live")  # the trap really fires when unpickled, so the tests below can fail
    pickle.loads(pickle.dumps(_Trap(live)))
    assert live.exists()
    return path


def test_missing_and_non_model_folders_are_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="no such model folder"):
        load_lm(tmp_path / "runs" / "x" / "vft")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no \\*.safetensors weights"):
        load_lm(tmp_path / "empty")


def test_pickle_only_checkpoint_is_refused_never_unpickled(saved_tiny, tmp_path):
    marker = tmp_path / "unpickled"
    for f in saved_tiny.glob("*.safetensors"):
        f.unlink()
    _trap_file(saved_tiny / "pytorch_model.bin", marker)
    with pytest.raises(ModelLoadError, match="pickle checkpoints are not loaded"):
        load_lm(saved_tiny)
    assert not marker.exists()


def test_tampered_trainer_state_is_refused_never_unpickled(saved_tiny, tmp_path, capsys):
    marker = tmp_path / "unpickled"
    _trap_file(saved_tiny / checkpoint.STATE, marker)
    with pytest.raises(ModelLoadError, match="not a loadable trainer state"):
        checkpoint.load_state(saved_tiny)
    samples = tmp_path / "s.jsonl"
    samples.write_text(json.dumps({"id": "x", "question": "q", "answer": "1", "reference": "#### 1",
                                   "samples": []}) + "\n")
    assert main(["align", "--preset", "smoke", "--model", str(saved_tiny), "--samples", str(samples),
                 "--out", str(tmp_path / "out")]) == 2
    assert "not a loadable trainer state" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "out").exists()


# ------------------------------------------------------------------ samples cache
def test_samples_cache_with_corrupt_middle_line_is_refused_and_left_untouched(trained, small_task, tmp_path):
    lm, _, _ = trained
    _, test = small_task
    cache = tmp_path / "s.jsonl"
    sample_cots(lm, test[:3], k=2, temperature=1.0, batch_questions=1, cache=cache, progress=False)
    lines = cache.read_text().splitlines()
    cache.write_text("\n".join([lines[0], lines[1][: len(lines[1]) // 2], lines[2]]) + "\n")
    before = cache.read_bytes()
    with pytest.raises(DataError, match=f"{cache}:2: invalid JSON"):
        sample_cots(lm, test[:5], k=2, temperature=1.0, batch_questions=1, cache=cache, progress=False)
    assert cache.read_bytes() == before  # nothing appended on top of a corrupt cache


def test_samples_record_with_missing_or_mistyped_field(small_task, tmp_path):
    recs = _records(small_task, 2)
    path = tmp_path / "s.jsonl"
    broken = dict(recs[1])
    del broken["samples"]
    path.write_text(json.dumps(recs[0]) + "\n" + json.dumps(broken) + "\n")
    with pytest.raises(DataError, match=":2: field 'samples' must be a list, got missing"):
        read_samples(path)
    recs[0]["samples"][1]["correct"] = "yes"
    path.write_text(json.dumps(recs[0]) + "\n")
    with pytest.raises(DataError, match=r":1: field 'samples\[1\].correct'"):
        read_samples(path)


def test_torn_last_line_is_reported_not_silently_dropped(small_task, tmp_path):
    recs = _records(small_task, 2)
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps(recs[0]) + "\n" + json.dumps(recs[1])[:30])
    with pytest.warns(UserWarning, match=":2: incomplete last record"):
        assert [r["id"] for r in read_samples(path)] == [recs[0]["id"]]


def test_replace_path_keeps_the_original_config():
    cfg = preset("smoke")
    with pytest.raises(ConfigError):
        replace_path(cfg, "sample.k", "0")
    assert cfg.sample.k == 4
