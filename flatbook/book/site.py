"""Render the book to HTML from executed notebooks only, with everything served locally.

Jupyter Book reads the notebooks named in ``_toc.yml``; the sources in ``book/`` carry no
outputs, so the HTML is built from a *staging* copy of the book in which every chapter
notebook is replaced by its executed version from ``_build/executed/``. ``_config.yml`` sets
``execute_notebooks: 'off'``: the HTML shows exactly what papermill computed.

MathJax 3 is copied into the staged ``_mathjax/mathjax`` from the ``django-static-mathjax``
package (a PyPI wheel holding MathJax's files); ``html_extra_path`` puts it at ``mathjax/`` in
the HTML and ``mathjax_path`` points there, so math renders with no network. (Not ``_static``:
Jupyter Book adds every .js file found there to every page.) ``external_resources`` lists every script or stylesheet that a built
page would fetch from http(s); the build fails when there is one.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

from .registry import chapters, repo_root, toc_files

__all__ = ["BuildFailed", "MissingExecutedNotebook", "mathjax_source", "stage_book", "build_html", "external_resources"]

# the parts of MathJax's es5 tree that tex-chtml.js loads (the speech engine 'sre' is left out)
_MATHJAX_KEEP = ("tex-chtml.js", "output/chtml", "input/tex/extensions", "ui", "a11y", "adaptors")


class MissingExecutedNotebook(FileNotFoundError):
    """A chapter listed in ``_toc.yml`` has no executed notebook to render."""


class BuildFailed(RuntimeError):
    """jupyter-book failed, or the HTML it built would load something from the network."""


def mathjax_source() -> Path:
    """The es5 folder of the installed MathJax (package ``django-static-mathjax``)."""
    try:
        import mathjax  # type: ignore[import-not-found]
    except ImportError as exc:
        raise FileNotFoundError(
            "MathJax is not installed: `pip install django-static-mathjax==3.2.2.1` (it is in requirements.txt)"
        ) from exc
    es5 = Path(next(iter(mathjax.__path__))) / "static" / "mathjax" / "es5"
    if not (es5 / "tex-chtml.js").is_file():
        raise FileNotFoundError(f"MathJax's tex-chtml.js is missing under {es5}")
    return es5


def _copy_mathjax(dest: Path) -> None:
    src = mathjax_source()
    for part in _MATHJAX_KEEP:
        s, d = src / part, dest / part
        if s.is_dir():
            shutil.copytree(s, d, dirs_exist_ok=True)
        elif s.is_file():
            d.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(s, d)


def stage_book(executed_dir: Path | None = None, stage_dir: Path | None = None, root: Path | None = None) -> Path:
    """Assemble a buildable copy of the book: sources, executed chapters, local MathJax.

    Raises MissingExecutedNotebook (naming the chapters and the command that makes them) when a
    chapter in ``_toc.yml`` has not been executed yet.
    """
    root = root or repo_root()
    executed_dir = executed_dir or root / "_build" / "executed"
    stage = stage_dir or root / "_build" / "stage"
    missing = [c.name for c in chapters(root) if not (executed_dir / f"{c.name}.ipynb").is_file()]
    if missing:
        raise MissingExecutedNotebook(
            f"no executed notebook for {missing} in {executed_dir}: run `python -m flatbook run <chapter>` "
            "for each, or `python -m flatbook book` (make book) for all"
        )
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(root / name, stage / name)
    shutil.copytree(
        root / "book", stage / "book", ignore=shutil.ignore_patterns("*.ipynb", ".ipynb_checkpoints", "__pycache__")
    )
    if (root / "_static").is_dir():
        shutil.copytree(root / "_static", stage / "_static")
    for c in chapters(root):
        shutil.copy2(executed_dir / f"{c.name}.ipynb", stage / c.path.relative_to(root))
    _copy_mathjax(stage / "_mathjax" / "mathjax")
    scoreboard = stage / "book" / "scoreboard.md"
    if scoreboard.is_file():
        from .scoreboard import fill_scoreboard

        fill_scoreboard(scoreboard, executed_dir)
    for entry in toc_files(root):  # every toc entry must exist in the stage
        if not any((stage / f"{entry}{ext}").is_file() for ext in (".md", ".ipynb")):
            raise FileNotFoundError(f"_toc.yml lists {entry!r} but neither {entry}.md nor {entry}.ipynb exists")
    return stage


_REMOTE = re.compile(r"^\s*(https?:)?//", re.I)
_REMOTE_IN_TEXT = re.compile(r"""(?:https?:)?//[^\s'"()<>]+""")


class _ResourceFinder(HTMLParser):
    """Collects what a page would fetch: scripts, stylesheets, preloads, images, frames, and
    remote URLs inside inline scripts and styles (e.g. a CDN URL a script would load later)."""

    LINK_RELS = ("stylesheet", "preload", "modulepreload", "icon", "preconnect", "prefetch", "dns-prefetch")

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self._inline: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        url = None
        if tag == "script":
            url = a.get("src")
            if not url:
                self._inline = "script"
        elif tag == "style":
            self._inline = "style"
        elif tag == "link" and any(r in (a.get("rel") or "").lower().split() for r in self.LINK_RELS):
            url = a.get("href")
        elif tag in ("img", "iframe", "source", "embed", "audio", "video"):
            url = a.get("src")
        if url and _REMOTE.match(url):
            self.found.append(f"<{tag}> {url}")
        if a.get("style"):
            self._scan_css(tag, a["style"])

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._inline = None

    def handle_data(self, data: str) -> None:
        if self._inline == "script":
            for url in re.findall(r"""["'`]((?:https?:)?//[^"'`\s]+)["'`]""", data):
                self.found.append(f"<script> inline {url}")
        elif self._inline == "style":
            self._scan_css("style", data)

    def _scan_css(self, where: str, css: str) -> None:
        for url in _css_remote_urls(css):
            self.found.append(f"<{where}> {url}")


def _css_remote_urls(css: str) -> list[str]:
    """Remote URLs in ``@import`` rules and ``url(...)`` values (fonts, images)."""
    urls = re.findall(r"""url\(\s*['"]?((?:https?:)?//[^'")\s]+)""", css, re.I)
    urls += re.findall(r"""@import\s+['"]((?:https?:)?//[^'"]+)""", css, re.I)
    return urls


def external_resources(html_dir: Path) -> dict[str, list[str]]:
    """Every resource a page or stylesheet in ``html_dir`` would load from the network
    (plain links ``<a href>`` are not resources and are allowed)."""
    out: dict[str, list[str]] = {}
    for page in sorted(Path(html_dir).rglob("*.html")):
        finder = _ResourceFinder()
        finder.feed(page.read_text(errors="replace"))
        if finder.found:
            out[str(page.relative_to(html_dir))] = finder.found
    for css in sorted(Path(html_dir).rglob("*.css")):
        urls = _css_remote_urls(css.read_text(errors="replace"))
        if urls:
            out[str(css.relative_to(html_dir))] = [f"css {u}" for u in urls]
    return out


def build_html(
    executed_dir: Path | None = None, root: Path | None = None, output_root: Path | None = None, echo=print
) -> Path:
    """Stage the book and run ``jupyter-book build``; return the folder holding ``index.html``.

    The HTML lands in ``<output_root>/_build/html`` (``output_root`` defaults to the repo root).
    Fails when Sphinx fails, when it warns (warnings are errors), or when any page loads a resource
    from the network.
    """
    root = root or repo_root()
    output_root = output_root or root
    t0 = time.perf_counter()
    stage = stage_book(executed_dir, output_root / "_build" / "stage", root)
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb) if jb.exists() else "jupyter-book", "build", str(stage), "--path-output", str(output_root),
           "--builder", "html", "--all"]
    echo("$ " + " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildFailed(f"jupyter-book build failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    warnings = [line for line in (proc.stdout + proc.stderr).splitlines() if "WARNING" in line]
    for w in warnings:
        echo("  " + w)
    if warnings:  # warnings are errors: a broken reference or a page Sphinx misread fails the build
        raise BuildFailed(f"jupyter-book build gave {len(warnings)} Sphinx warning(s), and the book builds with "
                          "warnings as errors:\n" + "\n".join(warnings[:40]))
    html = output_root / "_build" / "html"
    external = external_resources(html)
    if external:
        listing = "\n".join(f"  {page}: {', '.join(urls)}" for page, urls in external.items())
        raise BuildFailed(f"the built HTML loads resources from the network (it must not):\n{listing}")
    index = html / "index.html"
    if not index.is_file():
        raise BuildFailed(f"jupyter-book reported success but {index} does not exist")
    echo(f"HTML in {html} ({len(warnings)} Sphinx warnings) in {time.perf_counter() - t0:.1f} s; open {index}")
    return html
