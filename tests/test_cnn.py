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

    params = cnn.DecayGridParameters(**BASE, ablation_lrs=[0.05, 0.2], ablation_exponent=3.0)
    configs = params.ablation_configs()
    assert [c.lr for c in configs] == [0.1, 0.1, 0.05, 0.05, 0.2, 0.2]
    assert [c.weight_decay == 0 for c in configs] == [True, False] * 3
    for c in configs[1::2]:
        assert 3.0 <= decay_exponent(c, 2000) < 3.0 * 1.001  # rounded up to 4 digits
    assert set(c.key() for c in configs) <= set(c.key() for c in params.training_plan())
    assert cnn.DecayGridParameters(**BASE).ablation_configs() == []
    with pytest.raises(ValueError, match="go together"):
        cnn.DecayGridParameters(**BASE, ablation_lrs=[0.05])
    with pytest.raises(ValueError, match="ablation_lrs"):
        cnn.DecayGridParameters(**BASE, ablation_lrs=[-0.1], ablation_exponent=3.0)


def test_ablation_table_and_sentence():
    c = Config(model="wrn28x10", dataset="fashion-mnist", epochs=40, lr=0.1, model_options={"depth": 10, "width": 1},
               pad_to=16, image_size=14, train_per_class=200)
    pairs = []
    for lr, wd, top in ((0.1, 0.006553, 8.0), (0.05, 0.01311, 8.0), (0.2, 0.003277, 8.0)):
        pairs += [_result(c.replace(lr=lr), 1.0), _result(c.replace(lr=lr, weight_decay=wd), top)]
    table = cnn.ablation_table(pairs)
    assert list(table.index) == [0.1, 0.05, 0.2] and (table["lambda_max_ratio"] == 8.0).all()
    assert table.loc[0.05, "decay_per_step"] == pytest.approx(0.05 * 0.01311 / 0.1)
    text = cnn.ablation_sentence(table)
    assert "a factor 1" in text and "3 of the 3" in text and "not a test" in text
    with pytest.raises(ValueError, match="pairs"):
        cnn.ablation_table(pairs[1:])
