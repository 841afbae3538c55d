"""flatbook.checks: one rule and one message per kind of mistake, used by every layer."""

from __future__ import annotations

import math

import numpy as np
import pytest

from flatbook import checks


def test_integers():
    assert checks.positive_int("n", np.int64(3)) == 3 and type(checks.positive_int("n", np.int64(3))) is int
    assert checks.nonnegative_int("epoch", 0) == 0
    for bad in (0, -1, 1.0, True, "2", None):
        with pytest.raises(ValueError, match=r"^n must be an integer >= 1, got"):
            checks.positive_int("n", bad)
    for bad in (-1, 0.0, False, "0"):
        with pytest.raises(ValueError, match=r"^epoch must be an integer >= 0, got"):
            checks.nonnegative_int("epoch", bad)


def test_seeds_one_rule():
    assert checks.seed(0) == 0 and checks.seed(np.int32(7)) == 7
    for bad in (-1, 1.5, True, "3", None):
        with pytest.raises(ValueError, match=r"^seed must be an integer >= 0"):
            checks.seed(bad)
    with pytest.raises(ValueError, match=r"^spectrum_seed must be"):
        checks.seed(-2, "spectrum_seed")
    assert checks.seed_list((3, np.int64(1))) == [3, 1]
    for bad, message in (([], "non-empty"), ([0, 0], "repeated"), ([0, -1], "every seed"), ([True], "every seed"),
                         (0, "non-empty list")):
        with pytest.raises(ValueError, match=message):
            checks.seed_list(bad)


def test_seeds_are_checked_the_same_way_across_the_toolkit():
    import torch

    from flatbook.batching import TensorBatches, balanced_subset
    from flatbook.seeds import seeded
    from flatbook.experiments import paper_config
    from flatbook.spectrum import MatrixOperator, lanczos, top_eigenvalues

    y = torch.arange(10) % 2
    op = MatrixOperator(np.diag([1.0, 2.0, 3.0]))
    for call in (lambda: balanced_subset(y, 2, seed=-1), lambda: TensorBatches(y[:, None], y, 2, seed=-1),
                 lambda: seeded(paper_config("mlp"), seed=-1), lambda: lanczos(op, steps=2, seed=-1),
                 lambda: top_eigenvalues(op, 1, seed=-1), lambda: lanczos(op, steps=2, seed=1.0)):
        with pytest.raises(ValueError, match="seed must be an integer >= 0"):
            call()


def test_results_dir_and_numbers_and_weight_decays():
    assert checks.results_dir(None) is None and checks.results_dir("/tmp/x") == "/tmp/x"
    with pytest.raises(ValueError, match=r"^results_dir must be null or a path, got 3"):
        checks.results_dir(3)
    assert checks.finite_number("lr", 1) == 1.0
    assert checks.finite_number("e", None, allow_none=True) is None
    for bad, kw in ((0.0, dict(minimum=0, strict=True)), (-1, dict(minimum=0)), (math.inf, {}), (True, {}),
                    (1.0, dict(minimum=0, below=1.0)), ("1", {}), (None, {})):
        with pytest.raises(ValueError, match=r"^x must be "):
            checks.finite_number("x", bad, **kw)
    with pytest.raises(ValueError, match=r"x must be a finite number >= 0 and < 1, got 1.5"):
        checks.finite_number("x", 1.5, minimum=0, below=1)
    assert checks.weight_decays("wds", [0, 5e-4]) == [0.0, 5e-4]
    for bad, message in (([0.0], "at least 2"), ([0.0, 0.0], "repeated"), ([0.0, -1.0], "finite number >= 0"),
                         ([0.0, math.nan], "finite number >= 0"), ([0.0, True], "finite number >= 0")):
        with pytest.raises(ValueError, match=message):
            checks.weight_decays("wds", bad)
    with pytest.raises(ValueError, match="at least 1 exponents"):
        checks.weight_decays("decay_exponents", [], minimum=1, what="exponent")
