"""Fixed prose states no run-dependent fact: every chapter's Markdown (the notebooks' Markdown cells
and the book's .md pages) is read for the known patterns of sentences that a run should compute
instead (a verdict, whether a network fits, how a measured curve moves, a count of what a run
produced). A sentence that quotes the paper's own numbers, or that defines what an outcome word
means, is not a run-dependent fact and is allowed.

Each pattern below was found in the book once, contradicting the numbers beside it (issue 20)."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = (sorted((ROOT / "book").glob("*.ipynb")) + sorted((ROOT / "book").rglob("*.md"))
         + sorted((ROOT / "book" / "profiles").glob("*.yaml")))

RUN_DEPENDENT = {
    "a verdict in fixed prose": re.compile(
        r"\b(is|are|was|were|comes out|came out|prints?|printed)\s+\**\"?(supported|contradicted|confirmed|refuted)\b", re.I),
    "whether a run fits, stated in fixed prose": re.compile(
        r"\b(still fits|fits (at|its|every|all|100)|do(es)? not fit|no longer fits|cannot interpolate at|"
        r"(fits|fitted|interpolates?) (100|9\d)(\.\d+)?%)", re.I),
    "a measured curve's shape in fixed prose": re.compile(
        r"\b(first rise|only after a first rise|falls (monotonically|after)|every measure falls|"
        r"(loss|sharpness) (and sharpness )?falls?\b)", re.I),
    "a count of what the run produced": re.compile(r"\b(two|three|four|five|six|seven|eight|nine|ten|\d+) groups\b", re.I),
    "whether a profile's runs test a claim": re.compile(r"\b(cannot test|too short for weight decay to act|is not tested)\b",
                                                          re.I),
}
# sentences that quote the paper (explicit markers only), define an outcome word, or state what a
# computation CAN or MUST do in general are not about this run; everything else is held to the patterns
ALLOWED = re.compile(r"its numbers, quoted|the paper reports|\(quoted\)|"
                     r"\b(supported|contradicted|confirmed|refuted|passes|fails)\b\W{0,3} (\(|when|if|means)|"
                     r"\b(cannot|can|must|would|whether)\b", re.I)


def sentences(text: str) -> list[str]:
    text = re.sub(r"```.*?```", " ", text, flags=re.S)  # code blocks are commands, not claims
    text = re.sub(r"\s+", " ", text)
    return [s.strip() for s in re.split(r"(?<=[.;:!?])\s+", text) if s.strip()]


def markdown_of(path: Path) -> list[str]:
    if path.suffix == ".md":
        return [path.read_text()]
    if path.suffix == ".yaml":  # a profile's comments and description
        return ["\n".join(line.split("#", 1)[1] if "#" in line else line.partition("description:")[2]
                           for line in path.read_text().splitlines() if "#" in line or line.startswith("description:"))]
    nb = nbformat.read(str(path), as_version=4)
    return [c.source for c in nb.cells if c.cell_type == "markdown"]


def run_dependent_sentences(text: str) -> list[tuple[str, str]]:
    """(pattern name, sentence) for every sentence of ``text`` that states a run-dependent fact."""
    out = []
    for s in sentences(text):
        for name, pattern in RUN_DEPENDENT.items():
            if pattern.search(s) and not ALLOWED.search(s):
                out.append((name, s))
    return out


@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.name)
def test_fixed_prose_states_no_run_dependent_fact(path):
    found = [(name, s) for text in markdown_of(path) for name, s in run_dependent_sentences(text)]
    assert not found, "\n".join(f"{path.name}: {name}: {s!r} (compute it in a cell, or leave it out)" for name, s in found)


@pytest.mark.parametrize("sentence", [
    "In this book's runs the claim is supported for every model.",
    "In this book's runs the claim is supported for every model, as the paper says.",
    "The laptop profile says WRN-10-1 still fits at E = 7.",
    "The MLP's sharpness falls only after a first rise.",
    "Across the six groups, the measure is a false friend in four.",
    "The CIFAR laptop runs are too short for weight decay to act: there the claim cannot test anything.",
])
def test_the_patterns_catch_what_was_once_written(sentence):
    assert run_dependent_sentences(sentence)


@pytest.mark.parametrize("sentence", [
    "The paper reports training accuracies of 86.3% and 87.9% (its numbers, quoted).",
    "A claim is supported when its interval excludes no effect.",
])
def test_quotes_and_definitions_pass(sentence):
    assert not run_dependent_sentences(sentence)
