"""The CIFAR-architecture chapters come from one template: each committed notebook is exactly its
rendering, so an edit made to one of them alone fails here (edit book/templates/ and regenerate)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from flatbook.book import templates

ROOT = Path(__file__).resolve().parents[2]


def test_the_cnn_chapters_are_their_template_rendered():
    chapters = templates.generated(ROOT)
    assert set(chapters) == {"wd_allcnnc", "wd_preresnet", "wd_wrn"}
    for stem, nb in chapters.items():
        committed = (ROOT / "book" / f"{stem}.ipynb").read_text()
        assert nbformat.writes(nb).rstrip("\n") == committed.rstrip("\n"), (
            f"book/{stem}.ipynb differs from book/templates/cnn_chapter.ipynb rendered with its values: edit the "
            "template or book/templates/cnn_chapters.yaml, then run python -m flatbook.book.templates")
        assert not templates.PLACEHOLDER.search(committed), stem
    assert templates.main(["--check"]) == 0


def test_one_template_edit_reaches_every_chapter_and_bad_values_are_refused(tmp_path):
    book = tmp_path / "book" / "templates"
    book.mkdir(parents=True)
    source = nbformat.read(str(ROOT / "book" / "templates" / "cnn_chapter.ipynb"), as_version=4)
    source.cells[0].source += "\n\nA sentence added once."
    nbformat.write(source, str(book / "cnn_chapter.ipynb"))
    (book / "cnn_chapters.yaml").write_text((ROOT / "book" / "templates" / "cnn_chapters.yaml").read_text())
    (tmp_path / "_toc.yml").write_text((ROOT / "_toc.yml").read_text())
    rendered = templates.generated(tmp_path)
    assert all(nb.cells[0].source.endswith("A sentence added once.") for nb in rendered.values())
    assert rendered["wd_wrn"].metadata["flatbook"]["check"] == "flatbook.chapters.cnn:WideResNetChapter"
    assert "paper_notes" in rendered["wd_allcnnc"].metadata["flatbook"]
    values = dict(templates.load_yaml(book / "cnn_chapters.yaml")["wd_wrn"])
    with pytest.raises(ValueError, match="<<title>> has no value"):
        templates.render("cnn_chapter.ipynb", "wd_wrn", {k: v for k, v in values.items() if k != "title"}, tmp_path)
    with pytest.raises(ValueError, match="used by no placeholder"):
        templates.render("cnn_chapter.ipynb", "wd_wrn", {**values, "colour": "blue"}, tmp_path)
