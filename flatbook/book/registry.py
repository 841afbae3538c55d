"""The book's chapters and profiles: where they live and what they are called.

A *chapter* is a notebook ``book/<name>.ipynb`` listed in ``_toc.yml``; its name is the file
stem. A *profile* is ``book/profiles/<profile>.yaml``::

    description: one line saying what the profile is for
    chapters:
      <chapter name>:        # every chapter has an entry, possibly empty ({})
        <parameter>: <value>

The profile ``paper`` has no file: it runs every notebook with its own defaults. For the chapters
that reproduce an experiment of the paper these are the paper's settings; chapters whose defaults
differ (those beyond the paper, e.g. theorem1 and lanczos, which run experiments the paper did
not) say what differs in their notebook metadata ``flatbook.paper_differences``, shown in the run
box.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import nbformat
import yaml

from .parameters import Parameter, ParameterError, check_overrides, format_parameters, load_yaml, read_parameters

__all__ = ["repo_root", "Chapter", "chapters", "get_chapter", "Profile", "profile_names", "load_profile"]

PAPER_PROFILE = "paper"


def repo_root() -> Path:
    """The book's root: ``$FLATBOOK_ROOT``, else the checkout holding this package, else the cwd's ancestors."""
    env = os.environ.get("FLATBOOK_ROOT")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2])  # flatbook/book/registry.py -> the checkout
    cwd = Path.cwd().resolve()
    candidates.extend([cwd, *cwd.parents])
    for c in candidates:
        if (c / "_toc.yml").is_file() and (c / "book").is_dir():
            return c
    raise FileNotFoundError(
        "cannot find the book (a folder with _toc.yml and book/): set FLATBOOK_ROOT or run inside the checkout; "
        f"searched {[str(c) for c in candidates[:3]]} and the parents of the current directory"
    )


def _toc_files(entry: Any) -> list[str]:
    """Every ``file:`` in a _toc.yml tree, in reading order."""
    found: list[str] = []
    if isinstance(entry, dict):
        if "file" in entry:
            found.append(entry["file"])
        if "root" in entry:
            found.append(entry["root"])
        for key in ("parts", "chapters", "sections"):
            for child in entry.get(key, []) or []:
                found.extend(_toc_files(child))
    elif isinstance(entry, list):
        for child in entry:
            found.extend(_toc_files(child))
    return found


def toc_files(root: Path | None = None) -> list[str]:
    """The ``_toc.yml`` entries (paths without suffix, relative to the root), in order."""
    root = root or repo_root()
    return _toc_files(yaml.safe_load((root / "_toc.yml").read_text()))


@dataclass(frozen=True)
class Chapter:
    name: str
    path: Path  # the source notebook

    @cached_property
    def notebook(self) -> nbformat.NotebookNode:
        return nbformat.read(str(self.path), as_version=4)

    @cached_property
    def parameters(self) -> dict[str, Parameter]:
        return read_parameters(self.notebook)

    def check(self, values: dict[str, Any]) -> None:
        """Run the chapter's own parameter check, if its notebook names one.

        A notebook may set ``metadata.flatbook.check = "module:name"``, naming the chapter's
        parameter class (``flatbook.chapters.base.ChapterParameters``) or a function; it is called
        with every parameter's value by keyword (defaults with overrides applied) and raises
        ValueError for values the chapter cannot use. The notebook builds the same object in its
        first cell, so plain papermill runs get the same check.
        """
        self.build_parameters(values)

    def build_parameters(self, values: dict[str, Any]) -> Any:
        """What ``check`` calls, returned: the chapter's parameter object (None when the notebook
        names no check)."""
        target = self.notebook.metadata.get("flatbook", {}).get("check")
        if not target:
            return None
        module, _, function = target.partition(":")
        check = getattr(importlib.import_module(module), function)
        try:
            return check(**values)
        except (ValueError, TypeError) as exc:
            raise ParameterError(
                f"chapter {self.name!r}: {exc}\nallowed parameters of {self.name!r} (name = default):\n"
                + format_parameters(self.parameters)
            ) from None

    @cached_property
    def title(self) -> str:
        for cell in self.notebook.cells:
            if cell.cell_type == "markdown":
                for line in cell.source.splitlines():
                    if line.startswith("# "):
                        return line[2:].strip()
        return self.name


def chapters(root: Path | None = None) -> list[Chapter]:
    """The notebook chapters listed in ``_toc.yml``, in reading order."""
    root = root or repo_root()
    out = []
    for entry in toc_files(root):
        path = root / f"{entry}.ipynb"
        if path.is_file():
            out.append(Chapter(Path(entry).name, path))
    return out


def get_chapter(name: str, root: Path | None = None) -> Chapter:
    """A chapter by its name (``gedanken``) or its notebook's path (``book/gedanken.ipynb``)."""
    known = chapters(root)
    root = root or repo_root()
    for ch in known:
        if ch.name == name or Path(name).resolve() == ch.path.resolve() or (root / name).resolve() == ch.path.resolve():
            return ch
    raise ParameterError(f"unknown chapter {name!r}; chapters are: {', '.join(c.name for c in known)}")


def profile_names(root: Path | None = None) -> list[str]:
    root = root or repo_root()
    return sorted(p.stem for p in (root / "book" / "profiles").glob("*.yaml")) + [PAPER_PROFILE]


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    overrides: dict[str, dict[str, Any]]  # chapter name -> parameter overrides
    train_first_workers: int | None = None  # run_book trains every chapter's plan first, in this many processes
    chapter_workers: int = 1  # run_book then executes this many chapters at once, each in its own process
    chapter_threads: int | None = None  # CPU threads each chapter's kernel computes on (None: PyTorch's default)
    execute_first: tuple[str, ...] = ()  # chapters run_book starts first (the costliest), the rest in reading order

    def for_chapter(self, chapter: Chapter) -> dict[str, Any]:
        """This profile's overrides for ``chapter``, checked against its parameters cell."""
        if self.name == PAPER_PROFILE:
            return {}
        if chapter.name not in self.overrides:
            raise ParameterError(
                f"profile {self.name!r} has no entry for chapter {chapter.name!r}; "
                f"add '{chapter.name}: {{}}' under 'chapters:' in book/profiles/{self.name}.yaml"
            )
        return check_overrides(chapter.name, chapter.parameters, self.overrides[chapter.name] or {})


def load_profile(name: str, root: Path | None = None) -> Profile:
    """Read ``book/profiles/<name>.yaml`` (or the file-less ``paper`` profile)."""
    root = root or repo_root()
    if name == PAPER_PROFILE:
        return Profile(PAPER_PROFILE, "each notebook's parameters cell, unchanged: the paper's own settings, "
                       "except where a chapter's box lists differences", {})
    path = root / "book" / "profiles" / f"{name}.yaml"
    if not path.is_file():
        raise ParameterError(f"unknown profile {name!r}; profiles are: {', '.join(profile_names(root))}")
    data = load_yaml(path) or {}
    allowed = {"description", "chapters", "train_first_workers", "chapter_workers", "chapter_threads", "execute_first"}
    if not isinstance(data, dict) or set(data) - allowed:
        raise ParameterError(f"{path}: expected the keys 'description', 'chapters' and optionally "
                             f"{', '.join(repr(k) for k in sorted(allowed - {'description', 'chapters'}))}, got {sorted(data)}")
    counts = {}
    for key, what in (("train_first_workers", "worker processes"), ("chapter_workers", "chapters executed at once"),
                      ("chapter_threads", "CPU threads a chapter computes on")):
        value = data.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ParameterError(f"{path}: {key} must be a positive integer ({what}), got {value!r}")
        counts[key] = value
    first = counts["train_first_workers"]
    overrides = data.get("chapters") or {}
    if not isinstance(overrides, dict) or not all(isinstance(v, (dict, type(None))) for v in overrides.values()):
        raise ParameterError(f"{path}: 'chapters' must map chapter names to mappings of parameter overrides")
    known = {c.name for c in chapters(root)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ParameterError(f"{path}: unknown chapters {unknown}; chapters are: {sorted(known)}")
    execute_first = data.get("execute_first") or []
    if not isinstance(execute_first, list) or not all(isinstance(n, str) for n in execute_first) \
            or len(set(execute_first)) != len(execute_first):
        raise ParameterError(f"{path}: execute_first must be a list of distinct chapter names, got {execute_first!r}")
    unknown = sorted(set(execute_first) - known)
    if unknown:
        raise ParameterError(f"{path}: execute_first names unknown chapters {unknown}; chapters are: {sorted(known)}")
    return Profile(name, str(data.get("description", "")), {k: dict(v or {}) for k, v in overrides.items()}, first,
                   counts["chapter_workers"] or 1, counts["chapter_threads"], tuple(execute_first))
