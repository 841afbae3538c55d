"""The small float64 BatchNorm CNN, data and block of vectors that tests/test_distributed.py and
its torchrun worker (tests/distributed_worker.py) both build, identically, from fixed seeds."""

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
