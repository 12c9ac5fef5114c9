"""abc-parametrizations: the talk's table, the classification theorem, the degeneracy, the MLP mapping."""

from __future__ import annotations

import math

import pytest
import torch

from ntk_lib import MLP
from ntk_lib.parametrizations import ABC, PRESETS, classify, layer_scales, preset, shift

F64 = torch.float64


# The table of Yang & Hu (2021, Table 1 / the talk's summary slide), for L >= 2 hidden layers.
@pytest.mark.parametrize("depth", [2, 3, 5])
@pytest.mark.parametrize(
    ("name", "r", "regime"),
    [("ntk", 0.5, "kernel"), ("sp_lr", 0.5, "kernel"), ("mup", 0.0, "feature learning"), ("sp", -1.0, "unstable")],
)
def test_presets_reproduce_the_table(depth, name, r, regime):
    c = classify(preset(name, depth))
    assert c.r == r and c.regime == regime
    assert c.stable == (regime != "unstable")
    assert c.nontrivial == (regime != "unstable")
    assert c.feature_learning == (regime == "feature learning")
    assert c.kernel_regime == (regime == "kernel")
    if regime != "unstable":
        # Both facets of the table: 2a_{L+1} + c = 1 and a_{L+1} + b_{L+1} + r = 1.
        abc = preset(name, depth)
        assert 2 * abc.a[-1] + abc.c == 1 and abc.a[-1] + abc.b[-1] + c.r == 1


def test_mean_field_and_one_hidden_layer():
    mf = classify(preset("mf", 1))
    assert (mf.r, mf.regime) == (0.0, "feature learning")
    # muP with one hidden layer is mean field shifted by theta = -1/2 (the talk's remark).
    assert shift(preset("mf", 1), -0.5) == preset("mup", 1)
    assert classify(preset("ntk", 1)).r == 0.5
    # With one hidden layer, SP with a 1/n rate has r = 3/2 but is still a stable kernel limit.
    sp_lr = classify(preset("sp_lr", 1))
    assert (sp_lr.r, sp_lr.regime) == (1.5, "kernel")


def test_mup_updates_every_layer_maximally():
    """Proposition 5.3: W^l is updated maximally iff r_l = 0; muP is the unique such choice."""
    assert classify(preset("mup", 4)).r_layers == (0.0,) * 4
    assert classify(preset("ntk", 4)).r_layers == (0.5,) * 4
    # SP with a 1/n rate: the first layer lags by a further n^-1.
    assert classify(preset("sp_lr", 3)).r_layers == (1.5, 0.5, 0.5)


@pytest.mark.parametrize(
    ("abc", "regime", "reason"),
    [
        (ABC((0, 0.5, 0.5), (0, 0, 0), 1.0), "trivial", "trivial"),  # NTK with a 1/n rate
        (ABC((-0.5, 0, 0.5), (0.5, 0.5, 0.5), -0.5), "unstable", "r = -1 < 0"),  # muP, rate too big
        (ABC((0, 0, 0), (0, 0.5, 0), 0.0), "unstable", "a_3 + b_3 = 0 < 1/2"),  # output blows up at init
        (ABC((0, 0, 0.5), (0.5, 0.5, 0.5), 0.0), "unstable", "a_1 + b_1 = 1/2 != 0"),
        (ABC((0, 0, 0.5), (0, 0.25, 0.5), 0.0), "unstable", "a_2 + b_2 = 1/4 != 1/2"),
        # muP's readout with a plain (SP) first layer: features learned, r = 0 (r_1 = 1 > 0).
        (ABC((0, 0, 0.5), (0, 0.5, 0.5), 0.0), "feature learning", "r = 0"),
        # NTK with a smaller readout init: still kernel, with r = 3/4 (on the 2a_{L+1} + c = 1 facet).
        (ABC((0, 0.5, 0.5), (0, 0, 0.25), 0.0), "kernel", "r = 3/4"),
    ],
)
def test_classification_of_other_points(abc, regime, reason):
    c = classify(abc)
    assert c.regime == regime
    assert reason in c.reason


def test_r_matches_definition_3_2_by_hand():
    abc = ABC((0.1, 0.3, -0.2, 0.7), (-0.1, 0.2, 0.7, 0.4), 0.35)
    L = 3
    head = min(0.7 + 0.4, 2 * 0.7 + 0.35) + 0.35 - 1
    r = head + min(2 * 0.1 + 1, 2 * 0.3, 2 * -0.2)
    assert classify(abc).r == pytest.approx(r, abs=1e-12)
    assert abc.depth == L


@pytest.mark.parametrize("theta", [-1.0, -0.25, 0.5, 2.0])
@pytest.mark.parametrize("name", ["ntk", "sp", "sp_lr", "mup"])
def test_shift_preserves_the_classification(name, theta):
    abc = preset(name, 3)
    a, b = classify(abc), classify(shift(abc, theta))
    assert (a.r, a.regime, a.r_layers) == (b.r, b.regime, b.r_layers)


def _sgd_outputs(abc, *, bias, steps=8, lr=0.05, width=96):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(10, 5, generator=gen, dtype=F64)
    y = torch.randn(10, generator=gen, dtype=F64)
    model = MLP(5, width, abc.depth, activation="tanh", sigma_b=0.3, parametrization=abc, bias=bias,
                seed=4, dtype=F64, device="cpu")
    opt = torch.optim.SGD(model.param_groups(lr), lr=lr)
    outs = []
    for _ in range(steps):
        out = model(x)
        outs.append(out.detach())
        opt.zero_grad()
        (0.5 * (out - y).pow(2).mean()).backward()
        opt.step()
    outs.append(model(x).detach())
    return torch.stack(outs)


@pytest.mark.parametrize("theta", [-0.5, 0.3, 1.0])
@pytest.mark.parametrize("name", ["ntk", "sp", "mup"])
@pytest.mark.parametrize("bias", [False, True])
def test_degeneracy_leaves_the_sgd_trajectory_unchanged(name, theta, bias):
    """a_l + theta, b_l - theta, c - 2 theta: same init function, same SGD outputs at every step."""
    ref = _sgd_outputs(preset(name, 2), bias=bias)
    moved = _sgd_outputs(shift(preset(name, 2), theta), bias=bias)
    assert (ref[-1] - ref[0]).abs().max() > 1e-3  # the network did train
    torch.testing.assert_close(moved, ref, rtol=1e-10, atol=1e-12)


def test_ntk_and_standard_are_presets_bit_for_bit():
    """The foundation's NTK and standard layers are sigma_w / sqrt(fan_in) exactly."""
    fan_ins, fan_outs = [7, 33, 50], [33, 50, 1]
    for name, abc in (("ntk", preset("ntk", 2)), ("standard", preset("sp", 2))):
        for s_name, s_abc in zip(layer_scales(name, fan_ins, fan_outs, 1.3, 0.2),
                                 layer_scales(abc, fan_ins, fan_outs, 1.3, 0.2)):
            assert s_name == s_abc
    ntk = layer_scales("ntk", fan_ins, fan_outs, 1.3, 0.2)
    std = layer_scales("standard", fan_ins, fan_outs, 1.3, 0.2)
    for s_ntk, s_std, fan_in in zip(ntk, std, fan_ins):
        assert s_ntk.weight_mult == 1.3 / math.sqrt(fan_in) and s_ntk.weight_std == 1.0
        assert (s_ntk.bias_mult, s_ntk.bias_std) == (0.2, 1.0)
        assert s_std.weight_std == 1.3 / math.sqrt(fan_in) and s_std.weight_mult == 1.0
        assert (s_std.bias_mult, s_std.bias_std, s_std.lr_scale) == (1.0, 0.2, 1.0)


def test_mup_is_standard_at_the_base_width():
    """The mup package's invariant: at the base width muP is SP, bit for bit, training included."""
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    nets = [MLP(3, 64, 3, parametrization=p, base_width=64, seed=2, device="cpu") for p in ("mup", "standard")]
    for net in nets:
        opt = torch.optim.SGD(net.param_groups(0.1), lr=0.1)
        net(x).pow(2).sum().backward()
        opt.step()
    assert torch.equal(nets[0](x), nets[1](x))


def test_mlp_follows_the_abc_scales():
    """W^l = n^{-a_l} w^l with w^l ~ N(0, n^{-2 b_l}) (times sigma_w/sqrt(d) at the input), lr n^{-c}."""
    n, d = 1024, 4
    m = MLP(d, n, 2, parametrization="mup", sigma_w=1.5, seed=0, dtype=F64, device="cpu")
    s = [layer.scale for layer in m.layers]
    assert s[0].weight_mult == pytest.approx(math.sqrt(n)) and s[2].weight_mult == pytest.approx(n**-0.5)
    assert m.layers[0].weight.std().item() == pytest.approx(1.5 / math.sqrt(d) / math.sqrt(n), rel=0.03)
    assert m.layers[1].weight.std().item() == pytest.approx(1.5 / math.sqrt(n), rel=0.03)
    sp_lr = MLP(d, n, 2, parametrization="sp_lr", seed=0, dtype=F64, device="cpu")
    assert [g["lr"] for g in sp_lr.param_groups(1.0)] == pytest.approx([1 / n] * 3)
    mf = MLP(d, n, 1, parametrization="mf", seed=0, dtype=F64, device="cpu")
    assert [g["lr"] for g in mf.param_groups(1.0)] == pytest.approx([n] * 2)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: ABC((0, 0.5), (0, 0, 0), 0), ValueError, "b must have as many"),
        (lambda: ABC((0, float("nan")), (0, 0), 0), ValueError, r"a\[1\] must be finite"),
        (lambda: ABC((0, 0.5), (0, 0), float("inf")), ValueError, "c must be finite"),
        (lambda: ABC("ab", (0, 0), 0), TypeError, "a must be a sequence"),
        (lambda: ABC((), (), 0), ValueError, "a must have L"),
        (lambda: ABC((0, 0), (0, 0), 0, constants_in="both"), ValueError, "constants_in"),
        (lambda: preset("mean_field", 2), ValueError, "name must be one of"),
        (lambda: preset("mf", 2), ValueError, "depth=1 only"),
        (lambda: preset("mup", 0), ValueError, "at least one hidden layer"),
        (lambda: preset("ntk", -1), ValueError, "depth"),
        (lambda: classify((0, 0.5)), TypeError, "abc must be"),
        (lambda: classify(ABC((0,), (0,), 0)), ValueError, "at least one hidden layer"),
        (lambda: shift(preset("ntk", 2), float("nan")), ValueError, "theta"),
        (lambda: MLP(3, 8, 3, parametrization=preset("mup", 2)), ValueError, "L\\+1 = 3 layers"),
        (lambda: MLP(3, 8, 2, parametrization="mup", base_width=0), ValueError, "base_width"),
    ],
)
def test_bad_input_is_rejected_clearly(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_exponents_from_arrays_and_lists():
    import numpy as np

    a = ABC(np.array([-0.5, 0.0, 0.5]), torch.tensor([0.5, 0.5, 0.5]), 0)
    assert a == preset("mup", 2) and classify(ABC([0, 1], [0, 0], -1)).regime == "feature learning"


def test_presets_cover_the_documented_names():
    assert set(PRESETS) == {"ntk", "sp", "sp_lr", "mf", "mup"}
