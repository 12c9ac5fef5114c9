"""Spectral norms, the Marchenko–Pastur edge, the spectral condition on an MLP, and the
one-step measurements on the deep linear network of Pleiss Lecture 11 §2."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch

from ntk_lib import spectral as sp
from ntk_lib.models import MLP
from ntk_lib.plotting import loglog_slope

F64 = torch.float64


def test_mp_edge_formula_and_sampled_norms():
    """Mean of ||W|| over 3 seeds at 1024 x 512 within 2% of sigma (sqrt(M) + sqrt(m)).

    The largest singular value sits at the edge up to a Tracy–Widom fluctuation (and mean
    shift) of relative size O(min(M, m)^{-2/3}) ~ 1.6% * O(1) constant (~0.3 here); 2% leaves
    room for that without letting a wrong edge (e.g. sigma sqrt(M + m), 10% low) pass.
    """
    assert sp.mp_edge(4, 9, 0.5) == pytest.approx(0.5 * (2 + 3), rel=1e-15)
    M, m, sigma = 1024, 512, 0.7
    edge = sp.mp_edge(M, m, sigma)
    norms = []
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        W = sigma * torch.randn(M, m, generator=g, dtype=F64)
        norms.append(float(sp.spectral_norm(W, method="exact")))
    assert abs(np.mean(norms) / edge - 1) < 0.02
    assert abs(np.mean(norms) / (sigma * math.sqrt(M + m)) - 1) > 0.05


def test_power_iteration_equals_exact():
    g = torch.Generator().manual_seed(1)
    W = torch.randn(300, 120, generator=g, dtype=F64)
    exact = sp.spectral_norm(W, method="exact")
    for A in (W, W.T):  # both Gram sides
        power = sp.spectral_norm(A, method="power", iters=5000, tol=1e-14)
        assert abs(float(power / exact) - 1) < 1e-6
    # a rank-one matrix converges at once, and auto picks exact at this size
    u, v = torch.randn(50, dtype=F64, generator=g), torch.randn(30, dtype=F64, generator=g)
    R = torch.outer(u, v)
    assert float(sp.spectral_norm(R, method="power", iters=2)) == pytest.approx(
        float(u.norm() * v.norm()), rel=1e-12
    )
    assert torch.equal(sp.spectral_norm(W), exact)


def test_batched_shapes():
    g = torch.Generator().manual_seed(2)
    W = torch.randn(3, 4, 20, 10, generator=g, dtype=F64)
    for method in sp.METHODS:
        out = sp.spectral_norm(W, method=method, iters=5000, tol=1e-14)
        assert out.shape == (3, 4) and out.dtype == F64
    exact = sp.spectral_norm(W, method="exact")
    torch.testing.assert_close(
        sp.spectral_norm(W, method="power", iters=5000, tol=1e-14), exact, rtol=1e-6, atol=0
    )
    torch.testing.assert_close(exact[1, 2], torch.linalg.svdvals(W[1, 2])[0])
    # a zero matrix in a batch gives 0, not NaN
    Z = torch.stack([W[0, 0], torch.zeros(20, 10, dtype=F64)])
    assert sp.spectral_norm(Z, method="power")[1] == 0
    assert sp.spectral_norm([[3, 0], [0, 4]]).item() == pytest.approx(4.0)


def _identity_mlp() -> MLP:
    return MLP(5, 8, 2, activation="identity", bias=False, seed=0, dtype=F64, device="cpu")


def test_spectral_report_by_hand():
    model = _identity_mlp()
    shapes = [(8, 5), (8, 8), (1, 8)]
    rep = sp.spectral_report(model)
    assert [(r.fan_out, r.fan_in) for r in rep] == shapes
    for r, layer in zip(rep, model.layers, strict=True):
        W = layer.scale.weight_mult * layer.weight.detach()
        s1 = float(torch.linalg.svdvals(W)[0])
        assert r.target == pytest.approx(math.sqrt(r.fan_out / r.fan_in), rel=1e-15)
        assert r.norm == pytest.approx(s1, rel=1e-12)
        assert r.ratio == pytest.approx(s1 / r.target, rel=1e-12)
        assert r.update_norm is None
    with pytest.raises(AttributeError):  # frozen
        rep[0].norm = 0.0
    # updates as a list, as a dict, and as a second model agree
    g = torch.Generator().manual_seed(3)
    deltas = [torch.randn(*s, generator=g, dtype=F64) for s in shapes]
    other = _identity_mlp()
    with torch.no_grad():
        for layer, d in zip(other.layers, deltas, strict=True):
            layer.weight += d
    for upd in (deltas, dict(enumerate(deltas)), other):
        rep = sp.spectral_report(model, upd)
        for r, layer, d in zip(rep, model.layers, deltas, strict=True):
            s1 = float(torch.linalg.svdvals(layer.scale.weight_mult * d)[0])
            assert r.update_norm == pytest.approx(s1, rel=1e-10)
            assert r.update_ratio == pytest.approx(s1 / r.target, rel=1e-10)
    part = sp.spectral_report(model, {2: deltas[2]})
    assert part[0].update_norm is None and part[2].update_norm is not None


def _step(name, D, P, seed, spectra=False):
    pr = sp.deep_linear_preset(name, D, P)
    x = torch.randn(P, generator=torch.Generator().manual_seed(1000 + seed), dtype=F64)
    return sp.deep_linear_step(
        x,
        1.0,
        widths=pr.widths,
        sigmas=pr.sigmas,
        lrs=pr.lrs,
        seed=seed,
        spectra=spectra,
        device="cpu",
    )


def test_updates_are_rank_one():
    for name in sp.PRESETS:
        r = _step(name, 200, 16, 0, spectra=True)
        assert r.dW_ranks == (1, 1, 1)
        assert max(r.dW_sv_ratios) < 1e-10
    # the update of the first layer satisfies ||Delta h_1|| = ||Delta W_1|| ||x|| (lecture §2.3)
    P = 16
    x = torch.randn(P, generator=torch.Generator().manual_seed(1000), dtype=F64)
    r = _step("lecture", 200, P, 0, spectra=True)
    assert r.dh_norms[0] == pytest.approx(r.dW_norms[0] * float(x.norm()), rel=1e-10)


def test_lecture_preset_values():
    pr = sp.deep_linear_preset("lecture", 256, 16)
    assert pr.widths == (16, 256, 256, 1)
    assert pr.sigmas == pytest.approx((1 / 4, 1 / 16, 1 / 256))
    assert pr.lrs == pytest.approx((16.0, 1.0, 1 / 256))


WIDTHS = [2**k for k in range(7, 12)]


@functools.cache
def _sweep(name, P=16, seeds=range(3)):
    """Sums over seeds of (||h_i||, ||Delta h_i||, ||Delta W_i||) at each width of WIDTHS
    (cached: call it with the name only, so that every test shares one sweep per preset)."""
    h, dh, dW = (np.zeros((len(WIDTHS), 3)) for _ in range(3))
    for j, D in enumerate(WIDTHS):
        for s in seeds:
            r = _step(name, D, P, s)
            h[j] += r.h_norms
            dh[j] += r.dh_norms
            dW[j] += r.dW_norms
    return h, dh, dW


def _exponents(name):
    _, dh, dW = _sweep(name)
    return (
        [loglog_slope(WIDTHS, dh[:, i])[0] for i in range(3)],
        [loglog_slope(WIDTHS, dW[:, i])[0] for i in range(3)],
    )


def test_lecture_preset_exponents_and_contrasts():
    """Fitted exponents of D (128..2048, P = 16, mean over 3 seeds) within 0.1 of the
    predictions for the lecture's muP preset; NTK and SP miss at least one by more."""
    pred = np.array(sp.LECTURE_EXPONENTS["dh"] + sp.LECTURE_EXPONENTS["dW"])
    dh, dW = _exponents("lecture")
    assert np.abs(np.array(dh + dW) - pred).max() < 0.1, (dh, dW)
    for name in ("ntk", "sp"):
        dh, dW = _exponents(name)
        assert np.abs(np.array(dh + dW) - pred).max() > 0.3, (name, dh, dW)


def test_bad_input_rejected():
    with pytest.raises(ValueError, match="W must be a matrix"):
        sp.spectral_norm(torch.ones(3))
    with pytest.raises(ValueError, match="method"):
        sp.spectral_norm(torch.ones(3, 3), method="svd")
    with pytest.raises(ValueError, match="iters"):
        sp.spectral_norm(torch.ones(3, 3), iters=0)
    with pytest.raises(ValueError, match="W contains NaN"):
        sp.spectral_norm(torch.full((2, 2), float("nan")))
    with pytest.raises(ValueError, match="M must be"):
        sp.mp_edge(-3, 4)
    with pytest.raises(ValueError, match="sigma must be >= 0"):
        sp.mp_edge(3, 4, -1.0)
    with pytest.raises(ValueError, match="name must be one of"):
        sp.deep_linear_preset("mup", 8, 4)
    with pytest.raises(ValueError, match="D must be"):
        sp.deep_linear_preset("lecture", 0, 4)
    pr = sp.deep_linear_preset("lecture", 8, 4)
    kw = dict(widths=pr.widths, sigmas=pr.sigmas, lrs=pr.lrs, seed=0, device="cpu")
    with pytest.raises(ValueError, match=r"x must have widths\[0\] = 4"):
        sp.deep_linear_step(torch.ones(5), 1.0, **kw)
    with pytest.raises(ValueError, match="x must be a 1-D vector"):
        sp.deep_linear_step(torch.ones(2, 4), 1.0, **kw)
    with pytest.raises(ValueError, match="sigmas must have one entry per layer"):
        sp.deep_linear_step(torch.ones(4), 1.0, **{**kw, "sigmas": (1.0, 1.0)})
    with pytest.raises(ValueError, match=r"lrs\[1\] must be >= 0"):
        sp.deep_linear_step(torch.ones(4), 1.0, **{**kw, "lrs": (1.0, -1.0, 1.0)})
    with pytest.raises(ValueError, match=r"widths\[1\] must be a positive"):
        sp.deep_linear_step(torch.ones(4), 1.0, **{**kw, "widths": (4, -8, 8, 1)})
    with pytest.raises(TypeError, match="model must be an ntk_lib.models.MLP"):
        sp.spectral_report(torch.ones(3, 3))
    model = MLP(5, 8, 1, bias=False, seed=0, device="cpu")
    with pytest.raises(ValueError, match=r"update\[0\] must have the layer's weight shape"):
        sp.spectral_report(model, [torch.ones(3, 3), torch.ones(1, 8)])
    with pytest.raises(ValueError, match="one Delta W per layer"):
        sp.spectral_report(model, [torch.ones(8, 5)])
    with pytest.raises(ValueError, match="update keys must be layer indices"):
        sp.spectral_report(model, {5: torch.ones(8, 5)})


@pytest.mark.gpu
def test_gpu_parity():
    W = torch.randn(4, 60, 40, generator=torch.Generator().manual_seed(0), dtype=F64)
    cpu = sp.spectral_norm(W, method="power", iters=3000, tol=1e-14)
    gpu = sp.spectral_norm(W.cuda(), method="power", iters=3000, tol=1e-14)
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-8, atol=0)
    pr = sp.deep_linear_preset("lecture", 64, 8)
    x = torch.randn(8, dtype=F64)
    a = sp.deep_linear_step(
        x, 1.0, widths=pr.widths, sigmas=pr.sigmas, lrs=pr.lrs, seed=0, device="cpu"
    )
    b = sp.deep_linear_step(
        x, 1.0, widths=pr.widths, sigmas=pr.sigmas, lrs=pr.lrs, seed=0, device="cuda"
    )
    np.testing.assert_allclose(a.dh_norms, b.dh_norms, rtol=1e-9)


# --------------------------------------------------------------------------------------
# Added for lesson 06: the Marchenko–Pastur density, alignment, the update tensors and the
# predicted exponents of every preset.


def test_mp_singular_density_normalised_and_matches_samples():
    """The density integrates to 1, its second moment is sigma^2 max(M, m) (= ||W||_F^2 / min),
    it vanishes outside [sigma |sqrt(M) - sqrt(m)|, mp_edge], and the empirical distribution
    of the singular values of one 1000 x 400 sample is within 0.03 of its CDF (Kolmogorov
    distance; finite-size corrections are O(1/min(M, m)) in the bulk, a wrong aspect ratio or
    scale gives > 0.1)."""
    sigma = 0.3
    for M, m in ((1000, 400), (400, 1000), (300, 300)):
        N, n = max(M, m), min(M, m)
        edge = sp.mp_edge(M, m, sigma)
        s = torch.linspace(0, 1.01 * edge, 400_001, dtype=F64)
        q = sp.mp_singular_density(s, M, m, sigma)
        assert q.shape == s.shape and q.dtype == F64 and bool((q >= 0).all())
        assert float(torch.trapezoid(q, s)) == pytest.approx(1.0, abs=1e-4)
        assert float(torch.trapezoid(q * s**2, s)) == pytest.approx(sigma**2 * N, rel=1e-4)
        lo = sigma * (math.sqrt(N) - math.sqrt(n))
        assert float(q[(s < 0.999 * lo) | (s > edge)].abs().max()) == 0.0
    M, m = 1000, 400
    s = torch.linspace(0, 1.01 * sp.mp_edge(M, m, sigma), 100_001, dtype=F64)
    cdf = torch.cumulative_trapezoid(sp.mp_singular_density(s, M, m, sigma), s)
    W = sigma * torch.randn(M, m, generator=torch.Generator().manual_seed(0), dtype=F64)
    sv = torch.linalg.svdvals(W).sort().values
    emp = torch.searchsorted(sv, s[1:]).to(F64) / m
    assert float((cdf - emp).abs().max()) < 0.03
    wrong = torch.cumulative_trapezoid(sp.mp_singular_density(s, M, m, 1.2 * sigma), s)
    assert float((wrong - emp).abs().max()) > 0.1
    # square: t = s / (sigma sqrt(N)) follows the quarter-circle law sqrt(4 - t^2) / pi on [0, 2]
    assert float(sp.mp_singular_density(2.0, 4, 4)) == pytest.approx(
        math.sqrt(3) / math.pi / 2, rel=1e-12
    )
    with pytest.raises(ValueError, match="sigma must be > 0"):
        sp.mp_singular_density(1.0, 4, 4, 0.0)
    with pytest.raises(ValueError, match="s contains NaN"):
        sp.mp_singular_density([1.0, float("nan")], 4, 4)


def test_alignment():
    """1 for a rank-one matrix and its own right vector; sqrt(M)/(sqrt(M)+sqrt(m)) for a
    Gaussian matrix and an independent vector (within 5% at 600 x 200); ~ 1/sqrt(m) for a
    random row (mean over 50 draws of |w.v|/(|w||v|) -> sqrt(2/(pi m)) within 20%)."""
    g = torch.Generator().manual_seed(4)
    u, v = torch.randn(40, generator=g, dtype=F64), torch.randn(30, generator=g, dtype=F64)
    assert sp.alignment(torch.outer(u, v), v) == pytest.approx(1.0, rel=1e-12)
    M, m = 600, 200
    A = torch.randn(M, m, generator=g, dtype=F64)
    w = torch.randn(m, generator=g, dtype=F64)
    pred = math.sqrt(M) / (math.sqrt(M) + math.sqrt(m))
    assert sp.alignment(A, w) == pytest.approx(pred, rel=0.05)
    m = 400
    rows = [
        sp.alignment(
            torch.randn(1, m, generator=g, dtype=F64),
            torch.randn(m, generator=g, dtype=F64),
        )
        for _ in range(50)
    ]
    assert np.mean(rows) == pytest.approx(math.sqrt(2 / (math.pi * m)), rel=0.2)
    assert sp.alignment(torch.zeros(3, 2), [1.0, 1.0]) == 0.0
    with pytest.raises(ValueError, match=r"v must have A.shape\[1\] = 2"):
        sp.alignment(torch.ones(3, 2), [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="A must be one matrix"):
        sp.alignment(torch.ones(2, 3, 2), [1.0, 1.0])


def test_deep_linear_update_tensors():
    """The tensors reproduce deep_linear_step's norms; each Delta W_i is the outer product
    -eta_i (grad_{h_i} L) h_{i-1}^T with the backpropagated errors written out by hand, and
    it is perfectly aligned with h_{i-1}."""
    P, D = 12, 40
    pr = sp.deep_linear_preset("lecture", D, P)
    x = torch.randn(P, generator=torch.Generator().manual_seed(7), dtype=F64)
    kw = dict(widths=pr.widths, sigmas=pr.sigmas, lrs=pr.lrs, seed=3, device="cpu")
    u = sp.deep_linear_update(x, 0.5, **kw)
    r = sp.deep_linear_step(x, 0.5, **kw)
    W1, W2, W3 = u.Ws
    assert torch.equal(u.hs[0], x)
    torch.testing.assert_close(u.hs[3], W3 @ W2 @ W1 @ x, rtol=1e-12, atol=0)
    g3 = u.hs[3] - 0.5
    g2 = W3.T @ g3
    g1 = W2.T @ g2
    for got, want in zip(u.grads_h, (g1, g2, g3), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
    for i in range(3):
        torch.testing.assert_close(
            u.dWs[i], -pr.lrs[i] * torch.outer(u.grads_h[i], u.hs[i]), rtol=1e-12, atol=1e-14
        )
        assert sp.alignment(u.dWs[i], u.hs[i]) == pytest.approx(1.0, rel=1e-10)
    assert [float(d.norm()) for d in u.dhs] == pytest.approx(r.dh_norms, rel=1e-12)
    assert [float(h.norm()) for h in u.hs[1:]] == pytest.approx(r.h_norms, rel=1e-12)
    assert u.loss == pytest.approx(r.loss, rel=1e-12)
    new = [(W + dW) for W, dW in zip(u.Ws, u.dWs, strict=True)]
    after = new[2] @ new[1] @ new[0] @ x
    torch.testing.assert_close(u.hs[3] + u.dhs[2], after, rtol=1e-12, atol=1e-14)


def test_preset_exponents_all_presets():
    """Fitted exponents of D (128..2048, P = 16, mean over 3 seeds) of ||Delta h_i||,
    ||Delta W_i|| and ||h_1||, ||h_2|| within 0.1 of PRESET_EXPONENTS for every preset.
    |h_3| is one Gaussian number per draw, too noisy for 3 seeds: its exponent is checked
    through the closed-form second moment E h_3^2 = sigma_3^2 D sigma_2^2 D sigma_1^2 ||x||^2
    (Monte Carlo over 16 seeds at D = 64 and 512, within 4 standard errors), its exact
    exponent, and the exact relation h_3(lecture) = h_3(ntk) / sqrt(D) for
    the same draws."""
    assert sp.PRESET_EXPONENTS["lecture"]["dh"] == sp.LECTURE_EXPONENTS["dh"]
    assert sp.PRESET_EXPONENTS["lecture"]["dW"] == sp.LECTURE_EXPONENTS["dW"]
    P = 16
    for name in sp.PRESETS:
        h = _sweep(name)[0]
        fit = [loglog_slope(WIDTHS, h[:, i])[0] for i in range(2)]
        assert np.abs(np.array(fit) - sp.PRESET_EXPONENTS[name]["h"][:2]).max() < 0.1, (name, fit)
        dh, dW = _exponents(name)
        pred = sp.PRESET_EXPONENTS[name]["dh"] + sp.PRESET_EXPONENTS[name]["dW"]
        assert np.abs(np.array(dh + dW) - pred).max() < 0.1, (name, dh, dW)
    for name in sp.PRESETS:
        for D in (64, 512):
            s1, s2, s3 = sp.deep_linear_preset(name, D, P).sigmas
            vals = []
            for s in range(16):
                x = torch.randn(P, generator=torch.Generator().manual_seed(1000 + s), dtype=F64)
                second_moment = s3**2 * D * s2**2 * D * s1**2 * float(x @ x)
                vals.append(_step(name, D, P, s).h_norms[2] ** 2 / second_moment)
            standard_error = np.std(vals) / math.sqrt(len(vals))
            assert abs(np.mean(vals) - 1) < 4 * standard_error, (name, D, np.mean(vals))

        def rms(D, name=name):  # sqrt(E h_3^2) / ||x|| in closed form
            s1, s2, s3 = sp.deep_linear_preset(name, D, P).sigmas
            return s3 * D * s2 * s1

        fit = math.log(rms(2**20) / rms(2**10)) / math.log(2**10)
        assert fit == pytest.approx(sp.PRESET_EXPONENTS[name]["h"][2], abs=1e-12), (name, fit)
    for s in range(2):
        a, b = _step("lecture", 256, P, s), _step("ntk", 256, P, s)
        assert a.h_norms[2] == pytest.approx(b.h_norms[2] / 16, rel=1e-12)
