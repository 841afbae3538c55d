"""A Sphinx extension that keeps the rendered book free of anything that needs the network.

Jupyter Book 1.x always loads ``sphinx_thebe`` (live code cells through a remote Binder
kernel), which puts a script naming ``https://unpkg.com/thebe`` on every page, its loader and
stylesheet, and a Binder configuration block. flatbook's book turns launch buttons and Thebe
off, so this extension removes those leftovers: the pages then reference no remote script at
all (``flatbook.book.site.external_resources`` checks it after every build). Listed in
``_config.yml`` under ``sphinx.extra_extensions``.
"""

from __future__ import annotations

from typing import Any

from docutils import nodes

_THEBE_MARKERS = ("thebe", "THEBE")


def _is_thebe_asset(asset: Any) -> bool:
    filename = str(getattr(asset, "filename", "") or "")
    body = str(getattr(asset, "attributes", {}).get("body", "") if hasattr(asset, "attributes") else "")
    return any(m in filename or m in body for m in _THEBE_MARKERS)


def _strip_assets(app, pagename, templatename, context, doctree) -> None:
    for key in ("script_files", "css_files"):
        if key in context:
            context[key] = [a for a in context[key] if not _is_thebe_asset(a)]


def _strip_thebe_config(app, doctree, docname) -> None:
    for node in list(doctree.findall(nodes.raw)):
        text = node.astext()
        if "x-thebe-config" in text or "kernelName =" in text:
            node.parent.remove(node)


def setup(app) -> dict[str, Any]:
    app.connect("doctree-resolved", _strip_thebe_config, priority=900)  # after sphinx_thebe adds it
    app.connect("html-page-context", _strip_assets, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
