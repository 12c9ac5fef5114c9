"""Spectral norms of weight matrices and the spectral condition for feature learning.

**Spectral norm.** ``||W|| = s_1(W)``, the largest singular value: exact through an SVD
(:func:`torch.linalg.matrix_norm` with ``ord=2``) for small matrices, power iteration on
``W^T W`` for large ones; batched over leading dimensions, on any device.

**Marchenko–Pastur edge.** An ``M x m`` matrix with iid ``N(0, sigma^2)`` entries has
``||W|| -> sigma (sqrt(M) + sqrt(m))`` as ``M, m -> inf`` together; the relative
fluctuation about the edge is Tracy–Widom, of order ``min(M, m)^{-2/3}``.

**Marchenko–Pastur law.** The bulk of the singular values of the same matrix has the
density :func:`mp_singular_density`, supported on ``sigma |sqrt(M) - sqrt(m)|`` up to the edge.

**Tightness of ``||A v|| <= ||A|| ||v||``.** :func:`alignment` measures the ratio
``||A v|| / (||A|| ||v||)``: 1 for a rank-one ``A`` whose row space contains ``v`` (the
gradient updates below), about ``1/sqrt(m)`` for a random row or random rank-one ``A``.

**Spectral condition** (Yang, Simon & Bernstein 2023): feature learning in every layer
needs ``||W_l|| = Theta(sqrt(fan_out / fan_in))`` and ``||Delta W_l|| = Theta(sqrt(fan_out /
fan_in))``. :func:`spectral_report` measures both ratios on an :class:`~ntk_lib.models.MLP`.

**The deep linear network** of Pleiss's lecture, on which lesson 06 checks the condition
layer by layer, is :mod:`ntk_lib.deep_linear` (its names are importable from here too).

References: G. Yang, J. B. Simon, J. Bernstein, "A spectral condition for feature
learning", arXiv:2310.17813 (2023); G. Pleiss, Lecture 11; V. A. Marchenko, L. A.
Pastur (1967). Taught in lesson 06.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from . import _checks
from .device import generator
from .measure import power_iteration

METHODS: tuple[str, ...] = ("auto", "exact", "power")
"""Accepted values of ``method`` in :func:`spectral_norm`."""

EXACT_MAX_DIM = 512
"""``method="auto"`` uses the SVD when ``min(M, m) <= EXACT_MAX_DIM``, power iteration above."""



def _as_matrix_batch(name: str, W: Any) -> torch.Tensor:
    W = _checks.tensor(name, W, "an array of numbers")
    if W.ndim < 2:
        raise ValueError(
            f"{name} must be a matrix or a batch of matrices, shape (..., M, m); "
            f"got shape {tuple(W.shape)}"
        )
    if W.shape[-1] < 1 or W.shape[-2] < 1:
        raise ValueError(
            f"{name} must have at least one row and one column; got shape {tuple(W.shape)}"
        )
    if W.is_complex() or W.dtype == torch.bool:
        raise TypeError(f"{name} must hold real numbers; got dtype {W.dtype}")
    if not W.is_floating_point():
        W = W.to(torch.float64)
    if not torch.isfinite(W).all():
        raise ValueError(f"{name} contains NaN or infinite entries")
    return W


def mp_edge(M: int, m: int, sigma: float = 1.0) -> float:
    """Return the Marchenko–Pastur edge ``sigma (sqrt(M) + sqrt(m))`` of an M x m Gaussian matrix.

    The limit of ``||W||`` for iid ``N(0, sigma^2)`` entries (Marchenko & Pastur 1967;
    Geman 1980 for the largest singular value). Lesson 06.
    """
    M = _checks.positive_int("M", M)
    m = _checks.positive_int("m", m)
    sigma = _checks.real("sigma", sigma, nonnegative=True)
    return sigma * (math.sqrt(M) + math.sqrt(m))


def mp_singular_density(s: Any, M: int, m: int, sigma: float = 1.0) -> torch.Tensor:
    """Return the Marchenko–Pastur density at ``s`` of the singular values of M x m Gaussians.

    With ``N = max(M, m)``, ``n = min(M, m)``, ``lambda = n / N`` and ``u = s^2 / (sigma^2 N)``,
    the ``n`` squared singular values, rescaled to ``u``, follow (as ``M, m -> inf`` together)
    ``p(u) = sqrt((u_+ - u) (u - u_-)) / (2 pi lambda u)`` on ``[u_-, u_+]``,
    ``u_pm = (1 pm sqrt(lambda))^2``,
    so the singular values have density ``p(u) * 2 s / (sigma^2 N)`` on
    ``[sigma (sqrt(N) - sqrt(n)), sigma (sqrt(N) + sqrt(n))]`` and 0 outside (Marchenko &
    Pastur 1967). Float64, same shape as ``s``. Lesson 06.
    """
    M = _checks.positive_int("M", M)
    m = _checks.positive_int("m", m)
    sigma = _checks.real("sigma", sigma, positive=True)
    s = _checks.tensor("s", s, "a number or an array of numbers").to(torch.float64)
    if not torch.isfinite(s).all():
        raise ValueError("s contains NaN or infinite entries")
    N, n = max(M, m), min(M, m)
    lam = n / N
    lo, hi = (1 - math.sqrt(lam)) ** 2, (1 + math.sqrt(lam)) ** 2
    u = s**2 / (sigma**2 * N)
    inside = (u > lo) & (u < hi) & (s > 0)
    u_in = torch.where(inside, u, torch.ones_like(u))  # placeholder keeps sqrt and 1/u finite
    p = torch.sqrt(((hi - u_in) * (u_in - lo)).clamp_min(0)) / (2 * math.pi * lam * u_in)
    return torch.where(inside, p * 2 * s / (sigma**2 * N), torch.zeros_like(u))


def alignment(A: Any, v: Any, *, method: str = "exact") -> float:
    """Return ``||A v|| / (||A|| ||v||)`` in ``[0, 1]``: how tight ``||A v|| <= ||A|| ||v||`` is.

    It is 1 when ``v`` lies along the top right singular vector of ``A`` (e.g. a rank-one
    ``A = u v^T``), about ``sqrt(M) / (sqrt(M) + sqrt(m))`` for an M x m Gaussian ``A`` and an
    independent ``v``, and about ``1 / sqrt(m)`` for a random row ``A`` (``M = 1``) or a random
    rank-one ``A`` (Yang, Simon & Bernstein 2023, §3). 0 for ``A = 0`` or ``v = 0``.
    ``method`` is passed to :func:`spectral_norm` (``"exact"``: an SVD). Lesson 06.
    """
    A = _as_matrix_batch("A", A)
    if A.ndim != 2:
        raise ValueError(f"A must be one matrix, shape (M, m); got shape {tuple(A.shape)}")
    v = _checks.vector("v", v, dtype=A.dtype, device=A.device)
    if v.shape[0] != A.shape[1]:
        raise ValueError(
            f"v must have A.shape[1] = {A.shape[1]} entries; got shape {tuple(v.shape)}"
        )
    denom = float(spectral_norm(A, method=method)) * float(torch.linalg.vector_norm(v))
    return 0.0 if denom == 0 else float(torch.linalg.vector_norm(A @ v)) / denom


def spectral_norm(
    W: Any,
    *,
    method: str = "auto",
    iters: int = 1000,
    tol: float = 1e-12,
    seed: int | torch.Generator | None = 0,
) -> torch.Tensor:
    """Return ``||W|| = s_1(W)`` for a matrix or a batch ``(..., M, m)``, shape ``(...)``.

    ``"exact"``: :func:`torch.linalg.matrix_norm` (``ord=2``, an SVD). ``"power"``: power
    iteration ``v <- W^T W v / ||W^T W v||`` from a seeded Gaussian start, estimate
    ``||W v||``; it stops when every estimate of the batch changes by less than ``tol``
    relatively, or after ``iters`` steps. The error decays like ``(s_2/s_1)^{2k}``, so a
    rank-one matrix converges in one step and a Gaussian one (small gap at the edge) needs
    hundreds. ``"auto"``: exact when ``min(M, m) <= EXACT_MAX_DIM``, else power.
    Computed in ``W``'s dtype and on its device (integer input becomes float64).

    Args:
        W: a tensor, array or nested list with at least two dimensions.
        method: ``"auto"``, ``"exact"`` or ``"power"``.
        iters: maximum number of power-iteration steps (>= 1).
        tol: relative-change stopping tolerance of power iteration (>= 0).
        seed: the start vector's seed (int, ``torch.Generator`` or ``None``).
    """
    W = _as_matrix_batch("W", W)
    method = _checks.choice("method", method, METHODS)
    iters = _checks.positive_int("iters", iters)
    tol = _checks.real("tol", tol, nonnegative=True)
    M, m = W.shape[-2], W.shape[-1]
    if method == "auto":
        method = "exact" if min(M, m) <= EXACT_MAX_DIM else "power"
    if method == "exact":
        return torch.linalg.matrix_norm(W, ord=2)
    # Iterate on the smaller Gram side: v in R^{min(M, m)}.
    A = W if m <= M else W.transpose(-2, -1)
    gen = generator(seed)
    v = torch.randn(*A.shape[:-2], A.shape[-1], generator=gen, dtype=torch.float64)
    v = v.to(device=W.device, dtype=W.dtype)
    gram = lambda u: (A.transpose(-2, -1) @ (A @ u.unsqueeze(-1))).squeeze(-1)  # noqa: E731
    # Rayleigh quotients of W^T W are ||W v||^2: a relative change tol of ||W v|| is 2 tol.
    est = power_iteration(gram, v, iters=iters, rtol=2 * tol).clamp(min=0).sqrt()
    return est


def numerical_rank(W: Any, *, rtol: float | None = None) -> torch.Tensor:
    """Return the number of singular values above ``rtol * s_1`` (default ``max(M, m) * eps``)."""
    W = _as_matrix_batch("W", W)
    s = torch.linalg.svdvals(W)
    if rtol is None:
        rtol = max(W.shape[-2:]) * torch.finfo(W.dtype).eps
    rtol = _checks.real("rtol", rtol, nonnegative=True)
    return (s > rtol * s[..., :1]).sum(dim=-1)


# --------------------------------------------------------------------------------------
# The spectral condition on an MLP


@dataclass(frozen=True)
class LayerSpectrum:
    """The spectral condition measured on one layer (``W`` is ``weight_mult * weight``).

    Attributes:
        index: the layer's position in ``model.layers`` (0 is the first hidden layer).
        fan_in, fan_out: the shape of ``W`` is ``(fan_out, fan_in)``.
        norm: ``||W||``.
        target: ``sqrt(fan_out / fan_in)``.
        ratio: ``norm / target`` (Theta(1) in width under the spectral condition).
        update_norm, update_ratio: ``||Delta W||`` and ``||Delta W|| / target``, or ``None``
            without an update.
    """

    index: int
    fan_in: int
    fan_out: int
    norm: float
    target: float
    ratio: float
    update_norm: float | None = None
    update_ratio: float | None = None


def _effective(layer) -> torch.Tensor:
    return (layer.scale.weight_mult * layer.weight).detach()


def spectral_report(model, update: Any = None, *, method: str = "auto") -> list[LayerSpectrum]:
    """Return one :class:`LayerSpectrum` per layer: ``||W_l||``, ``sqrt(fan_out/fan_in)``, ratios.

    Spectral condition (Yang, Simon & Bernstein 2023): ``||W_l|| = Theta(sqrt(n_l / n_{l-1}))``
    and ``||Delta W_l|| = Theta(sqrt(n_l / n_{l-1}))``. Lesson 06.

    Args:
        model: an :class:`~ntk_lib.models.MLP` (anything with ``.layers`` of ``Dense``).
        update: ``None``; a list with one ``Delta weight`` per layer; a dict
            ``{layer index: Delta weight}`` (missing layers get no update entry); or a second
            model of the same shapes (``Delta W`` is the difference of effective matrices).
            Tensors in a list or dict are changes of the *trained* ``.weight`` and are
            multiplied by the layer's ``weight_mult``, like the weights themselves.
        method: passed to :func:`spectral_norm`.
    """
    layers = getattr(model, "layers", None)
    if layers is None or not all(hasattr(ly, "weight") and hasattr(ly, "scale") for ly in layers):
        raise TypeError(
            f"model must be an ntk_lib.models.MLP (with .layers of Dense); "
            f"got {type(model).__name__}"
        )
    n = len(layers)
    deltas: list[torch.Tensor | None] = [None] * n
    if update is None:
        pass
    elif hasattr(update, "layers"):
        other = update.layers
        if len(other) != n:
            raise ValueError(f"update must be a model with {n} layers like model; got {len(other)}")
        for i, (a, b) in enumerate(zip(layers, other, strict=True)):
            if tuple(a.weight.shape) != tuple(b.weight.shape):
                raise ValueError(
                    f"update layer {i} has weight shape {tuple(b.weight.shape)}; "
                    f"model has {tuple(a.weight.shape)}"
                )
            deltas[i] = _effective(b).to(a.weight.device) - _effective(a)
    elif isinstance(update, Mapping) or (
        isinstance(update, Sequence) and not isinstance(update, str)
    ):
        items = update.items() if isinstance(update, Mapping) else enumerate(update)
        if not isinstance(update, Mapping) and len(update) != n:
            raise ValueError(f"update must hold one Delta W per layer ({n}); got {len(update)}")
        for i, d in items:
            if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < n:
                raise ValueError(f"update keys must be layer indices 0..{n - 1}; got {i!r}")
            layer = layers[i]
            d = _as_matrix_batch(f"update[{i}]", d)
            if tuple(d.shape) != tuple(layer.weight.shape):
                raise ValueError(
                    f"update[{i}] must have the layer's weight shape {tuple(layer.weight.shape)}; "
                    f"got {tuple(d.shape)}"
                )
            deltas[i] = layer.scale.weight_mult * d.to(
                device=layer.weight.device, dtype=layer.weight.dtype
            )
    else:
        raise TypeError(
            f"update must be None, a list or dict of Delta W, or a model; "
            f"got {type(update).__name__}"
        )
    out = []
    for i, layer in enumerate(layers):
        fan_out, fan_in = layer.weight.shape
        target = math.sqrt(fan_out / fan_in)
        norm = float(spectral_norm(_effective(layer), method=method))
        un = ur = None
        if deltas[i] is not None:
            un = float(spectral_norm(deltas[i], method=method))
            ur = un / target
        out.append(LayerSpectrum(i, fan_in, fan_out, norm, target, norm / target, un, ur))
    return out


_DEEP_LINEAR = (
    "PRESETS", "LECTURE_EXPONENTS", "PRESET_EXPONENTS", "DeepLinearPreset", "deep_linear_preset",
    "DeepLinearStep", "DeepLinearUpdate", "deep_linear_update", "deep_linear_step",
)


def __getattr__(name: str) -> Any:
    """Return the deep linear network's names (now in :mod:`ntk_lib.deep_linear`) from here."""
    if name in _DEEP_LINEAR:
        from . import deep_linear

        return getattr(deep_linear, name)
    raise AttributeError(f"module 'ntk_lib.spectral' has no attribute {name!r}")
