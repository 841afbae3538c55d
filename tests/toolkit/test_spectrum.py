"""Lanczos / SLQ / Hutchinson against full eigendecompositions in float64."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from flatbook.curvature import HessianOperator, dense_hessian
from flatbook.spectrum import MatrixOperator, Spectrum, hutchinson_trace, lanczos, slq, top_eigenvalues


def random_symmetric(P=120, seed=0, spread=30.0):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((P, P)))
    eig = np.concatenate([[spread, spread / 2], rng.standard_normal(P - 2)])
    return (Q * eig) @ Q.T, np.sort(eig)


def test_full_lanczos_recovers_extreme_eigenvalues():
    A, eig = random_symmetric()
    for steps in (len(eig), len(eig) + 50):  # steps >= P is capped at P
        sp = slq(MatrixOperator(A), steps=steps, probes=2, seed=1)
        assert sp.nodes.shape == (2, len(eig))
        assert sp.lambda_max == pytest.approx(eig[-1], rel=1e-8)
        assert sp.lambda_min == pytest.approx(eig[0], rel=1e-8)
        assert np.allclose(sp.weights.sum(axis=1), 1.0)


def test_exact_trace_and_frobenius_when_the_probe_is_uniform_over_eigenvectors():
    # with start vector sum_i phi_i / sqrt(P) every weight of the full decomposition is 1/P
    A, eig = random_symmetric(P=40, seed=3)
    _, Q = np.linalg.eigh(A)
    start = torch.from_numpy(Q.sum(axis=1) / math.sqrt(40))
    res = lanczos(MatrixOperator(A), steps=40, start=start)
    nodes, weights = res.ritz()
    sp = Spectrum(nodes, weights, 40)
    assert sp.trace == pytest.approx(eig.sum(), rel=1e-9, abs=1e-9)
    assert sp.frobenius == pytest.approx(np.sqrt((eig**2).sum()), rel=1e-9)


def test_many_probes_are_unbiased_within_three_standard_errors():
    A, eig = random_symmetric(P=150, seed=4)
    sp = slq(MatrixOperator(A), steps=40, probes=200, seed=7)
    assert abs(sp.trace - eig.sum()) < 3 * sp.trace_se
    fro = np.sqrt((eig**2).sum())
    assert abs(sp.frobenius - fro) < 3 * sp.frobenius_se
    assert sp.trace_se > 0 and sp.frobenius_se > 0


def test_breakdown_stops_cleanly_on_an_invariant_subspace():
    A = np.diag([1.0, 2.0, 3.0, 4.0, 5.0] + [0.0] * 45)
    start = torch.zeros(50, 1, dtype=torch.float64)
    start[:5, 0] = 1.0  # lives in a 5-dimensional invariant subspace
    res = lanczos(MatrixOperator(A), steps=20, start=start)
    assert int(res.sizes[0]) == 5
    nodes, weights = res.ritz()
    assert np.allclose(np.sort(nodes[0, :5]), [1, 2, 3, 4, 5], atol=1e-12)
    assert np.all(np.isnan(nodes[0, 5:])) and np.all(weights[0, 5:] == 0)
    sp = Spectrum(nodes, weights, 50)
    assert sp.lambda_max == pytest.approx(5.0) and math.isfinite(sp.trace)


def test_without_reorthogonalisation_ghosts_appear():
    A, eig = random_symmetric(P=200, seed=5, spread=100.0)
    ghosts = slq(MatrixOperator(A), steps=120, reorthogonalize=False, seed=2)
    clean = slq(MatrixOperator(A), steps=120, reorthogonalize=True, seed=2)

    def near_top(sp):
        return int(np.sum(np.abs(sp.nodes[0] - eig[-1]) < 1e-6 * eig[-1]))

    assert near_top(clean) == 1
    assert near_top(ghosts) >= 2  # spurious copies of the converged top eigenvalue


def test_density_integrates_to_one_and_json_round_trip():
    A, _ = random_symmetric(P=60, seed=6)
    sp = slq(MatrixOperator(A), steps=20, probes=3, seed=0)
    grid = np.linspace(-60, 60, 24001)
    assert np.trapezoid(sp.density(grid, sigma=0.5), grid) == pytest.approx(1.0, abs=1e-6)
    back = Spectrum.from_dict(json.loads(json.dumps(sp.to_dict())))
    assert np.array_equal(back.nodes, sp.nodes, equal_nan=True) and np.array_equal(back.weights, sp.weights)
    assert back.settings == sp.settings and back.num_params == 60
    assert back.summary() == pytest.approx(sp.summary(), nan_ok=True)
    with pytest.raises(ValueError, match="sigma must be"):
        sp.density(grid, sigma=0)


def test_seeds_are_private_and_reproducible():
    A, _ = random_symmetric(P=50, seed=8)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = slq(MatrixOperator(A), steps=10, probes=2, seed=11)
    assert torch.equal(torch.random.get_rng_state(), before)  # the global RNG is untouched
    b = slq(MatrixOperator(A), steps=10, probes=2, seed=11)
    c = slq(MatrixOperator(A), steps=10, probes=2, seed=12)
    assert np.array_equal(a.nodes, b.nodes) and not np.array_equal(a.nodes, c.nodes)


def test_hutchinson_and_top_eigenvalues():
    A, eig = random_symmetric(P=80, seed=9)
    est = hutchinson_trace(MatrixOperator(A), samples=400, seed=0)
    assert abs(est.value - eig.sum()) < 3 * est.stderr and est.samples == 400
    top = top_eigenvalues(MatrixOperator(A), k=3)
    assert np.allclose(top, eig[::-1][:3], rtol=1e-8)


def test_slq_on_a_hessian_operator_matches_the_dense_spectrum():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(30, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (30,), generator=g)
    loss = nn.CrossEntropyLoss()
    H = dense_hessian(model, loss, (x, y), batch_size=8)
    eig = np.linalg.eigvalsh(H.numpy())
    op = HessianOperator(model, loss, (x, y), batch_size=8, weight_decay=0.1)
    sp = slq(op, steps=op.num_params, probes=2)
    assert sp.lambda_max == pytest.approx(eig[-1] + 0.1, rel=1e-8)
    assert sp.lambda_min == pytest.approx(eig[0] + 0.1, rel=1e-6, abs=1e-10)
    for key in ("bn_mode", "weight_decay", "num_samples", "dtype", "seed", "steps", "probes"):
        assert key in sp.settings
    assert sp.settings["weight_decay"] == 0.1 and sp.settings["num_samples"] == 30


@pytest.mark.parametrize("kwargs, message", [
    ({"steps": 0}, "steps must be an integer >= 1"),
    ({"probes": 0}, "probes must be an integer >= 1"),
    ({"steps": 2.5}, "steps must be an integer >= 1"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        slq(MatrixOperator(np.eye(3)), **kwargs)


def test_non_finite_products_are_refused():
    A = np.eye(4)
    A[0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite product"):
        slq(MatrixOperator(A), steps=3)


def test_check_operator_catches_asymmetric_and_random_operators():
    A, _ = random_symmetric(P=30, seed=1)
    from flatbook.spectrum import check_operator
    assert check_operator(MatrixOperator(A)) < 1e-12
    B = A.copy()
    B[0, 1] += 1.0
    with pytest.raises(ValueError, match="not symmetric"):
        slq(MatrixOperator(B), steps=5)

    class Noisy(MatrixOperator):
        def matmat(self, V):
            return super().matmat(V) * (1 + 0.1 * torch.rand(()))

    # random per product: the run's first two products no longer agree as a symmetric matrix's would
    with pytest.raises(ValueError, match="not symmetric|not deterministic"):
        slq(Noisy(A), steps=5)

    class Drifting(MatrixOperator):  # the same matrix for the run's 5 products, then another (changed data)
        calls = 0

        def matmat(self, V):
            Drifting.calls += 1
            return super().matmat(V) * (1.0 if Drifting.calls <= 5 else 1.01)

    with pytest.raises(ValueError, match="not deterministic"):
        slq(Drifting(A), steps=5)
    assert Drifting.calls == 6  # the checks and the residuals share one product after the run
    slq(MatrixOperator(B), steps=5, check=False)  # the check can be turned off
    with pytest.raises(ValueError, match="not symmetric"):
        slq(MatrixOperator(B), steps=1)  # one step: check_operator itself, before the run


def test_check_operator_asymmetry_is_relative_to_the_products():
    from flatbook.spectrum import check_operator

    # A = [[0, 1], [0, 0]]: u^T A v - v^T A u = u0 v1 - v0 u1 = det[u v]; |A u| = |u1|
    A = torch.tensor([[0.0, 1.0], [0.0, 0.0]], dtype=torch.float64)
    gen = torch.Generator(device="cpu").manual_seed(3 + 7919)  # the check's own draws for seed 3
    U = torch.randn(2, 2, generator=gen, dtype=torch.float64)
    U = U / U.norm(dim=0, keepdim=True)
    expected = abs(float(torch.linalg.det(U))) / float(U[1].abs().max())
    assert check_operator(MatrixOperator(A), seed=3, rtol=math.inf) == pytest.approx(expected, rel=1e-14)
    # a random non-symmetric 50 x 50 matrix, by hand in NumPy; scaling the operator changes nothing
    B = np.random.default_rng(0).standard_normal((50, 50))
    gen = torch.Generator(device="cpu").manual_seed(0 + 7919)
    U = torch.randn(50, 2, generator=gen, dtype=torch.float64)
    u, v = (U / U.norm(dim=0, keepdim=True)).T.numpy()
    by_hand = abs(u @ B @ v - v @ B @ u) / max(np.linalg.norm(B @ u), np.linalg.norm(B @ v))
    assert check_operator(MatrixOperator(B), rtol=math.inf) == pytest.approx(by_hand, rel=1e-12)
    assert check_operator(MatrixOperator(1e3 * B), rtol=math.inf) == pytest.approx(by_hand, rel=1e-12)


def test_float32_basis_and_chunked_reorthogonalisation_agree():
    A, eig = random_symmetric(P=200, seed=2)
    a = slq(MatrixOperator(A), steps=60, probes=3, seed=1)
    b = slq(MatrixOperator(A), steps=60, probes=3, seed=1, basis_dtype=torch.float32)
    assert a.lambda_max == pytest.approx(eig[-1], rel=1e-10)
    assert b.lambda_max == pytest.approx(eig[-1], rel=1e-5)
    assert np.allclose(np.sort(a.nodes[0])[-5:], np.sort(b.nodes[0])[-5:], rtol=1e-4)


def test_from_dict_validates():
    sp = slq(MatrixOperator(np.diag([1.0, 2.0, 3.0])), steps=3)
    d = sp.to_dict()
    with pytest.raises(ValueError, match="lacks"):
        Spectrum.from_dict({k: v for k, v in d.items() if k != "weights"})
    with pytest.raises(ValueError, match="sum to 1"):
        Spectrum.from_dict({**d, "weights": [[0.5, 0.1, 0.1]]})


def test_lambda_max_and_its_standard_error_are_one_quantity():
    """lambda_max is the mean over probes of each probe's top Ritz value, and lambda_max_se the
    standard error of that mean (NaN with one probe: unknown, never 0); on a constructed spectrum."""
    import math

    from flatbook.spectrum import Spectrum

    nodes = np.array([[3.0, 1.0, np.nan], [2.5, 0.5, 0.1], [3.5, 2.0, 1.0]])
    weights = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [0.1, 0.1, 0.8]])
    sp = Spectrum(nodes, weights, num_params=10, top_residuals=[1e-3, 2e-3, 5e-4])
    tops = np.array([3.0, 2.5, 3.5])
    assert sp.lambda_max == pytest.approx(tops.mean())
    assert sp.lambda_max_se == pytest.approx(tops.std(ddof=1) / math.sqrt(3))
    assert sp.lambda_max_residual == pytest.approx(2e-3)
    one = Spectrum(nodes[:1], weights[:1], num_params=10)
    assert one.lambda_max == 3.0 and math.isnan(one.lambda_max_se) and math.isnan(one.lambda_max_residual)
    again = Spectrum.from_dict(sp.to_dict())
    assert np.array_equal(again.top_residuals, sp.top_residuals) and again.lambda_max == sp.lambda_max
    with pytest.raises(ValueError, match="one value per probe"):
        Spectrum(nodes, weights, num_params=10, top_residuals=[1.0])


def test_ritz_residual_is_measured_not_the_recurrence_estimate():
    """The residual slq reports is ||A y - theta y|| of its top Ritz pair, checked against the dense
    matrix in float64; with float32 products the recurrence's beta_m |u_m| (res.top_residuals())
    falls far below what the float32 products can resolve, while the measured residual cannot."""
    from flatbook.spectrum import ritz_residuals

    A, eig = random_symmetric(P=200, seed=3, spread=1000.0)  # a well-separated top: converges fast
    for dtype in (torch.float64, torch.float32):
        op = MatrixOperator(A, dtype=dtype)
        s = slq(op, steps=60, probes=2, seed=1)
        res = lanczos(op, steps=60, probes=2, seed=1)
        Y = res.top_vectors.numpy()
        theta = np.nanmax(s.nodes, axis=1)
        direct = np.linalg.norm(A @ Y - Y * theta, axis=0)
        if dtype == torch.float64:
            np.testing.assert_allclose(s.top_residuals, direct, rtol=1e-6, atol=1e-10)
        else:
            assert np.all(s.top_residuals > 3e-8 * eig[-1])  # float32 rounding (eps 6e-8) of a product of norm 1000
            assert np.all(res.top_residuals() < 1e-3 * s.top_residuals)  # the recurrence claims far better
        # the same residual, measured by another product: equal up to the rounding of A y (~1e-16 x ||A||)
        np.testing.assert_allclose(ritz_residuals(op, res.top_vectors, theta), s.top_residuals, rtol=1e-9,
                                   atol=1e-14 * eig[-1])
        assert abs(s.lambda_max - eig[-1]) <= s.lambda_max_residual + 1e-9 * eig[-1]
