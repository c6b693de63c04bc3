"""Answers and labels: a COT's final answer, whether it is right, and whether its arithmetic holds.

Place in the data path: data → model → VFT → sampling → **answers/labels** → scoring → losses → AFT →
metrics. Sampling labels each COT positive or negative with `is_correct`, or with the stricter
`is_strict_correct`, which also wants every arithmetic step to check out.

Canonical answers: integers print as ``"17"``, terminating decimals as ``"3.5"`` (no trailing zeros),
other fractions as ``"1/3"``; ``"50%"`` is the number 50. Every canonical answer parses back with
`normalize_number`.

Everything here is pure and total on ``str``. Model text may hold special tokens, garbage or megabytes,
so no function raises, none evaluates code (arithmetic goes through a small recursive-descent parser
over Fractions), numbers longer than `MAX_DIGITS` digits are ignored, and every regex is linear.

>>> extract_answer("3 * 4 = 12 . 12 + 5 = 17 . #### 17")
'17'
>>> is_correct("She pays $1,234.00 in all.", "#### 1234")
True
>>> [step.ok for step in check_steps("48/2 = <<48/2=24>>24 and 24 + 1 = 26")]
[True, False]
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

MAX_DIGITS = 30  # longer digit runs are garbage, and int() refuses > 4300 digits anyway
MAX_EXPR_CHARS = 500  # safe_eval refuses longer expressions
MAX_DEPTH = 50  # nesting of parentheses / unary signs / powers in safe_eval
MAX_STEP_TOKENS = 64  # longest operator chain check_steps reads before an "="
MAX_TEXT_CHARS = 20_000  # answers are read from the last, steps from the first this many characters
MAX_POWER_BITS = 4096  # a ** b must stay below this size, so 9**9**9 is refused, not computed

_UNSIGNED = r"(?:[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])|[0-9]+)(?:\.[0-9]+)?|\.[0-9]+"
# A sign counts only where it cannot be a binary minus ("10-5", "COVID-19").
_NUMBER = (
    rf"(?P<sign>(?<![0-9A-Za-z)\].,])[-−])?(?:[$€£] ?)?"
    rf"(?P<body>{_UNSIGNED})(?:/(?P<den>[0-9]+)(?![0-9.]))?"
)
_NUMBER_RE = re.compile(_NUMBER)
_FULL_NUMBER_RE = re.compile(rf"\s*\+?{_NUMBER} ?%?\.?\s*")
_HASH_RE = re.compile(rf"####\s{{0,5}}{_NUMBER}")
_PHRASE_RE = re.compile(
    rf"(?:(?i:\banswer\s{{0,5}}(?:is|was|=|:))|\bA\s{{0,3}}:)"
    rf"\s{{0,5}}[:=]?\s{{0,5}}(?:\\boxed\{{)?\(?\s{{0,3}}{_NUMBER}"
)


def _value(match: re.Match) -> Fraction | None:
    """The Fraction a `_NUMBER` match spells, or None when it is too long or divides by zero."""
    body, den = match["body"].replace(",", ""), match["den"]
    if len(body) - ("." in body) > MAX_DIGITS or (den is not None and len(den) > MAX_DIGITS):
        return None
    if den is not None and int(den) == 0:
        return None
    value = Fraction(body) / int(den or 1)
    if max(value.numerator, value.denominator) >= 10**MAX_DIGITS:  # keeps `_canonical` parseable
        return None
    return -value if match["sign"] else value


def _canonical(value: Fraction) -> str:
    """'17', '-0.25' (terminating decimals of at most MAX_DIGITS digits), else '1/3'."""
    places = next((k for k in range(MAX_DIGITS) if (value * 10**k).denominator == 1), None)
    if places == 0:
        return str(value.numerator)
    digits = str((abs(value) * 10 ** (places or 0)).numerator).rjust((places or 0) + 1, "0")
    if places is None or len(digits) > MAX_DIGITS:
        return f"{value.numerator}/{value.denominator}"
    return f"{'-' if value < 0 else ''}{digits[:-places]}.{digits[-places:]}"


def normalize_number(text: str) -> Fraction | None:
    """The number that ``text`` spells ("1,234", "$5", "3.50", "-2", "1/2", "50%" → 50), else None.

    >>> normalize_number("$1,234.50"), normalize_number("1/2"), normalize_number("50%")
    (Fraction(2469, 2), Fraction(1, 2), Fraction(50, 1))
    >>> normalize_number("twelve") is None
    True
    """
    if len(text) > 4 * MAX_DIGITS:
        return None
    match = _FULL_NUMBER_RE.fullmatch(text)
    return _value(match) if match else None


def _final_number(text: str) -> Fraction | None:
    text = text[-MAX_TEXT_CHARS:]
    for pattern in (_HASH_RE, _PHRASE_RE, _NUMBER_RE):
        values = [value for value in map(_value, pattern.finditer(text)) if value is not None]
        if values:
            return values[-1]
    return None


def extract_answer(text: str) -> str | None:
    """The final answer of a COT in canonical form, or None when the text holds no number.

    Priority: the last ``#### N``; else the last "The answer is N" / "answer: N" / "A: N"; else the
    last number anywhere.

    >>> extract_answer("2 + 3 = 5. The answer is $1,050.00.")
    '1050'
    >>> extract_answer("a third: 1/3 <|endoftext|>"), extract_answer("[UNK] [UNK]")
    ('1/3', None)
    """
    value = _final_number(text)
    return None if value is None else _canonical(value)


@lru_cache(maxsize=32)
def _choice_patterns(letters: str) -> tuple[re.Pattern, ...]:
    upper = "".join(re.escape(c) for c in letters.upper())
    lower = "".join(re.escape(c) for c in letters.lower())
    # A bare lowercase letter followed by a word is the article in "the answer is a car".
    letter = (
        rf"(?:\(\s?(?P<p>[{upper}{lower}])\s?\)|(?P<u>[{upper}])(?![A-Za-z0-9])"
        rf"|(?P<l>[{lower}])(?![A-Za-z0-9])(?!\s{{1,3}}[A-Za-z]))"
    )
    return (
        re.compile(rf"####\s{{0,5}}{letter}"),
        re.compile(
            rf"(?i:\banswer(?:\s{{1,5}}(?:is|was))?\s{{0,5}}[:=]?\s{{0,5}}(?:option|choice)?)"
            rf"\s{{0,5}}{letter}"
        ),
        re.compile(rf"\((?P<p>[{upper}])\)"),
        re.compile(rf"\s*{letter}\.?\s*"),
    )


def extract_choice(text: str, letters: str = "ABCDE") -> str | None:
    """The option letter a multiple-choice COT ends on, upper-case, or None.

    Priority: the last ``#### C``; else the last "The answer is (C)" / "answer: c" / "Answer: option
    C"; else the last "(C)"; else a text that is a letter alone.

    >>> extract_choice("x = 3, so (B) fits ... The answer is (c)."), extract_choice("I ate a pie")
    ('C', None)
    """
    letters = "".join(dict.fromkeys(c for c in letters.upper() if "A" <= c <= "Z"))
    if not letters:
        return None
    *patterns, alone = _choice_patterns(letters)
    text = text[-MAX_TEXT_CHARS:]
    for pattern in patterns:
        matches = list(pattern.finditer(text))
        if matches:
            return next(g for g in matches[-1].groups() if g).upper()
    match = alone.fullmatch(text) if len(text) < 16 else None
    return next(g for g in match.groups() if g).upper() if match else None


_LETTER_REFERENCE_RE = re.compile(r"\s*\(?([A-Ea-e])\)?\.?\s*")


def is_correct(cot_text: str, reference: str) -> bool:
    """Whether the COT's answer equals the reference: a gold answer ("17", "$1,234", "C") or a gold
    solution ending in ``#### N`` / ``A: N``. Numbers compare exactly, letters case-insensitively.

    >>> is_correct("... #### 17.0", "17"), is_correct("The answer is (c)", "C")
    (True, True)
    >>> is_correct("<|endoftext|>", "17")
    False
    """
    letter = _LETTER_REFERENCE_RE.fullmatch(reference)
    if letter:
        return extract_choice(cot_text) == letter[1].upper()
    gold = _reference_number(reference)
    return gold is not None and _final_number(cot_text) == gold


def _reference_number(reference: str) -> Fraction | None:
    gold = normalize_number(reference)
    return _final_number(reference) if gold is None else gold


def reference_answer(reference: str) -> str | None:
    """What `is_correct` compares COTs with: the gold answer's number in canonical form or its choice
    letter; None when it holds neither, so that no COT can ever be marked right against it.

    >>> reference_answer("$1,050.00"), reference_answer("(c)"), reference_answer("banana")
    ('1050', 'C', None)
    """
    letter = _LETTER_REFERENCE_RE.fullmatch(reference)
    if letter:
        return letter[1].upper()
    gold = _reference_number(reference)
    return None if gold is None else _canonical(gold)


@dataclass(frozen=True)
class StepCheck:
    """One arithmetic step of a COT and its verdict."""

    expression: str  # left-hand side as written, e.g. "48/2"
    claimed: Fraction | None  # the right-hand side the text states
    actual: Fraction | None  # what the expression evaluates to; None if it does not parse
    ok: bool  # claimed matches actual (see `check_steps` for rounding)
    start: int  # character span of the step in the text
    end: int


class _Invalid(Exception):
    """The expression does not parse, divides by zero, or exceeds a size bound."""


_EXPR_TOKEN_RE = re.compile(rf"\s*(?:(?:[$€£] ?)?(?P<num>{_UNSIGNED})|(?P<op>\*\*|//|[-−–+*/×÷·^xX()]))")
_OPERATORS = {"−": "-", "–": "-", "×": "*", "x": "*", "X": "*", "·": "*", "÷": "/", "**": "^"}


class _Parser:
    """Recursive descent: expr := term ((+|-) term)*; term := unary ((*|/|//) unary)*;
    unary := (+|-) unary | atom (^ unary)?; atom := number | "(" expr ")"."""

    def __init__(self, tokens: list):
        self.tokens, self.pos, self.depth = [*tokens, None], 0, 0

    def take(self, *expected: str):
        """The next token if it is one of ``expected`` (any token when none is given), else None."""
        token = self.tokens[self.pos]
        if token is None or expected and token not in expected:
            return None
        self.pos += 1
        return token

    def nested(self, parse) -> Fraction:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _Invalid
        value = parse()
        self.depth -= 1
        return value

    def expr(self) -> Fraction:
        value = self.term()
        while op := self.take("+", "-"):
            value = value + self.term() if op == "+" else value - self.term()
        return value

    def term(self) -> Fraction:
        value = self.unary()
        while op := self.take("*", "/", "//"):
            rhs = self.unary()
            if op != "*" and rhs == 0:
                raise _Invalid
            value = value * rhs if op == "*" else value / rhs if op == "/" else Fraction(value // rhs)
        return value

    def unary(self) -> Fraction:
        if op := self.take("+", "-"):
            value = self.nested(self.unary)
            return -value if op == "-" else value
        base = self.atom()
        if not self.take("^"):
            return base
        exponent = self.nested(self.unary)
        size = max(base.numerator.bit_length(), base.denominator.bit_length())
        if exponent.denominator != 1 or size * abs(exponent) > MAX_POWER_BITS or base == 0 > exponent:
            raise _Invalid
        return base**exponent.numerator

    def atom(self) -> Fraction:
        token = self.take()
        if isinstance(token, Fraction):
            return token
        if token != "(":
            raise _Invalid
        value = self.nested(self.expr)
        if not self.take(")"):
            raise _Invalid
        return value


def safe_eval(expression: str) -> Fraction | None:
    """Exact value of an arithmetic expression (+ - * / // x × ÷, ^ or ** with small integer exponents,
    parentheses, unary signs, "$" and thousands commas), or None. Never runs code.

    >>> safe_eval("2 + 3 * (4 - 1) / $1,000"), safe_eval("7 / 0"), safe_eval("9**9**9")
    (Fraction(2009, 1000), None, None)
    >>> safe_eval("__import__('os').system('x')") is None
    True
    """
    if len(expression) > MAX_EXPR_CHARS:
        return None
    tokens, pos = [], 0
    while pos < len(expression.rstrip()):
        match = _EXPR_TOKEN_RE.match(expression, pos)
        if not match:
            return None
        if match["num"] is not None:
            body = match["num"].replace(",", "")
            if len(body) - ("." in body) > MAX_DIGITS:
                return None
            tokens.append(Fraction(body))
        else:
            tokens.append(_OPERATORS.get(match["op"], match["op"]))
        pos = match.end()
    parser = _Parser(tokens)
    try:
        value = parser.expr()
    except _Invalid:
        return None
    return value if parser.pos == len(tokens) else None


def _claim_matches(claimed: Fraction | None, actual: Fraction | None, claim_text: str) -> bool:
    """Exact, or the claim is ``actual`` rounded to 2 decimals, or rounded/truncated to its own
    number of decimals (GSM8K writes 100/3 as 33.33, 2/3 as 0.67, 1/3 as 0.333)."""
    if claimed is None or actual is None:
        return False
    if claimed == actual or claimed == round(actual, 2):
        return True
    decimals = re.search(r"\.([0-9]+)", claim_text)
    if not decimals:
        return False
    scale = 10 ** len(decimals[1])
    return 2 * abs(claimed - actual) * scale <= 1 or claimed == Fraction(math.trunc(actual * scale), scale)


_STEP_TOKEN_RE = re.compile(
    rf"(?P<ann><<(?P<lhs>[^<>=]{{1,{MAX_EXPR_CHARS}}})=(?P<rhs>[^<>]{{0,60}})>>)"
    rf"|(?P<num>(?:[$€£] ?)?(?:{_UNSIGNED})(?P<pct> ?%)?)"
    # "x" multiplies only between numbers: "3 x 4", not "2x + 8" or "box".
    r"|(?P<op>\*\*|//|[-−–+*/×÷·^]|(?<=[0-9 )])[xX](?=[ \t]{0,3}[0-9($.]))"
    r"|(?P<lp>\()|(?P<rp>\))|(?P<eq>=)|(?P<ws>[ \t]+)|(?P<other>[A-Za-z]+|.)",  # a newline ends a step
    re.DOTALL,
)
_SIGNS = "-−–+"


def _follows(a: tuple[str, re.Match], b: tuple[str, re.Match]) -> bool:
    """Whether token b may follow token a inside an arithmetic expression."""
    if a[0] in ("num", "rp"):
        return b[0] in ("op", "rp")
    if a[0] in ("op", "lp"):
        return b[0] in ("num", "lp") or (b[0] == "op" and b[1][0] in _SIGNS)
    return False


def _joined(tokens: list, i: int) -> bool:
    """Whether operands tokens[i-1] and tokens[i] are one quantity ("14(2)", "1 1/2", "650 000")."""
    (kind_a, a), (kind_b, b) = tokens[i - 1], tokens[i]
    if kind_a not in ("num", "rp") or kind_b not in ("num", "lp"):
        return False
    mixed = i + 1 < len(tokens) and tokens[i + 1][1][0] == "/" and kind_b == "num"
    return a.end() == b.start() or mixed or (kind_b == "num" and re.match(r"0[0-9]", b[0]) is not None)


def _lhs_start(tokens: list, eq: int) -> int | None:
    """First token of the expression left of ``tokens[eq]``, or None when there is no clean one."""
    if eq == 0 or tokens[eq - 1][0] not in ("num", "rp"):
        return None
    start, floor = eq - 1, max(0, eq - MAX_STEP_TOKENS)
    while start > floor and _follows(tokens[start - 1], tokens[start]):
        start -= 1
    if start > 0:
        before = tokens[start - 1][1]
        if _follows(tokens[start - 1], tokens[start]) or _joined(tokens, start):
            return None
        if before[0] in ":.,/" and before.end() == tokens[start][1].start():  # "6:00+48"
            return None
    first = tokens[start]
    # A leading operator continues prose ("15 apples - 3"); only a sign after punctuation is unary.
    if first[0] == "op" and (first[1][0] not in _SIGNS or start > 0 and tokens[start - 1][1][0].isalpha()):
        return None
    opened = []
    for i in range(start, eq):
        if tokens[i][0] == "lp":
            opened.append(i)
        elif tokens[i][0] == "rp":
            if not opened:  # closes a parenthesis opened in the prose before the step
                return None
            opened.pop()
    if opened:  # "(so 3 + 4 = 7)": a parenthesis opened before the step is prose
        if any(tokens[i][0] != "lp" for i in range(start, opened[-1])):
            return None
        start = opened[-1] + 1
    return start if any(kind == "op" for kind, _ in tokens[start + 1 : eq]) else None


def _rhs_end(tokens: list, eq: int) -> int | None:
    """One past the last token of the expression right of ``tokens[eq]``, or None."""
    first = eq + 1
    if first >= len(tokens) or not (tokens[first][0] in ("num", "lp") or tokens[first][1][0] in _SIGNS):
        return None
    end, ceiling = first + 1, min(len(tokens), first + MAX_STEP_TOKENS)
    while end < ceiling and _follows(tokens[end - 1], tokens[end]):
        end += 1
    if end < len(tokens) and (_follows(tokens[end - 1], tokens[end]) or _joined(tokens, end)):
        return None
    depth = 0
    for i in range(first, end):
        depth += {"lp": 1, "rp": -1}.get(tokens[i][0], 0)
        if depth < 0:  # "(so 3 + 4 = 7)": the closing parenthesis is prose
            end = i
            break
    # A trailing operator continues into prose ("= 24/Y", "= 32 + x"): no clean claim.
    return end if depth <= 0 and end > first and tokens[end - 1][0] in ("num", "rp") else None


def check_steps(text: str) -> list[StepCheck]:
    """Every arithmetic step ``a op b = c`` (chains, parentheses, x × ÷, $ and commas, token-spaced
    text, a right-hand side that is itself an expression as in ``2 * 3 = 3 + 3``) and every GSM8K
    annotation ``<<a*b=c>>`` in ``text``, each side evaluated with `safe_eval`.

    Steps that cannot be cut cleanly out of the prose ("15 apples - 3 = 12", "2x + 8 = 66", "1 1/2")
    are skipped rather than judged. A claim passes when exact or a rounding of the true value (see
    `_claim_matches`). Only the first `MAX_TEXT_CHARS` characters are read.

    >>> [(s.expression, s.ok) for s in check_steps("3 * 4 = 12 . 12 + 5 = 18 . #### 18")]
    [('3 * 4', True), ('12 + 5', False)]
    """
    tokens = [
        ("other" if match["pct"] else match.lastgroup, match)  # percentages are prose, not operands
        for match in _STEP_TOKEN_RE.finditer(text[:MAX_TEXT_CHARS])
        if match.lastgroup != "ws"
    ]
    steps = []
    for i, (kind, match) in enumerate(tokens):
        if kind == "ann":
            lhs, rhs, (start, end) = match["lhs"].strip(), match["rhs"], match.span()
            claimed = normalize_number(rhs)
        elif kind == "eq" and (first := _lhs_start(tokens, i)) is not None and (last := _rhs_end(tokens, i)):
            start, end = tokens[first][1].start(), tokens[last - 1][1].end()
            lhs = text[start : tokens[i - 1][1].end()]
            rhs = text[tokens[i + 1][1].start() : end]
            claimed = safe_eval(rhs)
        else:
            continue
        actual = safe_eval(lhs)
        steps.append(StepCheck(lhs, claimed, actual, _claim_matches(claimed, actual, rhs), start, end))
    return steps


def step_marks(text: str) -> str:
    """One mark per arithmetic step of ``text``: ✓ checks out, ✗ does not; "—" when it has no steps.

    >>> step_marks("2 * 2 = 5. 5 + 2 = 7. #### 7"), step_marks("#### 7")
    ('✗✓', '—')
    """
    return "".join("✓" if s.ok else "✗" for s in check_steps(text)) or "—"


def step_quality(text: str) -> float:
    """Share of the text's arithmetic steps that check out; 1.0 when it has none.

    >>> step_quality("2 + 2 = 4, 3 + 3 = 7"), step_quality("no arithmetic here")
    (0.5, 1.0)
    """
    steps = check_steps(text)
    return sum(step.ok for step in steps) / len(steps) if steps else 1.0


def is_strict_correct(cot_text: str, reference: str) -> bool:
    """`is_correct` and every arithmetic step checks out.

    >>> is_strict_correct("2 + 2 = 4. #### 4", "4"), is_strict_correct("2 + 2 = 5. 5 - 1 = 4. #### 4", "4")
    (True, False)
    """
    return is_correct(cot_text, reference) and all(step.ok for step in check_steps(cot_text))
