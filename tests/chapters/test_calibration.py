"""flatbook.chapters.calibration on constructed results: the table of estimates against the whole
training split, the bias of the ratio the claims compare, and the checks that can fail."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from flatbook.chapters import calibration
from flatbook.experiments import Config
from flatbook.spectrum import Spectrum


def _result(config, top, steps, samples, residual=1e-3):
    spectrum = Spectrum(np.array([[top, top / 3, 0.1]]), np.full((1, 3), 1 / 3), num_params=50,
                        settings={"num_samples": samples}, top_residuals=np.array([residual]))
    return SimpleNamespace(config=config.replace(lanczos_steps=steps), spectrum=spectrum)


def _runs(estimates, references, mode="train"):
    base = Config(model="wrn28x10", dataset="fashion-mnist", lanczos_steps=10, hessian_samples=128)
    out = []
    for wd, e, r in zip((0.0, 5e-3), estimates, references):
        c = base.replace(weight_decay=wd)
        out.append({"config": c, "bn_mode": mode, "estimate": _result(c, e, 10, 128),
                    "reference": _result(c, r, 50, 2000)})
    return out


def test_table_bias_and_checks_that_pass_and_fail():
    # a subsample that reads 30% low at both settings: each estimate fails, the ratio passes (bias cancels)
    low = calibration.calibration_table({"wd_wrn": _runs([0.7, 7.0], [1.0, 10.0])})
    assert list(low["ratio"]) == pytest.approx([0.7, 0.7])
    assert not low["within_tolerance"].any()
    assert list(low["whole_split_steps_images"]) == ["50 steps, 2000 images"] * 2
    bias = calibration.ratio_bias(low)
    assert bias.loc[0, "ratio_estimated"] == pytest.approx(10.0) and bias.loc[0, "bias"] == pytest.approx(1.0)
    checks = calibration.calibration_claims(low, bias)
    assert [c.outcome for c in checks] == ["fails", "passes"] and all(c.role == "check" for c in checks)
    assert checks[0].effect == pytest.approx(0.3)
    # within 5% at each setting, biased in opposite directions: the ratio moves 9.4%, still within 10%
    apart = calibration.calibration_table({"wd_wrn": _runs([0.96, 10.5], [1.0, 10.0])})
    checks = calibration.calibration_claims(apart, calibration.ratio_bias(apart))
    assert [c.outcome for c in checks] == ["passes", "passes"]
    skew = calibration.calibration_table({"wd_wrn": _runs([0.92, 10.9], [1.0, 10.0])})
    checks = calibration.calibration_claims(skew, calibration.ratio_bias(skew))
    assert [c.outcome for c in checks] == ["passes", "fails"]  # 0.92 and 1.09 each pass; 1.185 does not


def test_reference_config_and_parameters():
    c = Config(model="wrn28x10", dataset="fashion-mnist", lanczos_steps=10, hessian_samples=128, probes=3)
    ref = calibration.reference_config(c, 50, "eval")
    assert ref.hessian_samples is None and ref.lanczos_steps == 50 and ref.probes == 1 and ref.bn_mode == "eval"
    assert calibration.reference_config(c.replace(lanczos_steps=80)).lanczos_steps == 80  # never fewer than its own
    ok = dict(chapters=["wd_wrn"], profile="laptop")
    assert calibration.CalibrationParameters(**ok).training_plan() == []
    for bad, match in ((dict(chapters=["wd_logreg"]), "wd_logreg"), (dict(reference_steps=20), "at least 50"),
                       (dict(bn_modes=["train", "train"]), "bn_modes"), (dict(workers=0), "workers"),
                       (dict(chapters=[]), "non-empty")):
        with pytest.raises(ValueError, match=match):
            calibration.CalibrationParameters(**{**ok, **bad})


def test_compared_settings_are_the_two_the_claims_pair():
    base = Config(model="wrn28x10", dataset="fashion-mnist")
    three = [base.replace(weight_decay=wd) for wd in (1e-3, 0.0, 5e-3)]
    assert [c.weight_decay for c in calibration.compared_settings(three)] == [0.0, 5e-3]
    pair = [base.replace(optimizer="gadam", weight_decay=0.3, averaging_start=1), base.replace(weight_decay=1e-3)]
    assert [c.optimizer for c in calibration.compared_settings(pair)] == ["sgd", "gadam"]


def test_coverage_sentence_names_what_was_calibrated_and_why_a_per_setting_check_fails():
    low = calibration.calibration_table({"wd_wrn": _runs([0.7, 7.0], [1.0, 10.0])})
    text = calibration.coverage_sentence(["wd_wrn"], 0, ["train"], low, calibration.ratio_bias(low))
    assert "calibrates wd_wrn (seed 0, train mode" in text
    assert "wd_allcnnc, wd_preresnet, adaptive are not calibrated in this build" in text
    assert "from 0.7 to 0.7 (0 of 2 within 10%)" in text
    assert "In wd_wrn (train) a setting's estimate misses" in text and "1 of 1 chapter-modes" in text
    skew = calibration.calibration_table({"wd_wrn": _runs([0.8, 12.0], [1.0, 10.0])})  # opposite signs
    text = calibration.coverage_sentence(list(calibration.CALIBRATED_CHAPTERS), 1, ["train", "eval"], skew,
                                         calibration.ratio_bias(skew))
    assert "not calibrated" not in text and "misses" not in text and "0 of 1 chapter-modes" in text
