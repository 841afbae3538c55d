"""Shared fixtures: the repository root, a throw-away book for runner tests, a CLI helper."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

# scripts run by the tests as programs, not test modules: `--doctest-modules` (pyproject) must not
# import them (toolkit_example.py runs its example when imported)
collect_ignore = ["toolkit/toolkit_example.py", "toolkit/distributed_worker.py"]

if TYPE_CHECKING:  # the toolkit's tests run where nbformat is not installed
    import nbformat

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


def make_notebook(parameters_source: str, *code: str, title: str = "# A chapter") -> "nbformat.NotebookNode":
    """A chapter notebook: a title, the parameters cell, then code cells."""
    import nbformat  # here, not at the top: the toolkit's tests run where nbformat is not installed

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell(textwrap.dedent(parameters_source).strip())
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell(title), params, *(nbformat.v4.new_code_cell(c) for c in code)]
    return nb


@pytest.fixture
def toy_book(tmp_path: Path) -> Path:
    """A minimal book: chapters 'good' (writes its parameters) and 'broken' (raises in its 3rd cell)."""
    (tmp_path / "book" / "profiles").mkdir(parents=True)
    (tmp_path / "_toc.yml").write_text(
        "format: jb-book\nroot: book/intro\nchapters:\n  - file: book/good\n  - file: book/broken\n"
    )
    (tmp_path / "book" / "intro.md").write_text("# Intro\n")
    good = make_notebook(
        """
        n = 3  # an integer
        rate = 0.5  # a float
        decays = [0, 1e-4, 5e-4]  # a list of numbers
        name = "x"
        """,
        "print('n', n, 'rate', rate, 'decays', decays, 'name', name)",
        title="# Good chapter",
    )
    broken = make_notebook(
        "k = 1",
        "value = k + 1",
        "raise ValueError('deliberate failure for the test')",
        "print('never reached')",
        title="# Broken chapter",
    )
    import nbformat

    nbformat.write(good, str(tmp_path / "book" / "good.ipynb"))
    nbformat.write(broken, str(tmp_path / "book" / "broken.ipynb"))
    (tmp_path / "book" / "profiles" / "ci.yaml").write_text(
        "description: tiny\nchapters:\n  good:\n    n: 1\n    decays: [0, 1e-2]\n  broken: {}\n"
    )
    return tmp_path


def run_cli(*args: str, root: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m flatbook ARGS`` in a subprocess (optionally against another book root)."""
    env = dict(os.environ)
    if root is not None:
        env["FLATBOOK_ROOT"] = str(root)
    return subprocess.run(
        [sys.executable, "-m", "flatbook", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout
    )


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a test module of tiny tensors: faster, and steady when another
    process shares this 2-core machine (oversubscribed OpenMP threads slow torch down 10-20x)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
