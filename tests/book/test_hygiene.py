"""Repository hygiene: clean chapter sources, a table of contents and profiles that match them."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from flatbook.book.registry import chapters, load_profile, toc_files
from flatbook.book.parameters import parameters_cell_index, read_parameters

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted((ROOT / "book").glob("*.ipynb"))


def test_there_are_chapters():
    assert SOURCES, "book/ has no chapter notebooks"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.stem)
def test_chapter_source_is_clean(path):
    nb = nbformat.read(str(path), as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name} cell {i} has outputs: commit notebooks without outputs"
            assert cell.execution_count is None, f"{path.name} cell {i} has an execution count"
    first_code = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    assert parameters_cell_index(nb) == first_code
    assert read_parameters(nb)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), "a chapter opens with its title"


def test_every_toc_entry_exists_and_every_chapter_is_listed():
    entries = toc_files(ROOT)
    for entry in entries:
        assert (ROOT / f"{entry}.md").is_file() or (ROOT / f"{entry}.ipynb").is_file(), entry
    listed = {Path(e).name for e in entries}
    for path in SOURCES:
        assert path.stem in listed, f"{path.name} is not in _toc.yml"
    assert [c.path for c in chapters(ROOT)] == [ROOT / f"{e}.ipynb" for e in entries if (ROOT / f"{e}.ipynb").is_file()]


@pytest.mark.parametrize("profile", ["ci", "laptop", "gpu"])
def test_profiles_cover_every_chapter_with_valid_overrides(profile):
    prof = load_profile(profile, ROOT)
    assert prof.description
    for ch in chapters(ROOT):
        assert ch.name in prof.overrides, f"{profile}.yaml has no entry for {ch.name}"
        prof.for_chapter(ch)  # raises on unknown names or wrong types


def test_citations_resolve():
    keys = set(re.findall(r"^@\w+\{([^,]+),", (ROOT / "book" / "references.bib").read_text(), re.M))
    texts = [p.read_text() for p in (ROOT / "book").glob("*.md")]
    texts += ["\n".join(c.source for c in nbformat.read(str(p), as_version=4).cells) for p in SOURCES]
    cited = {k.strip() for t in texts for group in re.findall(r"\{cite(?::\w+)?\}`([^`]+)`", t) for k in group.split(",")}
    assert cited, "no citations found"
    assert cited <= keys, f"cited but not in references.bib: {sorted(cited - keys)}"


def test_requirements_are_pinned():
    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    lines = [line for line in lines if line]
    assert lines and all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[\w.\-]+", line) for line in lines), lines
    pins = dict(line.split("==") for line in lines)
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1" and pins["jupyter-book"] == "1.0.4.post1"


@pytest.mark.parametrize("path", sorted((ROOT / "book").glob("*.ipynb")), ids=lambda p: p.stem)
def test_code_cells_compile_without_escape_warnings(path):
    """LaTeX in a non-raw Python string needs doubled backslashes: '\\,' warns, and '\\to' becomes a
    tab (caught by looking for a tab or form feed inside a compiled string constant)."""
    import ast
    import warnings

    nb = nbformat.read(str(path), as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            tree = compile(cell.source, f"{path.name} cell {i}", "exec", flags=ast.PyCF_ONLY_AST)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert not re.search(r"[\t\f\v\b]", node.value), f"{path.name} cell {i}: {node.value[:80]!r}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.stem)
def test_every_parameter_reaches_the_chapters_object(path):
    """A notebook builds the parameter class its metadata names from its whole namespace
    (``from_namespace(globals())``), never by listing keywords: a listed call silently dropped a
    parameter a profile set (the adaptive chapter trained without ``channels_last`` while the plan,
    built from the profile, had it)."""
    import papermill as pm

    nb = nbformat.read(str(path), as_version=4)
    check = nb.metadata.get("flatbook", {}).get("check")
    if not check:
        pytest.skip("no parameter class named")
    cls = check.split(":")[1]
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert f"{cls}.from_namespace(globals())" in code, f"{path.name} must build {cls} with from_namespace(globals())"
    import importlib

    module, name = check.split(":")
    fields = {f.name for f in __import__("dataclasses").fields(getattr(importlib.import_module(module), name)) if f.init}
    cell = set(pm.inspect_notebook(str(path)))
    assert fields - cell == set(), f"{path.name}: parameters of {name} missing from the parameters cell: {fields - cell}"


# Notebooks hold parameters, prose, calls into flatbook and display; the logic (loops, branches,
# comprehensions, functions) lives in the library, where it has unit tests.
CONTROL_NODES = ("For", "AsyncFor", "While", "If", "IfExp", "ListComp", "SetComp", "DictComp", "GeneratorExp",
                 "FunctionDef", "AsyncFunctionDef", "Lambda", "ClassDef", "Try", "With")


def control_flow(nb: nbformat.NotebookNode) -> list[str]:
    """'cell N: Node' for every control-flow node outside the parameters cell (cells counted from 0)."""
    import ast

    found = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or "parameters" in cell.metadata.get("tags", []):
            continue
        for node in ast.walk(ast.parse(cell.source)):
            if type(node).__name__ in CONTROL_NODES:
                found.append(f"cell {i}: {type(node).__name__} at line {node.lineno}")
    return found


@pytest.mark.parametrize("path", [c.path for c in chapters(ROOT)], ids=lambda p: p.stem)  # the template: its renderings
def test_notebooks_hold_no_control_flow_outside_the_parameters_cell(path):
    nb = nbformat.read(str(path), as_version=4)
    found = control_flow(nb)
    assert not found, f"{path.name}: move this logic into flatbook (a function with a unit test): {found}"


def test_the_control_flow_check_finds_a_loop_and_a_comprehension():
    from conftest import make_notebook

    nb = make_notebook("n = 3", "total = 0\nfor i in range(n):\n    total += i", "squares = [i * i for i in range(n)]")
    assert control_flow(nb) == ["cell 2: For at line 2", "cell 3: ListComp at line 1"]
    assert control_flow(make_notebook("n = [i for i in range(3)]", "print(n)")) == []
