"""The Lanczos appendix's helpers (flatbook.chapters.lanczos): the identity check against exact
arithmetic, and the tables and sentences on constructed inputs."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import torch

from flatbook.chapters import lanczos


def test_the_identity_check_is_at_rounding_level():
    x = torch.rand(40, 9, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    model = torch.nn.Linear(9, 3).double()
    error = lanczos.identity_check(model, x, 40, seed=0, steps=20)
    assert 0 <= error < 1e-10
    assert lanczos.identity_sentence(error, steps=20).startswith("*Computed:* largest difference between the 20 Ritz")


def test_the_ghost_sentences():
    base = dict(steps=50, top_error_with=1e-3, ghosts_with=1, top_weight_without=0.25, top_weight_with=0.25,
                top_weight_ratio=1.0 + 2e-9, moment_errors_without=[1e-12, 3e-12], moment_errors_with=[1e-15])
    assert "has not converged in 50 steps (top Ritz value off by 1.0e-03)" in lanczos.describe_ghosts(
        "MLP", SimpleNamespace(**base, converged=False, ghosts_without=0))
    assert "no ghost copy appeared in 50 steps" in lanczos.describe_ghosts(
        "MLP", SimpleNamespace(**base, converged=True, ghosts_without=1))
    text = lanczos.ghosts_sentence({"MLP": SimpleNamespace(**base, converged=True, ghosts_without=3)})
    assert text.startswith("*Computed, real operators:* MLP: 3 copies of $\\lambda_1$ without reorthogonalisation (1 with)")
    assert "(relative difference 2.0e-09)" in text and "to 3.0e-12 (with reorthogonalisation: 1.0e-15)." in text
    density = {0.01: {"with vs probe": 1e-4, "without vs probe": 2e-4, "without vs with": 3e-4, "probe vs exact": 0.25}}
    g = SimpleNamespace(ghosts_without=1, density=density)
    assert "MLP (1 Ritz value at $\\lambda_1$ without reorthogonalisation): 1%: 1.0e-04 / 2.0e-04 against 0.25." in (
        lanczos.density_sentence({"MLP": g}))
    assert lanczos.density_table({"MLP": g}).loc[("MLP", 0.01), "L1(mu_q, exact density)"] == 0.25


def test_the_paper_run_tables_and_sentence():
    errors = {f"{name}: {m}": np.array([0.1, -0.3]) if m != "lambda_max" else np.array([1e-9, -2e-9])
              for name in ("MLP", "logistic regression") for m in lanczos.MEASURES}
    assert set(lanczos.trace_and_frobenius_errors(errors)) == {"MLP: trace", "MLP: frobenius",
                                                               "logistic regression: trace", "logistic regression: frobenius"}
    by_model = lanczos.paper_errors_by_model(errors, ["MLP"])
    assert list(by_model) == ["MLP"] and list(by_model["MLP"]) == list(lanczos.MEASURES)
    spreads = {"MLP": {"r_eff": 12.5, "trace_rel_sd": 0.4, "trace_rel_sd_sphere": 0.39, "frobenius_rel_sd": 0.2}}
    table = lanczos.spread_table(spreads, errors, 2)
    assert table.loc["MLP", "trace: measured RMS over 2 runs"] == np.sqrt((0.01 + 0.09) / 2)
    paper = pd.DataFrame({"model": ["MLP"] * 3, "measure": list(lanczos.MEASURES),
                          "90th percentile |error|": [2e-9, 0.28, 0.12], "worst |error|": [2e-9, 0.3, 0.15]}
                         ).set_index(["model", "measure"])
    text = lanczos.paper_run_sentence(paper, spreads, 100, 10)
    assert "within a relative 2.0e-09 of the exact value in every run" in text
    assert "misses the trace by more than 28% and the Frobenius norm by more than 12%" in text
    assert "here 0.4 for MLP ($r_{\\mathrm{eff}}$ = 12.5) (10 classes)" in text
