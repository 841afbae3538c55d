"""flatbook.theory.exact: the closed-form logistic-regression Hessian against autograd, and the
null-space prediction against counted zero eigenvalues (float64 throughout)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from flatbook import dense_hessian, models
from flatbook.theory.exact import logreg_hessian, null_space_dimension, softmax_null_residual, zero_eigenvalue_count


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _logreg(K: int, D: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return models.build("logreg", num_classes=K, in_features=D).double()


def _data(N: int, D: int, K: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, D, generator=g, dtype=torch.float64)
    y = torch.randint(0, K, (N,), generator=g)
    return x, y


def _autograd_hessian(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """torch.autograd.functional.hessian over the flat parameter vector, model order (W row-major, b)."""
    layer = [m for m in model.modules() if isinstance(m, nn.Linear)][0]
    K, D = layer.weight.shape

    def loss(theta):
        W, b = theta[: K * D].reshape(K, D), theta[K * D:]
        return F.cross_entropy(x.reshape(len(x), -1) @ W.T + b, y)

    theta = torch.cat([layer.weight.detach().reshape(-1), layer.bias.detach()]).double()
    return torch.autograd.functional.hessian(loss, theta)


@pytest.mark.parametrize("K,D,N,chunk", [(2, 3, 20, 4096), (3, 6, 40, 7), (5, 4, 33, 1), (4, 2, 60, 16)])
def test_logreg_hessian_equals_autograd(K, D, N, chunk):
    model = _logreg(K, D, seed=K + D)
    x, y = _data(N, D, K, seed=N)
    H = logreg_hessian(model, x, y, chunk=chunk)
    assert H.dtype == torch.float64 and H.shape == (K * (D + 1), K * (D + 1))
    ref = dense_hessian(model, F.cross_entropy, (x, y), batch_size=N)
    ref2 = _autograd_hessian(model, x, y)
    torch.testing.assert_close(ref, ref2, rtol=0, atol=1e-13)
    torch.testing.assert_close(H, ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(H, H.T, rtol=0, atol=1e-15)


def test_logreg_hessian_chunking_and_labels_do_not_matter():
    model = _logreg(3, 5)
    x, y = _data(45, 5, 3, seed=1)
    full = logreg_hessian(model, x)
    for chunk in (1, 2, 44, 45, 46):
        torch.testing.assert_close(logreg_hessian(model, x, y, chunk=chunk), full, rtol=0, atol=1e-14)
    torch.testing.assert_close(logreg_hessian(model, x, (y + 1) % 3), full, rtol=0, atol=0)


def test_logreg_hessian_accepts_a_bare_linear_and_image_shaped_inputs():
    torch.manual_seed(4)
    lin = nn.Linear(6, 3).double()
    seq = nn.Sequential(nn.Flatten(), lin)
    x = torch.randn(20, 2, 3, dtype=torch.float64)
    y = torch.randint(0, 3, (20,))
    H = logreg_hessian(seq, x, y)
    torch.testing.assert_close(logreg_hessian(lin, x.reshape(20, 6), y), H, rtol=0, atol=0)
    torch.testing.assert_close(H, dense_hessian(seq, F.cross_entropy, (x, y), batch_size=7), rtol=0, atol=1e-12)


def test_logreg_hessian_does_not_modify_the_model_and_works_from_float32():
    torch.manual_seed(5)
    model = models.build("logreg", num_classes=3, in_features=4)  # float32
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = _data(25, 4, 3)
    H = logreg_hessian(model, x.float(), y)
    assert H.dtype == torch.float64
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]) and v.dtype == torch.float32
    ref = dense_hessian(model.double(), F.cross_entropy, (x.float().double(), y), batch_size=25)
    torch.testing.assert_close(H, ref, rtol=0, atol=1e-12)


def test_logreg_hessian_refuses_other_models_and_bad_inputs():
    x, _ = _data(10, 6, 3)
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="logistic regression"):
        logreg_hessian(models.build("mlp", in_features=6, hidden=[4, 5], num_classes=3).double(), x)
    with pytest.raises(ValueError, match="logistic regression"):
        logreg_hessian(nn.Linear(6, 3, bias=False).double(), x)
    with pytest.raises(ValueError, match="logistic regression"):
        logreg_hessian(nn.Sequential(nn.Linear(6, 3), nn.ReLU()).double(), x)
    with pytest.raises(ValueError, match="features"):
        logreg_hessian(_logreg(3, 5), x)


def test_logreg_hessian_refuses_no_samples_with_a_value_error():
    x, _ = _data(10, 6, 3)
    with pytest.raises(ValueError, match="no samples"):
        logreg_hessian(_logreg(3, 6), x[:0])


# --- null space ---------------------------------------------------------------------------------


def _counted_zeros(model, x):
    e = torch.linalg.eigvalsh(logreg_hessian(model, x)).numpy()
    return e, zero_eigenvalue_count(e)


@pytest.mark.parametrize("K,D,N", [(2, 4, 30), (3, 6, 40), (5, 3, 50)])
def test_null_space_of_generic_data_is_the_softmax_directions(K, D, N):
    x, _ = _data(N, D, K, seed=K)
    pred = null_space_dimension(x, K)
    assert pred == {"features": D + 1, "rank": D + 1, "d0": 0, "softmax": D + 1, "data": 0, "total": D + 1}
    e, zeros = _counted_zeros(_logreg(K, D, seed=1), x)
    assert zeros == pred["total"]
    # the remaining eigenvalues are positive and far from the threshold
    nonzero = np.sort(np.abs(e))[pred["total"]:]
    assert nonzero.min() > 1e-5 * np.abs(e).max()


def _degenerate(kind: str, N: int = 40, D: int = 6, seed: int = 0) -> tuple[torch.Tensor, int]:
    x, _ = _data(N, D, 3, seed=seed)
    if kind == "constant column":
        x[:, 2] = 0.7  # parallel to the bias column of x~
        d0 = 1
    elif kind == "two equal columns":
        x[:, 4] = x[:, 1]
        d0 = 1
    elif kind == "both":
        x[:, 2] = -1.3
        x[:, 4] = x[:, 1]
        d0 = 2
    elif kind == "linear combination":
        x[:, 5] = 2 * x[:, 0] - 3 * x[:, 3] + 0.5
        d0 = 1
    elif kind == "fewer samples than features":
        x = x[:4]  # rank(X~) = 4 < D + 1 = 7
        d0 = D + 1 - 4
    else:
        raise AssertionError(kind)
    return x, d0


@pytest.mark.parametrize("kind", ["constant column", "two equal columns", "both", "linear combination",
                                  "fewer samples than features"])
@pytest.mark.parametrize("K", [2, 3, 4])
def test_null_space_prediction_matches_counted_zero_eigenvalues(kind, K):
    D = 6
    x, d0 = _degenerate(kind, D=D, seed=K)
    pred = null_space_dimension(x, K)
    assert pred["d0"] == d0 and pred["rank"] == D + 1 - d0
    assert pred["softmax"] == D + 1 and pred["data"] == (K - 1) * d0
    assert pred["total"] == (D + 1) + (K - 1) * d0
    e, zeros = _counted_zeros(_logreg(K, D, seed=K), x)
    assert zeros == pred["total"]
    nonzero = np.sort(np.abs(e))[pred["total"]:]
    assert nonzero.min() > 1e-6 * np.abs(e).max()  # a clean gap: no eigenvalue near the threshold


def test_zero_eigenvalue_count_counts_relative_to_the_largest():
    assert zero_eigenvalue_count(np.array([10.0, 1e-9, -1e-9, 0.0, 1e-7, 2.0])) == 3
    assert zero_eigenvalue_count(torch.tensor([-4.0, 3e-9, 5e-9]), rtol=1e-9) == 1  # |max| = 4: 4e-9 limit
    assert zero_eigenvalue_count([1.0, 0.5, 0.1], rtol=0.5) == 2
    assert zero_eigenvalue_count(np.zeros(5)) == 5


def test_softmax_null_residual_is_round_off_on_logreg_and_large_on_random_spd():
    for K, D in ((2, 3), (3, 6), (4, 5)):
        x, _ = _data(40, D, K, seed=D)
        H = logreg_hessian(_logreg(K, D, seed=K), x)
        assert softmax_null_residual(H, K) < 1e-14
        assert softmax_null_residual(H.numpy(), K) < 1e-14  # numpy input accepted
    rng = np.random.default_rng(0)
    A = rng.standard_normal((21, 21))
    spd = torch.from_numpy(A @ A.T + 0.1 * np.eye(21))
    assert softmax_null_residual(spd, 3) > 1e-3
    assert softmax_null_residual(torch.eye(21, dtype=torch.float64), 3) > 1e-3
    assert softmax_null_residual(7.0 * spd, 3) == pytest.approx(softmax_null_residual(spd, 3), rel=1e-12)


def test_softmax_null_residual_is_the_documented_ratio():
    """||H N||_F / (||H||_F ||N||_F) with N built explicitly: column i < D has a 1 at (class k,
    feature i) for every k (W row-major), column D a 1 at every bias."""
    K, D = 3, 6
    P = K * (D + 1)
    N = torch.zeros(P, D + 1, dtype=torch.float64)
    for k in range(K):
        for i in range(D):
            N[k * D + i, i] = 1.0
        N[K * D + k, D] = 1.0
    rng = np.random.default_rng(1)
    A = torch.from_numpy(rng.standard_normal((P, P)))
    for H in (A @ A.T, torch.eye(P, dtype=torch.float64), torch.diag(torch.arange(1.0, P + 1, dtype=torch.float64))):
        expect = float((H @ N).norm() / (H.norm() * N.norm()))
        assert softmax_null_residual(H, K) == pytest.approx(expect, rel=1e-12)


def test_softmax_null_residual_uses_the_model_parameter_order():
    # a matrix that kills exactly the class-by-class ([W b] interleaved) softmax directions is NOT
    # null in the model's order: the order matters and is the model's (W row-major, then b)
    K, D = 3, 4
    x, _ = _data(30, D, K, seed=2)
    H = logreg_hessian(_logreg(K, D), x)
    order = [None] * (K * (D + 1))
    # model index of (class k, feature i) and (class k, bias)
    for k in range(K):
        for i in range(D + 1):
            order[k * (D + 1) + i] = k * D + i if i < D else K * D + k
    idx = torch.tensor(order)
    interleaved = H[idx][:, idx]  # class by class, bias last in each class
    assert softmax_null_residual(H, K) < 1e-14
    assert softmax_null_residual(interleaved, K) > 1e-3


def test_softmax_null_residual_refuses_a_size_not_multiple_of_classes():
    with pytest.raises(ValueError, match="multiple"):
        softmax_null_residual(torch.eye(10, dtype=torch.float64), 3)
