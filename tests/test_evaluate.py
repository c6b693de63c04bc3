"""Evaluation metrics of a model on a fixed set of labelled COTs."""
from aftlab.evaluate import evaluate, rescore
from aftlab.sampling import label

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
