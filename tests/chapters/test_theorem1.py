"""The Theorem 1 chapter's helpers (flatbook.chapters.theorem1): exact SymPy facts and the computed
sentences, on constructed inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from flatbook.chapters import theorem1
from flatbook.theory import crossentropy


def test_the_sympy_facts():
    checks = theorem1.derivative_checks(crossentropy.logit_derivatives(3, correct=0))
    assert checks["computed"].tolist() == [True, True, True]
    limits, table = theorem1.show_separable_limits((2,))
    assert len(limits) == 1 and table.loc[2, "all vanish"] and table.loc[2, "lambda_1 -> 0"]
    assert table.loc[2, "entries with limit 0"] == table.loc[2, "Hessian entries"]


def test_dinh_alphas_and_the_sentences():
    assert theorem1.dinh_alphas([1.0, 10.0, 100.0, 1000.0]) == [1.0, 10.0, 100.0]
    assert theorem1.dinh_alphas([500.0, 1000.0]) == [500.0]
    verdict = {"loss_max_relative_change": 3e-16, "lambda_max_ratio": 1.0e4, "loss_ratio": 1e-30}
    assert theorem1.dinh_sentence(verdict, [1.0, 100.0]) == (
        "*Computed:* the loss stays the same to a relative 3.0e-16 (rounding), no prediction changes, and "
        "$\\lambda_1$ grows by a factor 1e+04 from $\\alpha$ = 1 to 100.")
    everything = pd.DataFrame({"accuracy": [0.875, 0.875]})
    text = theorem1.everything_sentence(everything, {"loss_ratio": 120.0, "lambda_max_ratio": 3.5}, [1.0, 1e4], 1000)
    assert text.startswith("*Computed:* on these 1000 images (accuracy 0.875) the loss changes by a factor 120")
    sweeps = {"MLP: all layers x alpha": pd.DataFrame({"predictions_changed": [0, 0, 2]})}
    verdicts = {"MLP: all layers x alpha": {"rows_at_rounding_level": 1, "loss_ratio": 1e-9, "lambda_max_ratio": 2e-3,
                                            "frobenius_ratio": 3e-3},
                "MLP: last layer x alpha": {"lambda_max_peak_alpha": 3981.0, "lambda_max_last_over_peak": 0.5}}
    text = theorem1.mlp_scaling_sentence(sweeps, verdicts, [1.0, 1e4])
    assert "changed 2 predictions" in text and "(1 rows were not)" in text
    assert "largest at $\\alpha$ = 3.98e+03 of 10000 and ends at 0.5 times" in text
    assert theorem1.verdict_table(verdicts).shape[0] == 2


def test_the_null_space_report_on_a_constructed_hessian():
    # 3 "pixels" (one always 0), 2 classes, 4 images: the closed form's own prediction is the reference
    from flatbook.theory import exact

    x = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.5, 0.0, 0.0]], dtype=torch.float64)
    model = torch.nn.Linear(3, 2).double()
    H = exact.logreg_hessian(model, x)
    eigenvalues = torch.linalg.eigvalsh(H).numpy()
    report = theorem1.null_space_report(H, eigenvalues, x, 2)
    assert report["k0"] == exact.null_space_dimension(x, 2)["total"] and report["zeros_match"]
    assert report["counts"].shape == (4, 1) and report["features"] == 3 and report["images"] == 4
    text = theorem1.null_space_sentence(report)
    assert f"= **{report['k0']}**" in text and "softmax directions are null vectors to round-off" in text
    assert theorem1.gap_sentence(report).startswith("*Computed:* the prediction holds")
    assert "NOT confirmed" in theorem1.gap_sentence({**report, "zeros_match": False})
    assert "a clean gap" in theorem1.gap_sentence({**report, "gap": 1e9})
    assert "no clean gap" in theorem1.gap_sentence({**report, "gap": 10.0})
    assert np.isclose(report["lambda_1"], eigenvalues.max())
