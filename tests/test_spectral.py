"""Spectral norms, the Marchenko–Pastur edge, the spectral condition on an MLP, and the
one-step measurements on the deep linear network of Pleiss Lecture 11 §2."""

from __future__ import annotations

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


def _exponents(name, P=16, seeds=range(3)):
    dh = np.zeros((len(WIDTHS), 3))
    dW = np.zeros((len(WIDTHS), 3))
    for j, D in enumerate(WIDTHS):
        for s in seeds:
            r = _step(name, D, P, s)
            dh[j] += r.dh_norms
            dW[j] += r.dW_norms
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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
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
