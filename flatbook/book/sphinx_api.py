"""A Sphinx extension for the book's API reference (``book/library/api.md``): every docstring that
autodoc pulls in is shown verbatim, as a preformatted block under its signature.

flatbook's docstrings are plain text written for ``help()`` and editors: they state the maths with
``||H v||``, ``x * y`` and ``|u^T H v|``, which reStructuredText would read as substitution
references and emphasis (a warning each, and the book builds with warnings as errors). Quoting
them as literal blocks keeps every character as written. Listed in ``_config.yml`` under
``sphinx.extra_extensions``, after ``sphinx.ext.autodoc``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["docstring_as_literal_block", "setup"]


def docstring_as_literal_block(lines: list[str]) -> list[str]:
    """``lines`` (a docstring, as autodoc hands it over) as a reStructuredText literal block: ``::``,
    a blank line, then every line indented by four spaces; an empty docstring stays empty."""
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    if not any(line.strip() for line in lines):
        return []
    return ["::", ""] + [f"    {line}" if line.strip() else "" for line in lines] + [""]


def _process_docstring(app, what, name, obj, options, lines: list[str]) -> None:
    lines[:] = docstring_as_literal_block(list(lines))


def setup(app: Any) -> dict[str, Any]:
    app.setup_extension("sphinx.ext.autodoc")
    app.connect("autodoc-process-docstring", _process_docstring)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
