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
from .device import generator, resolve

METHODS: tuple[str, ...] = ("auto", "exact", "power")
"""Accepted values of ``method`` in :func:`spectral_norm`."""

EXACT_MAX_DIM = 512
"""``method="auto"`` uses the SVD when ``min(M, m) <= EXACT_MAX_DIM``, power iteration above."""

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


def _as_matrix_batch(name: str, W: Any) -> torch.Tensor:
    if not isinstance(W, torch.Tensor):
        try:
            W = torch.as_tensor(np.asarray(W, dtype=np.float64))
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name} must be an array of numbers; got {type(W).__name__}") from err
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
    if not isinstance(s, torch.Tensor):
        try:
            s = torch.as_tensor(np.asarray(s, dtype=np.float64))
        except (TypeError, ValueError) as err:
            raise TypeError(
                f"s must be a number or an array of numbers; got {type(s).__name__}"
            ) from err
    s = s.to(torch.float64)
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
    v = v / torch.linalg.vector_norm(v, dim=-1, keepdim=True)
    est = torch.zeros(A.shape[:-2], device=W.device, dtype=W.dtype)
    for _ in range(iters):
        u = (A @ v.unsqueeze(-1)).squeeze(-1)
        new = torch.linalg.vector_norm(u, dim=-1)
        w = (A.transpose(-2, -1) @ u.unsqueeze(-1)).squeeze(-1)
        wn = torch.linalg.vector_norm(w, dim=-1, keepdim=True)
        if bool((wn == 0).any()):  # a zero matrix in the batch: its norm is 0
            wn = torch.where(wn == 0, torch.ones_like(wn), wn)
        v = w / wn
        done = bool(((new - est).abs() <= tol * new).all())
        est = new
        if done:
            break
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


# --------------------------------------------------------------------------------------
# The deep linear network of the lecture


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
