"""A rebuild gives the same claims: a chapter executed twice at the ci profile, each time from an
empty results cache, once with 1 worker process and once with 2, shows identical claims and
identical regime facts (``workers`` is a speed setting; every run computes on its config's threads)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flatbook.book.runner import run_chapter
from flatbook.claims import claims_in_notebook, facts_in_notebook

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_a_chapter_from_empty_caches_with_1_and_2_workers_gives_identical_claims(tmp_path, monkeypatch):
    shown = {}
    for workers in (1, 2):
        monkeypatch.setenv("FLATBOOK_RESULTS", str(tmp_path / f"results-{workers}"))
        out = tmp_path / f"wd_wrn-{workers}.ipynb"
        run_chapter("wd_wrn", profile="ci", root=ROOT, output=out, overrides={"workers": workers}, progress=False)
        claims = [json.dumps(c.to_dict(), sort_keys=True) for c in claims_in_notebook(out)]
        facts = [f for f in facts_in_notebook(out) if f[0] != "trained models"]  # that row holds wall times
        shown[workers] = (claims, facts)
    assert shown[1][0], "the chapter showed no claims"
    assert shown[1] == shown[2]
