from aftlab.sampling.samples import generate, groups, label, sample_cots


def test_same_seed_same_cots_and_k_per_question(trained, small_task):
    lm, _, _ = trained
    _, test = small_task
    a = sample_cots(lm, test[:6], k=5, temperature=1.0, seed=3, progress=False)
    b = sample_cots(lm, test[:6], k=5, temperature=1.0, seed=3, progress=False)
    c = sample_cots(lm, test[:6], k=5, temperature=1.0, seed=4, progress=False)
    assert a == b
    assert a != c
    for r in a:
        assert r["n_sampled"] == 5
        assert sum(s["count"] for s in r["samples"]) == 5  # duplicates counted, not dropped
        assert len({s["cot"] for s in r["samples"]}) == len(r["samples"])  # de-duplicated


def test_temperature_zero_is_greedy_and_deterministic(trained, small_task):
    lm, _, _ = trained
    _, test = small_task
    qs = [e.question for e in test[:5]]
    a = generate(lm, qs, k=3, temperature=0.0, seed=1)
    b = generate(lm, qs, k=3, temperature=0.0, seed=2)
    assert a == b
    assert all(len(set(row)) == 1 for row in a)  # all k greedy copies are identical


def test_trained_model_writes_well_formed_cots(trained, small_task):
    lm, _, _ = trained
    _, test = small_task
    rows = generate(lm, [e.question for e in test], k=1)
    finished = [t for row in rows for t, done in row if done and "####" in t]
    assert len(finished) >= 0.8 * len(rows)


def test_labels_and_groups():
    rec = {"id": "q", "question": "Q", "answer": "7", "reference": "3 + 4 = 7. #### 7",
           "samples": [label("3 + 4 = 7. #### 7", "7"), label("3 + 4 = 8. 8 - 1 = 7. #### 7", "7"),
                       label("3 + 4 = 8. #### 8", "7"), label("garbage [UNK]", "7", finished=False)]}
    g = groups([rec])[0]
    assert g["pos"] == ["3 + 4 = 7. #### 7"]  # the step-invalid correct COT is in neither group
    assert len(g["neg"]) == 2
    loose = groups([rec], strict=False)[0]
    assert len(loose["pos"]) == 2
    assert g["levels"][0] > g["levels"][1]


def test_resume_after_a_killed_two_process_run_writes_the_uninterrupted_file(trained, small_task, tmp_path):
    # a 2-process run over 6 questions in batches of 2: rank 0 owns batches 0 and 2, rank 1 batch 1;
    # killed after rank 0 finished batch 0 and half of batch 2, rank 1 one question and a torn line
    import json

    import pytest
    lm, _, _ = trained
    _, test = small_task
    ref = tmp_path / "ref.jsonl"
    sample_cots(lm, test[:6], k=3, temperature=1.0, seed=5, batch_questions=2, cache=ref, progress=False)
    lines = ref.read_text().splitlines(keepends=True)
    cache = tmp_path / "s.jsonl"
    (tmp_path / "s.jsonl.rank0").write_text(lines[0] + lines[1] + lines[4])
    (tmp_path / "s.jsonl.rank1").write_text(lines[2] + lines[3][:25])
    with pytest.warns(UserWarning, match="incomplete last record"):
        recs = sample_cots(lm, test[:6], k=3, temperature=1.0, seed=5, batch_questions=2, cache=cache,
                           progress=False)
    assert cache.read_text() == ref.read_text()  # merged in question order, half-done batches redrawn exactly
    assert recs == [json.loads(x) for x in lines]
    assert not list(tmp_path.glob("s.jsonl.rank*"))
