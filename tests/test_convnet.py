"""The small convolutional network of lesson 10: its formula, initialisation and input checks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ntk_lib import data
from ntk_lib.convnet import ConvNet

F64 = torch.float64


def test_forward_is_the_documented_formula():
    net = ConvNet(5, d_out=3, seed=0, dtype=F64, device="cpu")
    with torch.no_grad():
        for p in net.parameters():  # non-zero biases, so that they are checked too
            p.add_(
                0.1
                * torch.randn(
                    p.shape, generator=torch.Generator().manual_seed(p.numel()), dtype=F64
                )
            )
    x, _, _, _ = data.digits(7, 10, dtype=F64, device="cpu")
    img = x.reshape(7, 1, 8, 8)
    h = torch.relu(F.conv2d(img, net.conv1.weight, net.conv1.bias, padding=1))
    h = torch.relu(F.conv2d(h, net.conv2.weight, net.conv2.bias, padding=1))
    expected = F.avg_pool2d(h, 2).reshape(7, -1) @ net.readout.weight.T + net.readout.bias
    torch.testing.assert_close(net(x), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(net(img), expected, rtol=1e-12, atol=1e-12)
    # each point's output depends on that point only (no mixing across the batch)
    torch.testing.assert_close(net(x[2:3]), expected[2:3], rtol=1e-12, atol=1e-12)
    assert net(x).shape == (7, 3)


def test_initialisation_is_he_and_reproducible():
    """Weights N(0, 2 / fan_in) (readout 1 / fan_in), biases 0: the sample standard deviation of
    the 9216 conv2 weights is within 4% (about 5 standard errors) of sqrt(2 / (9 * 32))."""
    net = ConvNet(32, seed=1, dtype=F64, device="cpu")
    assert net.conv2.weight.std().item() == pytest.approx(math.sqrt(2 / (9 * 32)), rel=0.04)
    assert net.readout.weight.std().item() == pytest.approx(math.sqrt(1 / (32 * 16)), rel=0.04)
    assert all(
        float(b.detach().abs().max()) == 0
        for b in (net.conv1.bias, net.conv2.bias, net.readout.bias)
    )
    again, single = ConvNet(32, seed=1, dtype=F64, device="cpu"), ConvNet(32, seed=1, device="cpu")
    for a, b, c in zip(net.parameters(), again.parameters(), single.parameters()):
        assert torch.equal(a, b) and c.dtype == torch.float32
        torch.testing.assert_close(c.to(F64), a, rtol=1e-7, atol=1e-7)
    assert not torch.equal(
        ConvNet(32, seed=2, dtype=F64, device="cpu").conv2.weight, net.conv2.weight
    )


def test_other_image_sizes():
    net = ConvNet(4, d_out=2, side=12, seed=0, device="cpu")
    assert net(torch.zeros(3, 144)).shape == (3, 2)
    assert net.readout.in_features == 4 * 36


def test_convnet_rejects_bad_input():
    with pytest.raises(ValueError, match="channels"):
        ConvNet(0)
    with pytest.raises(ValueError, match="side must be even"):
        ConvNet(4, side=7)
    with pytest.raises(TypeError, match="d_out"):
        ConvNet(4, d_out=2.5)
    net = ConvNet(4, seed=0, device="cpu")
    with pytest.raises(ValueError, match=r"x must have shape \(N, 64\) or \(N, 1, 8, 8\)"):
        net(torch.zeros(3, 63))
