"""flatbook: a literate reproduction of "Flatness is a False Friend" and a Hessian-spectrum toolkit.

Submodules are imported on first use, so ``import flatbook`` (and the ``python -m flatbook`` CLI)
stays fast and does not import PyTorch until something needs it.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = ("symbolic", "plots", "runner", "parameters", "profiles", "site", "chapters", "device")


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'flatbook' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_SUBMODULES))
