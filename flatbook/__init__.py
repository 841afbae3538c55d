"""flatbook: a literate reproduction of "Flatness is a False Friend" and a Hessian-spectrum toolkit.

Submodules are imported on first use, so ``import flatbook`` (and the ``python -m flatbook`` CLI)
stays fast and does not import PyTorch until something needs it.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = ("symbolic", "plots", "runner", "parameters", "site", "chapters", "device", "curvature", "spectrum",
               "models", "data", "batching", "schedules", "train", "experiments",
               "crossentropy", "scaling", "exact", "lanczos_checks", "theorem", "weight_decay")

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
