"""The BatchNorm appendix: the mode table and verdict on constructed spectra, parameter checks."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from flatbook import bn_modes
from flatbook.spectrum import Spectrum


def _spectrum(top):
    return Spectrum(np.array([[top, top / 2, 0.0]]), np.full((1, 3), 1 / 3), num_params=12, settings={})


def _result(wd, top_train, val_acc=0.8, model="wrn28x10"):
    config = SimpleNamespace(model=model, weight_decay=wd, bn_mode="train")
    return SimpleNamespace(config=config, metrics={"val_acc": val_acc}, spectrum=_spectrum(top_train))


def test_mode_table_and_verdict_on_constructed_spectra():
    results = [_result(0.0, 2.0, 0.75), _result(5e-4, 4.0, 0.81)]
    table = bn_modes.mode_table(results, [_spectrum(1.0), _spectrum(1000.0)])
    assert list(table.index) == [(0.0, "eval"), (0.0, "train"), (5e-4, "eval"), (5e-4, "train")]
    assert table.loc[(5e-4, "eval"), "lambda_max"] == 1000.0 and table.loc[(0.0, "train"), "val_acc"] == 75.0
    assert table.loc[(5e-4, "eval"), "paper_frobenius"] == 4.9e-5  # the paper's eval-mode numbers, WRN only
    assert math.isnan(table.loc[(5e-4, "train"), "paper_frobenius"])
    v = bn_modes.verdict(table)
    assert v["eval_over_train"]["lambda_max"] == {0.0: 0.5, 5e-4: 250.0}
    assert v["regularised_over_unregularised"]["train"]["lambda_max"] == 2.0
    assert v["regularised_over_unregularised"]["eval"]["lambda_max"] == 1000.0
    assert v["regularised_sharper"] == {"train": True, "eval": True}
    assert v["mode_matters"] is True
    # the same spectra in both modes: the mode does not matter
    same = bn_modes.verdict(bn_modes.mode_table(results, [r.spectrum for r in results]))
    assert same["mode_matters"] is False and same["eval_over_train"]["lambda_max"] == {0.0: 1.0, 5e-4: 1.0}
    # the regularised solution flatter in eval mode: the modes disagree
    flip = bn_modes.verdict(bn_modes.mode_table(results, [_spectrum(10.0), _spectrum(1.0)]))
    assert flip["regularised_sharper"] == {"train": True, "eval": False}


def test_mode_table_refuses_mismatched_inputs():
    results = [_result(0.0, 2.0), _result(5e-4, 4.0)]
    with pytest.raises(ValueError, match="one eval-mode spectrum per result"):
        bn_modes.mode_table(results, [_spectrum(1.0)])
    eval_result = _result(0.0, 2.0)
    eval_result.config.bn_mode = "eval"
    with pytest.raises(ValueError, match="train-mode"):
        bn_modes.mode_table([eval_result], [_spectrum(1.0)])
    with pytest.raises(ValueError, match="two"):
        bn_modes.verdict(bn_modes.mode_table(results[:1], [_spectrum(1.0)]))


PAPER = dict(model="wrn28x10", dataset="cifar100", train_per_class=None, image_size=None, pad_to=None,
             model_options={}, epochs=300, lr=0.1, batch_size=128, momentum=0.9, weight_decays=[0.0, 5e-4],
             lanczos_steps=100, probes=1, hessian_samples=None, val_size=5000, seed=0, results_dir=None)


def test_parameters_are_checked_and_the_model_needs_batchnorm():
    bn_modes.check_bn_parameters(**PAPER)
    bn_modes.check_bn_parameters(**{**PAPER, "model": "vgg16bn"})
    with pytest.raises(ValueError, match="no BatchNorm"):
        bn_modes.check_bn_parameters(**{**PAPER, "model": "allcnnc"})
    for change, name in [({"model": "mlp"}, "model"), ({"weight_decays": [0.0]}, "weight_decays"),
                         ({"dataset": "fashion-mnist"}, "pad_to"), ({"results_dir": 1}, "results_dir"),
                         ({"model_options": {"depth": 12}}, "model_options")]:
        with pytest.raises(ValueError, match=name):
            bn_modes.check_bn_parameters(**{**PAPER, **change})
