"""The parameters cell is parsed exactly, and bad overrides are refused with useful messages."""

from __future__ import annotations

import re

import pytest

from flatbook.book.parameters import (
    ParameterError,
    check_overrides,
    format_parameters,
    load_yaml,
    parameters_cell_index,
    parse_value,
    read_parameters,
)

from conftest import make_notebook

PARAMS = """
depth = 3  # layers
X = 1.0  # the datum
weight_decays = [0, 1e-4, 5e-4]  # any list of numbers
dataset = "mnist"
use_gpu = False
point = None  # None: chosen by the chapter
epochs: int = 10  # annotated
names = ["a", "b"]
"""


@pytest.fixture
def params():
    return read_parameters(make_notebook(PARAMS))


def test_read_parameters_defaults_and_comments(params):
    assert list(params) == ["depth", "X", "weight_decays", "dataset", "use_gpu", "point", "epochs", "names"]
    assert params["depth"].default == 3 and params["depth"].comment == "layers"
    assert params["X"].default == 1.0
    assert params["weight_decays"].default == [0, 1e-4, 5e-4]
    assert params["point"].default is None
    assert params["epochs"].default == 10 and params["epochs"].comment == "annotated"


def test_valid_overrides_are_normalised(params):
    out = check_overrides("ch", params, {"X": 2, "weight_decays": [0, 1e-3], "point": [1, 2], "use_gpu": True})
    assert out == {"X": 2.0, "weight_decays": [0.0, 1e-3], "point": [1, 2], "use_gpu": True}
    assert isinstance(out["X"], float) and all(isinstance(v, float) for v in out["weight_decays"])


def test_unknown_name_lists_allowed_names_and_defaults(params):
    with pytest.raises(ParameterError) as info:
        check_overrides("gedanken", params, {"dpeth": 4})
    msg = str(info.value)
    assert "chapter 'gedanken': unknown parameter 'dpeth' (did you mean 'depth'?)" in msg
    for name, p in params.items():  # every allowed name with its default
        assert re.search(rf"^  {name}\s+= {re.escape(repr(p.default))}", msg, re.M), name


@pytest.mark.parametrize(
    "name, value, expected",
    [
        ("depth", "four", "must be an integer"),
        ("depth", 4.5, "must be an integer"),
        ("depth", True, "must be an integer"),
        ("X", "one", "must be a number"),
        ("use_gpu", 1, "must be a boolean"),
        ("dataset", 3, "must be a string"),
        ("weight_decays", 0.1, "must be a list of numbers"),
        ("weight_decays", [0, "big"], "weight_decays[1]"),
        ("names", [1], "names[0]"),
    ],
)
def test_wrong_types_are_refused(params, name, value, expected):
    with pytest.raises(ParameterError) as info:
        check_overrides("ch", params, {name: value})
    assert expected in str(info.value)
    assert "allowed parameters" in str(info.value)


def test_all_problems_reported_at_once(params):
    with pytest.raises(ParameterError) as info:
        check_overrides("ch", params, {"nope": 1, "depth": "x"})
    assert "'nope'" in str(info.value) and "'depth' must be an integer" in str(info.value)


@pytest.mark.parametrize(
    "text, value",
    [("4", 4), ("1e-3", 1e-3), ("-2.5", -2.5), ("[0, 1e-3, 5e-4]", [0, 1e-3, 5e-4]), ("None", None),
     ("True", True), ("true", True), ("cpu", "cpu"), ("'quoted'", "quoted"), ("[a, b]", ["a", "b"]),
     ("{a: 1}", {"a": 1})],
)
def test_parse_value(text, value):
    assert parse_value(text) == value


def test_yaml_reads_exponent_floats(tmp_path):
    assert load_yaml("wd: [0, 1e-4, 5e-4]\nlr: 1e-2\nn: 3") == {"wd": [0, 1e-4, 5e-4], "lr": 0.01, "n": 3}
    f = tmp_path / "p.yaml"
    f.write_text("weight_decays: [1e-3]\n")
    assert load_yaml(str(f)) == {"weight_decays": [1e-3]}


def test_parameters_cell_must_be_first_code_cell():
    nb = make_notebook("a = 1")
    nb.cells.insert(1, nb.cells[1].copy())
    nb.cells[1].metadata = {}
    nb.cells[1].source = "import os"
    with pytest.raises(ParameterError, match="must be the first code cell"):
        parameters_cell_index(nb)
    nb.cells[1].metadata = {"tags": ["parameters"]}
    with pytest.raises(ParameterError, match="exactly one cell tagged 'parameters'"):
        parameters_cell_index(nb)


def test_parameters_cell_only_literals():
    with pytest.raises(ParameterError, match="not a literal"):
        read_parameters(make_notebook("a = foo()"))
    with pytest.raises(ParameterError, match="only assign literals"):
        read_parameters(make_notebook("import os"))


def test_format_parameters_mentions_types(params):
    text = format_parameters(params)
    assert "depth" in text and "(an integer)" in text and "(a list of numbers)" in text and "# layers" in text


def test_structured_parses_lists_and_dicts_that_arrived_as_text():
    from flatbook.book.parameters import structured

    assert structured("[0, 0.001]") == [0, 0.001]  # what plain papermill's -p hands a notebook
    assert structured(" {'depth': 20}") == {"depth": 20}
    assert structured("[a, b]") == ["a", "b"]  # YAML, as `python -m flatbook run -p` reads it
    assert structured("(1, 2)") == (1, 2)
    for unchanged in ([0, 1e-3], {"a": 1}, 3, None, "mnist", "/path/[x]", "[unclosed"):
        assert structured(unchanged) == unchanged
