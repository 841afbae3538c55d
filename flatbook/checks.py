"""Argument checks shared by the library's modules (one message for one kind of mistake)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["positive_int"]


def positive_int(name: str, value: Any) -> int:
    """``value`` as a Python int if it is an integer >= 1 (numpy integers too, booleans not);
    else ValueError naming the argument."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)
