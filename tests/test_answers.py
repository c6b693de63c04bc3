"""Answer extraction, labels and step checking: worked cases, and agreement with GSM8K's own labels."""
import json
from fractions import Fraction

import pytest
from conftest import GSM8K

from aftlab.data.answers import (
    StepCheck,
    check_steps,
    extract_answer,
    extract_choice,
    is_correct,
    is_strict_correct,
    normalize_number,
    safe_eval,
    step_quality,
)

F = Fraction


@pytest.mark.parametrize("text, value", [
    ("17", F(17)), (" 17 ", F(17)), ("1,234", F(1234)), ("1,234,567.5", F(2469135, 2)), ("$5", F(5)),
    ("$ 5", F(5)), ("-$5", F(-5)), ("3.50", F(7, 2)), ("7.0", F(7)), ("-2", F(-2)), ("−2", F(-2)),
    ("+3", F(3)), ("1/2", F(1, 2)), ("-3/4", F(-3, 4)), ("50%", F(50)), ("12.5 %", F(25, 2)), ("12.", F(12)),
    (".5", F(1, 2)), ("0.125", F(1, 8)), ("€3", F(3)), ("007", F(7)), ("1" * 30, F(int("1" * 30))),
])
def test_normalize_number_parses_written_numbers(text, value):
    assert normalize_number(text) == value


@pytest.mark.parametrize("text", [
    "", " ", "twelve", "abc", "5 apples", "1/0", "1,23", "1.2.3", "--5", "1e5", "$", "%", ".", "1 2",
    "١٢", "²", "1" * 31, "9" * 5000, "<|endoftext|>", "[UNK]", "nan", "inf", "(5)",
])
def test_normalize_number_rejects_non_numbers(text):
    assert normalize_number(text) is None


@pytest.mark.parametrize("text, answer", [
    ("3 * 4 = 12 . 12 + 5 = 17 . #### 17", "17"),  # token-spaced model output
    ("#### 1,234", "1234"), ("#### $5.00", "5"), ("#### 7.0", "7"), ("#### 3.50", "3.5"), ("#### -3", "-3"),
    ("#### 1/2", "0.5"), ("#### 2/3", "2/3"), ("#### 6/3", "2"), ("#### 50%", "50"), ("####12", "12"),
    ("#### 5\n#### 6", "6"),  # the last marker wins
    ("The answer is 42 and 7 more words", "42"), ("so the answer is: $1,050.", "1050"),
    ("The Answer Is 8. Then 9 cats.", "8"), ("answer: 3\nanswer: 4. Later 99", "4"), ("Q: x\nA: 18", "18"),
    ("A: -9.9 billion", "-9.9"), ("The answer is \\boxed{12}", "12"),
    ("#### 3 but the answer is 4", "3"),  # the marker outranks the phrase
    ("She has 3 apples and buys 4 more, 7 in all.", "7"), ("costs $0.75 each", "0.75"), ("10-5 is 5", "5"),
    ("I have -4 dollars", "-4"), ("COVID-19", "19"), ("1,234", "1234"), ("12. The end.", "12"),
    ("#### 17<|endoftext|><|endoftext|>", "17"), ("[UNK] 5 [PAD] [PAD]", "5"), ("<s> #### 9 </s>", "9"),
    ("#### 12345678901234567890", "12345678901234567890"),
    ("7 " + "9" * 40, "7"),  # an over-long digit run is ignored
    ("#### " + "9" * 40 + " then 8", "8"),
])
def test_extract_answer(text, answer):
    assert extract_answer(text) == answer


@pytest.mark.parametrize("text", [
    "", "no numbers here", "<|endoftext|>", "[UNK][UNK][PAD]", "####", "#### ", "The answer is", "A:", "9" * 50,
    "\x00\x01\ufffd", "#### seventeen", "1/0",
])
def test_extract_answer_none(text):
    assert extract_answer(text) is None


@pytest.mark.parametrize("text, letter", [
    ("#### C", "C"), ("#### c", "C"), ("#### (b)", "B"), ("The answer is (C)", "C"), ("The answer is (c).", "C"),
    ("answer: c", "C"), ("Answer: D", "D"), ("ANSWER:D", "D"), ("Answer is E", "E"), ("Answer: option B", "B"),
    ("So the answer is C because 4 > 3.", "C"), ("we rule out (A) and (B), leaving (D)", "D"),
    ("The answer is (B). Earlier I said answer: A", "A"),  # the last phrase wins
    ("#### A ... the answer is (B)", "A"), ("B", "B"), ("(e)", "E"), (" c. ", "C"),
    ("<|endoftext|> The answer is (C) <|endoftext|>", "C"),
])
def test_extract_choice(text, letter):
    assert extract_choice(text) == letter


@pytest.mark.parametrize("text", [
    "", "I ate a pie", "The answer is a car", "Apples cost 3 dollars", "(F)", "#### F", "answer: 17", "[UNK]",
    "A whole sentence here.", "(a) list item",
])
def test_extract_choice_none(text):
    assert extract_choice(text) is None


def test_extract_choice_respects_letters():
    assert extract_choice("The answer is (F)", letters="ABCDEF") == "F"
    assert extract_choice("The answer is (E)", letters="ABCD") is None
    assert extract_choice("The answer is (C)", letters="") is None


@pytest.mark.parametrize("cot, reference, expected", [
    ("... #### 17", "17", True), ("... #### 17.0", "17", True), ("#### 1234", "$1,234", True),
    ("#### $1,234.00", "1234", True), ("The answer is 0.5", "1/2", True), ("#### 18", "#### 17", False),
    ("A: 18", "Janet sells 9 eggs.\nShe makes 9 * 2 = $<<9*2=18>>18.\n#### 18", True),
    ("A: 18", "She makes $<<9*2=18>>18.\nA: 18", True), ("A: 18", "A: 19", False),
    ("The answer is (C)", "C", True), ("answer: c", "(C)", True), ("The answer is (C)", "c", True),
    ("The answer is (B)", "C", False), ("#### 3", "C", False), ("", "17", False), ("<|endoftext|>", "17", False),
    ("#### 17", "", False), ("#### 17", "no gold answer", False), ("#### 0.33", "1/3", False),
    ("#### -5", "5", False), ("#### 5", "-5", False),
])
def test_is_correct(cot, reference, expected):
    assert is_correct(cot, reference) is expected


@pytest.mark.parametrize("expression, value", [
    ("1 + 2", F(3)), ("2 + 3 * 4", F(14)), ("(2 + 3) * 4", F(20)), ("10 - 4 - 3", F(3)), ("48/2", F(24)),
    ("1/3 + 1/3", F(2, 3)), ("-3 + 5", F(2)), ("2 * -3", F(-6)), ("-(2 + 3)", F(-5)), ("- - 4", F(4)),
    ("3 x 4", F(12)), ("3 × 4", F(12)), ("12 ÷ 4", F(3)), ("5 − 2", F(3)), ("$1,250 + $850", F(2100)),
    ("0.2*50", F(10)), (".5 * 4", F(2)), ("2^3", F(8)), ("2**3", F(8)), ("2^-1", F(1, 2)), ("-2^2", F(-4)),
    ("2^3^2", F(512)), ("560//10", F(56)), ("7//2", F(3)), ("((((7))))", F(7)), ("  4  ", F(4)),
])
def test_safe_eval(expression, value):
    assert safe_eval(expression) == value


@pytest.mark.parametrize("expression", [
    "", "1 +", "+", "(1 + 2", "1 + 2)", "()", "1 2", "7 / 0", "7 // 0", "1/(3-3)", "0^-1", "9**9**9", "2^0.5",
    "10^100000", "a + b", "__import__('os').system('x')", "exec('1')", "1; 2", "1 = 1", "(" * 10000 + "1" + ")" * 10000,
    "(" * 60 + "1" + ")" * 60, "-" * 400 + "1", "1" * 31 + " + 1", "1 + 1" * 200,
])
def test_safe_eval_refuses(expression):
    assert safe_eval(expression) is None


def test_safe_eval_allows_moderate_nesting():
    assert safe_eval("(" * 30 + "1 + 1" + ")" * 30) == 2


@pytest.mark.parametrize("text, expected", [
    ("3 * 4 = 12 . 12 + 5 = 17 .", [("3 * 4", F(12), True), ("12 + 5", F(17), True)]),
    ("3 * 4 = 13 . 13 + 5 = 18 .", [("3 * 4", F(13), False), ("13 + 5", F(18), True)]),
    ("2 + 3 * 4 = 14", [("2 + 3 * 4", F(14), True)]),
    ("(2 + 3) * 4 = 20", [("(2 + 3) * 4", F(20), True)]),
    ("He pays $1,250 + $850 = $2,100 in total", [("$1,250 + $850", F(2100), True)]),
    ("3 x 4 = 12 and 12 ÷ 4 = 3 and 2 × 5 = 11", [("3 x 4", F(12), True), ("12 ÷ 4", F(3), True),
                                                   ("2 × 5", F(11), False)]),
    ("100/3 = 33.33 each", [("100/3", F(3333, 100), True)]),  # GSM8K rounds to 2 decimals
    ("2/3 = 0.67", [("2/3", F(67, 100), True)]),
    ("1/3 = 0.333", [("1/3", F(333, 1000), True)]),  # truncated to the claim's own decimals
    ("100/3 = 33.4", [("100/3", F(334, 10), False)]),
    ("100/3 = 33", [("100/3", F(33), False)]),
    ("0.5 * 3 = 1.5", [("0.5 * 3", F(3, 2), True)]),
    ("7 / 0 = 7", [("7 / 0", F(7), False)]),
    ("5 - 8 = -3", [("5 - 8", F(-3), True)]),
    ("1/3 + 1/3 = 2/3 of the cake", [("1/3 + 1/3", F(2, 3), True)]),  # a fraction as the claim
    ("5 * 6 + 5 * 4 = 30 + 20 = 50", [("5 * 6 + 5 * 4", F(50), True), ("30 + 20", F(50), True)]),
    ("2 + 2 = 3 + 2 = 5", [("2 + 2", F(5), False), ("3 + 2", F(5), True)]),
    ("(so 3 + 4 = 7)", [("3 + 4", F(7), True)]),
    ("Total: -3 + 5 = 2", [("-3 + 5", F(2), True)]),
    ("4 ** 2 = 16", [("4 ** 2", F(16), True)]),
])
def test_check_steps_free_text(text, expected):
    steps = check_steps(text)
    assert [(s.expression, s.claimed, s.ok) for s in steps] == expected
    for step in steps:
        assert text[step.start:step.end].startswith(step.expression)


@pytest.mark.parametrize("text", [
    "no arithmetic", "x = 5", "Total = 12", "15 apples - 3 = 12 apples", "2x + 8 = 66", "10x+13=383",
    "He spent 24V + 15 + 6 = $141", "so 10 * 1 1/2 = 15 fish", "2 + 1/2 = 2 1/2 pieces", "650 000/2 = 325 000",
    "Run:14(2)=28", "6:00+48=6:48", "(x + 3) * 2 = 10", "20% * 50 = 10", "0.5 * 100 = 50%", "8/3 = 24/Y",
    "3 + 4 =", "= 5", "3 +\n4 = 7", "1 = 1", "Step 1: 2 = 2",
])
def test_check_steps_skips_what_it_cannot_cut_cleanly(text):
    assert check_steps(text) == []


def test_check_steps_reads_gsm8k_annotations_once():
    text = "Natalia sold 48/2 = <<48/2=24>>24 clips.\nShe makes 9 * 2 = $<<9*2=19>>19 a day.\n#### 19"
    first, second = text.index("<<48"), text.index("<<9")
    assert check_steps(text) == [
        StepCheck("48/2", F(24), F(24), True, first, first + len("<<48/2=24>>")),
        StepCheck("9*2", F(19), F(18), False, second, second + len("<<9*2=19>>")),
    ]


@pytest.mark.parametrize("annotation, ok", [
    ("<<16-3-4=9>>", True), ("<<(3+4)*2=14>>", True), ("<<12/60=0.2>>", True), ("<<2*0.5=1.0>>", True),
    ("<<10/3=3.33>>", True), ("<<560//10=56>>", True), ("<<2+2=5>>", False), ("<<4/0=4>>", False),
    ("<<x=5>>", False), ("<<1+1=two>>", False),
])
def test_check_steps_annotations(annotation, ok):
    (step,) = check_steps(f"so {annotation} done")
    assert step.ok is ok


def test_step_spans_point_into_the_text():
    text = "First 3 * 4 = 12 . Then 12 + 5 = 17 . #### 17"
    spans = [text[s.start:s.end] for s in check_steps(text)]
    assert spans == ["3 * 4 = 12", "12 + 5 = 17"]


def test_step_quality():
    assert step_quality("2 + 2 = 4, 3 + 3 = 7") == 0.5
    assert step_quality("2 + 2 = 4 and 3 + 3 = 6") == 1.0
    assert step_quality("no steps at all") == 1.0
    assert step_quality("<<1+1=3>> <<1+1=3>> <<1+1=2>> <<2+2=4>>") == 0.5


@pytest.mark.parametrize("cot, reference, expected", [
    ("3 * 4 = 12 . 12 + 5 = 17 . #### 17", "17", True),
    ("3 * 4 = 11 . 12 + 5 = 17 . #### 17", "17", False),  # right answer, a wrong step
    ("3 * 4 = 12 . 12 + 5 = 17 . #### 17", "18", False),  # all steps right, wrong answer
    ("The answer is 17", "17", True),  # no steps to check
    ("She makes 9 * 2 = $<<9*2=18>>18.\n#### 18", "#### 18", True),
    ("She makes 9 * 2 = $<<9*2=19>>18.\n#### 18", "#### 18", False),
])
def test_is_strict_correct(cot, reference, expected):
    assert is_strict_correct(cot, reference) is expected


def _gsm8k(name: str) -> list[dict]:
    """Rows of a GSM8K file: the tests' slice, or the full corpus with $AFTLAB_GSM8K (conftest)."""
    return [json.loads(line) for line in (GSM8K / name).read_text(encoding="utf-8").splitlines() if line.strip()]


def test_is_correct_agrees_with_gsm8k_model_solution_labels():
    rows = _gsm8k("model_solutions.jsonl")
    labelled = [(row[key]["solution"], row["ground_truth"], row[key]["is_correct"])
                for row in rows for key in row if isinstance(row[key], dict) and "is_correct" in row[key]]
    agree = sum(is_correct(solution, gold) == label for solution, gold, label in labelled)
    share = agree / len(labelled)
    print(f"\nis_correct agrees with GSM8K labels on {agree}/{len(labelled)} = {share:.2%} of solutions")
    assert len(labelled) == 4 * len(rows) >= 400  # every question's four solutions (the slice: 100 questions)
    assert {label for *_, label in labelled} == {True, False}
    assert share >= 0.995


@pytest.mark.parametrize("split", ["train.jsonl", "test.jsonl"])
def test_extract_answer_reads_every_gold_answer(split):
    rows = _gsm8k(split)
    for row in rows:
        gold = row["answer"].rsplit("####", 1)[1].strip()
        assert extract_answer(row["answer"]) == str(normalize_number(gold)), row["answer"][-60:]
        assert is_correct(row["answer"], gold)


def test_check_steps_validates_gold_annotations():
    rows = _gsm8k("train.jsonl")
    annotations = [step for row in rows for step in check_steps(row["answer"])
                   if row["answer"].startswith("<<", step.start)]
    total = sum(row["answer"].count("<<") for row in rows)
    share = sum(step.ok for step in annotations) / len(annotations)
    print(f"\n{share:.2%} of {len(annotations)} gold train annotations check out")
    assert len(annotations) == total > 1000  # every annotation found (the slice's 300 rows hold 1,012)
    assert share >= 0.99
