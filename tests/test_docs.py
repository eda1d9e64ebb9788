"""The README is a front door to docs/*.md: every link between them must land somewhere.

A moved or renamed section breaks links silently on GitHub; this catches it here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def without_code(text: str) -> str:
    """The text outside fenced code blocks and inline code (links there are not links)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    out = set()
    for line in without_code(page.read_text()).splitlines():
        if m := re.match(r"#{1,6}\s+(.*)", line):
            out.add(re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-"))
    return out


def test_the_front_door_is_short():
    # "A README a newcomer reads in five minutes": the deep parts live in docs/.
    assert len((REPO / "README.md").read_text().splitlines()) <= 120


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_resolves(page):
    broken = []
    for target in LINK.findall(without_code(page.read_text())):
        if re.match(r"[a-z]+://|mailto:", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.relative_to(REPO)}")
    assert not broken, f"{page.relative_to(REPO)}: " + "; ".join(broken)


# --------------------------------------------------------------------------- numbers quoted from the Results

RESULTS_PAGE = REPO / "docs" / "results" / "index.md"
# The page of a profile being built in steps (docs/results.md, "Built in steps"): a paragraph that
# links it quotes that page, not the finished one.
IN_PROGRESS_PAGE = REPO / "docs" / "results-in-progress" / "index.md"
NUMBER = re.compile(r"(?<![\w.])[+-]?\d+(?:,\d{3})*(?:\.\d+)?(?![\w.])")
PLUS_MINUS = re.compile(r"([+-]?\d+(?:\.\d+)?) ± (\d+(?:\.\d+)?)")


def _numbers(text: str) -> list[str]:
    return NUMBER.findall(text)


def _on_the_page(quoted: str, page_numbers: list[float]) -> bool:
    """A quoted number is the page's when some number there rounds to it at its precision
    (29.5 quotes 29.51; 176.5 quotes 176.45)."""
    decimals = len(quoted.partition(".")[2])
    value = float(quoted.replace(",", ""))
    return any(abs(y - value) <= 0.5 * 10 ** -decimals + 1e-9 for y in page_numbers)


def _quoting_sections() -> list[tuple[str, str]]:
    """(where, text): README's Results section and the whole of docs/results.md."""
    readme = (REPO / "README.md").read_text()
    start = readme.index("\n## Results")
    end = readme.index("\n## ", start + 1)
    return [("README.md#results", readme[start:end]), ("docs/results.md", (REPO / "docs" / "results.md").read_text())]


def _from_elsewhere(text: str) -> str:
    """`text` without what other sources measured: sections under a heading that says
    "published", and paragraphs or list items that name the `bench/` script behind their numbers."""
    kept, skip_section = [], False
    for block in re.split(r"\n(?=\s*\n|- |#)", text):
        heading = block.lstrip("\n").startswith("#")
        if heading:
            skip_section = "published" in block.lower().splitlines()[0]
        if not skip_section and "bench/" not in block:
            kept.append(block)
    return "\n".join(kept)


def _quoted(text: str) -> list[str]:
    """The numbers a docs page quotes from the Results page: every cell of its run tables (a
    table whose header starts with `| run`) and both sides of every `a ± b` in its prose
    (not what other sources measured: _from_elsewhere)."""
    quoted, in_run_table = [], False
    for line in _from_elsewhere(text).splitlines():
        if line.startswith("| run"):
            in_run_table = True
            continue
        if not line.startswith("|"):
            in_run_table = False
        if in_run_table and not line.startswith("|---"):
            cells = line.split("|")[2:]  # not the run's name
            quoted += [n for cell in cells for n in _numbers(cell)]
        elif not line.startswith("|"):
            quoted += [n for pair in PLUS_MINUS.findall(line) for n in pair]
    return quoted


def test_numbers_quoted_from_the_results_page_are_on_it():
    """README's Results and docs/results.md quote docs/results/index.md, which
    `python -m pipeline results` regenerates: a number that is not on the page (at the quoted
    precision) is one that drifted when the page was regenerated and the prose was not."""
    pages = {page: [float(n.replace(",", "")) for n in _numbers(page.read_text())]
             for page in (RESULTS_PAGE, IN_PROGRESS_PAGE) if page.is_file()}
    drifted = []
    for where, text in _quoting_sections():
        for paragraph in re.split(r"\n\s*\n", _from_elsewhere(text)):
            page = IN_PROGRESS_PAGE if "results-in-progress/" in paragraph else RESULTS_PAGE
            drifted += [f"{where}: {n} (not on {page.relative_to(REPO)})" for n in _quoted(paragraph)
                        if not _on_the_page(n, pages.get(page, []))]
    assert not drifted, "numbers quoted from a results page and not on it:\n" + "\n".join(drifted)


def test_the_quote_check_catches_a_drifted_number():
    page = [29.51, 0.93, 176.45]
    assert _on_the_page("29.5", page) and _on_the_page("176.5", page) and _on_the_page("0.9", page)
    assert not _on_the_page("29.4", page) and not _on_the_page("199.9", page)
    assert _quoted("| run | FID |\n|---|---|\n| gan | 176.5 ± 3.0 |\n\nFID 29.5 ± 0.9 after 5 epochs\n"
                   "- `bench/x.py` scored 481.1 ± 9.1\n\n## Against published FIDs\n\nWGAN 6.7 ± 0.4\n\n"
                   "## Next\n\nFID 30.1 ± 1.0") == ["176.5", "3.0", "29.5", "0.9", "30.1", "1.0"]
