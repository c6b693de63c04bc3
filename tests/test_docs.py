"""The README and docs/ are for their readers: short, current (generated figures match the result files), every
command in them a real one, every link resolving, and the project speaking only of itself."""
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
PROSE = PAGES + sorted((ROOT / "experiments").rglob("*.md")) + sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted(
    (ROOT / "aftlab").rglob("*.py")) + sorted((ROOT / "adapters").rglob("*.md"))


def code_lines(text: str) -> list[str]:
    """The lines of the fenced ``bash`` blocks of a markdown text, comments cut off, continuations joined.

    >>> code_lines("x\\n```bash\\naftlab run --out a   # go\\naftlab app \\\\\\n  --runs r\\n```\\n")
    ['aftlab run --out a', 'aftlab app --runs r']
    """
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line:
                out.append(re.sub(r"\s+", " ", line))
    return out


def test_readme_is_short_and_opens_with_what_it_found():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    assert text.index("## What it found") < text.index("## The method in one screen")
    assert "<!-- findings:findings -->" in text


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_aftlab_command_in_the_docs_parses(page):
    from aftlab.cli import build_parser
    parser = build_parser()
    for line in code_lines(page.read_text()):
        for part in re.split(r"\s*(?:&&|;|\|)\s*", line):
            words = shlex.split(part.replace("$AFTLAB_GSM8K", "gsm8k"))
            words = words[next((i for i, w in enumerate(words) if "=" not in w), len(words)):]  # VAR=... prefixes
            if words[:1] == ["aftlab"] and "{" not in part:
                try:
                    parser.parse_args(words[1:])
                except SystemExit as e:  # argparse exits on an unknown command or flag
                    pytest.fail(f"{page.name}: `{part}` does not parse ({e})")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
        if not re.match(r"[a-z]+:", target):
            assert (page.parent / target).exists(), f"{page.name}: broken link {target}"


def test_the_project_speaks_only_of_itself():
    found = []
    for path in PROSE:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\bsession\b", line, re.I) and "scope=" not in line:
                found.append(f"{path.relative_to(ROOT)}:{n}")
            if re.search(r"\bSPEC\b|\bissue \d+|\.\./shared/(SPEC|STYLE|PEERS)", line):
                found.append(f"{path.relative_to(ROOT)}:{n}")
    assert not found, found


def test_generated_figures_match_the_result_files():
    from aftlab.report import findings
    assert findings.main(["--check"]) == 0
