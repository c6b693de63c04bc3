"""Evaluation metrics of a model on a fixed set of labelled COTs."""
from aftlab.eval.evaluate import evaluate, rescore
from aftlab.sampling.samples import label

Q = "Mia has 7 shells. She buys 3 bags with 4 shells in each. How many shells does Mia have now?"
REF = "3 * 4 = 12. 7 + 12 = 19. #### 19"


def test_strict_assessment_leaves_out_lucky_right_answers(tiny, small_task):
    _, test = small_task
    cots = [REF, "3 * 4 = 11. 7 + 11 = 19. #### 19", "3 * 4 = 12. 7 + 12 = 20. #### 20"]  # strict, lucky, wrong
    samples = [dict(label(c, REF), count=1) for c in cots]
    assert [(s["correct"], s["strict"]) for s in samples] == [(True, True), (True, False), (False, False)]
    records = [{"id": "q0", "question": Q, "answer": "19", "reference": REF, "samples": samples}]
    m = evaluate(tiny, test[:2], records, max_new_tokens=8)["metrics"]
    s = rescore(tiny, records)[0]
    assert m["n_pairs"] == 2 and m["n_pairs_strict"] == 1 and m["lucky_share"] == 0.5
    assert m["assessment_accuracy_strict"] == float(s[0] > s[2])
    assert m["assessment_accuracy"] == (float(s[0] > s[2]) + float(s[1] > s[2])) / 2


def test_assessment_set_grows_until_enough_questions_are_mixed_and_resumes_from_its_cache(tiny, small_task, tmp_path):
    from aftlab.eval.evaluate import assessment_set, n_mixed
    _, test = small_task
    pos = {e.question: i for i, e in enumerate(test)}
    seeds = []

    def fake(lm, questions, k, temperature, top_p, max_new_tokens, seed):
        # every 4th held-out question gets a right and a wrong COT, the others two right ones
        seeds.append(seed)
        return [[(test[pos[q]].solution, True), ("1 + 1 = 2. #### -7" if pos[q] % 4 == 0 else
                                                 test[pos[q]].solution + " ", True)] for q in questions]

    kw = dict(k=2, seed=3, batch_questions=2, sampler=fake, progress=False)
    grown = assessment_set(tiny, test, 3, min_mixed=3, block=2, **kw)
    # pieces [0, 3), [3, 5), [5, 7), [7, 9): mixed at 0, 4, 8 -- the third arrives with question 8
    assert [r["id"] for r in grown] == [e.id for e in test[:9]] and n_mixed(grown) == 3
    assert sorted(seeds) == [3 * 1_000_003 + i for i in (0, 2, 3, 5, 7)]  # each batch its own position's seed
    assert [r["id"] for r in assessment_set(tiny, test, 3, **kw)] == [e.id for e in test[:3]]  # min_mixed 0: n
    everything = assessment_set(tiny, test, 3, min_mixed=10, block=5, **kw)
    assert len(everything) == len(test) and n_mixed(everything) == 4  # stops when the held-out set runs out

    cache = tmp_path / "eval.jsonl"
    assert assessment_set(tiny, test, 3, min_mixed=3, block=2, cache=cache, **kw) == grown
    lines = cache.read_text().splitlines(keepends=True)
    assert len(lines) == 9
    cache.write_text("".join(lines[:4]))  # killed after the first piece and one question of the second
    seeds.clear()
    assert assessment_set(tiny, test, 3, min_mixed=3, block=2, cache=cache, **kw) == grown
    assert sorted(seeds) == [3 * 1_000_003 + i for i in (3, 5, 7)]  # only the missing batches drawn again
