"""flatbook.chapters.cnn: the decay-exponent appendix's ablation (the same E from different splits of
eta and gamma) on constructed results, and its parameter checks."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from flatbook.chapters import cnn
from flatbook.experiments import Config
from flatbook.spectrum import Spectrum

BASE = dict(model="wrn28x10", dataset="fashion-mnist", train_per_class=200, image_size=14, pad_to=16,
            model_options={"depth": 10, "width": 1}, epochs=40, lr=0.1, batch_size=128, momentum=0.9,
            decay_exponents=[0.0, 3.0], lanczos_steps=10, probes=1, hessian_samples=128, bn_mode="train",
            val_size=4000, val_every=10, seed=0, workers=1)


def _result(config, top, train_acc=1.0, norm=10.0):
    s = Spectrum(np.array([[top, top / 2]]), np.full((1, 2), 0.5), num_params=10, settings={})
    return SimpleNamespace(config=config, spectrum=s, metrics={"train_acc": train_acc, "val_acc": 0.8,
                                                              "weight_norm": norm, "train_samples": 2000})


def test_ablation_reaches_one_exponent_at_every_learning_rate():
    from flatbook.decay import decay_exponent

    from flatbook.decay import decay_per_step

    params = cnn.DecayGridParameters(**BASE, ablation_epochs=[20, 80], ablation_exponent=3.0)
    configs = params.ablation_configs()
    assert [c.epochs for c in configs] == [40, 40, 20, 20, 80, 80]
    assert [c.weight_decay == 0 for c in configs] == [True, False] * 3
    for c in configs[1::2]:
        assert 3.0 <= decay_exponent(c, 2000) < 3.0 * 1.001  # rounded up to 4 digits
    # the same E, twice the shrinkage per step for half the epochs: E and eta*gamma are separated
    assert decay_per_step(configs[3]) == pytest.approx(2 * decay_per_step(configs[1]), rel=0.03)  # schedule by epoch
    assert set(c.key() for c in configs) <= set(c.key() for c in params.training_plan())
    assert cnn.DecayGridParameters(**BASE).ablation_configs() == []
    with pytest.raises(ValueError, match="go together"):
        cnn.DecayGridParameters(**BASE, ablation_epochs=[20])
    with pytest.raises(ValueError, match="ablation_epochs"):
        cnn.DecayGridParameters(**BASE, ablation_epochs=[0], ablation_exponent=3.0)


def test_ablation_table_and_sentence():
    c = Config(model="wrn28x10", dataset="fashion-mnist", epochs=40, lr=0.1, model_options={"depth": 10, "width": 1},
               pad_to=16, image_size=14, train_per_class=200)
    pairs = []
    for epochs, wd, top in ((40, 0.006553, 8.0), (20, 0.01311, 12.0), (80, 0.003277, 6.0)):
        pairs += [_result(c.replace(epochs=epochs), 1.0), _result(c.replace(epochs=epochs, weight_decay=wd), top)]
    table = cnn.ablation_table(pairs)
    assert list(table.index) == [40, 20, 80] and list(table["lambda_max_ratio"]) == [8.0, 12.0, 6.0]
    assert table.loc[20, "decay_per_step"] == pytest.approx(0.1 * 0.01311 / 0.1)
    text = cnn.ablation_sentence(table)
    assert "a factor 4" in text and "a factor 2," in text and "rising with the shrinkage" in text
    assert "3 of the 3" in text and "not a test" in text
    inverse = []  # the gentler the steps, the larger the ratio (what the laptop WRN showed)
    for epochs, wd, top in ((40, 0.006553, 21.0), (20, 0.01311, 14.0), (80, 0.003277, 63.0)):
        inverse += [_result(c.replace(epochs=epochs), 1.0), _result(c.replace(epochs=epochs, weight_decay=wd), top)]
    assert "falling as it rises" in cnn.ablation_sentence(cnn.ablation_table(inverse))
    mixed = []
    for epochs, wd, top in ((40, 0.006553, 5.0), (20, 0.01311, 14.0), (80, 0.003277, 9.0)):
        mixed += [_result(c.replace(epochs=epochs), 1.0), _result(c.replace(epochs=epochs, weight_decay=wd), top)]
    assert "not ordered by" in cnn.ablation_sentence(cnn.ablation_table(mixed))
    with pytest.raises(ValueError, match="pairs"):
        cnn.ablation_table(pairs[1:])


def test_the_cnn_notebooks_sentences():
    import pandas as pd

    from flatbook.chapters import cnn

    cost = {"forward_flops": 5.25e9, "flop_ratio": 1234.4, "train_flops": 3.1e18, "hessian_flops": 4.9e17,
            "cpu_seconds": 86400 * 12.34, "flops": 3.59e18}
    text = cnn.cost_sentence(cost, "cpu (1 thread)")
    assert "needs 5.25 GFLOP per forward pass, 1,234x this run's" in text
    assert "3,100 PFLOP of training and 490 PFLOP of Lanczos" in text and "**12.3 days**" in text
    hours = cnn.cost_table(cost, rates=(20,))
    assert hours.iloc[0, 0] == round(3.59e18 / 20e12 / 3600, 1)
    grid = pd.DataFrame({"decay_exponent": [0.0, 1.0, 3.0, 37.0], "train_acc": [100.0, 99.5, 99.0, 10.0],
                         "val_acc": [80.0, 81.0, 81.5, 10.0], "lambda_max": [1.0, 2.0, 8.0, 0.1]},
                        index=[0.0, 1e-3, 3e-3, 4e-2])
    text = cnn.decay_grid_sentence(grid, 37.2)
    assert "the paper's run has $E$ = 37.2" in text and "give $E$ from 0 to 37" in text
    assert "is **3**, where $\\lambda_1$ is 8 times" in text and "+1.50 points" in text
    assert "from $E$ = 37 on, the training accuracy falls, to 10.0%" in text
    assert cnn.decay_grid_sentence(grid.iloc[:2], 37.2).endswith("every run of the grid fits its training set.")
    assert "No run of the grid fits" in cnn.decay_grid_sentence(grid.iloc[3:], 37.2)
