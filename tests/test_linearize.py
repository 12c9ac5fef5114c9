"""Taylor models: exact at theta_0, affine (or quadratic) in theta - theta_0, trainable, and
closer to the network as the width grows."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call, hessian, jacrev

from ntk_lib import MLP, data, empirical_ntk
from ntk_lib.dynamics import train_gd
from ntk_lib.linearize import linearize
from ntk_lib.plotting import loglog_slope

F64 = torch.float64


def _net(width=16, activation="erf", depth=1, seed=0):
    return MLP(2, width, depth, activation=activation, sigma_b=0.2, seed=seed, dtype=F64, device="cpu")


def _set_theta(taylor, delta):
    with torch.no_grad():
        for p, p0, d in zip(taylor.theta, taylor.theta0.values(), delta):
            p.copy_(p0 + d)


def test_taylor_models_against_explicit_jacobian_and_hessian():
    net = _net(5)
    x, _ = data.regression_1d(3, dtype=F64, device="cpu")
    lin, quad = linearize(net), linearize(net, order=2)
    gen = torch.Generator().manual_seed(0)
    delta = [0.3 * torch.randn(p.shape, generator=gen, dtype=F64) for p in net.parameters()]
    _set_theta(lin, delta)
    _set_theta(quad, delta)
    names = [n for n, _ in net.named_parameters()]
    theta0 = {n: p.detach() for n, p in net.named_parameters()}
    flat0 = torch.cat([p.reshape(-1) for p in theta0.values()])
    d = torch.cat([t.reshape(-1) for t in delta])

    def f_flat(flat, xi):
        params, i = {}, 0
        for n in names:
            params[n] = flat[i : i + theta0[n].numel()].reshape(theta0[n].shape)
            i += theta0[n].numel()
        return functional_call(net, params, (xi[None],))[0]

    for xi, fl, fq in zip(x, lin(x), quad(x)):
        f0 = f_flat(flat0, xi)
        j = jacrev(f_flat)(flat0, xi)
        h = hessian(f_flat)(flat0, xi)
        assert fl.item() == pytest.approx((f0 + j @ d).item(), abs=1e-12)
        assert fq.item() == pytest.approx((f0 + j @ d + 0.5 * d @ h @ d).item(), abs=1e-12)


def test_exact_at_theta0_same_ntk_and_network_untouched():
    net = _net(32, "relu", depth=2)
    x, y = data.regression_1d(8, dtype=F64, device="cpu")
    before = [p.detach().clone() for p in net.parameters()]
    lin = linearize(net)
    torch.testing.assert_close(lin(x), net(x), rtol=0, atol=0)
    torch.testing.assert_close(empirical_ntk(lin, x), empirical_ntk(net, x), rtol=1e-12, atol=1e-12)
    train_gd(lin, x, y, lr=0.5, steps=5)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
    assert sum(p.numel() for p in lin.parameters() if p.requires_grad) == sum(p.numel() for p in before)


def test_linear_model_is_affine_in_the_parameter_change():
    net = _net(8, "tanh")
    x, _ = data.regression_1d(4, dtype=F64, device="cpu")
    lin = linearize(net)
    gen = torch.Generator().manual_seed(1)
    d1 = [torch.randn(p.shape, generator=gen, dtype=F64) for p in net.parameters()]
    d2 = [torch.randn(p.shape, generator=gen, dtype=F64) for p in net.parameters()]
    outs = []
    for delta in (d1, d2, [0.3 * a - 1.7 * b for a, b in zip(d1, d2)]):
        _set_theta(lin, delta)
        outs.append(lin(x).detach())
    f0 = net(x).detach()
    torch.testing.assert_close(outs[2] - f0, 0.3 * (outs[0] - f0) - 1.7 * (outs[1] - f0), rtol=1e-12, atol=1e-12)


def test_linearised_training_tracks_the_network_better_as_width_grows():
    """Lee et al. 2019, Thm 2.1: sup_t |f_t - f_lin,t| = O(n^-1/2). Fitted slope over 4 widths
    (3 seeds each) must be in [-0.8, -0.3]."""
    x, y = data.regression_1d(12, dtype=F64, device="cpu")
    widths, gaps = [64, 256, 1024, 4096], []
    for width in widths:
        g = []
        for seed in range(3):
            net = _net(width, "relu", seed=seed)
            lin = linearize(net)
            train_gd(net, x, y, lr=1.0, steps=40)
            train_gd(lin, x, y, lr=1.0, steps=40)
            g.append((net(x) - lin(x)).norm().item())
        gaps.append(sum(g) / len(g))
    slope, _ = loglog_slope(widths, gaps)
    assert -0.8 <= slope <= -0.3, (slope, gaps)


def test_second_order_beats_first_order_on_the_same_run():
    """Early in training, with a smooth activation, the quadratic model is closer to the network
    on every seed, and by a clear margin on average (measured ratio ~0.4-0.7 at width 512)."""
    x, y = data.regression_1d(12, dtype=F64, device="cpu")
    ratios = []
    for seed in range(3):
        net = _net(512, "erf", seed=seed)
        lin, quad = linearize(net), linearize(net, order=2)
        for m in (net, lin, quad):
            train_gd(m, x, y, lr=1.0, steps=10)
        with torch.no_grad():
            ratios.append(((quad(x) - net(x)).norm() / (lin(x) - net(x)).norm()).item())
    assert max(ratios) < 1.0 and sum(ratios) / 3 < 0.8, ratios


def test_linearize_rejects_bad_input():
    with pytest.raises(ValueError, match="order must be 1 or 2"):
        linearize(_net(), order=3)
    with pytest.raises(TypeError, match="order"):
        linearize(_net(), order=1.5)
    with pytest.raises(TypeError, match="model"):
        linearize("net")
    frozen = _net().requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        linearize(frozen)
