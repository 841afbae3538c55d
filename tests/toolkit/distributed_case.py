"""The small float64 BatchNorm CNN, data and block of vectors that tests/toolkit/test_distributed.py and
its torchrun worker (tests/toolkit/distributed_worker.py) both build, identically, from fixed seeds."""

import torch
from torch import nn


def build_case():
    """(model, (x, y), V): a conv-BatchNorm-ReLU-pool-linear network in float64 with trained-looking
    running statistics, 44 images of 1x6x6 in 3 classes (batches of 8: five full, one of 4) and a
    (P, 3) block of vectors."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                          nn.Flatten(), nn.Linear(12, 3)).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(44, 1, 6, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (44,), generator=g)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(x)  # running statistics away from their initial values, so eval mode differs
    model.eval()
    P = sum(p.numel() for p in model.parameters())
    V = torch.randn(P, 3, generator=g, dtype=torch.float64)
    return model, (x, y), V


# what the training test gives train.fit in one process and on two ranks: 69 images (batches of
# 16: four full, shared 8 + 8, and one of 5, shared 3 + 2: unequal shares), crop-flip, weight decay,
# averaging from epoch 2
TRAINING = dict(lr=0.1, epochs=3, batch_size=16, augment="crop-flip", weight_decay=1e-3, averaging_start=2,
                progress=False, device="cpu")


def training_case(dtype):
    """(model, train, val): a conv-BatchNorm-ReLU-Dropout-pool-linear network in ``dtype`` and 69
    training and 31 validation images of 1x6x6 in 3 classes."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.3),
                          nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 3)).to(dtype)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(100, 1, 6, 6, generator=g, dtype=dtype)
    y = torch.randint(0, 3, (100,), generator=g)
    return model, (x[:69], y[:69]), (x[69:], y[69:])
