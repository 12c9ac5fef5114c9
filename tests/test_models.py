"""MLP: the parametrizations, the initialisation, the shapes, the errors."""

from __future__ import annotations

import math

import pytest
import torch

from ntk_lib import MLP, activations
from ntk_lib.parametrizations import layer_scales

F64 = torch.float64


def test_ntk_and_standard_give_the_same_function_at_init():
    """Same seed, same raw draws: W_ntk * sigma_w/sqrt(n) == W_std, so the outputs agree."""
    x = torch.randn(7, 4, dtype=F64, generator=torch.Generator().manual_seed(0))
    ntk = MLP(4, 50, 3, sigma_w=1.3, sigma_b=0.4, seed=5, dtype=F64, device="cpu")
    std = MLP(4, 50, 3, sigma_w=1.3, sigma_b=0.4, parametrization="standard", seed=5, dtype=F64, device="cpu")
    torch.testing.assert_close(ntk(x), std(x), rtol=1e-12, atol=1e-12)
    # ...but NTK parameters are N(0, 1) while standard ones shrink with fan-in.
    assert ntk.layers[1].weight.std().item() == pytest.approx(1.0, rel=0.05)
    assert std.layers[1].weight.std().item() == pytest.approx(1.3 / math.sqrt(50), rel=0.05)


def test_forward_matches_the_convention():
    m = MLP(3, 6, 2, activation="erf", sigma_w=1.5, sigma_b=0.2, seed=0, dtype=F64, device="cpu")
    x = torch.randn(5, 3, dtype=F64)
    w1, w2, w3 = (layer.weight for layer in m.layers)
    b1, b2, b3 = (layer.bias for layer in m.layers)
    h1 = 1.5 / math.sqrt(3) * x @ w1.T + 0.2 * b1
    h2 = 1.5 / math.sqrt(6) * torch.erf(h1) @ w2.T + 0.2 * b2
    f = 1.5 / math.sqrt(6) * torch.erf(h2) @ w3.T + 0.2 * b3
    torch.testing.assert_close(m(x), f[:, 0], rtol=1e-13, atol=1e-13)


def test_seed_dtype_and_shapes():
    a = MLP(2, 8, 1, seed=3, device="cpu")
    b = MLP(2, 8, 1, seed=3, device="cpu", dtype=F64)
    torch.testing.assert_close(a.layers[0].weight.double(), b.layers[0].weight, rtol=1e-6, atol=1e-7)
    assert a.layers[0].weight.dtype == torch.float32
    assert a(torch.ones(4, 2)).shape == (4,)
    assert MLP(2, 8, 1, d_out=3, seed=0, device="cpu")(torch.ones(4, 2)).shape == (4, 3)
    assert MLP(2, [3, 5, 7], 3, seed=0, device="cpu").widths == [3, 5, 7]
    assert all(layer.bias is None for layer in MLP(2, 8, 2, bias=False, seed=0, device="cpu").layers)
    assert len(MLP(2, 8, 0, seed=0, device="cpu").layers) == 1


def test_param_groups_and_layer_scales():
    m = MLP(2, 8, 2, seed=0, device="cpu")
    groups = m.param_groups(0.1)
    assert len(groups) == 3 and all(g["lr"] == 0.1 for g in groups)
    assert sum(len(g["params"]) for g in groups) == len(list(m.parameters()))
    s = layer_scales("ntk", [4, 16], [16, 1], sigma_w=2.0, sigma_b=0.5)
    assert s[1].weight_mult == pytest.approx(0.5) and s[1].weight_std == 1.0 and s[1].bias_mult == 0.5


@pytest.mark.parametrize("name", activations.NAMES)
def test_activation_derivatives_match_autograd(name):
    phi, dphi = activations.get(name)
    h = torch.linspace(-3, 3, 101, dtype=F64).requires_grad_()
    (grad,) = torch.autograd.grad(phi(h).sum(), h)
    torch.testing.assert_close(dphi(h.detach()), grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(d_in=0), ValueError, "d_in"),
        (dict(width=-4), ValueError, "width"),
        (dict(width=4.5), TypeError, "width"),
        (dict(width=[4, 4, 4]), ValueError, "width"),
        (dict(depth=-1), ValueError, "depth"),
        (dict(activation="gelu"), ValueError, "activation"),
        (dict(parametrization="muP"), ValueError, "parametrization"),
        (dict(sigma_w=-1.0), ValueError, "sigma_w"),
        (dict(sigma_w=0.0), ValueError, "sigma_w"),
        (dict(sigma_b=-0.5), ValueError, "sigma_b"),
        (dict(sigma_b=float("nan")), ValueError, "sigma_b"),
        (dict(d_out=0), ValueError, "d_out"),
        (dict(seed=-3), ValueError, "seed"),
        (dict(dtype=torch.int64), ValueError, "dtype"),
    ],
)
def test_mlp_rejects_bad_arguments(kwargs, error, match):
    args = dict(d_in=3, width=4, depth=2) | kwargs
    with pytest.raises(error, match=match):
        MLP(args.pop("d_in"), args.pop("width"), args.pop("depth"), device="cpu", **args)


def test_forward_rejects_mismatched_input():
    m = MLP(3, 4, 1, seed=0, device="cpu")
    with pytest.raises(ValueError, match=r"x must be a tensor of shape \(N, d_in=3\); got \(5, 2\)"):
        m(torch.ones(5, 2))
    with pytest.raises(ValueError, match="x must be"):
        m(torch.ones(3))
    with pytest.raises(ValueError, match="lr"):
        m.param_groups(-1.0)


def test_no_dead_bias_parameters_when_sigma_b_is_zero():
    """NTK parametrization, sigma_b = 0: the bias multiplier is 0, so a bias could never move
    or change the output; by default it is left out, with the weights' draws unchanged."""
    x = torch.randn(5, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    auto = MLP(3, 16, 2, d_out=2, seed=4, dtype=F64, device="cpu")
    old = MLP(3, 16, 2, d_out=2, seed=4, bias=True, dtype=F64, device="cpu")
    assert all(layer.bias is None for layer in auto.layers)
    assert all(torch.equal(a.weight, b.weight) for a, b in zip(auto.layers, old.layers))
    torch.testing.assert_close(auto(x), old(x), rtol=0, atol=0)
    n_weights = sum(layer.weight.numel() for layer in old.layers)
    assert sum(p.numel() for p in auto.parameters()) == n_weights
    # The dead biases were N(0, 1): they made ||theta_0|| larger than the weights' norm.
    norm = lambda m: torch.cat([p.reshape(-1) for p in m.parameters()]).norm()  # noqa: E731
    assert norm(auto) < norm(old)
    # Where the bias can matter it stays: sigma_b > 0, or constants in the init
    # (standard: a zero-initialised bias that trains).
    assert all(layer.bias is not None for layer in MLP(3, 8, 2, sigma_b=0.1, seed=0, device="cpu").layers)
    std = MLP(3, 8, 2, parametrization="standard", seed=0, dtype=F64, device="cpu")
    assert all(layer.bias is not None and torch.all(layer.bias == 0) for layer in std.layers)
    assert all(layer.bias is None for layer in MLP(3, 8, 2, sigma_b=0.3, bias=False, seed=0, device="cpu").layers)
    with pytest.raises(TypeError, match="bias"):
        MLP(3, 8, 2, bias="yes", device="cpu")
