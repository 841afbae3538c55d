"""Argument checks shared by every layer of flatbook: one function, and one message, for each kind
of mistake. Each returns the value in its canonical Python type, or raises ValueError naming the
argument, the bad value and what is allowed.

Seeds follow one rule everywhere: an integer >= 0 (numpy integers too, booleans not), passed by
keyword (``seed=``) to every public function that draws random numbers."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["integer", "positive_int", "nonnegative_int", "seed", "seed_list", "results_dir", "finite_number",
           "weight_decays"]


def _is_int(value: Any) -> bool:
    return not isinstance(value, (bool, np.bool_)) and isinstance(value, (int, np.integer))


def integer(name: str, value: Any, minimum: int, maximum: int | None = None, why: str = "") -> int:
    """``value`` as a Python int if it is an integer (numpy integers too, booleans not) from
    ``minimum`` to ``maximum`` (inclusive; no upper bound when None); else ValueError naming the
    argument (``why``, if given, is added in parentheses)."""
    if not _is_int(value) or value < minimum or (maximum is not None and value > maximum):
        allowed = f"from {minimum} to {maximum}" if maximum is not None else f">= {minimum}"
        raise ValueError(f"{name} must be an integer {allowed}{f' ({why})' if why else ''}, got {value!r}")
    return int(value)


def positive_int(name: str, value: Any) -> int:
    """``value`` as a Python int if it is an integer >= 1 (numpy integers too, booleans not);
    else ValueError naming the argument."""
    return integer(name, value, 1)


def nonnegative_int(name: str, value: Any) -> int:
    """``value`` as a Python int if it is an integer >= 0 (numpy integers too, booleans not)."""
    return integer(name, value, 0)


def seed(value: Any, name: str = "seed") -> int:
    """A random seed: an integer >= 0 (the one rule for seeds in flatbook)."""
    return nonnegative_int(name, value)


def seed_list(seeds: Any, name: str = "seeds") -> list[int]:
    """``seeds`` as a list of distinct seeds (integers >= 0), at least one."""
    if not isinstance(seeds, (list, tuple)) or not seeds:
        raise ValueError(f"{name} must be a non-empty list of distinct integers >= 0, got {seeds!r}")
    for s in seeds:
        if not _is_int(s) or s < 0:
            raise ValueError(f"{name}: every seed must be an integer >= 0, got {s!r}")
    if len(set(int(s) for s in seeds)) != len(seeds):
        raise ValueError(f"{name} has repeated values: {seeds!r}")
    return [int(s) for s in seeds]


def results_dir(value: Any, name: str = "results_dir") -> Any:
    """A results-cache location given as a chapter parameter: None (the default cache) or a path
    as text."""
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{name} must be null or a path, got {value!r}")
    return value


def finite_number(name: str, value: Any, *, minimum: float | None = None, strict: bool = False,
                  below: float | None = None, allow_none: bool = False) -> float | None:
    """``value`` as a float if it is a finite real number (ints widened, booleans not), at least
    ``minimum`` (greater than it when ``strict``) and less than ``below``; None passes when
    ``allow_none``."""
    if value is None and allow_none:
        return None
    bound = "" if minimum is None else f" {'>' if strict else '>='} {minimum:g}"
    if below is not None:
        bound += f"{' and' if bound else ''} < {below:g}"
    allowed = f"{'null or ' if allow_none else ''}a finite number{bound}"
    if (isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating))
            or not math.isfinite(value)
            or (minimum is not None and (value < minimum or (strict and value == minimum)))
            or (below is not None and value >= below)):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return float(value)


def weight_decays(name: str, values: Any, minimum: int = 2, what: str = "weight decay") -> list[float]:
    """A list of at least ``minimum`` distinct finite numbers >= 0 (``what`` names one element)."""
    if not isinstance(values, (list, tuple)) or len(values) < minimum:
        raise ValueError(f"{name} must be a list of at least {minimum} {what}s, got {values!r}")
    for w in values:
        if isinstance(w, (bool, np.bool_)) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise ValueError(f"{name}: every {what} must be a finite number >= 0, got {w!r}")
    if len(set(map(float, values))) != len(values):
        raise ValueError(f"{name} has repeated values: {values!r}")
    return [float(w) for w in values]
