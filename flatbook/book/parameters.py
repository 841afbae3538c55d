"""A chapter's parameters: read from its ``parameters`` cell, parsed from the command line, checked.

papermill only *warns* about unknown parameters and never checks types; a typo in
``weight_decays`` would silently run the paper's defaults for an hour. Here every override is
checked against the chapter's ``parameters`` cell before anything runs.

The ``parameters`` cell must hold only assignments of Python literals (numbers, strings,
booleans, None, lists, tuples, dicts), one name per line, optionally with comments::

    depth = 3                 # layers of the deep linear model
    directions = None         # None: chosen for the depth

Type rules for an override of a default:
  * bool default: a bool;  int default: an int (not a bool);
  * float default: an int or a float (ints are widened to float);
  * str default: a str;  list/tuple default: a list or tuple, whose elements obey the rules for
    the default's elements when the default is non-empty and all of one kind;
  * dict default: a dict;  None default: any literal (the chapter validates it).
"""

from __future__ import annotations

import ast
import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import nbformat
import yaml

__all__ = [
    "ParameterError",
    "Parameter",
    "parameters_cell_index",
    "read_parameters",
    "parse_value",
    "structured",
    "load_yaml",
    "check_overrides",
    "format_parameters",
]


class ParameterError(ValueError):
    """A parameter override is unknown or has the wrong type (raised before anything runs)."""


@dataclass(frozen=True)
class Parameter:
    name: str
    default: Any
    comment: str  # the trailing comment on its line in the parameters cell, if any


def parameters_cell_index(nb: nbformat.NotebookNode) -> int:
    """Index of the cell tagged ``parameters``; it must exist, be unique and be the first code cell."""
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        raise ParameterError(f"a chapter needs exactly one cell tagged 'parameters', found {len(tagged)}")
    code_cells = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    if code_cells[0] != tagged[0]:
        raise ParameterError(
            f"the 'parameters' cell (cell {tagged[0]}) must be the first code cell (cell {code_cells[0]} is)"
        )
    return tagged[0]


def read_parameters(notebook: str | Path | nbformat.NotebookNode) -> dict[str, Parameter]:
    """The chapter's parameters, in order, with their defaults parsed as Python literals."""
    nb = notebook if isinstance(notebook, nbformat.NotebookNode) else nbformat.read(str(notebook), as_version=4)
    source = nb.cells[parameters_cell_index(nb)].source
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise ParameterError(f"the parameters cell is not valid Python: {exc}") from exc
    lines = source.splitlines()
    params: dict[str, Parameter] = {}
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and node.value is not None and isinstance(node.target, ast.Name):
            target, value_node = node.target, node.value
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            target, value_node = node.targets[0], node.value
        else:
            raise ParameterError(
                f"the parameters cell may only assign literals to single names; line {node.lineno} is "
                f"{ast.get_source_segment(source, node)!r}"
            )
        try:
            default = ast.literal_eval(value_node)
        except ValueError as exc:
            raise ParameterError(
                f"parameter {target.id!r}: default {ast.get_source_segment(source, value_node)!r} is not a literal"
            ) from exc
        line = lines[node.end_lineno - 1]
        comment = line.split("#", 1)[1].strip() if "#" in line else ""
        params[target.id] = Parameter(target.id, default, comment)
    if not params:
        raise ParameterError("the parameters cell defines no parameters")
    return params


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e-3`` as a string; this loader reads it as the float everyone means."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def load_yaml(text_or_path: str | Path) -> Any:
    """Parse YAML text, or the file it names, with floats like ``1e-3`` read as floats.

    A string ending in .yaml/.yml that names no file, or text that is not valid YAML, raises
    ParameterError saying which.
    """
    text = str(text_or_path)
    source = "YAML text"
    single_line = len(text) < 4096 and "\n" not in text
    if single_line and Path(text).is_file():
        source = f"YAML file {text}"
        text = Path(text).read_text()
    elif single_line and text.strip().lower().endswith((".yaml", ".yml")):
        raise ParameterError(f"YAML file {text!r} does not exist")
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise ParameterError(f"{source} is not valid YAML: {exc}") from None


def parse_value(text: str) -> Any:
    """A command-line value: a Python literal (``4``, ``1e-3``, ``[0, 1e-4]``, ``None``, ``True``),
    else YAML (``true``, ``[a, b]``), else the plain string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        pass
    try:
        value = load_yaml(text)
    except ParameterError:
        return text
    return text if value is None and text.strip() not in ("", "~", "null") else value


def structured(value: Any) -> Any:
    """A list, dict or tuple that arrived as text, parsed as ``python -m flatbook run`` parses
    ``-p`` values (``parse_value``); any other value unchanged. Plain papermill hands
    ``-p weight_decays "[0, 1e-3]"`` to the notebook as the string "[0, 1e-3]": each chapter
    passes its list and dict parameters through this first."""
    if isinstance(value, str) and value.strip()[:1] in ("[", "{", "("):
        parsed = parse_value(value)
        if isinstance(parsed, (list, dict, tuple)):
            return parsed
    return value


def _kind(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, dict):
        return "dict"
    return type(value).__name__


_SINGULAR = {"None": "any literal", "bool": "a boolean", "int": "an integer", "float": "a number",
             "str": "a string", "list": "a list", "dict": "a mapping"}
_PLURAL = {"None": "anything", "bool": "booleans", "int": "integers", "float": "numbers",
           "str": "strings", "list": "lists", "dict": "mappings"}


def _element_template(default: list | tuple) -> Any | None:
    """The value that every element of an override must match, or None when the default is mixed."""
    inner = {_kind(v) for v in default}
    if inner == {"int", "float"}:
        return 0.0  # a list of numbers: ints are widened
    if len(inner) == 1:
        return default[0]
    return None


def _describe_type(default: Any) -> str:
    kind = _kind(default)
    if kind == "list" and default and _element_template(default) is not None:
        return "a list of " + _PLURAL[_kind(_element_template(default))]
    return _SINGULAR.get(kind, kind)


def _coerce(name: str, value: Any, default: Any) -> Any:
    """Return ``value`` converted to the default's type, or raise ParameterError."""
    kd, kv = _kind(default), _kind(value)
    if kd == "None":
        return value
    if kd == "float" and kv in ("int", "float"):
        return float(value)
    if kd == "list" and kv == "list":
        template = _element_template(default) if default else None
        if template is None:
            return list(value)
        return [_coerce(f"{name}[{i}]", v, template) for i, v in enumerate(value)]
    if kd == kv:
        return value
    raise ParameterError(
        f"parameter {name!r} must be {_describe_type(default)} (default {default!r}), got {value!r} ({kv})"
    )


def format_parameters(params: Mapping[str, Parameter]) -> str:
    """One line per parameter: name = default  (type)  # comment."""
    width = max(len(n) for n in params)
    rows = []
    for p in params.values():
        row = f"  {p.name:<{width}} = {p.default!r}  ({_describe_type(p.default)})"
        rows.append(row + (f"  # {p.comment}" if p.comment else ""))
    return "\n".join(rows)


def check_overrides(chapter: str, params: Mapping[str, Parameter], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Check every override against the chapter's parameters; return them with types normalised.

    Raises ParameterError naming every unknown name and every wrong type at once, followed by
    the list of allowed names with their defaults.
    """
    problems, checked = [], {}
    for name, value in overrides.items():
        if name not in params:
            close = difflib.get_close_matches(name, list(params), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"unknown parameter {name!r}{hint}")
            continue
        try:
            checked[name] = _coerce(name, value, params[name].default)
        except ParameterError as exc:
            problems.append(str(exc))
    if problems:
        raise ParameterError(
            f"chapter {chapter!r}: " + "; ".join(problems)
            + f"\nallowed parameters of {chapter!r} (name = default):\n" + format_parameters(params)
        )
    return checked
