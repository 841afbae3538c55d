"""The package's layers, checked from its source: the toolkit (flatbook's top-level modules)
imports neither flatbook.theory, flatbook.chapters nor flatbook.book; theory imports no chapter
and nothing of the book; chapters import nothing of the book. No module imports another's
private name, and the import graph (lazy imports inside functions included) has no cycle. And
the toolkit runs with only its core dependencies importable."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "flatbook"
RANK = {"toolkit": 0, "theory": 1, "chapters": 2, "book": 3}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in ("theory", "chapters", "book"):
        return parts[1]
    if parts[-1] == "__main__":
        return "book"  # python -m flatbook runs the book's command line
    return "toolkit"


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(imported flatbook module, imported names, line) for every import in the file, lazy ones too."""
    inside = PACKAGE in path.parents
    module = _module_name(path) if inside else path.stem
    package = (module if path.name == "__init__.py" else module.rsplit(".", 1)[0]) if inside else ""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("flatbook"):
                continue
            names = [a.name for a in node.names]
            # "from . import x" imports the module flatbook.x when x is one
            submodules = [n for n in names if (PACKAGE.parent / Path(*target.split("."), n)).with_suffix(".py").exists()
                          or (PACKAGE.parent / Path(*target.split("."), n, "__init__.py")).exists()]
            for n in submodules:
                out.append((f"{target}.{n}", [], node.lineno))
            rest = [n for n in names if n not in submodules]
            if rest or not submodules:
                out.append((target, rest, node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names if a.name.startswith("flatbook")]
    return out


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_module_belongs_to_a_layer_and_imports_only_downwards():
    wrong = []
    for path in _sources():
        importer = _module_name(path)
        for target, _, line in _imports(path):
            if target == "flatbook" or importer == "flatbook":
                continue  # the package's __init__ (version, lazy re-exports) belongs to every layer
            if RANK[_layer(target)] > RANK[_layer(importer)]:
                wrong.append(f"{importer} ({_layer(importer)}) imports {target} ({_layer(target)}), line {line}")
    assert not wrong, "\n".join(wrong)


def _private_imports(path: Path, name_of: str) -> list[str]:
    return [f"{name_of} imports {name} from {target}, line {line}" for target, names, line in _imports(path)
            for name in names if name.startswith("_") and name != "__version__"]


def test_no_private_name_is_imported_across_modules():
    """Neither the package, nor the tests, nor the benchmarks import a private name of flatbook (the
    tests may still reach a private function as an attribute, to inject a fault)."""
    root = PACKAGE.parent
    files = _sources() + sorted((root / "tests").rglob("*.py")) + sorted((root / "benchmarks").glob("*.py"))
    private = [line for p in files for line in _private_imports(p, str(p.relative_to(root)))]
    assert not private, "\n".join(private)


def test_no_import_cycle():
    graph: dict[str, set[str]] = {}
    for path in _sources():
        importer = _module_name(path)
        graph.setdefault(importer, set()).update(
            t for t, _, _ in _imports(path) if t != importer and t != "flatbook" and importer != "flatbook")
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(n):] + [n]))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


BOOK_ONLY = ("matplotlib", "seaborn", "pandas", "yaml", "papermill", "nbformat", "IPython", "jupyter_book", "sphinx",
             "myst_nb", "tabulate", "nbclient")

BLOCKER = f"""
import importlib.abc, runpy, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BOOK_ONLY!r}:
            raise ImportError(f"{{name}} is not a core dependency of the toolkit")
sys.meta_path.insert(0, Block())
sys.argv = [sys.argv[1]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.slow
def test_toolkit_runs_with_its_core_dependencies_only():
    example = Path(__file__).resolve().parents[1] / "toolkit" / "toolkit_example.py"
    done = subprocess.run([sys.executable, "-c", BLOCKER, str(example)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "upper layers imported: none" in done.stdout


def test_the_layout_page_lists_every_module_of_the_tree():
    """The book's Layout section (book/library/contributing.md) names every .py file of the package,
    in its subpackage, and nothing that is not there."""
    page = (PACKAGE.parent / "book" / "library" / "contributing.md").read_text()
    block = page.split("## Layout", 1)[1].split("```", 2)[1]
    listed, folder = set(), None
    for line in block.splitlines():
        name = line.strip().split(" ", 1)[0] if line.strip() else ""
        indent = len(line) - len(line.lstrip())
        if indent == 2 and name.endswith("/"):
            folder = name.rstrip("/")
        elif indent == 2 and name.endswith(".py"):
            folder = None
            listed.add(name)
        elif indent == 4 and name.endswith(".py") and folder:
            listed.add(f"{folder}/{name}")
    actual = {str(p.relative_to(PACKAGE)) for p in _sources()}
    assert listed == actual, (f"missing from the layout page: {sorted(actual - listed)}; "
                              f"not in the tree: {sorted(listed - actual)}")


def test_every_toolkit_module_is_a_lazy_submodule_and_the_console_script_has_every_command():
    import flatbook
    import flatbook.__main__ as entry
    from flatbook.book import cli

    toolkit = {p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__")}
    subpackages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert set(flatbook._SUBMODULES) == toolkit | subpackages
    text = (PACKAGE.parent / "pyproject.toml").read_text()
    assert 'flatbook = "flatbook.__main__:main"' in text
    commands = cli._parser()._subparsers._group_actions[0].choices
    assert {"train", "list", "run", "book", "html", "plan"} <= set(commands)
    with pytest.raises(SystemExit) as info:  # train's own --help, through the console script's entry
        entry.main(["train", "--help"])
    assert info.value.code == 0
