"""Fully connected networks whose width can be sent to infinity.

Every layer computes ``h = m_w W a + m_b b`` with trained parameters ``W ~ N(0, s_w^2)``
and ``b ~ N(0, s_b^2)``: the *multipliers* ``m`` live in the forward pass and the
*init scales* ``s`` in the initialisation. A parametrization is the choice of
``(m_w, s_w, m_b, s_b)`` per layer, plus a per-layer learning-rate scale:

- ``"ntk"``: ``m_w = sigma_w / sqrt(fan_in)``, ``s_w = 1``, ``m_b = sigma_b``, ``s_b = 1``;
- ``"standard"``: ``m_w = 1``, ``s_w = sigma_w / sqrt(fan_in)``, ``m_b = 1``, ``s_b = sigma_b``.

Both give the same function at initialisation (same NNGP). They differ in what gradient
descent sees: in the NTK parametrization (Jacot et al. 2018) the trained parameters are
the raw ``N(0, 1)`` tensors, so the empirical NTK has the finite infinite-width limit of
:func:`ntk_lib.infinite_width.nngp_ntk`; in the standard one it grows with the width.
Both are rows of the general abc-parametrizations (Yang & Hu 2021) of
:mod:`ntk_lib.parametrizations`, which :class:`MLP` accepts too: by name (``"mup"``,
``"mf"``, ``"sp_lr"``, ...) or as an :class:`~ntk_lib.parametrizations.ABC`.

Taught in lessons 01 and 02 (NTK, standard) and 07-08 (abc, muP).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from . import _checks, activations
from .device import generator, resolve
from .parametrizations import ABC, LayerScale, layer_scales


class Dense(nn.Module):
    """``h = weight_mult * a W^T + bias_mult * b`` with trained ``W`` (out, in) and ``b`` (out,)."""

    def __init__(
        self,
        fan_in: int,
        fan_out: int,
        scale: LayerScale,
        *,
        bias: bool,
        draw_bias: bool | None = None,
        gen: torch.Generator | None,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        super().__init__()
        self.fan_in, self.fan_out, self.scale = fan_in, fan_out, scale
        # Drawn in float64 on the CPU, then cast: the same seed gives the same network
        # in every dtype and on every device.
        w = torch.randn(fan_out, fan_in, generator=gen, dtype=torch.float64) * scale.weight_std
        self.weight = nn.Parameter(w.to(device=device, dtype=dtype))
        # A bias left out because it could never matter is still drawn (and dropped), so
        # that the weights of later layers are the same numbers with or without it.
        if bias or (draw_bias if draw_bias is not None else bias):
            b = torch.randn(fan_out, generator=gen, dtype=torch.float64) * scale.bias_std
        if bias:
            self.bias = nn.Parameter(b.to(device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        # A left-out dead bias keeps the fused product of a layer with m_b = 0 (outputs equal
        # to the last bit to those with bias=True); bias=False keeps its own product.
        self._fused = not bias and bool(draw_bias)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        # One fused GEMM (multipliers as alpha/beta): no separate scaling passes over h.
        if self.bias is None:
            if self._fused:
                zero = a.new_zeros(())
                return torch.addmm(zero, a, self.weight.T, beta=0.0, alpha=self.scale.weight_mult)
            return torch.mm(a, self.weight.T).mul_(self.scale.weight_mult)
        return torch.addmm(
            self.bias, a, self.weight.T, beta=self.scale.bias_mult, alpha=self.scale.weight_mult
        )

    def extra_repr(self) -> str:
        bias = self.bias is not None
        return f"fan_in={self.fan_in}, fan_out={self.fan_out}, bias={bias}, {self.scale}"


class MLP(nn.Module):
    """A fully connected network with ``depth`` hidden layers and a linear readout.

    ``f(x) = h^{L+1}``, ``h^{l+1} = m_w^{l+1} W^{l+1} phi(h^l) + m_b^{l+1} b^{l+1}``,
    ``h^1 = m_w^1 W^1 x + m_b^1 b^1``, with the multipliers of ``parametrization`` (see
    the module docstring). With ``parametrization="ntk"`` this is exactly the network
    whose NNGP and NTK :func:`ntk_lib.infinite_width.nngp_ntk` computes (Jacot et al. 2018;
    Lee et al. 2019).

    Args:
        d_in: input dimension.
        width: hidden width, or one width per hidden layer.
        depth: number of hidden layers (0 gives a linear model).
        activation: ``"relu"``, ``"erf"``, ``"tanh"`` or ``"identity"``.
        sigma_w, sigma_b: weight and bias standard deviations of the convention.
        parametrization: ``"ntk"``, ``"standard"``, a preset name of
            :func:`ntk_lib.parametrizations.preset` or any
            :class:`~ntk_lib.parametrizations.ABC` with ``depth + 1`` layers.
        base_width: the width at which a parametrization with its constants in the init
            (all presets but ``"ntk"``) is the standard one, training included (the
            ``mup`` package's base shape); 1 applies the exponents to the width itself.
        bias: whether layers have bias parameters. ``None`` (the default): every layer whose
            bias multiplier is non-zero has one, i.e. all of them unless ``sigma_b = 0`` in a
            parametrization that keeps its constants in the multiplier (``"ntk"``), where
            ``m_b = sigma_b = 0`` makes a bias that never affects the output and never
            moves, so that it would only inflate ``||theta_0||`` and the parameter count.
            (With the constants in the init, e.g. ``"standard"`` or ``"mup"``, ``sigma_b = 0``
            is a zero-initialised bias that does train, and is kept.) The random draws of a
            left-out bias are still made, so the weights are those of ``bias=True`` with the
            same seed. ``True``: a bias in every layer (the behaviour before this default,
            with dead biases when ``m_b = 0``). ``False``: none (deep linear networks), and
            no draws for them.
        d_out: number of outputs; with 1 (the default) ``forward`` returns shape ``(N,)``.
        seed: an int or ``torch.Generator`` for the initialisation (``None``: torch's global state).
        device, dtype: defaults ``default_device()`` and float32.

    The output of ``forward`` for inputs of shape ``(N, d_in)`` has shape ``(N,)`` when
    ``d_out == 1`` and ``(N, d_out)`` otherwise.
    """

    def __init__(
        self,
        d_in: int,
        width: int | Sequence[int],
        depth: int,
        *,
        activation: str = "relu",
        sigma_w: float = 1.0,
        sigma_b: float = 0.0,
        parametrization: str | ABC = "ntk",
        base_width: int = 1,
        bias: bool | None = None,
        d_out: int = 1,
        seed: int | torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.d_in = _checks.positive_int("d_in", d_in)
        self.depth = _checks.nonnegative_int("depth", depth)
        self.d_out = _checks.positive_int("d_out", d_out)
        self.widths = _widths(width, self.depth)
        self.activation = activation
        self.phi, self.phi_prime = activations.get(activation)
        self.sigma_w = _checks.real("sigma_w", sigma_w, positive=True)
        self.sigma_b = _checks.real("sigma_b", sigma_b, nonnegative=True)
        self.parametrization = parametrization
        device, dtype = resolve(device, dtype)
        sizes = [self.d_in, *self.widths, self.d_out]
        weights = [a * b for a, b in zip(sizes[:-1], sizes[1:], strict=False)]
        # the parameters, plus the float64 draw of the largest layer on the CPU
        _checks.fits("width", width, sum(weights) * dtype.itemsize, "the weights", device)
        _checks.fits("width", width, max(weights) * 8, "drawing the largest layer", "cpu")
        scales = layer_scales(
            parametrization,
            sizes[:-1],
            sizes[1:],
            self.sigma_w,
            self.sigma_b,
            base_width=base_width,
        )
        if bias is not None and not isinstance(bias, bool):
            raise TypeError(f"bias must be True, False or None (automatic); got {bias!r}")
        gen = generator(seed)
        self.layers = nn.ModuleList(
            Dense(
                n_in,
                n_out,
                s,
                bias=s.bias_mult != 0 if bias is None else bias,
                draw_bias=bias is not False,
                gen=gen,
                device=device,
                dtype=dtype,
            )
            for n_in, n_out, s in zip(sizes[:-1], sizes[1:], scales, strict=False)
        )

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] != self.d_in:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be a tensor of shape (N, d_in={self.d_in}); got {shape}")
        ref = self.layers[0].weight
        if x.dtype != ref.dtype or x.device != ref.device:
            raise ValueError(
                f"x must be {ref.dtype} on {ref.device} like the network's weights; got {x.dtype} "
                f"on {x.device}: convert it with x.to(...)"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        a = x
        for layer in self.layers[:-1]:
            a = self.phi(layer(a))
        out = self.layers[-1](a)
        return out.squeeze(-1) if self.d_out == 1 else out

    def forward_cache(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Return the layer inputs ``[x, phi(h^1), ..., phi(h^L)]`` and pre-activations ``[h^1,
        ..., h^{L+1}]``."""
        self._check_input(x)
        inputs, pre = [x], []
        for i, layer in enumerate(self.layers):
            pre.append(layer(inputs[-1]))
            if i < self.depth:
                inputs.append(self.phi(pre[-1]))
        return inputs, pre

    def param_groups(self, lr: float) -> list[dict]:
        """Return optimizer parameter groups, one per layer, with learning rate ``lr *
        lr_scale``."""
        lr = _checks.real("lr", lr, positive=True)
        return [
            {"params": list(layer.parameters()), "lr": lr * layer.scale.lr_scale}
            for layer in self.layers
        ]


def _widths(width: int | Sequence[int], depth: int) -> list[int]:
    if isinstance(width, Sequence) and not isinstance(width, str):
        if len(width) != depth:
            raise ValueError(
                f"width must be an int or a sequence of depth={depth} ints; got {list(width)}"
            )
        return [_checks.positive_int(f"width[{i}]", w) for i, w in enumerate(width)]
    return [_checks.positive_int("width", width)] * depth
