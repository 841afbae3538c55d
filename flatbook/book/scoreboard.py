"""The book's opening page: one verdict per paper claim and chapter, computed from the executed chapters.

For every claim of ``flatbook.chapters.paper_claims.PAPER_CLAIMS`` and every chapter that tests it,
the scoreboard reads the claims the executed notebook showed (``claims.claims_in_notebook``), takes
the ones tagged as that paper claim's components, and reports:

* the verdict, ``claims.conjunction`` of the components ("supported" only when every part is), with
  "(marginal)" when a supported part is within 1.5x its minimum detectable effect;
* each component's effect with its interval;
* the regime: the conditions that failed (why a verdict is "untestable"), else the measured values
  of the conditions, and whether the runs interpolate;
* notes: the book's corrections of the paper that the chapter confirmed, and, for a chapter whose
  sharpness is estimated on a subsample, what the calibration appendix found for the ratio its
  claims compare (the bias against the whole training split, and whether it is within 10%);
* a link to the chapter.

``stage_book`` writes it into the staged ``book/scoreboard.md`` in place of the line
``SCOREBOARD_MARKER``, so the page is always the verdicts of the notebooks the book renders.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

__all__ = ["SCOREBOARD_MARKER", "ScoreRow", "scoreboard_rows", "scoreboard_markdown", "fill_scoreboard",
           "MissingComponent"]

SCOREBOARD_MARKER = "<!-- flatbook:scoreboard -->"


class MissingComponent(ValueError):
    """An executed chapter did not show a component of a paper claim it is listed as testing."""


@dataclass(frozen=True)
class ScoreRow:
    """One paper claim as one chapter tested it (``verdict`` "not run" when the chapter has no
    executed notebook)."""

    claim: str
    section: str
    chapter: str
    title: str
    verdict: str
    marginal: bool
    effects: str
    regime: str
    notes: str = ""


def _regime_text(parts: Sequence) -> str:
    failed = [c.failed for c in parts if c.failed]
    if failed:
        return "failed: " + "; ".join(dict.fromkeys(failed))
    conditions: dict[str, str] = {}
    for c in parts:
        for cond in c.regime:
            conditions.setdefault(cond.name, f"{cond.name} {cond.value:.4g}")
        for name, value in c.evidence:
            if name == "lowest training accuracy (eval mode)":
                conditions.setdefault(name, f"{name} {value}")
    return "; ".join(conditions.values()) if conditions else "exact (no regime)"


def _headline(statement: str) -> str:
    """A statement up to its first ": " outside parentheses (the part before the explanation), or
    whole when it has none: a cut inside "(...)" left a note with an open parenthesis."""
    depth = 0
    for i, ch in enumerate(statement):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth == 0 and statement.startswith(": ", i):
            return statement[:i]
    return statement


def _notes(chapter: str, shown: Sequence, calibration: Sequence) -> str:
    notes = [f"the book's correction, {c.outcome}: {_headline(c.statement)}" for c in shown
             if c.role == "correction" and c.decision == "holds"]
    for c in calibration:
        if c.statement.startswith(f"{chapter}, ") and "ratio its claims compare" in c.statement:
            ratio = dict(c.evidence)
            notes.append(f"calibration ({c.statement.split(', ')[1].split(':')[0]}): the claims' lambda_1 ratio "
                         f"{ratio.get('estimated ratio', '?')} against {ratio.get('whole-split ratio', '?')} over the "
                         f"whole training split ({c.outcome} the 10% check)")
    return "; ".join(notes)


def scoreboard_rows(executed_dir: Path) -> list[ScoreRow]:
    """The scoreboard's rows, in the paper's order (module docstring). ``MissingComponent`` when an
    executed chapter lacks one of its paper claims' components."""
    import nbformat

    from ..chapters.paper_claims import PAPER_CLAIMS
    from ..claims import claims_in_notebook, conjunction

    rows = []
    calibration_nb = Path(executed_dir) / "calibration.ipynb"
    calibration = claims_in_notebook(calibration_nb) if calibration_nb.is_file() else []
    for pc in PAPER_CLAIMS:
        for chapter in pc.chapters:
            path = Path(executed_dir) / f"{chapter}.ipynb"
            if not path.is_file():
                rows.append(ScoreRow(pc.name, pc.section, chapter, chapter, "not run", False, "", ""))
                continue
            nb = nbformat.read(str(path), as_version=4)
            title = next((line[2:].strip() for cell in nb.cells if cell.cell_type == "markdown"
                          for line in cell.source.splitlines() if line.startswith("# ")), chapter)
            everything = claims_in_notebook(nb)
            shown = [c for c in everything if c.paper_claim == pc.name]
            parts = []
            for component in pc.components:
                found = [c for c in shown if c.component == component]
                if len(found) != 1:
                    raise MissingComponent(f"chapter {chapter!r} shows {len(found)} claims for the component "
                                           f"{component!r} of the paper's claim {pc.name!r} (exactly 1 expected)")
                parts.append(found[0])
            verdict = conjunction(parts)
            effects = "; ".join(f"{p.component}: {p.effect_text()} ({p.outcome})" for p in parts)
            rows.append(ScoreRow(pc.name, pc.section, chapter, title, verdict,
                                 verdict == "supported" and any(p.marginal for p in parts), effects,
                                 _regime_text(parts), _notes(chapter, everything, calibration)))
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "/").replace("\n", " ")


def scoreboard_markdown(rows: Sequence[ScoreRow]) -> str:
    """A Markdown table of ``rows`` (paper claim, chapter, verdict, effects, regime) and a count of
    the verdicts under it."""
    lines = ["| the paper's claim | tested in | verdict | effects (95% intervals) | regime | notes |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        verdict = f"**{r.verdict}**" + (" (marginal)" if r.marginal else "")
        where = f"{{doc}}`{r.title} <{r.chapter}>`" if r.verdict != "not run" else r.chapter
        lines.append(f"| {_cell(r.claim)} ({r.section}) | {where} | {verdict} | {_cell(r.effects)} | {_cell(r.regime)} "
                     f"| {_cell(r.notes)} |")
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.verdict] = counts.get(r.verdict, 0) + 1
    lines += ["", "Verdicts over the " + f"{len(rows)} rows: " + ", ".join(f"{v} {n}" for v, n in counts.items()) + "."]
    return "\n".join(lines)


def fill_scoreboard(page: Path, executed_dir: Path) -> None:
    """Replace the line ``SCOREBOARD_MARKER`` in the staged ``page`` by the scoreboard of the
    notebooks in ``executed_dir`` (ValueError if the page has no such line)."""
    text = Path(page).read_text()
    if SCOREBOARD_MARKER not in text:
        raise ValueError(f"{page} has no line {SCOREBOARD_MARKER!r} to hold the scoreboard")
    Path(page).write_text(text.replace(SCOREBOARD_MARKER, scoreboard_markdown(scoreboard_rows(executed_dir))))
