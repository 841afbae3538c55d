"""The scoreboard (flatbook.book.scoreboard) on constructed executed notebooks: one row per paper
claim and chapter, the conjunction of the chapter's components, a missing component refused."""

from __future__ import annotations

import nbformat
import pytest

from flatbook import claims
from flatbook.book.scoreboard import MissingComponent, SCOREBOARD_MARKER, fill_scoreboard, scoreboard_rows
from flatbook.chapters.paper_claims import PAPER_CLAIMS, WEIGHT_DECAY, paper_claim, tag


def _part(component: str, outcome: str, effect: float = 2.0) -> claims.Claim:
    failed = "seeds per setting = 1, at least 2" if outcome == "untestable" else ""
    return claims.Claim(f"the part {component}", outcome, "ratio", effect, 1.5, 3.0, 1.0, 0.95, 1.4, "t over seeds",
                        failed=failed, **tag(WEIGHT_DECAY, component))


def _write(folder, chapter: str, shown: list[claims.Claim]) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_markdown_cell(f"# The chapter {chapter}"))
    cell = nbformat.v4.new_code_cell("claims.show(...)")
    cell.outputs = [nbformat.v4.new_output("display_data", data={
        "text/markdown": claims.markdown(shown), claims.CLAIMS_MIME: {"claims": [c.to_dict() for c in shown]}})]
    nb.cells.append(cell)
    nbformat.write(nb, str(folder / f"{chapter}.ipynb"))


def test_rows_are_conjunctions_of_each_chapters_parts(tmp_path):
    sharper, better = WEIGHT_DECAY.components
    _write(tmp_path, "wd_logreg", [_part(sharper, "supported"), _part(better, "inconclusive", 0.3),
                                   claims.exact_claim("an identity", 0.0, 0.0)])
    _write(tmp_path, "wd_mlp", [_part(sharper, "supported", 9.0), _part(better, "supported", 1.9)])
    _write(tmp_path, "wd_wrn", [_part(sharper, "contradicted", 0.5), _part(better, "untestable")])
    rows = {(r.claim, r.chapter): r for r in scoreboard_rows(tmp_path)}
    assert len(rows) == sum(len(p.chapters) for p in PAPER_CLAIMS)
    assert rows[(WEIGHT_DECAY.name, "wd_logreg")].verdict == "inconclusive"
    mlp = rows[(WEIGHT_DECAY.name, "wd_mlp")]
    assert mlp.verdict == "supported" and "ratio = 9" in mlp.effects and mlp.title == "The chapter wd_mlp"
    assert rows[(WEIGHT_DECAY.name, "wd_wrn")].verdict == "untestable"
    assert "seeds per setting" in rows[(WEIGHT_DECAY.name, "wd_wrn")].regime
    assert rows[(WEIGHT_DECAY.name, "wd_preresnet")].verdict == "not run"
    page = tmp_path / "scoreboard.md"
    page.write_text(f"# Scoreboard\n\n{SCOREBOARD_MARKER}\n")
    fill_scoreboard(page, tmp_path)
    text = page.read_text()
    assert SCOREBOARD_MARKER not in text and "| **supported** |" in text and "{doc}`The chapter wd_mlp <wd_mlp>`" in text


def test_a_chapter_without_one_of_its_parts_is_refused(tmp_path):
    _write(tmp_path, "wd_logreg", [_part(WEIGHT_DECAY.components[0], "supported")])
    with pytest.raises(MissingComponent, match="better: validation accuracy higher"):
        scoreboard_rows(tmp_path)
    with pytest.raises(ValueError, match="no paper claim"):
        paper_claim("flatness is a true friend")
    with pytest.raises(ValueError, match="not a component"):
        tag(WEIGHT_DECAY, "flatter")


def test_a_page_without_the_marker_is_refused(tmp_path):
    page = tmp_path / "scoreboard.md"
    page.write_text("# no marker\n")
    with pytest.raises(ValueError, match="no line"):
        fill_scoreboard(page, tmp_path)


def test_notes_carry_the_chapters_corrections_and_the_calibration(tmp_path):
    sharper, better = WEIGHT_DECAY.components
    _write(tmp_path, "wd_wrn", [_part(sharper, "supported"), _part(better, "supported"),
                                claims.exact_claim("Eq. (3) is not the Hessian: it drops a term", 0, 0, role="correction")])
    _write(tmp_path, "calibration", [claims.checked_claim(
        "wd_wrn, train mode: the lambda_1 ratio its claims compare (SGD, wd 0.0066 / SGD, wd 0) is within 10% of the "
        "whole split's", 0.3, 0.1, "|bias - 1|", evidence=[("estimated ratio", "13"), ("whole-split ratio", "10")])])
    row = next(r for r in scoreboard_rows(tmp_path) if r.chapter == "wd_wrn")
    assert "the book's correction, confirmed: Eq. (3) is not the Hessian" in row.notes
    assert "calibration (train mode): the claims' lambda_1 ratio 13 against 10" in row.notes and "fails" in row.notes


def test_note_headlines_never_cut_inside_parentheses():
    from flatbook.book import scoreboard

    _headline = scoreboard._headline
    assert _headline("Eq. (3) is not the Hessian: the dropped term") == "Eq. (3) is not the Hessian"
    text = "Tr(H) = X^2 L sum_i P_i^2 (Eq. (4) as printed has X in place of X^2: a typo)"
    assert _headline(text) == text
