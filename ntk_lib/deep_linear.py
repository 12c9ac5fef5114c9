"""The deep linear network of Pleiss's lecture: one gradient step, its norms and their exponents.

**The three-layer deep linear network** (Pleiss, Lecture 11 §2, whose notation we keep):
``f(x) = W_3 W_2 W_1 x`` with input dimension ``P``, hidden width ``D`` and scalar output,
``W_1 in R^{D x P}``, ``W_2 in R^{D x D}``, ``W_3 in R^{1 x D}``, ``[W_i]_{jk} ~ N(0,
sigma_i^2)``, ``h_0 = x``, ``h_i = W_i h_{i-1}``, one gradient step on one point with loss
``L = (1/2) ||f - y||^2`` and layer-wise learning rates ``Delta W_i = -eta_i grad_{W_i} L``.
Backpropagation gives ``grad_{W_i} L = (grad_{h_i} L) h_{i-1}^T``: every update is rank one.
:func:`deep_linear_update` returns the tensors of one step, :func:`deep_linear_step` their
norms; :data:`PRESET_EXPONENTS` holds the predicted width exponents of every preset.
(The lecture's text has two slips: its bound on ``||h_3||`` should read ``||W_3|| ||h_2||``
and its last gradient line is ``grad_{W_1} L = (grad_{h_3} L) W_3^T W_2^T x^T``.)

With ``||x|| = Theta(sqrt(P))`` and ``|y| = Theta(1)``, the lecture's (muP) choice
``sigma_1 = 1/sqrt(P)``, ``sigma_2 = 1/sqrt(D)``, ``sigma_3 = 1/D``, ``eta_1 = D/P``,
``eta_2 = 1``, ``eta_3 = 1/D`` gives, as ``D -> inf`` at fixed ``P`` (derivation in the
lesson; :data:`LECTURE_EXPONENTS` holds the exponents of ``D``)::

    ||h_1||, ||h_2|| ~ D^{1/2},  |h_3| ~ D^{-1/2} (random W_3 is not aligned with h_2),
    ||Delta h_1||, ||Delta h_2|| ~ D^{1/2},  |Delta h_3| ~ D^0,
    ||Delta W_1|| ~ D^{1/2},  ||Delta W_2|| ~ D^0,  ||Delta W_3|| ~ D^{-1/2},
    ||W_1|| = sigma_1 (sqrt(D) + sqrt(P)) -> D^{1/2},  ||W_2|| ~ 2,  ||W_3|| ~ D^{-1/2}.

The contrasts, in the same ``(sigma_i, eta_i)`` language (a multiplier ``a`` on an
``N(0, 1)`` weight trained with rate ``eta`` is ``sigma = a`` with effective rate
``a^2 eta``):

* ``"ntk"``: NTK parametrization with rate 1, i.e. ``sigma_i = 1/sqrt(fan_in)``,
  ``eta_1 = 1/P``, ``eta_2 = eta_3 = 1/D``. Then ``||Delta h_1||, ||Delta h_2|| ~ D^0``
  (relative change ``D^{-1/2}``: lazy), ``||Delta W_1|| ~ D^0``, ``||Delta W_2|| ~ D^{-1/2}``.
* ``"sp"``: standard parametrization ``sigma_i = 1/sqrt(fan_in)`` with one global rate
  ``eta_i = 1/D`` (the largest width scaling of a single rate that keeps ``Delta h_3``
  bounded). Then ``||Delta W_1|| ~ ||Delta h_1|| ~ D^{-1}``, ``||Delta h_2|| ~ D^0``.

Both keep ``Delta h_3 = Theta(1)`` but miss the hidden-layer exponents.

The spectral norms it measures come from :mod:`ntk_lib.spectral`.

References: G. Pleiss, Lecture 11 §2; G. Yang, J. B. Simon, J. Bernstein, "A spectral
condition for feature learning", arXiv:2310.17813 (2023). Taught in lesson 06.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from . import _checks
from .device import generator, resolve
from .spectral import spectral_norm

PRESETS: tuple[str, ...] = ("lecture", "ntk", "sp")
"""Accepted names of :func:`deep_linear_preset`."""

LECTURE_EXPONENTS: dict[str, tuple[float, float, float]] = {
    "dh": (0.5, 0.5, 0.0),
    "dW": (0.5, 0.0, -0.5),
}
"""Predicted exponents of the hidden width ``D`` (fixed ``P``) of ``||Delta h_i||`` and
``||Delta W_i||``, ``i = 1, 2, 3``, under the ``"lecture"`` preset (module docstring)."""

PRESET_EXPONENTS: dict[str, dict[str, tuple[float, float, float]]] = {
    "lecture": {"h": (0.5, 0.5, -0.5), **LECTURE_EXPONENTS},
    "ntk": {"h": (0.5, 0.5, 0.0), "dh": (0.0, 0.0, 0.0), "dW": (0.0, -0.5, -0.5)},
    "sp": {"h": (0.5, 0.5, 0.0), "dh": (-1.0, 0.0, 0.0), "dW": (-1.0, -0.5, -0.5)},
}
"""Predicted exponents of ``D`` (fixed ``P``) of ``||h_i||`` (``"h"``, before the step),
``||Delta h_i||`` (``"dh"``) and ``||Delta W_i||`` (``"dW"``), ``i = 1, 2, 3``, for every
preset of :func:`deep_linear_preset`; derived in the module docstring and in lesson 06.
The feature-learning targets are ``"dh" = (1/2, 1/2, 0)``, met by ``"lecture"`` only."""



@dataclass(frozen=True)
class DeepLinearPreset:
    """Widths ``(P, D, D, 1)``, init stds ``sigma_i`` and learning rates ``eta_i`` of a preset."""

    name: str
    widths: tuple[int, ...]
    sigmas: tuple[float, ...]
    lrs: tuple[float, ...]


def deep_linear_preset(name: str, D: int, P: int) -> DeepLinearPreset:
    """Return ``(sigma_i, eta_i)`` of ``"lecture"`` (muP), ``"ntk"`` or ``"sp"`` (width D, input P).

    ``"lecture"``: ``sigma = (1/sqrt(P), 1/sqrt(D), 1/D)``, ``eta = (D/P, 1, 1/D)`` (Pleiss
    Lecture 11 §2.4 with unit prefactors); ``"ntk"``: ``sigma = (1/sqrt(P), 1/sqrt(D),
    1/sqrt(D))``, ``eta = (1/P, 1/D, 1/D)``; ``"sp"``: same ``sigma``, ``eta = (1/D,) * 3``.
    Predicted width exponents in the module docstring.
    """
    name = _checks.choice("name", name, PRESETS)
    D = _checks.positive_int("D", D)
    P = _checks.positive_int("P", P)
    if name == "lecture":
        sigmas = (1 / math.sqrt(P), 1 / math.sqrt(D), 1 / D)
        lrs = (D / P, 1.0, 1 / D)
    elif name == "ntk":
        sigmas = (1 / math.sqrt(P), 1 / math.sqrt(D), 1 / math.sqrt(D))
        lrs = (1 / P, 1 / D, 1 / D)
    else:
        sigmas = (1 / math.sqrt(P), 1 / math.sqrt(D), 1 / math.sqrt(D))
        lrs = (1 / D, 1 / D, 1 / D)
    return DeepLinearPreset(name, (P, D, D, 1), sigmas, lrs)


@dataclass(frozen=True)
class DeepLinearStep:
    """One GD step of ``f = W_L ... W_1 x`` on one point; tuples are indexed by layer ``i = 1..L``.

    Attributes:
        h_norms: ``||h_i||`` before the step.
        dh_norms: ``||Delta h_i||``, the change of ``h_i`` on the same ``x`` after the step.
        W_norms: ``||W_i||`` (spectral) before the step; ``None`` if ``spectra=False``.
        dW_norms: ``||Delta W_i||`` (spectral).
        dW_ranks: numerical rank of ``Delta W_i``; ``None`` if ``spectra=False``.
        dW_sv_ratios: ``s_2 / s_1`` of ``Delta W_i`` (0 for a single row or column);
            ``None`` if ``spectra=False``.
        loss: ``(1/2) ||f - y||^2`` before the step.
    """

    h_norms: tuple[float, ...]
    dh_norms: tuple[float, ...]
    W_norms: tuple[float, ...] | None
    dW_norms: tuple[float, ...]
    dW_ranks: tuple[int, ...] | None
    dW_sv_ratios: tuple[float, ...] | None
    loss: float


def _floats(name: str, value: Any, n: int, *, positive: bool) -> tuple[float, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(
        value, Sequence | np.ndarray | torch.Tensor
    ):
        raise TypeError(f"{name} must be a sequence of {n} numbers; got {type(value).__name__}")
    vals = [float(v) if isinstance(v, torch.Tensor) else v for v in value]
    if len(vals) != n:
        raise ValueError(f"{name} must have one entry per layer ({n}); got {len(vals)}")
    return tuple(
        _checks.real(f"{name}[{i}]", v, nonnegative=not positive, positive=positive)
        for i, v in enumerate(vals)
    )


@dataclass(frozen=True)
class DeepLinearUpdate:
    """The tensors of one GD step of ``f = W_L ... W_1 x`` on one point (float64 by default).

    Attributes:
        Ws: ``(W_1, ..., W_L)`` before the step.
        dWs: ``(Delta W_1, ..., Delta W_L)``, each ``-eta_i (grad_{h_i} L) h_{i-1}^T``.
        hs: ``(h_0 = x, h_1, ..., h_L)`` before the step.
        dhs: ``(Delta h_1, ..., Delta h_L)`` on the same ``x``.
        grads_h: ``(grad_{h_1} L, ..., grad_{h_L} L)`` (backpropagated errors).
        loss: ``(1/2) ||f - y||^2`` before the step.
    """

    Ws: tuple[torch.Tensor, ...]
    dWs: tuple[torch.Tensor, ...]
    hs: tuple[torch.Tensor, ...]
    dhs: tuple[torch.Tensor, ...]
    grads_h: tuple[torch.Tensor, ...]
    loss: float


def deep_linear_update(
    x: Any,
    y: Any,
    *,
    widths: Sequence[int],
    sigmas: Sequence[float],
    lrs: Sequence[float],
    seed: int | torch.Generator | None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> DeepLinearUpdate:
    """Return the weights, features and their changes in one GD step of ``f(x) = W_L ... W_1 x``.

    The same network, draws and step as :func:`deep_linear_step` (arguments likewise), but
    the tensors themselves rather than their norms: backpropagation gives ``grad_{W_i} L =
    (grad_{h_i} L) h_{i-1}^T`` with ``grad_{h_L} L = f - y`` and ``grad_{h_{i-1}} L = W_i^T
    grad_{h_i} L`` (Pleiss Lecture 11 §2.4), so every ``Delta W_i`` is rank one. Lesson 06.
    """
    device, dtype = resolve(device, dtype, theory=True)
    if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence):
        raise TypeError(
            f"widths must be a sequence of layer sizes (n_0, ..., n_L); got {type(widths).__name__}"
        )
    if len(widths) < 2:
        raise ValueError(f"widths must list at least two sizes (n_0, n_1); got {tuple(widths)}")
    widths = tuple(_checks.positive_int(f"widths[{i}]", w) for i, w in enumerate(widths))
    L = len(widths) - 1
    sigmas = _floats("sigmas", sigmas, L, positive=False)
    lrs = _floats("lrs", lrs, L, positive=False)
    if isinstance(y, (int, float, np.integer, np.floating)) and not isinstance(y, bool):
        y = [float(y)]
    x = _point("x", x, widths[0], "widths[0]", dtype, device)
    y = _point("y", y, widths[-1], "widths[-1]", dtype, device)

    gen = generator(seed)
    Ws = [
        (torch.randn(n_out, n_in, generator=gen, dtype=torch.float64) * s).to(
            device=device, dtype=dtype
        )
        for n_in, n_out, s in zip(widths[:-1], widths[1:], sigmas, strict=True)
    ]
    params = [W.clone().requires_grad_() for W in Ws]
    hs = [x]
    for W in params:
        hs.append(W @ hs[-1])
    loss = 0.5 * ((hs[-1] - y) ** 2).sum()
    grads = torch.autograd.grad(loss, params + hs[1:])
    dWs = [-eta * g for eta, g in zip(lrs, grads[:L], strict=True)]
    with torch.no_grad():
        h_new = [x]
        for W, dW in zip(Ws, dWs, strict=True):
            h_new.append((W + dW) @ h_new[-1])
    hs = [h.detach() for h in hs]
    dhs = [a - b for a, b in zip(h_new[1:], hs[1:], strict=True)]
    return DeepLinearUpdate(
        tuple(Ws), tuple(dWs), tuple(hs), tuple(dhs), tuple(grads[L:]), float(loss.detach())
    )


def deep_linear_step(
    x: Any,
    y: Any,
    *,
    widths: Sequence[int],
    sigmas: Sequence[float],
    lrs: Sequence[float],
    seed: int | torch.Generator | None,
    spectra: bool = True,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> DeepLinearStep:
    """Return the norms of one GD step of the deep linear network ``f(x) = W_L ... W_1 x``.

    ``[W_i]_{jk} ~ N(0, sigma_i^2)`` drawn in order ``W_1, W_2, ...`` by ``torch.randn`` in
    float64 on the CPU (the same numbers on every device); ``L = (1/2) ||f - y||^2``,
    ``Delta W_i = -eta_i grad_{W_i} L`` by autograd, ``Delta h_i = (W_i + Delta W_i)(h_{i-1} +
    Delta h_{i-1}) - h_i`` (Pleiss Lecture 11, Eq. 2). Lesson 06.

    Args:
        x: the input, shape ``(widths[0],)`` (the lecture's ``P``).
        y: the target, shape ``(widths[-1],)`` or a number when ``widths[-1] == 1``.
        widths: layer sizes ``(n_0, ..., n_L)``; the lecture's network is ``(P, D, D, 1)``.
        sigmas, lrs: ``sigma_i`` (>= 0) and ``eta_i`` (>= 0), one per layer.
        seed: an int, a ``torch.Generator`` or ``None`` (torch's global state).
        spectra: also compute ``||W_i||``, ranks and ``s_2/s_1`` of ``Delta W_i`` (SVDs, the
            costly part at large width); ``||Delta W_i||`` is always measured (power
            iteration, exact in one step for a rank-one matrix).
        device, dtype: defaults ``default_device()`` and float64.
    """
    u = deep_linear_update(
        x, y, widths=widths, sigmas=sigmas, lrs=lrs, seed=seed, device=device, dtype=dtype
    )
    Ws, dWs, dtype = u.Ws, u.dWs, u.Ws[0].dtype
    h_norms = tuple(float(torch.linalg.vector_norm(h)) for h in u.hs[1:])
    dh_norms = tuple(float(torch.linalg.vector_norm(d)) for d in u.dhs)
    dW_norms = tuple(float(spectral_norm(dW, method="power", iters=50)) for dW in dWs)
    W_norms = ranks = ratios = None
    if spectra:
        W_norms = tuple(float(torch.linalg.matrix_norm(W, ord=2)) for W in Ws)
        svs = [torch.linalg.svdvals(dW) for dW in dWs]
        ranks = tuple(
            int((s > max(dW.shape) * torch.finfo(dtype).eps * s[0]).sum()) if s[0] > 0 else 0
            for s, dW in zip(svs, dWs, strict=True)
        )
        ratios = tuple(float(s[1] / s[0]) if s.numel() > 1 and s[0] > 0 else 0.0 for s in svs)
    return DeepLinearStep(h_norms, dh_norms, W_norms, dW_norms, ranks, ratios, u.loss)


def _point(name: str, v: Any, n: int, what: str, dtype, device) -> torch.Tensor:
    v = _checks.vector(name, v, dtype=dtype, device=device)
    if v.shape[0] != n:
        raise ValueError(f"{name} must have {what} = {n} entries; got shape {tuple(v.shape)}")
    return v
