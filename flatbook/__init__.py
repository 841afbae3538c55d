"""flatbook: a literate reproduction of "Flatness is a False Friend" and a Hessian-spectrum toolkit.

Layers, each importing only those before it:

* the toolkit, this package's top-level modules: Hessian-vector products (``curvature``), Lanczos,
  SLQ and spectra (``spectrum``), models, data, batching, schedules, training, cached experiments,
  statistics, seeds and claims; it needs PyTorch, NumPy and SciPy only;
* ``flatbook.theory``: the exact mathematics (SymPy derivations, closed forms, exact spectra);
* ``flatbook.chapters``: one module per chapter (its parameters, tables, figures and claims);
* ``flatbook.book``: the machinery that runs chapters with papermill and renders the book.

Submodules are imported on first use, so ``import flatbook`` (and the ``python -m flatbook`` CLI)
stays fast and does not import PyTorch until something needs it.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# The toolkit's modules (this package's top level), loaded on first attribute access; the layers
# above it are the subpackages ``flatbook.theory``, ``flatbook.chapters`` and ``flatbook.book``.
_SUBMODULES = ("batching", "checks", "claims", "curvature", "data", "decay", "device", "distributed", "experiments",
               "launch", "models", "remeasure", "scale_measures", "schedules", "seeds", "spectrum", "stats", "train",
               "theory", "chapters", "book")

# public names re-exported from submodules (imported on first access)
_EXPORTS = {
    "HessianOperator": "curvature",
    "dense_hessian": "curvature",
    "slq": "spectrum",
    "lanczos": "spectrum",
    "Spectrum": "spectrum",
    "MatrixOperator": "spectrum",
    "hutchinson_trace": "spectrum",
    "top_eigenvalues": "spectrum",
}

__all__ = ["__version__", *_EXPORTS, *_SUBMODULES]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'flatbook' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
