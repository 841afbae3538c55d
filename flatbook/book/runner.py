"""Execute chapters with papermill: checked parameters, atomic outputs, a run report on top.

``run_chapter`` is what ``python -m flatbook run`` and ``make book`` call:

1. the chapter's ``parameters`` cell gives the names, defaults and types; the profile's
   overrides and the caller's overrides (the caller wins) are checked against it *before*
   any kernel starts;
2. papermill executes the notebook into a hidden temporary file beside the output;
3. on success the executed notebook gets a generated "how this page was computed" box under
   its title (profile, parameters used next to the paper's defaults, device, flatbook version,
   wall time), the papermill-injected cell is tagged ``remove-cell`` (hidden in the book) and
   the parameters cell ``hide-cell`` (collapsed); then it is moved into place atomically;
4. on failure the temporary file is deleted, so no half-written notebook is left, and
   ``ChapterFailed`` names the chapter, the failing cell and the error.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import nbformat

from .. import __version__
from .registry import Chapter, get_chapter, load_profile, repo_root, chapters as all_chapters
from .parameters import ParameterError, check_overrides

__all__ = ["ChapterFailed", "RunReport", "default_output", "execution_order", "resolve_parameters", "run_chapter", "run_book"]

REPORT_CELL_TAG = "flatbook-run-report"
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


class ChapterFailed(RuntimeError):
    """A chapter's execution raised; nothing was written at the output path.

    ``cell_number`` counts the code cells of the chapter's source notebook from 1 (the
    parameters cell is code cell 1); ``traceback`` holds the end of the kernel's traceback.
    """

    def __init__(self, chapter: str, message: str, cell_number: int | None = None, cell_source: str = "",
                 source_path: Path | None = None, traceback: str = ""):
        self.chapter = chapter
        self.cell_number = cell_number
        self.cell_source = cell_source
        self.traceback = traceback
        where = f" in code cell {cell_number}" if cell_number is not None else ""
        if where and source_path is not None:
            where += f" of {source_path.name}"
        first_line = cell_source.strip().splitlines()[0] if cell_source.strip() else ""
        snippet = f" (the cell starting {first_line[:80]!r})" if first_line else ""
        tail = f"\n{traceback}" if traceback else ""
        super().__init__(f"chapter {chapter!r} failed{where}{snippet}: {message}{tail}")


@dataclass
class RunReport:
    chapter: str
    output: Path
    profile: str
    parameters: dict[str, Any]  # every parameter's value in this run
    defaults: dict[str, Any]
    device: str
    wall_seconds: float
    started: str = field(default="")


def default_output(chapter: str, root: Path | None = None) -> Path:
    """Where executed notebooks go unless told otherwise: ``_build/executed/<chapter>.ipynb``."""
    return (root or repo_root()) / "_build" / "executed" / f"{chapter}.ipynb"


def resolve_parameters(
    chapter: Chapter, profile: str = "paper", overrides: Mapping[str, Any] | None = None, root: Path | None = None
) -> dict[str, Any]:
    """The checked overrides for one run: the profile's, then the caller's on top.

    Names and types are checked against the parameters cell, then the values together by the
    chapter's own check (``Chapter.check``), all before any kernel starts.
    """
    merged = dict(load_profile(profile, root).for_chapter(chapter))
    merged.update(check_overrides(chapter.name, chapter.parameters, dict(overrides or {})))
    chapter.check({**{n: p.default for n, p in chapter.parameters.items()}, **merged})
    return merged


def _kernel_manager_class():
    """Kernels run THIS interpreter (the one with flatbook installed), whatever kernelspecs the
    user has installed, and talk over local IPC sockets instead of TCP."""
    import tempfile

    from jupyter_client.kernelspec import KernelSpec
    from jupyter_client.manager import KernelManager
    from traitlets import CaselessStrEnum, Unicode

    class ThisPythonKernelManager(KernelManager):
        transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc", config=True)
        ip = Unicode(os.path.join(tempfile.gettempdir(), f"flatbook-kernel-{os.getpid()}"), config=True)

        @property
        def kernel_spec(self):
            return KernelSpec(argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                              display_name="Python 3 (ipykernel)", language="python")

    return ThisPythonKernelManager


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)


def _markdown_value(value: Any) -> str:
    text = repr(value)
    if len(text) > 120:
        text = text[:117] + "..."
    return "`" + text.replace("|", "\\|").replace("`", "'") + "`"


def report_markdown(report: RunReport, profile_description: str, paper_differences: str | None = None,
                    chapter_parameters: Sequence[str] = (), facts: Sequence[tuple[str, str]] = (),
                    paper_notes: Mapping[str, str] | None = None, unused: Mapping[str, str] | None = None) -> str:
    """The box shown at the top of an executed chapter (MyST admonition with a table).

    ``paper_differences``: where a chapter's defaults are NOT the paper's settings (the
    notebook's metadata ``flatbook.paper_differences``), what differs; the box then compares
    with the chapter's defaults and says so. ``chapter_parameters`` (metadata
    ``flatbook.chapter_parameters``): parameters the paper did not set (seeds, extra grids, workers):
    their default is shown as "chapter default", never as the paper's. ``facts``: (label, value)
    pairs the run measured about its regime (``claims.show_facts`` in the notebook). ``paper_notes``
    (metadata ``flatbook.paper_notes``): parameter -> Markdown text shown in the paper column
    instead of the default, where the paper's prose and its authors' code disagree. ``unused``:
    parameter -> what the run used instead (``ChapterParameters.unused_parameters``), shown in place
    of the value, so a box never lists a setting as used that the run replaced."""
    rows = []
    for name, default in report.defaults.items():
        used = report.parameters[name]
        changed = used != default
        used_md = _markdown_value(used)
        if unused and name in unused:
            used_md = f"not used: {unused[name]} (given {used_md})"
        default_md = _markdown_value(default)
        if name in chapter_parameters and not paper_differences:
            default_md = f"chapter default {default_md}"
        elif paper_notes and name in paper_notes:
            default_md = paper_notes[name]
        rows.append(f"| `{name}` | {'**' + used_md + '**' if changed else used_md} | {default_md} |")
    n_changed = sum(report.parameters[n] != d for n, d in report.defaults.items())
    if paper_differences:
        headline = (f"{n_changed} of {len(report.defaults)} parameters differ from the chapter's defaults (bold below)."
                    if n_changed else "All parameters equal the chapter's defaults.")
        extra = ["", f"**Not the paper's experiment:** {paper_differences}"]
        default_column = "chapter default"
    else:
        if report.profile == "paper" and n_changed == 0:
            headline = "These are the paper's settings (the notebook's defaults), unchanged."
        else:
            headline = (
                f"**{n_changed} of {len(report.defaults)} parameters differ from the paper's settings** "
                "(bold below): numbers on this page are not the paper's experiment unless said so."
                if n_changed else "All parameters equal the paper's settings."
            )
        extra = []
        default_column = "paper (notebook default)"
    return "\n".join(
        [
            "```{admonition} How this page was computed",
            ":class: note",
            f"Profile **{report.profile}**: {profile_description}. {headline}",
            *extra,
            "",
            f"Device: {report.device}. flatbook {__version__}. "
            f"Executed {report.started} in {report.wall_seconds:.1f} s (wall time).",
            "",
            f"| parameter | this run | {default_column} |",
            "|---|---|---|",
            *rows,
            *(["", "Regime measured by this run (computed; the chapter's claims use it):", "",
               "| measured | value |", "|---|---|"] + [f"| {a} | {b.replace('|', '/')} |" for a, b in facts]
              if facts else []),
            "```",
        ]
    )


def _atomic_write_notebook(nb: nbformat.NotebookNode, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        nbformat.write(nb, str(tmp))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _add_tag(cell: nbformat.NotebookNode, tag: str) -> None:
    tags = cell.setdefault("metadata", {}).setdefault("tags", [])
    if tag not in tags:
        tags.append(tag)


_PROGRESS_LINE = re.compile(r"\d+%\|.*\||IProgress not found|from \.autonotebook import tqdm")


def strip_progress_bars(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Remove tqdm progress bars (every redraw lands in a notebook's stderr stream) from the
    outputs; other stderr text (warnings) is kept. Returns ``nb``, changed in place."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                lines = [line for line in re.split(r"[\r\n]+", out.get("text", ""))
                         if line.strip() and not _PROGRESS_LINE.search(line)]
                if not lines:
                    continue
                out["text"] = "\n".join(lines) + "\n"
            kept.append(out)
        cell["outputs"] = kept
    return nb


def _decorate(nb: nbformat.NotebookNode, report: RunReport, profile_description: str,
              unused: Mapping[str, str] | None = None) -> nbformat.NotebookNode:
    """Hide papermill's injected cell, fold the parameters cell, drop progress bars from the
    outputs, put the run report under the title."""
    strip_progress_bars(nb)
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags:
            _add_tag(cell, "remove-cell")
        elif "parameters" in tags:
            _add_tag(cell, "hide-cell")
    from ..claims import facts_in_notebook

    differences = nb.metadata.get("flatbook", {}).get("paper_differences")
    chapter_parameters = nb.metadata.get("flatbook", {}).get("chapter_parameters", [])
    paper_notes = nb.metadata.get("flatbook", {}).get("paper_notes", {})
    box = nbformat.v4.new_markdown_cell(report_markdown(report, profile_description, differences, chapter_parameters,
                                                        facts_in_notebook(nb), paper_notes, unused))
    box.metadata["tags"] = [REPORT_CELL_TAG]
    first = nb.cells[0] if nb.cells else None
    at = 1 if first is not None and first.cell_type == "markdown" and first.source.lstrip().startswith("# ") else 0
    nb.cells.insert(at, box)
    nb.metadata["flatbook"] = {
        **{k: v for k, v in nb.metadata.get("flatbook", {}).items()
           if k in ("check", "paper_differences", "chapter_parameters", "paper_notes")},
        "chapter": report.chapter,
        "profile": report.profile,
        "parameters": report.parameters,
        "defaults": report.defaults,
        "device": report.device,
        "version": __version__,
        "wall_seconds": report.wall_seconds,
        "started": report.started,
    }
    return nb


def run_chapter(
    name: str,
    *,
    profile: str = "paper",
    overrides: Mapping[str, Any] | None = None,
    output: str | Path | None = None,
    root: Path | None = None,
    progress: bool = True,
    log_output: bool = False,
    threads: int | None = None,
) -> RunReport:
    """Execute one chapter; see the module docstring. Raises ParameterError or ChapterFailed.
    ``threads``: the CPU threads the chapter's kernel computes on (its ``OMP_NUM_THREADS`` and
    ``MKL_NUM_THREADS``, which PyTorch reads when it starts; None: PyTorch's default, the cores).
    CPU kernels split their sums by thread count, so it is part of what fixes a chapter's bits."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    root = root or repo_root()
    chapter = get_chapter(name, root)
    prof = load_profile(profile, root)
    params = resolve_parameters(chapter, profile, overrides, root)
    output = Path(output) if output is not None else default_output(chapter.name, root)
    if output.suffix != ".ipynb":
        raise ParameterError(f"--output must end in .ipynb, got {str(output)!r}")
    if any(output.resolve() == c.path.resolve() for c in all_chapters(root)):
        raise ParameterError(f"--output {str(output)!r} is a chapter's source notebook; sources stay without outputs")
    output.parent.mkdir(parents=True, exist_ok=True)
    defaults = {n: p.default for n, p in chapter.parameters.items()}

    from contextlib import nullcontext

    from ..checks import positive_int
    from ..device import compute_threads, describe_device

    threads = None if threads is None else positive_int("threads", threads)
    with compute_threads(threads) if threads is not None else nullcontext():  # the threads the kernel will have
        device = describe_device()
    partial = output.with_name(f".{output.stem}.partial-{os.getpid()}.ipynb")
    started = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    t0 = time.perf_counter()
    saved_env = {k: os.environ.get(k) for k in _THREAD_VARIABLES}
    try:
        if threads is not None:  # the kernel, a child process, starts with these
            os.environ.update({k: str(threads) for k in _THREAD_VARIABLES})
        papermill.execute_notebook(
            str(chapter.path),
            str(partial),
            parameters=params,
            kernel_name="python3",
            language="python",
            progress_bar=progress,
            log_output=log_output,
            cwd=str(root),
            kernel_manager_class=_kernel_manager_class(),
        )
        wall = time.perf_counter() - t0
        report = RunReport(chapter.name, output, prof.name, {**defaults, **params}, defaults, device, wall, started)
        built = chapter.build_parameters({**defaults, **params})
        unused = built.unused_parameters() if hasattr(built, "unused_parameters") else {}
        nb = _decorate(nbformat.read(str(partial), as_version=4), report, prof.description, unused)
        _atomic_write_notebook(nb, output)
        return report
    except PapermillExecutionError as exc:
        source = exc.source if isinstance(exc.source, str) else "".join(exc.source or [])
        trace = _strip_ansi("\n".join(exc.traceback or [])).strip().splitlines()
        # code cells run in order and each gets the next execution count; papermill's injected
        # cell (present when there are parameters) comes first, so it is not a source cell
        cell_number = exc.exec_count - (1 if params else 0) if exc.exec_count else None
        raise ChapterFailed(chapter.name, f"{exc.ename}: {exc.evalue}", cell_number, source, chapter.path,
                            "\n".join(trace[-15:])) from None
    except ParameterError:
        raise
    except Exception as exc:  # kernel died, notebook unreadable, ...
        raise ChapterFailed(chapter.name, f"{type(exc).__name__}: {exc}") from exc
    finally:
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if partial.exists():
            partial.unlink()


def execution_order(names: Sequence[str], first: Sequence[str]) -> list[str]:
    """``names`` with those listed in ``first`` moved to the front, in ``first``'s order (a profile's
    ``execute_first``: the costliest chapters, so that with several at once no process idles at the
    end waiting for one long chapter); the rest keep their order."""
    chosen = [n for n in first if n in names]
    return chosen + [n for n in names if n not in chosen]


def _execute_in_worker(name: str, profile: str, root: Path, threads: int | None) -> tuple[str, Any]:
    """run_chapter in a worker process of ``run_book``: ("ok", RunReport) or ("failed", message)
    (exceptions with several constructor arguments do not travel between processes)."""
    try:
        return "ok", run_chapter(name, profile=profile, root=root, progress=False, threads=threads)
    except (ChapterFailed, ParameterError) as exc:
        return "failed", str(exc)


def _failure_from_worker(name: str, message: str) -> ChapterFailed:
    """A ChapterFailed for ``name`` whose text is ``message``, the worker's own ChapterFailed text."""
    exc = ChapterFailed(name, "")
    exc.args = (message,)
    return exc


def run_book(
    profile: str = "laptop",
    names: Sequence[str] | None = None,
    *,
    root: Path | None = None,
    progress: bool = True,
    echo=print,
    train_first=None,
) -> tuple[list[RunReport], list[Exception]]:
    """Execute chapters (all, or ``names``); go on past failures and return both, in reading order.
    When the profile sets ``train_first_workers`` and ``train_first`` is given (``book.plan.train_first``,
    as the CLI passes it), it trains every planned run first. The profile's ``chapter_workers``
    chapters then execute at once, each in its own process (their runs are trained already, so no two
    train the same run), the profile's ``execute_first`` chapters first; each computes on the
    profile's ``chapter_threads`` (when set), so the number executed at once changes no result."""
    root = root or repo_root()
    selected = [get_chapter(n, root) for n in names] if names else all_chapters(root)
    loaded = load_profile(profile, root)  # a bad profile fails before any chapter runs
    for ch in selected:  # and so does any bad override in it
        resolve_parameters(ch, profile, None, root)
    if loaded.train_first_workers and train_first is not None:
        train_first([ch.name for ch in selected], profile, loaded.train_first_workers, root=root, echo=echo,
                     progress=progress)
    reading = [ch.name for ch in selected]
    order = execution_order(reading, loaded.execute_first)
    threads = loaded.chapter_threads
    reports: dict[str, RunReport] = {}
    failures: dict[str, Exception] = {}
    if loaded.chapter_workers > 1 and len(order) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        workers = min(loaded.chapter_workers, len(order))
        echo(f"executing {len(order)} chapters, {workers} at once"
             + (f", each on {threads} CPU thread{'s' * (threads != 1)}" if threads else "")
             + f": {', '.join(order)}")
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
            futures = {pool.submit(_execute_in_worker, name, profile, root, threads): name for name in order}
            for done, future in enumerate(as_completed(futures), 1):
                name = futures[future]
                status, value = future.result()
                if status == "ok":
                    echo(f"[{done}/{len(order)}] {name}: done in {value.wall_seconds:.1f} s -> {value.output}")
                    reports[name] = value
                else:
                    echo(f"[{done}/{len(order)}] {name}: FAILED: {value}")
                    failures[name] = _failure_from_worker(name, value)
    else:
        for i, name in enumerate(order, 1):
            echo(f"[{i}/{len(order)}] {name}: executing at profile {profile!r} ...")
            try:
                rep = run_chapter(name, profile=profile, root=root, progress=progress, threads=threads)
                echo(f"[{i}/{len(order)}] {name}: done in {rep.wall_seconds:.1f} s -> {rep.output}")
                reports[name] = rep
            except (ChapterFailed, ParameterError) as exc:
                echo(f"[{i}/{len(order)}] {name}: FAILED: {exc}")
                failures[name] = exc
    return [reports[n] for n in reading if n in reports], [failures[n] for n in reading if n in failures]
