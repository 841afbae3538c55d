"""The papermill runner and the CLI, on a throw-away book: checks before running, atomic outputs,
clear failures, the run report on top of every executed chapter."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from flatbook.book.registry import load_profile
from flatbook.book.parameters import ParameterError
from flatbook.book.runner import REPORT_CELL_TAG, ChapterFailed, run_chapter

from conftest import run_cli


def _stdout(nb: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_run_applies_profile_then_cli_overrides_and_writes_report(toy_book, tmp_path):
    out = tmp_path / "out" / "good.ipynb"
    res = run_cli("run", "good", "--profile", "ci", "-p", "rate", "2", "-y", "name: yaml", "--output", str(out),
                  root=toy_book)
    assert res.returncode == 0, res.stderr
    nb = nbformat.read(str(out), as_version=4)
    assert "n 1 rate 2.0 decays [0.0, 0.01] name yaml" in _stdout(nb)
    box = [c for c in nb.cells if REPORT_CELL_TAG in c.metadata.get("tags", [])]
    assert len(box) == 1 and nb.cells.index(box[0]) == 1  # right under the title
    text = box[0].source
    assert "Profile **ci**" in text and "flatbook" in text and "wall time" in text and "cpu" in text
    assert "| `n` | **`1`** | `3` |" in text  # changed by the profile: bold, next to the default
    assert "| `rate` | **`2.0`** | `0.5` |" in text
    assert "4 of 4 parameters differ" in text
    tags = {t for c in nb.cells for t in c.metadata.get("tags", [])}
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and "remove-cell" in injected[0].metadata.tags
    assert "hide-cell" in [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])][0].metadata.tags
    assert nb.metadata.flatbook["profile"] == "ci" and nb.metadata.flatbook["parameters"]["n"] == 1
    assert _leftovers(out.parent) == []
    assert REPORT_CELL_TAG in tags


def test_paper_profile_runs_defaults(toy_book, tmp_path):
    rep = run_chapter("good", profile="paper", root=toy_book, output=tmp_path / "g.ipynb", progress=False)
    nb = nbformat.read(str(rep.output), as_version=4)
    assert "n 3 rate 0.5 decays [0, 0.0001, 0.0005] name x" in _stdout(nb)
    assert "These are the paper's settings" in nb.cells[1].source


def test_unknown_parameter_is_refused_before_running(toy_book, tmp_path):
    out = tmp_path / "never.ipynb"
    res = run_cli("run", "good", "-p", "rte", "2", "--output", str(out), root=toy_book)
    assert res.returncode == 2
    assert "unknown parameter 'rte' (did you mean 'rate'?)" in res.stderr
    assert "allowed parameters of 'good'" in res.stderr and "decays = [0, 0.0001, 0.0005]" in res.stderr
    assert not out.exists()


def test_wrong_type_is_refused(toy_book, tmp_path):
    res = run_cli("run", "good", "-p", "n", "three", "-p", "decays", "[0, oops]", root=toy_book)
    assert res.returncode == 2
    assert "'n' must be an integer (default 3), got 'three'" in res.stderr
    assert "decays[1]" in res.stderr


def test_failing_chapter_names_cell_and_leaves_nothing(toy_book, tmp_path):
    out = tmp_path / "res" / "broken.ipynb"
    out.parent.mkdir()
    res = run_cli("run", "broken", "--output", str(out), root=toy_book)
    assert res.returncode == 1
    # code cell 3 of the source (the parameters cell is 1), whatever papermill injected
    assert ("chapter 'broken' failed in code cell 3 of broken.ipynb "
            "(the cell starting \"raise ValueError('deliberate failure for the test')\")") in res.stderr
    assert "ValueError: deliberate failure for the test" in res.stderr
    assert "Traceback" in res.stderr or "Cell In[" in res.stderr  # the kernel's traceback comes along
    assert not out.exists() and _leftovers(out.parent) == []


def test_failing_chapter_keeps_previous_output(toy_book, tmp_path):
    out = tmp_path / "broken.ipynb"
    out.write_text("previous good result")
    with pytest.raises(ChapterFailed) as info:
        run_chapter("broken", root=toy_book, output=out, progress=False)
    assert info.value.chapter == "broken" and info.value.cell_number == 3
    assert out.read_text() == "previous good result"


def test_book_goes_on_and_reports_every_failure(toy_book):
    res = run_cli("book", "--profile", "ci", "--no-html", root=toy_book)
    assert res.returncode == 1
    assert "good: done" in res.stdout and "broken: FAILED" in res.stdout
    assert "1 chapter(s) failed" in res.stderr and "chapter 'broken' failed" in res.stderr
    assert (toy_book / "_build" / "executed" / "good.ipynb").is_file()
    assert not (toy_book / "_build" / "executed" / "broken.ipynb").exists()


def test_unknown_chapter_and_bad_output(toy_book):
    res = run_cli("run", "nope", root=toy_book)
    assert res.returncode == 2 and "unknown chapter 'nope'; chapters are: good, broken" in res.stderr
    for partial in ("goo", "ood", "ipynb", "od.ipynb"):  # no suffix or prefix matching
        with pytest.raises(ParameterError, match="unknown chapter"):
            run_chapter(partial, root=toy_book)
    assert run_cli("run", "book/good.ipynb", "--output", str(toy_book / "o.ipynb"), root=toy_book).returncode == 0
    with pytest.raises(ParameterError, match="must end in .ipynb"):
        run_chapter("good", root=toy_book, output=toy_book / "x.txt")
    with pytest.raises(ParameterError, match="is a chapter's source notebook"):
        run_chapter("good", root=toy_book, output=toy_book / "book" / "broken.ipynb")


def test_bad_yaml_is_a_clear_error(toy_book, tmp_path):
    res = run_cli("run", "good", "-y", "n: [1", root=toy_book)
    assert res.returncode == 2 and "error: YAML text is not valid YAML" in res.stderr and "Traceback" not in res.stderr
    res = run_cli("run", "good", "-y", str(tmp_path / "missing.yaml"), root=toy_book)
    assert res.returncode == 2 and "missing.yaml' does not exist" in res.stderr
    (toy_book / "book" / "profiles" / "broken.yaml").write_text("chapters: {good: [\n")
    res = run_cli("run", "good", "--profile", "broken", root=toy_book)
    assert res.returncode == 2 and "is not valid YAML" in res.stderr and "Traceback" not in res.stderr


def test_profile_must_cover_every_chapter(toy_book):
    (toy_book / "book" / "profiles" / "laptop.yaml").write_text("description: d\nchapters:\n  good: {}\n")
    with pytest.raises(ParameterError, match="no entry for chapter 'broken'"):
        run_chapter("broken", profile="laptop", root=toy_book)
    (toy_book / "book" / "profiles" / "bad.yaml").write_text("description: d\nchapters:\n  good: {n: x}\n  broken: {}\n")
    with pytest.raises(ParameterError, match="'n' must be an integer"):
        run_chapter("good", profile="bad", root=toy_book)
    (toy_book / "book" / "profiles" / "typo.yaml").write_text("description: d\nchapters:\n  goood: {}\n")
    with pytest.raises(ParameterError, match="unknown chapters"):
        load_profile("typo", toy_book)


def test_list_shows_chapters_parameters_and_profiles(toy_book):
    res = run_cli("list", root=toy_book)
    assert res.returncode == 0, res.stderr
    assert "good: Good chapter" in res.stdout and "decays" in res.stdout and "profile ci:" in res.stdout


def test_progress_bars_are_stripped_and_warnings_kept():
    from flatbook.book.runner import strip_progress_bars

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stderr", text="/x/tqdm/auto.py:21: TqdmWarning: IProgress not found.\n"
                               "  from .autonotebook import tqdm as notebook_tqdm\n"),
        nbformat.v4.new_output("stream", name="stderr", text="sgd:   0%|          | 0/30 [00:00<?]\r"
                               "sgd:  50%|#####     | 15/30 [00:01<00:01]\rsgd: 100%|##########| 30/30\n"),
        nbformat.v4.new_output("stream", name="stderr", text="UserWarning: something real\n"),
        nbformat.v4.new_output("stream", name="stdout", text="10%| stays on stdout |\n"),
    ]
    nb.cells = [cell]
    strip_progress_bars(nb)
    texts = [(o.name, o.text) for o in nb.cells[0].outputs]
    assert texts == [("stderr", "UserWarning: something real\n"), ("stdout", "10%| stays on stdout |\n")]


def test_the_book_is_found_from_the_package_outside_the_checkout(tmp_path, monkeypatch):
    """Without FLATBOOK_ROOT and from a working directory outside the checkout, the registry finds
    the book through the package's own location (flatbook/book/registry.py -> the checkout)."""
    from flatbook.book.registry import repo_root

    monkeypatch.delenv("FLATBOOK_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    root = repo_root()
    assert (root / "_toc.yml").is_file() and (root / "flatbook" / "book" / "registry.py").is_file()


def test_train_first_trains_every_planned_run_once_costliest_first(monkeypatch, tmp_path):
    from pathlib import Path

    import flatbook.experiments as experiments
    from flatbook.book import registry
    from flatbook.book.plan import chapter_plan, plan_cost, train_first

    root = Path(__file__).resolve().parents[2]
    seen = {}

    def record(configs, *, workers, progress):
        seen["configs"], seen["workers"] = list(configs), workers
        return []

    monkeypatch.setattr(experiments, "run_many", record)
    names = ["wd_wrn", "decay_exponent", "calibration"]
    n = train_first(names, "ci", 2, root=root, echo=lambda *_: None)
    planned = {c.key() for name in names for c in chapter_plan(name, "ci", root=root)}
    assert n == len(planned) == len(seen["configs"]) and {c.key() for c in seen["configs"]} == planned
    assert seen["workers"] == 2
    costs = [plan_cost([c])["flops"] for c in seen["configs"]]
    assert costs == sorted(costs, reverse=True)
    profiles = tmp_path / "book" / "profiles"
    profiles.mkdir(parents=True)
    (profiles / "bad.yaml").write_text("description: x\ntrain_first_workers: 0\nchapters: {}\n")
    with pytest.raises(registry.ParameterError, match="train_first_workers"):
        registry.load_profile("bad", tmp_path)
    assert registry.load_profile("laptop", root).train_first_workers == 2
    assert registry.load_profile("ci", root).train_first_workers is None


def test_chapters_execute_in_parallel_on_pinned_threads_and_failures_are_kept(toy_book):
    """A profile's chapter_workers run chapters at once, execute_first first; each kernel computes on
    chapter_threads threads (the run box says so); a failure is reported as in the sequential book."""
    import nbformat

    from conftest import make_notebook

    nbformat.write(make_notebook("k = 1", "import torch\nprint('threads', torch.get_num_threads())",
                                 title="# Threads chapter"), str(toy_book / "book" / "threads.ipynb"))
    (toy_book / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n  - file: book/good\n"
                                       "  - file: book/broken\n  - file: book/threads\n")
    (toy_book / "book" / "profiles" / "lanes.yaml").write_text(
        "description: lanes\nchapter_workers: 2\nchapter_threads: 1\nexecute_first: [threads]\n"
        "chapters:\n  good: {}\n  broken: {}\n  threads: {}\n")
    res = run_cli("book", "--profile", "lanes", "--no-html", root=toy_book)
    assert res.returncode == 1, res.stderr
    assert "executing 3 chapters, 2 at once, each on 1 CPU thread: threads, good, broken" in res.stdout
    assert "good: done" in res.stdout and "threads: done" in res.stdout and "broken: FAILED" in res.stdout
    assert "chapter 'broken' failed in code cell 3" in res.stderr and "deliberate failure" in res.stderr
    executed = nbformat.read(str(toy_book / "_build" / "executed" / "threads.ipynb"), as_version=4)
    assert "threads 1\n" in _stdout(executed)
    report = next(c for c in executed.cells if REPORT_CELL_TAG in c.get("metadata", {}).get("tags", []))
    assert "cpu (1 thread," in report.source
    assert not (toy_book / "_build" / "executed" / "broken.ipynb").exists()


def test_execution_order_and_the_profile_keys_for_it(tmp_path):
    from flatbook.book import registry
    from flatbook.book.runner import execution_order

    assert execution_order(["a", "b", "c", "d"], ["c", "x", "a"]) == ["c", "a", "b", "d"]
    assert execution_order(["a", "b"], []) == ["a", "b"]
    root = Path(__file__).resolve().parents[2]
    laptop = registry.load_profile("laptop", root)
    assert laptop.chapter_workers == 2 and laptop.chapter_threads == 1
    assert set(laptop.execute_first) <= {c.name for c in registry.chapters(root)}
    ci = registry.load_profile("ci", root)
    assert ci.chapter_workers == 1 and ci.chapter_threads is None and ci.execute_first == ()
    profiles = tmp_path / "book" / "profiles"
    profiles.mkdir(parents=True)
    (tmp_path / "_toc.yml").write_text((root / "_toc.yml").read_text())
    for bad, match in (("chapter_workers: 0", "chapter_workers"), ("chapter_threads: true", "chapter_threads"),
                       ("execute_first: [nosuch]", "unknown chapters"), ("execute_first: [gedanken, gedanken]", "distinct")):
        (profiles / "bad.yaml").write_text(f"description: x\n{bad}\nchapters: {{}}\n")
        with pytest.raises(registry.ParameterError, match=match):
            registry.load_profile("bad", tmp_path)


def test_api_docstrings_become_literal_blocks():
    from flatbook.book.sphinx_api import docstring_as_literal_block

    assert docstring_as_literal_block(["The norm ||H v|| and |u^T H v|.", "", "  indented", "", ""]) == [
        "::", "", "    The norm ||H v|| and |u^T H v|.", "", "      indented", ""]
    assert docstring_as_literal_block([]) == [] and docstring_as_literal_block(["", "  "]) == []
