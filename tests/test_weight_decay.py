"""The weight-decay tables and verdicts: constructed inputs where the answer is known."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from flatbook.spectrum import Spectrum
from flatbook.weight_decay import PAPER_REPORTED, kendall_tau, results_table, trend, verdict


@pytest.mark.parametrize("values, expected", [
    ([1.0, 2.0, 3.0], "increasing"),
    ([3.0, 2.0, 1.0], "decreasing"),
    ([1.0, 3.0, 2.0], "mixed"),
    ([2.0, 2.0, 2.0], "flat"),
    ([1.0, 1.0, 2.0], "mixed"),  # one step without a rise is not "increasing"
    ([1.0, float("nan"), 2.0], "mixed"),
])
def test_trend_on_constructed_inputs(values, expected):
    assert trend([0.0, 1e-4, 5e-4], values) == expected


def test_trend_sorts_by_weight_decay_and_uses_rtol():
    assert trend([5e-4, 0.0, 1e-4], [3.0, 1.0, 2.0]) == "increasing"
    assert trend([0.0, 1e-4], [1.0, 1.0005], rtol=1e-3) == "flat"
    assert trend([0.0, 1e-4], [1.0, 1.0005], rtol=0.0) == "increasing"
    for wds, vals in (([0.0, 0.0], [1.0, 2.0]), ([0.0], [1.0]), ([0.0, 1.0], [1.0])):
        with pytest.raises(ValueError):
            trend(wds, vals)


def test_trend_counts_steps_within_two_standard_errors_as_flat():
    wds = [0.0, 1e-4, 5e-4]
    # steps of 0.5 with standard errors 0.2: 0.5 > 2 * sqrt(0.08) = 0.566? no -> flat
    assert trend(wds, [80.0, 80.5, 81.0], se=[0.2, 0.2, 0.2]) == "flat"
    assert trend(wds, [80.0, 80.5, 81.0]) == "increasing"  # without standard errors
    # steps of 1.0 exceed 0.566: increasing; one step of 0.5 among them: mixed
    assert trend(wds, [80.0, 81.0, 82.0], se=[0.2, 0.2, 0.2]) == "increasing"
    assert trend(wds, [80.0, 81.0, 81.5], se=[0.2, 0.2, 0.2]) == "mixed"
    assert trend(wds, [82.0, 81.0, 80.0], se=[0.2, 0.2, 0.2], z=1.0) == "decreasing"
    with pytest.raises(ValueError, match="se"):
        trend(wds, [1.0, 2.0, 3.0], se=[0.1, -0.1, 0.1])
    with pytest.raises(ValueError, match="se"):
        trend(wds, [1.0, 2.0, 3.0], se=[0.1, 0.1])


def test_verdict_uses_the_validation_accuracy_standard_error():
    # 5,000 validation images: se ~ 0.35 points; accuracies 93.0, 93.2, 93.4 rise within noise
    table = results_table([_result(0.0, 0.930, 1.0), _result(1e-4, 0.932, 2.0), _result(5e-4, 0.934, 3.0)])
    v = verdict(table)
    assert v["val_acc"]["trend"] == "flat" and v["reproduced"] is False
    assert "two standard errors" in v["summary"]


def test_kendall_tau():
    assert kendall_tau([0, 1, 2], [1, 2, 3]) == pytest.approx(1.0)
    assert kendall_tau([0, 1, 2], [3, 2, 1]) == pytest.approx(-1.0)
    assert kendall_tau([0, 1, 2, 3], [1, 3, 2, 4]) == pytest.approx(2 / 3)
    assert math.isnan(kendall_tau([0], [1]))


def _spectrum(top: float, probes: int = 1) -> Spectrum:
    nodes = np.array([[top, top / 2, 0.0]] * probes) * (1 + 0.01 * np.arange(probes))[:, None]
    weights = np.full((probes, 3), 1 / 3)
    return Spectrum(nodes, weights, num_params=30, settings={})


def _result(wd, val_acc, top, model="logreg", probes=1, spectrum=True):
    metrics = {"train_acc": 0.99, "val_acc": val_acc, "test_acc": val_acc - 0.01, "train_loss": 0.01,
               "weight_norm": 10 / (1 + 1000 * wd)}
    return SimpleNamespace(config=SimpleNamespace(model=model, weight_decay=wd, val_size=5000), metrics=metrics,
                           spectrum=_spectrum(top, probes) if spectrum else None)


def test_results_table_columns_order_and_paper_numbers():
    table = results_table([_result(5e-4, 0.95, 3.0), _result(0.0, 0.93, 1.0), _result(1e-4, 0.94, 2.0)])
    assert list(table.index) == [0.0, 1e-4, 5e-4]
    for col in ("train_acc", "val_acc", "test_acc", "gap", "weight_norm", "lambda_max", "trace", "frobenius",
                "paper_val_acc", "paper_lambda_max"):
        assert col in table
    assert table.loc[0.0, "val_acc"] == pytest.approx(93.0)
    assert table.loc[0.0, "gap"] == pytest.approx(6.0)
    assert table.loc[5e-4, "paper_lambda_max"] == PAPER_REPORTED["logreg"]["lambda_max"][5e-4]
    assert "lambda_max_se" not in table  # one probe: no standard errors
    # the binomial standard error of a validation accuracy of 93% over 5,000 images, in percent
    assert table.loc[0.0, "val_acc_se"] == pytest.approx(100 * math.sqrt(0.93 * 0.07 / 5000), rel=1e-12)


def test_results_table_standard_errors_missing_paper_numbers_and_errors():
    table = results_table([_result(0.0, 0.9, 1.0, probes=3), _result(1e-3, 0.91, 2.0, probes=3)])
    assert "lambda_max_se" in table and table["lambda_max_se"].notna().all()
    assert math.isnan(table.loc[1e-3, "paper_val_acc"])  # the paper has no 1e-3 run: never invented
    with pytest.raises(ValueError, match="one model"):
        results_table([_result(0.0, 0.9, 1.0), _result(1e-4, 0.9, 1.0, model="mlp")])
    with pytest.raises(ValueError, match="duplicate"):
        results_table([_result(0.0, 0.9, 1.0), _result(0.0, 0.91, 1.0)])
    with pytest.raises(ValueError):
        results_table([])


@pytest.mark.parametrize("accs, tops, reproduced, sharp, acc", [
    ([0.93, 0.94, 0.95], [1.0, 2.0, 3.0], True, "increasing", "increasing"),
    ([0.93, 0.94, 0.95], [3.0, 2.0, 1.0], False, "decreasing", "increasing"),
    ([0.95, 0.94, 0.93], [1.0, 2.0, 3.0], False, "increasing", "decreasing"),
    ([0.93, 0.95, 0.94], [1.0, 3.0, 2.0], False, "mixed", "mixed"),
])
def test_verdict_cannot_say_reproduced_when_the_numbers_do_not(accs, tops, reproduced, sharp, acc):
    results = [_result(wd, a, t) for wd, a, t in zip([0.0, 1e-4, 5e-4], accs, tops)]
    v = verdict(results_table(results))
    assert v["reproduced"] is reproduced
    assert v["lambda_max"]["trend"] == sharp and v["val_acc"]["trend"] == acc
    assert v["summary"].startswith("reproduced" if reproduced else "not reproduced")
    assert v["weight_norm"]["trend"] == "decreasing"


def test_verdict_without_spectra():
    v = verdict(results_table([_result(0.0, 0.9, 1.0, spectrum=False), _result(1e-4, 0.91, 1.0, spectrum=False)]))
    assert v["reproduced"] is False and "no spectrum" in v["summary"]


def test_logreg_chapter_parameters_are_checked_with_the_name():
    from flatbook.weight_decay import check_logreg_parameters

    ok = dict(dataset="mnist", train_per_class=None, image_size=None, epochs=1000, lr=0.01, batch_size=128,
              momentum=0.9, weight_decays=[0.0, 1e-4, 5e-4], lanczos_steps=100, probes=1, hessian_samples=None,
              dense_weight_decays=[0.0, 1e-3], exact_samples=5000, workers=1, seed=0, results_dir=None)
    check_logreg_parameters(**ok)
    for change, name in [({"weight_decays": [0.0]}, "weight_decays"), ({"weight_decays": [0.0, -1e-4]}, "weight_decays"),
                         ({"dense_weight_decays": [1e-3, 1e-3]}, "dense_weight_decays"),
                         ({"epochs": 0}, "epochs"), ({"dataset": "cifar10"}, "dataset"), ({"workers": 0}, "workers"),
                         ({"lr": -1.0}, "lr"), ({"exact_samples": 0}, "exact_samples")]:
        with pytest.raises(ValueError, match=name):
            check_logreg_parameters(**{**ok, **change})


def test_mlp_chapter_parameters_and_config():
    from flatbook.weight_decay import chapter_config, check_mlp_parameters

    ok = dict(dataset="mnist", train_per_class=None, image_size=None, epochs=50, lr=0.01, batch_size=128,
              momentum=0.9, weight_decays=[0.0, 1e-4, 5e-4], lanczos_steps=100, probes=1, hessian_samples=None,
              dense_weight_decays=[0.0, 1e-3], workers=1, seed=0, results_dir=None)
    check_mlp_parameters(**ok)
    with pytest.raises(ValueError, match="momentum"):
        check_mlp_parameters(**{**ok, "momentum": 1.5})
    c = chapter_config("mlp", "mnist", None, None, 50, 0.01, 128, 0.9, 100, 1, None, 0).resolved()
    assert (c.model, c.epochs, c.lr, c.weight_decay, c.lanczos_steps, c.probes, c.normalization) == \
        ("mlp", 50, 0.01, 0.0, 100, 1, "mnist")


# --- the CIFAR-architecture chapters --------------------------------------------------------

CNN_OK = dict(dataset="cifar100", train_per_class=None, image_size=None, pad_to=None, model_options={}, epochs=300,
              lr=0.1, batch_size=128, momentum=0.9, weight_decays=[0.0, 1e-4, 5e-4], lanczos_steps=100, probes=1,
              hessian_samples=None, bn_mode="train", val_size=5000, workers=1, seed=0, results_dir=None)


@pytest.mark.parametrize("check_name", ["check_allcnnc_parameters", "check_preresnet_parameters",
                                        "check_wrn_parameters"])
def test_cnn_chapter_parameters_are_checked_with_the_name(check_name):
    import flatbook.weight_decay as wd

    check = getattr(wd, check_name)
    check(**CNN_OK)  # the paper's settings are valid
    check(**{**CNN_OK, "dataset": "fashion-mnist", "image_size": 14, "pad_to": 16, "train_per_class": 10})
    for change, name in [({"weight_decays": [1e-4]}, "weight_decays"), ({"weight_decays": [0.0, math.nan]}, "weight_decays"),
                         ({"dataset": "fashion-mnist"}, "pad_to"),  # a CIFAR network needs padded Fashion-MNIST
                         ({"bn_mode": "frozen"}, "bn_mode"), ({"val_size": 0}, "val_size"),
                         ({"model_options": {"depthh": 20}}, "model_options"), ({"workers": 0}, "workers"),
                         ({"results_dir": 3}, "results_dir"), ({"probes": 0}, "probes")]:
        with pytest.raises(ValueError, match=name):
            check(**{**CNN_OK, **change})


def test_cnn_chapter_config_and_the_input_size_the_network_gets():
    from flatbook.experiments import _build
    from flatbook.weight_decay import cnn_chapter_config

    c = cnn_chapter_config("preresnet164", "fashion-mnist", 10, 14, 16, {"depth": 20}, 20, 0.1, 128, 0.9, 20, 1, 256,
                           "train", 1000, 0).resolved()
    assert (c.model, c.pad_to, c.image_size, c.bn_mode, c.val_size, c.normalization, c.augment) == \
        ("preresnet164", 16, 14, "train", 1000, "cifar-resnet", None)
    assert _build(c).pool.kernel_size == 4  # the pooling follows the 16x16 padded images (32x32 would give 8)
    with pytest.raises(ValueError, match="model"):
        cnn_chapter_config("mlp", "mnist", None, None, None, {}, 1, 0.1, 128, 0.9, 10, 1, None, "train", 5000, 0)


def test_forward_flops_against_closed_forms():
    from flatbook.experiments import paper_config
    from flatbook.weight_decay import forward_flops

    # a multiply-add is 2 FLOPs: logistic regression 784 x 10; the MLP 784-10-100-10
    assert forward_flops(paper_config("logreg")) == 2 * 784 * 10
    assert forward_flops(paper_config("mlp")) == 2 * (784 * 10 + 10 * 100 + 100 * 10)
    # All-CNN-C on 32x32: (output pixels, in, out, kernel area) of its nine convolutions ("same" padding)
    convs = [(32 * 32, 3, 96, 9), (32 * 32, 96, 96, 9), (16 * 16, 96, 96, 9), (16 * 16, 96, 192, 9),
             (16 * 16, 192, 192, 9), (8 * 8, 192, 192, 9), (6 * 6, 192, 192, 9), (6 * 6, 192, 192, 1),
             (6 * 6, 192, 100, 1)]
    assert forward_flops(paper_config("allcnnc")) == sum(2 * p * i * o * k for p, i, o, k in convs)
    # Fashion-MNIST resized to 7x7 and padded to 12x12 for a quarter-width All-CNN-C: 12 -> 6 -> 3 -> 1
    small = paper_config("allcnnc", dataset="fashion-mnist", image_size=7, pad_to=12, model_options={"width": 0.25})
    convs = [(144, 3, 24, 9), (144, 24, 24, 9), (36, 24, 24, 9), (36, 24, 48, 9), (36, 48, 48, 9), (9, 48, 48, 9),
             (1, 48, 48, 9), (1, 48, 48, 1), (1, 48, 10, 1)]
    assert forward_flops(small) == sum(2 * p * i * o * k for p, i, o, k in convs)


def _measured(train_samples=1000, epochs=2, hessian_samples=500, steps=10, probes=1, train_s=2.0, spectrum_s=5.0):
    from flatbook.experiments import paper_config

    config = paper_config("logreg", epochs=epochs, hessian_samples=hessian_samples, lanczos_steps=steps,
                          probes=probes).resolved()
    return SimpleNamespace(config=config, metrics={"train_samples": train_samples},
                           seconds={"train": train_s, "spectrum": spectrum_s}, spectrum=object())


def test_paper_cost_scales_measured_seconds_by_images_and_flops():
    from flatbook.experiments import paper_config
    from flatbook.weight_decay import paper_cost

    # 1 ms per training image-epoch (2 s / (1000 x 2)) and 1 ms per Hessian image-product (5 s / (500 x 10));
    # the paper: 55,000 MNIST images, 1000 epochs and 100 steps over all 55,000, three runs, the same network
    cost = paper_cost(_measured(), paper_config("logreg"), runs=3)
    assert cost["flop_ratio"] == 1.0
    assert cost["cpu_seconds"] == pytest.approx(1e-3 * 55_000 * 1000 * 3 + 1e-3 * 55_000 * 100 * 3, rel=1e-12)
    f = 2 * 784 * 10
    # per epoch: 3 forward-equivalents per training image, one forward pass over the 5,000 validation images
    assert cost["train_flops"] == f * (3 * 55_000 + 5_000) * 1000 * 3
    assert cost["hessian_flops"] == 6 * f * 55_000 * 100 * 3
    assert cost["flops"] == cost["train_flops"] + cost["hessian_flops"]
    # the MLP costs 19,680 / 15,680 as much per image
    mlp = paper_cost(_measured(), paper_config("mlp", epochs=1000), runs=1)
    assert mlp["flop_ratio"] == pytest.approx(19_680 / 15_680)
    assert mlp["cpu_seconds"] == pytest.approx((55.0 * 1000 + 55.0 * 100) * 19_680 / 15_680, rel=1e-12)
    # the measured Hessian over fewer images than hessian_samples asks for counts the images it had
    small = paper_cost(_measured(train_samples=200, epochs=1, hessian_samples=500, train_s=0.2, spectrum_s=2.0),
                       paper_config("logreg"), runs=1)
    assert small["cpu_seconds"] == pytest.approx(1e-3 * 55_000 * 1000 + 1e-3 * 55_000 * 100, rel=1e-12)


def test_paper_cost_counts_the_batchnorm_pass():
    from flatbook.experiments import paper_config
    from flatbook.weight_decay import forward_flops, paper_cost

    wrn = paper_config("wrn28x10")  # BatchNorm: one more forward pass over the training split per epoch
    f = forward_flops(wrn)
    cost = paper_cost(_measured(), wrn, runs=3)
    assert cost["train_flops"] == f * (4 * 45_000 + 5_000) * 300 * 3
    assert cost["hessian_flops"] == 6 * f * 45_000 * 100 * 3


def test_paper_cost_refuses_bad_inputs():
    from flatbook.experiments import paper_config
    from flatbook.weight_decay import paper_cost

    with pytest.raises(ValueError, match="runs"):
        paper_cost(_measured(), paper_config("logreg"), runs=0)
    no_spectrum = _measured()
    no_spectrum.spectrum = None
    with pytest.raises(ValueError, match="spectrum"):
        paper_cost(no_spectrum, paper_config("logreg"))


def test_decay_exponent_against_hand_sums():
    from flatbook.experiments import paper_config
    from flatbook.schedules import paper_lr
    from flatbook.weight_decay import decay_exponent

    # constant lr 0.1, 300 images in batches of 128 (3 steps an epoch), 2 epochs, momentum 0.9
    c = paper_config("mlp", epochs=2, schedule="constant", lr=0.1, weight_decay=1e-3)
    assert decay_exponent(c, 300) == pytest.approx(6 * 0.1 * 1e-3 / (1 - 0.9), rel=1e-12)
    # the paper's schedule for PreResNet on CIFAR-100: 352 steps an epoch, 300 epochs
    p = paper_config("preresnet164", weight_decay=5e-4)
    expected = sum(paper_lr(e, 300, 0.1, 0.01) for e in range(300)) * 352 * 5e-4 / 0.1
    assert decay_exponent(p, 45_000) == pytest.approx(expected, rel=1e-12)
    assert decay_exponent(p) == decay_exponent(p, 45_000)  # the paper's split by default
    # decoupled decay (Gadam): no momentum factor; the averaging schedule
    from flatbook.schedules import averaging_lr

    g = paper_config("vgg16bn", optimizer="gadam", lr=5e-4, weight_decay=0.25, averaging_start=161, lr_averaging=2.5e-4)
    expected = sum(averaging_lr(e, 161, 5e-4, 2.5e-4) for e in range(300)) * 352 * 0.25
    assert decay_exponent(g, 45_000) == pytest.approx(expected, rel=1e-12)
    assert decay_exponent(c.replace(weight_decay=0.0), 300) == 0.0
    with pytest.raises(ValueError, match="adam"):
        decay_exponent(c.replace(optimizer="adam"), 300)
    with pytest.raises(ValueError, match="train_samples"):
        decay_exponent(c, 0)


def test_train_split_size():
    from flatbook.experiments import paper_config
    from flatbook.weight_decay import train_split_size

    assert train_split_size(paper_config("wrn28x10")) == 45_000
    assert train_split_size(paper_config("mlp")) == 55_000
    assert train_split_size(paper_config("mlp", val_size=1000)) == 59_000
    assert train_split_size(paper_config("wrn28x10", train_per_class=10)) == 1_000  # 100 classes
    assert train_split_size(paper_config("mlp", train_per_class=10)) == 100
