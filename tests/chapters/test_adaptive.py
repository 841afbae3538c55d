"""SGD against Gadam: configs, parameter checks, the comparison table and its verdict on
constructed results where the answer is known."""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import numpy as np
import pytest

from flatbook.chapters import adaptive
from flatbook.spectrum import Spectrum

PAPER = dict(dataset="cifar100", train_per_class=None, image_size=None, pad_to=None, model_options={}, epochs=300,
             batch_size=128, sgd_lr=0.1, sgd_momentum=0.9, sgd_weight_decay=5e-4, gadam_lr=5e-4,
             gadam_weight_decay=0.25, averaging_start=161, gadam_lr_averaging=2.5e-4, lanczos_steps=100, probes=1,
             hessian_samples=None, bn_mode="train", val_size=5000, seed=0)
CHECKED = {k: v for k, v in PAPER.items() if k != "seed"}


def test_chapter_configs_are_the_papers_two_recipes():
    sgd, gadam = (c.resolved() for c in adaptive.chapter_configs(**PAPER))
    assert (sgd.model, sgd.optimizer, sgd.lr, sgd.momentum, sgd.weight_decay, sgd.averaging_start) == \
        ("vgg16bn", "sgd", 0.1, 0.9, 5e-4, None)
    assert (gadam.optimizer, gadam.lr, gadam.weight_decay, gadam.averaging_start, gadam.lr_averaging) == \
        ("gadam", 5e-4, 0.25, 161, 2.5e-4)
    # everything else is shared: same data, initialisation, epochs and spectrum settings
    for field in ("dataset", "epochs", "batch_size", "seed", "lanczos_steps", "probes", "bn_mode", "augment",
                  "normalization", "val_size", "model_options"):
        assert getattr(sgd, field) == getattr(gadam, field)
    assert sgd.augment == "crop-flip" and sgd.normalization == "imagenet"
    assert adaptive.PAPER_SETTINGS["cifar100"] == {"sgd_weight_decay": 5e-4, "gadam_weight_decay": 0.25}


def test_parameters_are_checked_with_the_chapters_names():
    adaptive.AdaptiveChapter(results_dir=None, seeds=[0, 1, 2], **CHECKED)
    for change, name in [({"sgd_lr": -0.1}, "sgd_lr"), ({"gadam_lr": 0.0}, "gadam_lr"),
                         ({"sgd_momentum": 1.0}, "sgd_momentum"), ({"gadam_weight_decay": -1.0}, "gadam_weight_decay"),
                         ({"averaging_start": 301}, "averaging_start"), ({"averaging_start": 0}, "averaging_start"),
                         ({"gadam_lr_averaging": -1e-4}, "gadam_lr_averaging"), ({"bn_mode": "x"}, "bn_mode"),
                         ({"dataset": "fashion-mnist"}, "pad_to"), ({"model_options": {"depth": 3}}, "model_options")]:
        with pytest.raises(ValueError, match=name):
            adaptive.AdaptiveChapter(results_dir=None, seeds=[0], **{**CHECKED, **change})
    with pytest.raises(ValueError, match="results_dir"):
        adaptive.AdaptiveChapter(results_dir=5, seeds=[0], **CHECKED)
    with pytest.raises(ValueError, match="seeds"):
        adaptive.AdaptiveChapter(results_dir=None, seeds=[0, 0], **CHECKED)


def _spectrum(top, probes=1):
    nodes = np.array([[top, top / 4, 0.0]] * probes) * (1 + 0.01 * np.arange(probes))[:, None]
    return Spectrum(nodes, np.full((probes, 3), 1 / 3), num_params=12, settings={})


def _result(optimizer, val_acc, top, norm, dataset="cifar100", val_size=5000, probes=1, **changes):
    settings = {**PAPER, "dataset": dataset, "val_size": val_size,
                "pad_to": 32 if dataset == "fashion-mnist" else None, **changes}
    sgd, gadam = adaptive.chapter_configs(**settings)
    config = (sgd if optimizer == "sgd" else gadam).resolved()
    metrics = {"train_acc": 0.99, "val_acc": val_acc, "test_acc": val_acc, "train_loss": 0.01, "weight_norm": norm}
    return SimpleNamespace(config=config, metrics=metrics, spectrum=_spectrum(top, probes))


def test_comparison_table_values_and_paper_numbers():
    table = adaptive.comparison_table(_result("sgd", 0.735, 10.0, 100.0), _result("gadam", 0.758, 400.0, 300.0))
    assert list(table.index) == ["sgd", "gadam"]
    assert table.loc["gadam", "val_acc"] == pytest.approx(75.8)
    assert table.loc["sgd", "val_acc_se"] == pytest.approx(100 * math.sqrt(0.735 * 0.265 / 5000), rel=1e-12)
    assert table.loc["gadam", "paper_lambda_max"] == 387.8 and table.loc["sgd", "paper_frobenius"] == 1e-4
    # the Spectrum's own estimates: trace = P sum gamma theta, Frobenius = sqrt(P sum gamma theta^2)
    assert table.loc["sgd", "trace"] == pytest.approx(12 * (10 + 2.5) / 3)
    assert table.loc["sgd", "frobenius"] == pytest.approx(math.sqrt(12 * (100 + 6.25) / 3))
    other = adaptive.comparison_table(_result("sgd", 0.8, 1.0, 1.0, dataset="fashion-mnist"),
                                      _result("gadam", 0.8, 1.0, 1.0, dataset="fashion-mnist"))
    assert not [c for c in other.columns if c.startswith("paper_")]  # never invented for other data
    with pytest.raises(ValueError, match="optimizer"):
        adaptive.comparison_table(_result("gadam", 0.7, 1.0, 1.0), _result("gadam", 0.7, 1.0, 1.0))
    # runs that differ in anything but the optimiser are not a comparison of optimisers
    for change in ({"model_options": {"width": 0.5}}, {"epochs": 200}, {"lanczos_steps": 50}, {"seed": 1}):
        with pytest.raises(ValueError, match="differ only"):
            adaptive.comparison_table(_result("sgd", 0.7, 1.0, 1.0), _result("gadam", 0.7, 1.0, 1.0, **change))


def _seeded(optimizer, val_acc, top, norm, seed, n_val=5000, train_acc=0.995, **changes):
    """A constructed Result with a per-image validation record; the paper's 300 epochs on 45,000
    images (E: SGD 37, Gadam 9.1) unless ``changes`` say otherwise."""
    r = _result(optimizer, val_acc, top * (1 + 0.02 * seed), norm, val_size=n_val, seed=seed, **changes)
    rng = np.random.default_rng(100 * seed + (optimizer == "gadam"))
    correct = np.zeros(n_val, dtype=bool)
    correct[rng.choice(n_val, int(round(val_acc * n_val)), replace=False)] = True
    r.config = r.config.replace(spectrum_seed=seed)
    r.metrics.update(val_acc=float(correct.mean()), train_acc=train_acc, train_samples=45_000)
    r.val_correct_array = lambda: correct
    r.spectrum = dataclasses.replace(r.spectrum, top_residuals=np.zeros(1))
    return r


def _claims(sgd_acc, gadam_acc, sgd_top, gadam_top, sgd_norm=100.0, gadam_norm=300.0, seeds=(0, 1, 2), **kw):
    sgd = [_seeded("sgd", sgd_acc, sgd_top, sgd_norm, s, **kw) for s in seeds]
    gadam = [_seeded("gadam", gadam_acc, gadam_top, gadam_norm, s, **kw) for s in seeds]
    return {c.statement.split(" (")[0]: c for c in adaptive.claims(sgd, gadam)}


def test_claims_in_the_papers_regime():
    by = _claims(0.735, 0.758, 10.0, 388.0)
    sharper = by["Gadam's solution is sharper than SGD's by lambda_1"]
    assert sharper.outcome == "supported" and sharper.effect == pytest.approx(38.8, rel=0.02)
    assert by["Gadam generalises better than SGD"].outcome == "supported"
    assert by["Gadam generalises better than SGD"].effect == pytest.approx(2.3, abs=0.01)
    # Gadam's weights are larger, as the paper says ("they also have higher norms"): supported
    norm = by["Gadam's solution has the higher weight norm"]
    assert norm.outcome == "supported" and norm.role == "paper" and not norm.primary
    assert _claims(0.735, 0.758, 10.0, 388.0, gadam_norm=30.0)["Gadam's solution has the higher weight norm"].outcome \
        == "contradicted"
    assert [c.component for c in by.values() if c.primary] == ["sharper: lambda_1 larger",
                                                                "better: validation accuracy higher"]
    flatter = _claims(0.735, 0.758, 388.0, 10.0)
    assert flatter["Gadam's solution is sharper than SGD's by lambda_1"].outcome == "contradicted"


def test_claims_are_gated_by_the_regime():
    # a short run: E far below 1 for both optimisers -> untestable, effect still computed
    short = _claims(0.735, 0.758, 10.0, 388.0, epochs=3, averaging_start=2)
    c = short["Gadam's solution is sharper than SGD's by lambda_1"]
    assert c.outcome == "untestable" and "decay exponent E of SGD" in c.failed and "of Gadam" in c.failed
    one_seed = _claims(0.735, 0.758, 10.0, 388.0, seeds=(0,))
    assert one_seed["Gadam generalises better than SGD"].outcome == "untestable"
    # interpolation gates no Section 5 claim (one rule for every model): it is stated with each
    no_fit = _claims(0.735, 0.758, 10.0, 388.0, train_acc=0.9)
    better = no_fit["Gadam generalises better than SGD"]
    assert better.outcome == "supported" and ("lowest training accuracy (eval mode)",
                                              "90.00%: not interpolating (the rule: at least 99%)") in better.evidence
    assert adaptive.paper_exponents()["sgd"] == pytest.approx(37.2, rel=0.01)


LAPTOP = dict(CHECKED, dataset="fashion-mnist", train_per_class=200, pad_to=32, model_options={"width": 0.125},
              epochs=60, averaging_start=33, lanczos_steps=20, hessian_samples=256, val_size=4000)


def test_chapter_weight_decays_from_decay_exponents():
    from flatbook.chapters.weight_decay import decay_exponent

    given = adaptive.AdaptiveChapter(seeds=[0, 1], **LAPTOP)
    assert given.weight_decays_used == {"sgd": 5e-4, "gadam": 0.25}  # None: the weight decays as given
    chapter = adaptive.AdaptiveChapter(seeds=[0, 1], sgd_decay_exponent=2.0, gadam_decay_exponent=1, val_every=10,
                                       **LAPTOP)
    sgd, gadam = chapter.configs
    # 2,000 training images -> 16 steps an epoch; E is linear in the weight decay, rounded up to 4 digits
    for config, target in ((sgd, 2.0), (gadam, 1.0)):
        e = decay_exponent(config, 2000)
        assert target <= e < target * (1 + 1e-3)
        assert decay_exponent(config.replace(weight_decay=float(f"{config.weight_decay:.4g}") * (1 - 2e-3)),
                              2000) < target
        assert config.val_every == 10 and config.seed == 0
    # SGD's E carries the heavy-ball factor 1 / (1 - momentum); Gadam's decoupled decay does not
    assert sgd.weight_decay == pytest.approx(2.0 / (decay_exponent(sgd.replace(weight_decay=1.0), 2000)), rel=1e-3)
    # the rest of the two recipes is untouched
    assert (sgd.lr, gadam.lr, gadam.averaging_start, gadam.lr_averaging) == (0.1, 5e-4, 33, 2.5e-4)


def test_chapter_refuses_bad_new_parameters():
    for change, name in [({"sgd_decay_exponent": 0.0}, "sgd_decay_exponent"),
                         ({"gadam_decay_exponent": float("nan")}, "gadam_decay_exponent"),
                         ({"gadam_decay_exponent": "1"}, "gadam_decay_exponent"),
                         ({"sgd_decay_exponent": True}, "sgd_decay_exponent"),
                         ({"workers": 0}, "workers"), ({"val_every": 0}, "val_every")]:
        with pytest.raises(ValueError, match=name):
            adaptive.AdaptiveChapter(seeds=[0], **{**LAPTOP, **change})
    with pytest.raises(ValueError, match="averaging_start"):
        adaptive.AdaptiveChapter(seeds=[0], **{**LAPTOP, "averaging_start": 61})


def test_weight_norm_sentence_follows_the_claims_as_shown():
    by = _claims(0.735, 0.758, 10.0, 388.0)  # sharper, and the higher weight norm, as the paper says
    shown = list(by.values())
    assert "as the paper says" in adaptive.weight_norm_sentence(shown)
    lower = list(_claims(0.735, 0.758, 10.0, 388.0, gadam_norm=30.0).values())
    assert "LOWER norm" in adaptive.weight_norm_sentence(lower) and "against the paper" in adaptive.weight_norm_sentence(lower)
    flatter = list(_claims(0.735, 0.758, 388.0, 10.0).values())  # lambda_1 contradicted: no reading either way
    assert "does not show" in adaptive.weight_norm_sentence(flatter)


def test_weight_norm_sentence_states_the_ratio_and_the_decay_it_was_measured_at():
    lower = list(_claims(0.735, 0.758, 10.0, 388.0, gadam_norm=30.0).values())
    weights = next(c for c in lower if c.statement.startswith("Gadam's solution has the higher weight norm"))
    text = adaptive.weight_norm_sentence(lower, gadam_weight_decay=2.991, paper_weight_decay=0.25)
    assert f"{weights.effect:.3g}x the norm of SGD's" in text and weights.interval_text() in text
    assert "**contradicted**" in text and "2.991, 12x the paper's 0.25" in text
    assert "paper's 0.25" not in adaptive.weight_norm_sentence(lower, gadam_weight_decay=0.25, paper_weight_decay=0.25)
    assert "paper's 0.25" not in adaptive.weight_norm_sentence(lower)
