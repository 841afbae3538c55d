"""The BatchNorm appendix: the mode table and claims on constructed spectra, the train-mode scale
invariance against dense float64 Hessians, parameter checks."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from flatbook.chapters import bn_modes
from flatbook import dense_hessian, models
from flatbook.spectrum import Spectrum

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _spectrum(top):
    return Spectrum(np.array([[top, top / 2, 0.0]]), np.full((1, 3), 1 / 3), num_params=12, settings={})


def _result(wd, top_train, val_acc=0.8, model="wrn28x10", seed=0):
    config = SimpleNamespace(model=model, dataset="cifar100", weight_decay=wd, bn_mode="train", seed=seed)
    return SimpleNamespace(config=config, metrics={"val_acc": val_acc}, spectrum=_spectrum(top_train))


def test_mode_table_and_ratios_on_constructed_spectra():
    results = [_result(0.0, 2.0, 0.75), _result(5e-4, 4.0, 0.81)]
    table = bn_modes.mode_table(results, [_spectrum(1.0), _spectrum(1000.0)])
    assert list(table.index) == [(0.0, "eval"), (0.0, "train"), (5e-4, "eval"), (5e-4, "train")]
    assert table.loc[(5e-4, "eval"), "lambda_max"] == 1000.0 and table.loc[(0.0, "train"), "val_acc"] == 75.0
    assert table.loc[(5e-4, "eval"), "paper_frobenius"] == 4.9e-5  # the paper's eval-mode numbers, WRN only
    assert math.isnan(table.loc[(5e-4, "train"), "paper_frobenius"])
    assert (table["seeds"] == 1).all() and table["lambda_max_sd"].isna().all()  # one seed: spread unknown
    eval_over_train, regularised = bn_modes.ratio_tables(table)
    assert eval_over_train["lambda_max"].to_dict() == {0.0: 0.5, 5e-4: 250.0}
    assert regularised.loc["train", "lambda_max"] == 2.0 and regularised.loc["eval", "lambda_max"] == 1000.0
    with pytest.raises(ValueError, match="two"):
        bn_modes.ratio_tables(bn_modes.mode_table(results[:1], [_spectrum(1.0)]))


def test_mode_table_averages_over_seeds():
    results = [_result(0.0, 2.0, 0.7, seed=0), _result(0.0, 4.0, 0.8, seed=1)]
    table = bn_modes.mode_table(results, [_spectrum(1.0), _spectrum(3.0)])
    assert table.loc[(0.0, "train"), "lambda_max"] == 3.0 and table.loc[(0.0, "eval"), "lambda_max"] == 2.0
    assert table.loc[(0.0, "train"), "lambda_max_sd"] == pytest.approx(math.sqrt(2.0))
    assert table.loc[(0.0, "train"), "val_acc"] == pytest.approx(75.0) and table.loc[(0.0, "train"), "seeds"] == 2


def test_mode_table_refuses_mismatched_inputs():
    results = [_result(0.0, 2.0), _result(5e-4, 4.0)]
    with pytest.raises(ValueError, match="one eval-mode spectrum per result"):
        bn_modes.mode_table(results, [_spectrum(1.0)])
    eval_result = _result(0.0, 2.0)
    eval_result.config.bn_mode = "eval"
    with pytest.raises(ValueError, match="train-mode"):
        bn_modes.mode_table([eval_result], [_spectrum(1.0)])
    with pytest.raises(ValueError, match="duplicate"):
        bn_modes.mode_table([_result(0.0, 2.0), _result(0.0, 3.0)], [_spectrum(1.0), _spectrum(1.0)])


def _sweep(train_tops, eval_tops, wds=(0.0, 5e-4)):
    """Results and eval spectra for weight decays x seeds: tops[wd index][seed]."""
    results, spectra = [], []
    for i, wd in enumerate(wds):
        for s, (t, e) in enumerate(zip(train_tops[i], eval_tops[i])):
            results.append(_result(wd, t, seed=s))
            spectra.append(_spectrum(e))
    return results, spectra


def _by_statement(claims, text):
    found = [c for c in claims if text in c.statement]
    assert len(found) == 1, (text, [c.statement for c in claims])
    return found[0]


def test_mode_claims_with_uncertainty(monkeypatch):
    import flatbook.decay as wd_module

    monkeypatch.setattr(wd_module, "decay_exponent", lambda config, n=None: 5.0)  # weight decay acted
    # train mode: the regularised solution about 2x sharper, consistently; eval mode: ~1000x; the
    # mode changes lambda_1 at both weight decays
    results, spectra = _sweep([[2.0, 2.2, 1.9], [4.1, 4.3, 3.9]], [[1.0, 1.1, 0.9], [1000.0, 1050.0, 980.0]])
    claims = bn_modes.mode_claims(results, spectra, paper_exponent=37.2)
    assert len(claims) == 4 + 2 + 1
    train = _by_statement(claims, "train mode: lambda_1 is larger")
    assert train.outcome == "supported" and train.effect == pytest.approx(np.exp(np.mean(np.log([4.1 / 2.0, 4.3 / 2.2,
                                                                                                  3.9 / 1.9]))))
    assert train.low > 1 and train.regime[0].met and train.regime[1].met
    evalc = _by_statement(claims, "eval mode: lambda_1 is larger")
    assert evalc.outcome == "supported" and evalc.effect > 900
    assert _by_statement(claims, "changes lambda_1 at weight decay 0 (").outcome == "supported"  # eval smaller: two-sided
    assert _by_statement(claims, "changes lambda_1 at weight decay 0.0005").outcome == "supported"
    assert _by_statement(claims, "look sharper").outcome == "supported"
    # a ratio whose seeds disagree: inconclusive, never "no effect"
    noisy, noisy_spectra = _sweep([[2.0, 2.0, 2.0], [4.0, 1.0, 3.0]], [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    claims = bn_modes.mode_claims(noisy, noisy_spectra)
    c = _by_statement(claims, "train mode: lambda_1 is larger")
    assert c.outcome == "inconclusive" and c.low < 1 < c.high and c.mde > 1
    # flatter with weight decay, consistently: contradicted
    flat, flat_spectra = _sweep([[4.0, 4.2], [2.0, 2.1]], [[1.0, 1.0], [1.0, 1.0]])
    assert _by_statement(bn_modes.mode_claims(flat, flat_spectra), "train mode: lambda_1").outcome == "contradicted"
    # the mode changes lambda_1 by less than 1% at every seed: "the mode changes lambda_1" is contradicted
    # (the two-sided claim can fail; it used to take its direction from its own estimate, issue 20)
    same, same_spectra = _sweep([[2.0, 2.2, 1.9], [4.1, 4.3, 3.9]], [[2.01, 2.19, 1.9], [4.1, 4.31, 3.9]])
    c = _by_statement(bn_modes.mode_claims(same, same_spectra), "changes lambda_1 at weight decay 0 (")
    assert c.outcome == "contradicted" and 1 / 1.1 < c.low < c.high < 1.1 and c.primary is False


def test_the_papers_numbers_sit_only_beside_its_own_data():
    results = [_result(0.0, 2.0, 0.75), _result(5e-4, 4.0, 0.81)]
    assert "paper_frobenius" in bn_modes.mode_table(results, [_spectrum(1.0), _spectrum(1000.0)])
    for r in results:
        r.config.dataset = "fashion-mnist"
    assert not any(c.startswith("paper_") for c in bn_modes.mode_table(results, [_spectrum(1.0), _spectrum(1000.0)]))


def test_mode_claims_are_untestable_with_one_seed_or_without_decay(monkeypatch):
    import flatbook.decay as wd_module

    monkeypatch.setattr(wd_module, "decay_exponent", lambda config, n=None: 5.0)
    one, one_spectra = _sweep([[2.0], [4.0]], [[1.0], [1000.0]])
    claims = bn_modes.mode_claims(one, one_spectra)
    assert all(c.outcome == "untestable" for c in claims)
    assert all("seeds per setting" in c.failed for c in claims)
    assert _by_statement(claims, "eval mode: lambda_1").effect == pytest.approx(1000.0)  # still shown
    monkeypatch.setattr(wd_module, "decay_exponent", lambda config, n=None: 0.1)
    two, two_spectra = _sweep([[2.0, 2.1], [4.0, 4.1]], [[1.0, 1.0], [9.0, 9.5]])
    claims = bn_modes.mode_claims(two, two_spectra)
    assert _by_statement(claims, "train mode: lambda_1").outcome == "untestable"
    assert "decay exponent" in _by_statement(claims, "train mode: lambda_1").failed
    # the mode comparison at one weight decay needs seeds only
    assert _by_statement(claims, "changes lambda_1 at weight decay 0.0005").outcome == "supported"


def test_mode_claims_need_shared_seeds_and_two_weight_decays():
    results = [_result(0.0, 2.0, seed=0), _result(5e-4, 4.0, seed=1)]
    with pytest.raises(ValueError, match="share no seed"):
        bn_modes.mode_claims(results, [_spectrum(1.0), _spectrum(2.0)])
    with pytest.raises(ValueError, match="two"):
        bn_modes.mode_claims(results[:1], [_spectrum(1.0)])


# --- scale invariance --------------------------------------------------------------------------


def _bn_net(eps: float = 1e-20) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3, eps=eps), nn.ReLU(),
                        nn.Conv2d(3, 4, 3), nn.Dropout(0.0), nn.BatchNorm2d(4, eps=eps), nn.ReLU(), nn.Flatten(),
                        nn.Linear(4 * 4 * 4, 5)).double()
    net.train()
    with torch.no_grad():  # running statistics that differ from any batch's
        net(torch.randn(32, 2, 6, 6, dtype=torch.float64) * 2 + 0.5)
    return net.eval()


def _data(n=24, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, 6, 6, generator=g, dtype=torch.float64), torch.randint(0, 5, (n,), generator=g)


def test_batchnorm_fed_weights_reads_the_graph():
    net = _bn_net()
    x, _ = _data()
    assert bn_modes.batchnorm_fed_weights(net, x) == [("0.weight", "1"), ("3.weight", "5")]  # the Linear feeds no BN
    # WideResNet: the stem conv also feeds block 0's identity shortcut (an addition), so it is left out;
    # each block's first conv feeds its second BatchNorm only (through a Dropout)
    wrn = models.build("wrn28x10", num_classes=10, in_channels=3, depth=10, width=1).double()
    state = {k: v.clone() for k, v in wrn.state_dict().items()}
    found = bn_modes.batchnorm_fed_weights(wrn, torch.randn(4, 3, 32, 32, dtype=torch.float64))
    assert found == [(f"blocks.{i}.conv1.weight", f"blocks.{i}.bn2") for i in range(3)]
    assert all(torch.equal(v, state[k]) for k, v in wrn.state_dict().items()) and wrn.training  # untouched


@pytest.mark.parametrize("c", [0.5, 3.0])
def test_train_mode_hessian_block_scales_as_one_over_c_squared_dense(c):
    """L(c w) = L(w) for the weights feeding a train-mode BatchNorm: H(c w) = H(w) / c^2 on their
    block, against dense float64 Hessians (epsilon 1e-20: exact to rounding)."""
    net = _bn_net()
    x, y = _data()
    H = dense_hessian(net, F.cross_entropy, (x, y), batch_size=12, params=["0.weight"])
    scaled = _bn_net()
    with torch.no_grad():
        scaled[0].weight.mul_(c)
    Hc = dense_hessian(scaled, F.cross_entropy, (x, y), batch_size=12, params=["0.weight"])
    torch.testing.assert_close(Hc, H / c**2, rtol=1e-9, atol=1e-12 * float(H.abs().max()) / c**2)
    r = bn_modes.scale_invariance(net, F.cross_entropy, (x, y), "0.weight", c, batch_size=12, probes=None)
    assert r["parameters"] == 54 and r["hessian_ratio"] == pytest.approx(1 / c**2, rel=1e-9)
    assert r["hessian_error"] < 1e-10 and r["gradient_error"] < 1e-10 and r["loss_change"] < 1e-13
    assert r["euler"] < 1e-12  # w . g(w) = 0
    # Euler's relation H(w) w = -g(w), from the dense block and an autograd gradient
    w = net[0].weight.detach().flatten()
    shadow = _bn_net()
    for m in shadow.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.train()
    loss = sum(F.cross_entropy(shadow(x[i:i + 12]), y[i:i + 12]) * 0.5 for i in (0, 12))
    (g,) = torch.autograd.grad(loss, [shadow[0].weight])
    torch.testing.assert_close(H @ w, -g.flatten(), rtol=1e-8, atol=1e-12)
    # products on random vectors say the same as the dense block
    rp = bn_modes.scale_invariance(net, F.cross_entropy, (x, y), "0.weight", c, batch_size=12, probes=5, seed=3)
    assert rp["hessian_error"] < 1e-10 and rp["hessian_ratio"] == pytest.approx(1 / c**2, rel=1e-9)


def test_eval_mode_and_other_weights_are_not_invariant():
    net = _bn_net()
    x, y = _data()
    r = bn_modes.scale_invariance(net, F.cross_entropy, (x, y), "0.weight", 2.0, batch_size=12, bn_mode="eval",
                                  probes=None)
    assert r["loss_change"] > 1e-4 and r["hessian_error"] > 0.1
    # the last Linear layer feeds the loss, not a BatchNorm: scaling it changes everything in train mode
    r = bn_modes.scale_invariance(net, F.cross_entropy, (x, y), "8.weight", 2.0, batch_size=12, probes=4)
    assert r["loss_change"] > 1e-3 and r["hessian_error"] > 0.1


def test_epsilon_breaks_the_invariance_slightly():
    x, y = _data()
    exact = bn_modes.scale_invariance(_bn_net(1e-20), F.cross_entropy, (x, y), "0.weight", 0.5, batch_size=12)
    torch_eps = bn_modes.scale_invariance(_bn_net(1e-5), F.cross_entropy, (x, y), "0.weight", 0.5, batch_size=12,
                                          bn_layer="1")
    assert exact["hessian_error"] < 1e-10 < torch_eps["hessian_error"] < 1e-2
    # bn_eps removes the epsilon term in the copies; the model keeps its own
    net = _bn_net(1e-5)
    removed = bn_modes.scale_invariance(net, F.cross_entropy, (x, y), "0.weight", 0.5, batch_size=12,
                                        bn_eps=bn_modes.NEGLIGIBLE_EPS, bn_layer="1")
    assert removed["hessian_error"] < 1e-10 and removed["bn_eps"] == 1e-30 and net[1].eps == 1e-5
    # eps / Var at the BatchNorm input, per batch and channel: computed directly
    with torch.no_grad():
        z = [net[0](x[i:i + 12]) for i in (0, 12)]
    expected = max(float((1e-5 / t.var(dim=(0, 2, 3), unbiased=False)).max()) for t in z)
    assert torch_eps["eps_over_variance"] == pytest.approx(expected, rel=1e-10)
    assert math.isnan(exact["eps_over_variance"]) and math.isnan(exact["bn_eps"])
    with pytest.raises(ValueError, match="bn_eps"):
        bn_modes.scale_invariance(net, F.cross_entropy, (x, y), "0.weight", 0.5, batch_size=12, bn_eps=0.0)
    with pytest.raises(ValueError, match="bn_layer"):
        bn_modes.scale_invariance(net, F.cross_entropy, (x, y), "0.weight", 0.5, batch_size=12, bn_layer="0")


def test_scale_invariance_leaves_the_model_alone_and_checks_arguments():
    net = _bn_net()
    x, y = _data()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    bn_modes.scale_invariance(net, F.cross_entropy, (x, y), "0.weight", 2.0, batch_size=12, probes=2)
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items()) and not net.training
    for kwargs, name in [({"c": 0.0}, "c"), ({"c": -1.0}, "c"), ({"c": True}, "c"), ({"param": "nope"}, "param"),
                         ({"bn_mode": "both"}, "bn_mode"), ({"probes": 0}, "probes"), ({"batch_size": None}, "batch_size")]:
        args = {"param": "0.weight", "c": 2.0, "batch_size": 12, **kwargs}
        with pytest.raises(ValueError, match=name):
            bn_modes.scale_invariance(net, F.cross_entropy, (x, y), **args)
    # a list of batches works too (batch_size None)
    r = bn_modes.scale_invariance(net, F.cross_entropy, [(x[:12], y[:12]), (x[12:], y[12:])], "0.weight", 2.0,
                                  probes=2)
    assert r["hessian_error"] < 1e-10


def test_invariance_claims():
    nan = math.nan
    rows = [{"bn_mode": "train", "c": 0.5, "bn_eps": nan, "eps_over_variance": 3e-3, "loss_change": 1e-6,
             "gradient_error": 8e-3, "hessian_error": 5e-3, "hessian_ratio": 4.01},
            {"bn_mode": "train", "c": 0.5, "bn_eps": 1e-30, "eps_over_variance": 1e-28, "loss_change": 1e-16,
             "gradient_error": 2e-15, "hessian_error": 3e-15, "hessian_ratio": 4.0},
            {"bn_mode": "eval", "c": 0.5, "bn_eps": nan, "eps_over_variance": 3e-3, "loss_change": 1e-2,
             "gradient_error": 0.5, "hessian_error": 0.8, "hessian_ratio": 1.1}]
    claims = bn_modes.invariance_claims(rows, "blocks.0.conv1.weight")
    assert [c.decision for c in claims] == ["holds"] * 3
    assert claims[0].effect == 3e-15 and claims[1].effect == 5e-3 and claims[2].effect == 0.8
    assert "negligible" in claims[0].statement and "own" in claims[1].statement
    assert claims[0].method.startswith("exact computation") and not claims[1].method.startswith("exact computation")
    rows[1]["hessian_error"] = 1e-3  # the identity fails: contradicted
    rows[0]["hessian_error"] = 0.2
    out = bn_modes.invariance_claims(rows, "w")
    assert out[0].decision == "fails" and out[1].decision == "fails"
    assert [c.statement.split(":")[0] for c in bn_modes.invariance_claims(rows[2:] + rows[:1], "w")] == [
        "train mode with the model's own BatchNorm epsilon", "eval mode"]
    with pytest.raises(ValueError, match="train"):
        bn_modes.invariance_claims(rows[2:], "w")


PAPER = dict(model="wrn28x10", dataset="cifar100", train_per_class=None, image_size=None, pad_to=None,
             model_options={}, epochs=300, lr=0.1, batch_size=128, momentum=0.9, weight_decays=[0.0, 5e-4],
             lanczos_steps=100, probes=1, hessian_samples=None, val_size=5000, seeds=[0, 1], results_dir=None)


def test_parameters_are_checked_and_the_model_needs_batchnorm():
    bn_modes.BnModesParameters(**PAPER)
    bn_modes.BnModesParameters(**{**PAPER, "model": "vgg16bn", "seeds": [3]})
    with pytest.raises(ValueError, match="no BatchNorm"):
        bn_modes.BnModesParameters(**{**PAPER, "model": "allcnnc"})
    for change, name in [({"model": "mlp"}, "model"), ({"weight_decays": [0.0]}, "weight_decays"),
                         ({"dataset": "fashion-mnist"}, "pad_to"), ({"results_dir": 1}, "results_dir"),
                         ({"model_options": {"depth": 12}}, "model_options"), ({"seeds": []}, "seeds"),
                         ({"seeds": [0, 0]}, "seeds"), ({"seeds": [-1]}, "seeds"), ({"seeds": 0}, "seeds")]:
        with pytest.raises(ValueError, match=name):
            bn_modes.BnModesParameters(**{**PAPER, **change})


def test_regularised_sentence_reads_the_two_modes():
    import pandas as pd

    from flatbook.chapters.bn_modes import regularised_sentence

    def table(t, e):
        return pd.DataFrame({"lambda_max": {"train": t, "eval": e}, "trace": {"train": 1.0, "eval": 1.0},
                             "frobenius": {"train": 1.0, "eval": 1.0}})

    both = regularised_sentence(table(13.6, 28.2))
    assert "13.6x the least regularised one in train mode (sharper) and 28.2x in eval mode (sharper)" in both
    assert "larger in eval mode" in both and "cannot be the whole reason" in both
    split = regularised_sentence(table(5.0, 0.5))
    assert "(flatter)" in split and "the choice of mode decides the answer" in split and "whole reason" not in split


def test_the_bn_modes_notebooks_sentences_and_tables():
    import math
    from types import SimpleNamespace

    from flatbook.chapters import bn_modes

    def run(wd, seed, cached):
        return SimpleNamespace(config=SimpleNamespace(weight_decay=wd, seed=seed), cached=cached, spectrum=f"train {wd} {seed}",
                               metrics={"val_acc": 0.9, "num_params": 12345, "train_samples": 2000})

    results = [run(0.0, 0, True), run(1e-3, 0, False), run(0.0, 1, True), run(1e-3, 1, True)]
    evals = [f"eval {r.config.weight_decay} {r.config.seed}" for r in results]
    text = bn_modes.models_sentence(results, weight_decays=[0.0, 1e-3], seeds=[0, 1], hessian_samples=1024,
                                    lanczos_steps=10, probes=1)
    assert text.startswith("*Computed:* 4 models (3 from the cache, 1 trained here; 2 weight decays x 2 seed(s)), "
                           "12,345 parameters; the Hessian over 1,024 training images, 10 Lanczos steps, 1 probe(s).")
    assert "over 2,000 training images" in bn_modes.models_sentence(results, weight_decays=[0.0, 1e-3], seeds=[0, 1],
                                                                   hessian_samples=None, lanczos_steps=10, probes=1)
    assert bn_modes.first_seed_spectra(results, evals, 1) == {
        "wd 0, val acc 90.00%: train mode": "train 0.0 1", "wd 0, val acc 90.00%: eval mode": "eval 0.0 1",
        "wd 0.001, val acc 90.00%: train mode": "train 0.001 1", "wd 0.001, val acc 90.00%: eval mode": "eval 0.001 1"}
    assert bn_modes.invariance_reference(results, 1) is results[3]
    with pytest.raises(ValueError, match="no run with seed 7"):
        bn_modes.invariance_reference(results, 7)
    assert "weight decay 0.001) over the least (0)" in bn_modes.regularised_heading([0.0, 1e-3])
    row = dict(parameters=144, loss_change=1e-9, gradient_error=2e-9, hessian_error=3e-9, hessian_ratio=1.0, euler=0.0,
               eps_over_variance=1e-4)
    rows = ([dict(row, bn_mode="train", bn_eps=math.nan, c=c, hessian_error=1e-3 * c) for c in (0.5, 2.0)]
            + [dict(row, bn_mode="train", bn_eps=1e-30, c=c, hessian_ratio=1.0 + 1e-12) for c in (0.5, 2.0)]
            + [dict(row, bn_mode="eval", bn_eps=math.nan, c=c, loss_change=0.25 * c, hessian_error=c) for c in (0.5, 2.0)])
    text = bn_modes.invariance_sentence("blocks.0.conv1.weight", "blocks.0.bn2", rows)
    assert "`blocks.0.conv1.weight` (144 weights) feeds `blocks.0.bn2`" in text
    assert "epsilon made negligible (1e-30), scaling it by c = 0.5, 2 changes the loss by at most a relative 1.0e-09" in text
    assert "the same numbers are 1.0e-09, 2.0e-09 and 2.0e-03" in text
    assert "changes the loss by up to 5.0e-01 and the rescaled Hessian block by 0.5 to 2: no invariance." in text
    assert list(bn_modes.invariance_table(rows).index.names) == ["bn_mode", "BatchNorm epsilon", "c"]
    with pytest.raises(ValueError, match="eval mode"):
        bn_modes.invariance_sentence("w", "bn", rows[:4])
    assert bn_modes.paper_exponent_of("mlp") is None and bn_modes.paper_exponent_of("wrn28x10") > 1
