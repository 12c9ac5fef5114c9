"""A small convolutional network for scikit-learn's 8x8 digits.

Two 3x3 convolutions (padding 1, relu) with ``channels`` channels, a 2x2 average pool and a
linear readout: a LeNet-like network at the scale of the digits, as in Goldwaser & Ge
(2022)'s experiments (a LeNet variant with 50 channels on MNIST and CIFAR-10). Weights
share across the 64 pixel positions, so a forward pass costs many more multiply-adds than
the network has parameters: the case where materializing the Jacobian pays
(:mod:`ntk_lib.iterative`).

Taught in lesson 10.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from . import _checks
from .device import generator, resolve


class ConvNet(nn.Module):
    """``f(x) = W_3 avgpool(relu(conv_2(relu(conv_1(x))))) + b_3``, logits of shape ``(N, d_out)``.

    Standard parametrization with He initialisation: conv weights ``N(0, 2 / fan_in)``,
    readout ``N(0, 1 / fan_in)``, biases zero; drawn in float64 on the CPU from ``seed``
    and cast, so the same seed gives the same network on every device and dtype.

    Args:
        channels: channels of both convolutions.
        d_out: number of outputs (classes).
        side: the images are ``side x side`` (even); inputs may be flattened, ``(N, side^2)``,
            or images, ``(N, 1, side, side)``.
        seed, device, dtype: initialisation seed (int or generator), defaults
            ``default_device()`` and float32.
    """

    def __init__(
        self,
        channels: int = 16,
        d_out: int = 10,
        *,
        side: int = 8,
        seed: int | torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.channels = _checks.positive_int("channels", channels)
        self.d_out = _checks.positive_int("d_out", d_out)
        self.side = _checks.positive_int("side", side)
        if side % 2:
            raise ValueError(f"side must be even (the images are pooled 2x2); got {side}")
        device, dtype = resolve(device, dtype)
        gen = generator(seed)
        self.conv1 = nn.Conv2d(1, channels, 3, padding=1, device=device, dtype=dtype)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, device=device, dtype=dtype)
        self.readout = nn.Linear(channels * (side // 2) ** 2, d_out, device=device, dtype=dtype)
        with torch.no_grad():
            for layer, gain in ((self.conv1, 2.0), (self.conv2, 2.0), (self.readout, 1.0)):
                fan_in = layer.weight[0].numel()
                w = torch.randn(layer.weight.shape, generator=gen, dtype=torch.float64) * math.sqrt(
                    gain / fan_in
                )
                layer.weight.copy_(w)
                layer.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.side
        if not isinstance(x, torch.Tensor) or x.shape[1:] not in ((s * s,), (1, s, s)):
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must have shape (N, {s * s}) or (N, 1, {s}, {s}); got {shape}")
        h = torch.relu(self.conv1(x.reshape(-1, 1, s, s)))
        h = torch.relu(self.conv2(h))
        return self.readout(nn.functional.avg_pool2d(h, 2).flatten(1))
