"""The weight-decay tables and verdicts: constructed inputs where the answer is known."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from flatbook.experiments import Config
from flatbook.spectrum import Spectrum
from flatbook.chapters.weight_decay import (PAPER_REPORTED, grid_claims, paper_numbers, run_facts, seed_table,
                                            sweep_claims)


def _spectrum(top: float, probes: int = 1) -> Spectrum:
    nodes = np.array([[top, top / 2, 0.0]] * probes) * (1 + 0.01 * np.arange(probes))[:, None]
    weights = np.full((probes, 3), 1 / 3)
    return Spectrum(nodes, weights, num_params=30, settings={}, top_residuals=np.full(probes, 1e-3 * top))


def _result(wd, val_acc, top, *, seed=0, model="mlp", dataset="fashion-mnist", spectrum=True, n_val=4000,
            train_acc=0.995, rng=None):
    """A constructed Result: a real Config (50 epochs of the paper's schedule on 55,000 images, so
    E(1e-3) = 1.53), a per-image validation record with accuracy ``val_acc``."""
    from flatbook.experiments import Config

    rng = rng or np.random.default_rng(seed * 1000 + int(wd * 1e6))
    correct = np.zeros(n_val, dtype=bool)
    correct[rng.choice(n_val, int(round(val_acc * n_val)), replace=False)] = True
    config = Config(model=model, dataset=dataset, weight_decay=wd, epochs=50, lr=0.01, val_size=n_val, seed=seed,
                    spectrum_seed=seed)
    metrics = {"train_acc": train_acc, "val_acc": float(correct.mean()), "test_acc": val_acc - 0.01,
               "train_loss": 0.01, "weight_norm": 10 / (1 + 1000 * wd) * (1 + 0.01 * seed), "train_samples": 55_000,
               "num_params": 9960}
    history = [{"weight_norm": 12.0 - 0.1 * e} for e in range(10)]
    return SimpleNamespace(config=config, metrics=metrics, history=history, val_correct=correct,
                           val_correct_array=lambda: correct, spectrum=_spectrum(top) if spectrum else None,
                           cached=False, seconds={"train": 1.0, "spectrum": 1.0}, device="cpu")


def _sweep(tops, accs, seeds=(0, 1, 2, 3), wds=(0.0, 5e-4, 1e-3), **kw):
    rng = np.random.default_rng(0)
    return [_result(wd, acc, top * (1 + 0.02 * rng.normal()), seed=s, **kw)
            for s in seeds for wd, acc, top in zip(wds, accs, tops)]


def test_seed_table_means_sds_and_regime_columns():
    results = _sweep([1.0, 2.0, 3.0], [0.90, 0.91, 0.92])
    table = seed_table(results)
    assert list(table.index) == [0.0, 5e-4, 1e-3] and (table["seeds"] == 4).all()
    lam = [r.spectrum.lambda_max for r in results if r.config.weight_decay == 1e-3]
    assert table.loc[1e-3, "lambda_max"] == pytest.approx(np.mean(lam))
    assert table.loc[1e-3, "lambda_max_sd"] == pytest.approx(np.std(lam, ddof=1))
    assert table.loc[0.0, "val_acc"] == pytest.approx(90.0)
    assert table.loc[0.0, "val_acc_se"] == pytest.approx(100 * math.sqrt(0.9 * 0.1 / 4000))
    assert table.loc[1e-3, "decay_exponent"] == pytest.approx(2 * table.loc[5e-4, "decay_exponent"])
    assert table.loc[0.0, "weight_norm_change"] == pytest.approx((12.0 - 0.9 - (12.0 - 0.7)) / (12.0 - 0.7))
    assert not any(c.startswith("paper_") for c in table)  # Fashion-MNIST: the paper's MNIST numbers stay apart
    one = seed_table(_sweep([1.0, 2.0, 3.0], [0.90, 0.91, 0.92], seeds=(0,)))
    assert one["lambda_max_sd"].isna().all()  # one seed: unknown, not 0
    with pytest.raises(ValueError, match="one model and dataset"):
        seed_table(results + [_result(0.0, 0.9, 1.0, seed=9, dataset="mnist")])
    with pytest.raises(ValueError, match="repeated seeds"):
        seed_table(results + [_result(0.0, 0.9, 1.0, seed=0)])


def test_paper_numbers_are_keyed_by_model_and_dataset():
    mnist = seed_table(_sweep([1.0, 2.0, 3.0], [0.9, 0.91, 0.92], wds=(0.0, 1e-4, 5e-4), dataset="mnist"))
    assert mnist.loc[5e-4, "paper_val_acc"] == PAPER_REPORTED[("mlp", "mnist")]["val_acc"][5e-4]
    assert math.isnan(mnist.loc[0.0, "paper_gap"]) is False
    table, dataset = paper_numbers("wrn28x10")
    assert dataset == "cifar100" and table.loc[5e-4, "val_acc"] == 80.6
    with pytest.raises(ValueError, match="no Section 4 numbers"):
        paper_numbers("vgg16bn")


def test_sweep_claims_supported_contradicted_and_gated():
    # sharper and better with more weight decay, in the regime (E = 1.53, 4 seeds, interpolation)
    results = _sweep([1.0, 2.0, 3.0], [0.90, 0.91, 0.95])
    by = {c.statement: c for c in sweep_claims(results)}
    lam = by["lambda_1 is larger with more weight decay"]
    assert lam.outcome == "supported" and lam.low > 1 and lam.effect == pytest.approx(3.0, rel=0.05)
    assert by["validation accuracy is higher with more weight decay"].outcome == "supported"
    assert by["validation accuracy is higher with more weight decay"].effect == pytest.approx(5.0)
    assert by["the weights are smaller with more weight decay (the mechanism)"].outcome == "supported"
    # flatter with more weight decay: contradicted, not "not reproduced"
    flat = {c.statement: c for c in sweep_claims(_sweep([3.0, 2.0, 1.0], [0.90, 0.91, 0.95]))}
    assert flat["lambda_1 is larger with more weight decay"].outcome == "contradicted"
    # the paper's MLP grid acts for E = 0.77 < 1: untestable, effect still computed
    short = sweep_claims(_sweep([1.0, 2.0, 3.0], [0.9, 0.91, 0.95], wds=(0.0, 1e-4, 5e-4)), paper_exponent=0.77)
    assert all(c.outcome == "untestable" for c in short if "mechanism" not in c.statement)
    assert "0.766" in short[0].failed or "0.77" in short[0].failed
    # one seed: untestable
    single = sweep_claims(_sweep([1.0, 2.0, 3.0], [0.9, 0.91, 0.95], seeds=(0,)))
    assert all(c.outcome == "untestable" and "seed" in c.failed for c in single)
    # no interpolation: one rule for every model, stated with each claim and gating none of Section 4's
    loose = sweep_claims(_sweep([1.0, 2.0, 3.0], [0.9, 0.91, 0.95], train_acc=0.6))
    assert loose[0].outcome == "supported"
    assert ("lowest training accuracy (eval mode)", "60.00%: not interpolating (the rule: at least 99%)") in loose[0].evidence
    # too few validation images, counted from the per-image record, not the configured val_size
    few = _sweep([1.0, 2.0, 3.0], [0.9, 0.91, 0.95], n_val=1000)
    for r in few:
        r.config = r.config.replace(val_size=5000)  # configured 5,000, evaluated on 1,000
    assert all(c.outcome == "untestable" and "validation images = 1000" in c.failed
               for c in sweep_claims(few) if "mechanism" not in c.statement)
    # the primary claims are the two components of the paper's Section 4 claim
    assert [c.component for c in by.values() if c.primary] == ["sharper: lambda_1 larger",
                                                                "better: validation accuracy higher"]


def test_sweep_claims_on_identical_models_are_inconclusive():
    rng = np.random.default_rng(5)
    results = [_result(wd, 0.9, 2.0 * (1 + 0.05 * rng.normal()), seed=s, rng=np.random.default_rng(10 * s + (wd > 0)))
               for s in range(4) for wd in (0.0, 1e-3)]
    by = {c.statement: c for c in sweep_claims(results)}
    acc = by["validation accuracy is higher with more weight decay"]
    assert acc.effect == pytest.approx(0.0) and acc.outcome == "inconclusive" and acc.mde > 0
    assert by["lambda_1 is larger with more weight decay"].outcome in ("inconclusive",)


def test_grid_claims_need_enough_points():
    three = grid_claims(_sweep([1.0, 2.0, 3.0], [0.9, 0.91, 0.92], seeds=(0,), wds=(0.0, 5e-3, 1e-2)))
    assert all(c.outcome == "untestable" and "cannot show a trend" in c.failed for c in three)
    six = grid_claims(_sweep([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [0.90, 0.91, 0.92, 0.93, 0.94, 0.95], seeds=(0,),
                             wds=(0.0, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2)))
    assert [c.outcome for c in six] == ["supported", "supported"]  # lambda_1 rises, ||w|| falls
    assert not any("validation accuracy" in c.statement for c in six)  # a claim the paper never made



def test_grid_claims_fitted_only_leave_out_a_collapsed_run():
    """A grid whose last run collapsed (10% training accuracy, lambda_1 tiny): over every run the rise
    of lambda_1 is broken, over the fitted runs it is clear; the fitted-only claim states how many."""
    wds = (0.0, 1e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 5e-2)
    results = [_result(wd, 0.9, top, seed=0, train_acc=0.995) for wd, top in zip(wds[:-1], range(1, 8))]
    results.append(_result(wds[-1], 0.1, 0.01, seed=0, train_acc=0.10))
    every, norms, fitted = grid_claims(results, role="check", fitted_also=True)
    assert "7 of 8 runs" in fitted.statement and fitted.outcome == "passes"
    assert fitted.effect == pytest.approx(1.0) and every.effect < fitted.effect
    assert len(grid_claims(results, role="check")) == 2


def test_run_facts_report_the_regime():
    facts = dict(run_facts(_sweep([1.0, 2.0, 3.0], [0.90, 0.91, 0.92]), "mlp"))
    assert facts["seeds per weight decay"].startswith("4")
    assert "9,960" in facts["parameters"]
    assert "1.53" in facts["decay exponent E by weight decay"]
    assert facts["lowest training accuracy (eval mode)"] == "99.50%"


def test_logreg_chapter_parameters_are_checked_with_the_name():
    from flatbook.chapters.weight_decay import LogregParameters

    ok = dict(dataset="mnist", train_per_class=None, image_size=None, epochs=1000, lr=0.01, batch_size=128,
              momentum=0.9, weight_decays=[0.0, 1e-4, 5e-4], lanczos_steps=100, probes=1, hessian_samples=None,
              dense_weight_decays=[0.0, 1e-3], exact_samples=5000, workers=1, seeds=[0, 1], results_dir=None)
    LogregParameters(**ok)
    for change, name in [({"weight_decays": [0.0]}, "weight_decays"), ({"weight_decays": [0.0, -1e-4]}, "weight_decays"),
                         ({"dense_weight_decays": [1e-3, 1e-3]}, "dense_weight_decays"),
                         ({"epochs": 0}, "epochs"), ({"dataset": "cifar10"}, "dataset"), ({"workers": 0}, "workers"),
                         ({"lr": -1.0}, "lr"), ({"exact_samples": 0}, "exact_samples"), ({"seeds": []}, "seeds"),
                         ({"seeds": [0, 0]}, "seeds"), ({"seeds": [-1]}, "seeds")]:
        with pytest.raises(ValueError, match=name):
            LogregParameters(**{**ok, **change})


def test_mlp_chapter_parameters_and_config():
    from flatbook.chapters.weight_decay import MlpParameters, chapter_config

    ok = dict(dataset="mnist", train_per_class=None, image_size=None, epochs=50, lr=0.01, batch_size=128,
              momentum=0.9, weight_decays=[0.0, 1e-4, 5e-4], lanczos_steps=100, probes=1, hessian_samples=None,
              dense_weight_decays=[0.0, 1e-3], workers=1, seeds=[0], results_dir=None)
    MlpParameters(**ok)
    with pytest.raises(ValueError, match="momentum"):
        MlpParameters(**{**ok, "momentum": 1.5})
    c = chapter_config(model="mlp", dataset="mnist", train_per_class=None, image_size=None, epochs=50, lr=0.01,
                       batch_size=128, momentum=0.9, lanczos_steps=100, probes=1, hessian_samples=None, seed=0).resolved()
    assert (c.model, c.epochs, c.lr, c.weight_decay, c.lanczos_steps, c.probes, c.normalization) == \
        ("mlp", 50, 0.01, 0.0, 100, 1, "mnist")


# --- the CIFAR-architecture chapters --------------------------------------------------------

CNN_OK = dict(dataset="cifar100", train_per_class=None, image_size=None, pad_to=None, model_options={}, epochs=300,
              lr=0.1, batch_size=128, momentum=0.9, weight_decays=[0.0, 1e-4, 5e-4], lanczos_steps=100, probes=1,
              hessian_samples=None, bn_mode="train", val_size=5000, workers=1, seeds=[0, 1, 2], results_dir=None)


@pytest.mark.parametrize("check_name", ["AllCnnCChapter", "PreResNetChapter", "WideResNetChapter"])
def test_cnn_chapter_parameters_are_checked_with_the_name(check_name):
    import flatbook.chapters.cnn as cnn

    check = getattr(cnn, check_name)
    check(**CNN_OK)  # the paper's settings are valid
    check(**{**CNN_OK, "dataset": "fashion-mnist", "image_size": 14, "pad_to": 16, "train_per_class": 10})
    for change, name in [({"weight_decays": [1e-4]}, "weight_decays"), ({"weight_decays": [0.0, math.nan]}, "weight_decays"),
                         ({"dataset": "fashion-mnist"}, "pad_to"),  # a CIFAR network needs padded Fashion-MNIST
                         ({"bn_mode": "frozen"}, "bn_mode"), ({"val_size": 0}, "val_size"),
                         ({"model_options": {"depthh": 20}}, "model_options"), ({"workers": 0}, "workers"),
                         ({"results_dir": 3}, "results_dir"), ({"probes": 0}, "probes"), ({"seeds": [1.5]}, "seeds")]:
        with pytest.raises(ValueError, match=name):
            check(**{**CNN_OK, **change})


def test_cnn_chapter_config_and_the_input_size_the_network_gets():
    from flatbook.experiments import build_model
    from flatbook.chapters.weight_decay import cnn_chapter_config

    names = ("model", "dataset", "train_per_class", "image_size", "pad_to", "model_options", "epochs", "lr",
             "batch_size", "momentum", "lanczos_steps", "probes", "hessian_samples", "bn_mode", "val_size", "seed")
    c = cnn_chapter_config(**dict(zip(names, ("preresnet164", "fashion-mnist", 10, 14, 16, {"depth": 20}, 20, 0.1, 128,
                                              0.9, 20, 1, 256, "train", 1000, 0)))).resolved()
    assert (c.model, c.pad_to, c.image_size, c.bn_mode, c.val_size, c.normalization, c.augment) == \
        ("preresnet164", 16, 14, "train", 1000, "cifar-resnet", None)
    assert build_model(c).pool.kernel_size == 4  # the pooling follows the 16x16 padded images (32x32 would give 8)
    with pytest.raises(ValueError, match="model"):
        cnn_chapter_config(**dict(zip(names, ("mlp", "mnist", None, None, None, {}, 1, 0.1, 128, 0.9, 10, 1, None,
                                              "train", 5000, 0))))


def test_forward_flops_against_closed_forms():
    from flatbook.experiments import paper_config
    from flatbook.chapters.weight_decay import forward_flops

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


def test_elementwise_and_optimizer_counts_against_closed_forms():
    from flatbook.chapters.weight_decay import forward_elementwise, run_flops
    from flatbook.experiments import paper_config

    # logistic regression: a Flatten (a view) and one linear layer: no elementwise work
    assert forward_elementwise(paper_config("logreg")) == {"elementwise": 0.0, "parameters": 7850.0}
    # the MLP 784-10-100-10: ReLU after the two hidden layers writes 10 + 100 elements
    mlp = paper_config("mlp", epochs=3, hessian_samples=100, lanczos_steps=5)
    counted = forward_elementwise(mlp)
    P = 784 * 10 + 10 + 10 * 100 + 100 + 100 * 10 + 10
    assert counted == {"elementwise": 110.0, "parameters": float(P)}
    one = run_flops(mlp)
    n = 55_000  # the paper's MNIST training split
    steps = 3 * -(-n // 128)
    assert one["optimizer_flops"] == 6.0 * P * steps  # SGD with momentum and decay: 6 FLOPs a parameter and step
    validated = sum(1 for e in range(1, 4) if e % mlp.val_every == 0 or e == 3)
    passes = 3 * 3 * n + validated * mlp.val_size  # no BatchNorm pass
    assert one["elementwise_flops"] == 110.0 * (passes + 6 * 100 * 5 * mlp.probes)
    # All-CNN-C (no BatchNorm): a ReLU on each of its nine convolutions' outputs, three dropouts (the
    # input, after each stride-2 stage) and the pool's 100 outputs
    relus = [32 * 32 * 96, 32 * 32 * 96, 16 * 16 * 96, 16 * 16 * 192, 16 * 16 * 192, 8 * 8 * 192, 6 * 6 * 192,
             6 * 6 * 192, 6 * 6 * 100]
    dropouts = [3 * 32 * 32, 16 * 16 * 96, 8 * 8 * 192]
    assert forward_elementwise(paper_config("allcnnc"))["elementwise"] == sum(relus) + sum(dropouts) + 100


def _measured(train_samples=1000, epochs=2, hessian_samples=500, steps=10, probes=1, train_s=2.0, spectrum_s=5.0):
    from flatbook.experiments import paper_config

    config = paper_config("logreg", epochs=epochs, hessian_samples=hessian_samples, lanczos_steps=steps,
                          probes=probes).resolved()
    return SimpleNamespace(config=config, metrics={"train_samples": train_samples},
                           seconds={"train": train_s, "spectrum": spectrum_s}, spectrum=object())


def test_paper_cost_scales_measured_seconds_by_images_and_flops():
    from flatbook.experiments import paper_config
    from flatbook.chapters.weight_decay import paper_cost

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
    from flatbook.chapters.weight_decay import forward_flops, paper_cost

    wrn = paper_config("wrn28x10")  # BatchNorm: one more forward pass over the training split per epoch
    f = forward_flops(wrn)
    cost = paper_cost(_measured(), wrn, runs=3)
    assert cost["train_flops"] == f * (4 * 45_000 + 5_000) * 300 * 3
    assert cost["hessian_flops"] == 6 * f * 45_000 * 100 * 3


def test_paper_cost_refuses_bad_inputs():
    from flatbook.experiments import paper_config
    from flatbook.chapters.weight_decay import paper_cost

    with pytest.raises(ValueError, match="runs"):
        paper_cost(_measured(), paper_config("logreg"), runs=0)
    no_spectrum = _measured()
    no_spectrum.spectrum = None
    with pytest.raises(ValueError, match="spectrum"):
        paper_cost(no_spectrum, paper_config("logreg"))


def test_cnn_chapter_with_decay_exponents_and_the_grid_check():
    from flatbook.chapters.cnn import CnnChapter, DecayGridParameters, WideResNetChapter

    params = {**CNN_OK, "dataset": "fashion-mnist", "image_size": 14, "pad_to": 16, "train_per_class": 200,
              "model_options": {"depth": 10, "width": 1}, "epochs": 40, "val_size": 4000}
    chapter = CnnChapter(model="wrn28x10", **{**params, "decay_exponents": [0.0, 1.5], "val_every": 10})
    assert chapter.weight_decays_used == [0.0, 0.003277] and chapter.base.val_every == 10
    assert CnnChapter(model="wrn28x10", **params).weight_decays_used == [0.0, 1e-4, 5e-4]
    with pytest.raises(ValueError, match="val_every"):
        CnnChapter(model="wrn28x10", **{**params, "val_every": 0})
    grid = {k: v for k, v in params.items() if k not in ("seeds", "weight_decays")}
    grid = {**grid, "model": "wrn28x10", "val_every": 10}
    parameters = DecayGridParameters(seed=0, decay_exponents=[0.0, 1.0, 3.0], **grid)
    assert parameters.chapter.seeds == [0] and len(parameters.chapter.weight_decays_used) == 3
    with pytest.raises(ValueError, match="decay_exponents"):
        DecayGridParameters(seed=0, decay_exponents=None, **grid)
    with pytest.raises(ValueError, match="seed"):
        DecayGridParameters(seed=-1, decay_exponents=[0.0, 1.0], **grid)
    # the three chapters' classes fix the model; a notebook builds them from its own names
    wrn = WideResNetChapter.from_namespace({**params, "unrelated": 1})
    assert wrn.model == "wrn28x10" and wrn.weight_decays_used == [0.0, 1e-4, 5e-4]
    with pytest.raises(TypeError):
        WideResNetChapter(model="allcnnc", **params)  # the model is not a parameter of the chapter


def test_decay_per_step_beside_the_papers():
    from flatbook.chapters.weight_decay import decay_per_step_fact
    from flatbook.decay import decay_per_step
    from flatbook.experiments import paper_config

    assert decay_per_step(paper_config("wrn28x10", weight_decay=5e-4)) == pytest.approx(0.1 * 5e-4 / (1 - 0.9))
    assert decay_per_step(Config(model="vgg16bn", dataset="cifar100", optimizer="gadam", lr=5e-4, weight_decay=0.25,
                                 averaging_start=161, epochs=300)) \
        == pytest.approx(5e-4 * 0.25)  # decoupled decay: no momentum factor
    label, text = decay_per_step_fact(_sweep([1.0, 2.0, 3.0], [0.9, 0.91, 0.92]), "mlp")
    # the sweep's largest weight decay 1e-3 at lr 0.01, momentum 0.9 -> 1e-4; the paper's MLP 5e-4 -> 5e-5
    assert "eta gamma / (1 - mu)" in label and text.startswith("0.0001 (weight decay 0.001)") and "(2x)" in text


def test_weight_norm_fact_says_which_weight_decays_have_not_settled():
    import pandas as pd

    from flatbook.chapters.weight_decay import weight_norm_fact

    name, text = weight_norm_fact(pd.DataFrame({"weight_norm_change": {0.0: 0.002, 5e-3: -0.031}}))
    assert "0: +0.2%, 0.005: -3.1%" in text and "not settled" in text and "weight decay 0.005:" in text
    assert "every weight decay settled" in weight_norm_fact(pd.DataFrame({"weight_norm_change": {0.0: 0.002}}))[1]


def test_interpolation_note_names_the_runs_that_break_the_rule():
    from flatbook.chapters.weight_decay import interpolation_note

    runs = _sweep([1.0, 2.0, 3.0], [0.9, 0.91, 0.92], seeds=(0, 1, 2))
    runs[-1].metrics["train_acc"] = 0.335
    name, text = interpolation_note(runs)
    assert text.startswith("33.50%: not interpolating") and "below it: 1 of 9 runs (sgd seed 2, wd 0.001: 33.50%)" in text


# --- the notebooks' sentences, computed (constructed inputs) -------------------------------------


def _fake_result(wd, seed, val_acc, seconds):
    from types import SimpleNamespace

    return SimpleNamespace(config=SimpleNamespace(weight_decay=wd, seed=seed), metrics={"val_acc": val_acc,
                           "train_samples": 1000}, history=[{"seconds": s} for s in seconds], spectrum=f"spectrum {wd}",
                           device="cpu (1 thread)")


def test_the_weight_decay_notebooks_sentences():
    from flatbook.chapters import weight_decay as wd

    assert wd.paper_numbers_heading("mnist", "mnist") == "The paper's own numbers, quoted (its runs on **mnist**):"
    assert wd.paper_numbers_heading("mnist", "fashion-mnist").endswith(
        "**mnist**, not this page's fashion-mnist: compare directions, not values):")
    results = [_fake_result(0.0, 0, 0.9, [1.0, 3.0]), _fake_result(5e-4, 0, 0.91234, [2.0, 2.0]),
               _fake_result(0.0, 1, 0.9, [2.0, 2.0])]
    first = wd.first_seed_results(results, 0)
    assert first == results[:2]
    assert list(wd.histories_by_weight_decay(first)) == ["weight decay 0", "weight decay 0.0005"]
    assert wd.spectra_by_weight_decay(first) == {"wd 0: val acc 90.00%": "spectrum 0.0",
                                                 "wd 0.0005: val acc 91.23%": "spectrum 0.0005"}
    text = wd.sweep_speed_sentence(results, epochs=2, paper_epochs=50, paper_images=55_000, paper_exponent=0.7712)
    # 2 s per epoch (mean over every epoch of every run); 3 x 50 epochs x 55 times the images: 275 minutes
    assert "3 runs of 2 epochs on 1000 images; 2.000 s per epoch on cpu (1 thread)" in text
    assert "(3 weight decays x 50 epochs on 55,000 images, one seed) would take about 275.0 minutes" in text
    assert text.endswith("acted for $E$ = 0.77 in the paper's run.")
    assert "acted for" not in wd.sweep_speed_sentence(results, epochs=2, paper_epochs=50)
    with pytest.raises(ValueError, match="no results"):
        wd.sweep_speed_sentence([], epochs=2, paper_epochs=50)


def test_the_exact_check_claim_fails_when_lanczos_misses_the_top_eigenvalue():
    import pandas as pd

    from flatbook.chapters import weight_decay as wd

    table = pd.DataFrame({"exact lambda_1": [10.0, 20.0], "Lanczos lambda_1": [10.0, 20.0 - 1e-9],
                          "Ritz residual": [1e-14, 1e-8], "SLQ trace error (%)": [-4.04, 12.0],
                          "one-probe trace SD (%)": [38.2, 9.0]}, index=[0.0, 1e-3])
    assert wd.exact_check_claim(table).outcome == "passes"
    missed = table.assign(**{"Lanczos lambda_1": [9.0, 20.0]})  # 1 below, with a residual of 1e-14
    assert wd.exact_check_claim(missed).outcome == "fails"
    text = wd.exact_trace_sentence(table)
    assert "errs by -4.0%, +12.0% on these models" in text and ": 38%, 9% here." in text
