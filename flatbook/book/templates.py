"""Chapters generated from one template: the three CIFAR-architecture weight-decay chapters
(``wd_allcnnc``, ``wd_preresnet``, ``wd_wrn``) are one notebook, ``book/templates/cnn_chapter.ipynb``,
rendered with each chapter's values from ``book/templates/cnn_chapters.yaml``.

A template cell holds placeholders ``<<name>>``; rendering replaces each with the chapter's value
(``stem``, the chapter's notebook name, is always given) and merges the chapter's ``flatbook``
metadata (its parameter class, notes on the paper) into the template's. A placeholder without a
value, or a value no placeholder uses, is an error. Cell ids are derived from the chapter and the
cell's position, so a rendering is the same bytes every time.

Edit the template (or the values), then ``python -m flatbook.book.templates`` writes the three
notebooks; ``tests/book/test_templates.py`` fails while a committed chapter differs from its
rendering, so an edit made to one generated notebook alone cannot pass.
"""

from __future__ import annotations

import argparse
import copy
import re
from pathlib import Path
from typing import Any

import nbformat

from .parameters import load_yaml
from .registry import repo_root

__all__ = ["PLACEHOLDER", "TEMPLATES", "render", "generated", "write_generated", "main"]

PLACEHOLDER = re.compile(r"<<([a-z_]+)>>")
TEMPLATES = {"cnn_chapter.ipynb": "cnn_chapters.yaml"}  # template notebook -> its chapters' values


def _values_file(root: Path, template: str) -> Path:
    return root / "book" / "templates" / TEMPLATES[template]


def render(template: str, stem: str, values: dict[str, Any], root: Path | None = None) -> nbformat.NotebookNode:
    """The notebook ``book/<stem>.ipynb`` rendered from ``book/templates/<template>`` with ``values``
    (placeholder name -> text; the key ``flatbook`` holds metadata to merge, not a placeholder)."""
    root = root or repo_root()
    nb = nbformat.read(str(root / "book" / "templates" / template), as_version=4)
    text = {k: str(v) for k, v in values.items() if k != "flatbook"}
    text["stem"] = stem
    used: set[str] = set()

    def fill(match: re.Match) -> str:
        name = match.group(1)
        if name not in text:
            raise ValueError(f"template {template}: placeholder <<{name}>> has no value for chapter {stem!r} "
                             f"(values: {sorted(text)})")
        used.add(name)
        return text[name]

    out = copy.deepcopy(nb)
    for i, cell in enumerate(out.cells):
        cell.source = PLACEHOLDER.sub(fill, cell.source)
        cell["id"] = f"{stem.replace('_', '-')}-{i:02d}"
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    unused = sorted(set(text) - used - {"stem"})
    if unused:
        raise ValueError(f"template {template}: values {unused} for chapter {stem!r} are used by no placeholder")
    meta = dict(out.metadata.get("flatbook", {}))
    meta.update(values.get("flatbook") or {})
    out.metadata["flatbook"] = meta
    return out


def generated(root: Path | None = None) -> dict[str, nbformat.NotebookNode]:
    """Every generated chapter: its stem -> its rendering."""
    root = root or repo_root()
    out = {}
    for template in TEMPLATES:
        chapters = load_yaml(_values_file(root, template)) or {}
        if not isinstance(chapters, dict) or not all(isinstance(v, dict) for v in chapters.values()):
            raise ValueError(f"{_values_file(root, template)}: expected a mapping of chapter names to mappings of values")
        for stem, values in chapters.items():
            out[stem] = render(template, stem, values, root)
    return out


def write_generated(root: Path | None = None) -> list[Path]:
    """Write every generated chapter to ``book/<stem>.ipynb``; returns the paths written."""
    root = root or repo_root()
    paths = []
    for stem, nb in generated(root).items():
        path = root / "book" / f"{stem}.ipynb"
        nbformat.write(nb, str(path))
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    """``python -m flatbook.book.templates [--check]``: write the generated chapters, or (``--check``)
    list the ones whose committed notebook differs from its rendering (exit status 1 if any)."""
    parser = argparse.ArgumentParser(description="render the chapters generated from book/templates")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when a chapter differs")
    args = parser.parse_args(argv)
    root = repo_root()
    if args.check:
        stale = [stem for stem, nb in generated(root).items()
                 if nbformat.writes(nb).rstrip("\n") != (root / "book" / f"{stem}.ipynb").read_text().rstrip("\n")]
        for stem in stale:
            print(f"book/{stem}.ipynb differs from its template: run python -m flatbook.book.templates")
        return 1 if stale else 0
    for path in write_generated(root):
        print(f"wrote {path.relative_to(root)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
