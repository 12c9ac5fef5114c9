"""Infinite-width limits of one-hidden-layer networks trained by SGD (Tensor Programs).

Two networks of lesson 09. The linear one (scalar input, :func:`linear_limit`,
:func:`linear_finite`) reduces to four deterministic scalars, derived below. The nonlinear
one in muP, ``f(x) = v . phi(U x / sqrt(d)) / n``, reduces to an expectation over the
initial Gaussians ``(Z^u, Z^v)`` of each coordinate: :mod:`ntk_lib.nonlinear_limit`
(``mlp_limit``, ``mlp_finite``, importable from here too).

**The network** (input and output dimension 1, width ``n``; Yang & Hu 2021, the talk's
motivating example): ``f(xi) = v^T u xi / n`` with ``u, v ~ N(0, I_n)``, trained by
full-batch gradient descent on ``L = (1/2D) sum_a (f(xi_a) - y_a)^2`` with muP's learning
rate ``eta n``: ``u <- u - eta n grad_u L``, ``v <- v - eta n grad_v L``.

**The recursion (muP).** ``grad_u L = (1/D) sum_a (f_a - y_a) xi_a v / n``, so with
``chi_t = (1/D) sum_a (f_t(xi_a) - y_a) xi_a`` one step is ``u <- u - eta chi_t v``,
``v <- v - eta chi_t u`` (simultaneously). The update is linear in ``(u, v)``, so at every
step and at every width

    u_t = A_t u_0 + B_t v_0,   v_t = C_t u_0 + D_t v_0,   A_0 = D_0 = 1, B_0 = C_0 = 0,
    (A, B) <- (A, B) - eta chi_t (C, D),   (C, D) <- (C, D) - eta chi_t (A, B).

The output ``f_t(xi) = xi v_t^T u_t / n`` is a quadratic form in ``u_0, v_0`` whose inner
products obey the law of large numbers, ``u_0.u_0/n -> 1``, ``v_0.v_0/n -> 1``,
``u_0.v_0/n -> 0`` (fluctuations ``O(n^{-1/2})``). Hence in the limit
``f_t(xi) = xi (A_t C_t + B_t D_t)``, ``chi_t`` is deterministic, and so are all the
coefficients; ``f_0 = 0`` exactly. The hidden features ``h = u xi`` move by
``||u_t - u_0|| / sqrt(n) -> sqrt((A_t - 1)^2 + B_t^2) = Theta(1)``: feature learning.

**The NTK parametrization, for contrast.** ``f = v^T u xi / sqrt(n)`` with learning rate
``eta`` (no factor of ``n``). The same argument gives the coefficient updates with
``eta chi_t / sqrt(n)`` in place of ``eta chi_t``, so ``A_t, D_t -> 1`` and
``B_t, C_t = O(n^{-1/2})``: the features freeze, ``||u_t - u_0|| -> |eta sum_{s<t} chi_s|``
is ``O(1)``, i.e. ``||u_t - u_0|| / sqrt(n) = O(n^{-1/2})``. Expanding one step,
``f_{t+1} = f_t - eta chi_t xi (|u_t|^2 + |v_t|^2)/n + O(n^{-1/2})``, which is kernel
gradient descent ``f_{t+1} = f_t - (eta/D) sum_b Theta(xi, xi_b) (f_t(xi_b) - y_b)`` with the
NTK ``Theta(xi, xi') = xi xi' (|u|^2 + |v|^2)/n -> 2 xi xi'``. The initial output
``f_0(xi) = xi u_0.v_0/sqrt(n)`` is an ``O(1)`` Gaussian ``xi Z``, ``Z ~ N(0, 1)`` (the limit
is a Gaussian process, not a deterministic function), so :func:`linear_limit` takes ``Z`` as
the argument ``init_z``: its default ``0`` gives the mean over initializations of the limit
(the dynamics is affine in ``f_0``), i.e. kernel regression started from ``f_0 = 0``.

At step 1 the two limits agree (``f_1 = -2 eta chi_0 xi`` in both); after that, muP's
kernel moves and NTK's does not.

Reference: G. Yang, E. J. Hu, "Tensor Programs IV: Feature Learning in Infinite-Width
Neural Networks", ICML 2021 (and the talk). Taught in lesson 09.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from . import _checks
from .device import generator, resolve
from .nonlinear_limit import (  # noqa: F401 (the MLP limit: lessons import it from here)
    MAX_NODES,
    MC_PAIRS,
    MC_REPLICAS,
    METHODS,
    QUADRATURE_NODES,
    MLPRun,
    _activation,
    _diverged_at,
    _training_set,
    mlp_finite,
    mlp_limit,
)
from .training import DIVERGENCE_THRESHOLD, ON_DIVERGENCE

PARAMETRIZATIONS: tuple[str, ...] = ("mup", "ntk")
"""Accepted values of ``parametrization``."""

# A run has diverged at the first step where a coefficient |A|, |B|, |C|, |D|, or an output
# |f| divided by 1 + max|y|, exceeds DIVERGENCE_THRESHOLD (ntk_lib.training) or is not finite.


@dataclass(frozen=True)
class LinearLimit:
    """A trajectory of the linear one-hidden-layer network: the limit or one finite width.

    Tensors have ``steps + 1`` rows (fewer if the run diverged with ``on_divergence="stop"``).

    Attributes:
        parametrization: ``"mup"`` or ``"ntk"``.
        width: ``None`` for the infinite-width limit, else ``n``.
        outputs: ``f_t(xi_a)`` on the training inputs, shape ``(steps + 1, D)``.
        A, B, C, D: the coefficients of ``u_t = A u_0 + B v_0``, ``v_t = C u_0 + D v_0``,
            each of shape ``(steps + 1,)`` (in the NTK limit ``1, 0, 0, 1`` at every step).
        feature_change: ``||u_t - u_0|| / sqrt(n)`` (its limit for ``width=None``: Theta(1)
            in muP, 0 in NTK).
        movement: ``||u_t - u_0||`` unnormalised; for the NTK limit its (finite) limit
            ``|eta sum_{s<t} chi_s|``, so that ``feature_change ~ movement / sqrt(n)``;
            ``None`` for the muP limit, where it grows like ``sqrt(n)``.
        diverged_at: the step at which the run diverged, ``-1`` if it did not.
    """

    parametrization: str
    width: int | None
    outputs: torch.Tensor
    A: torch.Tensor
    B: torch.Tensor
    C: torch.Tensor
    D: torch.Tensor
    feature_change: torch.Tensor
    movement: torch.Tensor | None
    diverged_at: int = -1

    @property
    def diverged(self) -> bool:
        """Whether the run was stopped by divergence."""
        return self.diverged_at >= 0

    def predicted_feature_change(self, width: int) -> torch.Tensor:
        """Return the leading-order ``||u_t - u_0|| / sqrt(n)`` at width ``n`` from a limit:
        ``feature_change`` for muP, ``movement / sqrt(n)`` for NTK."""
        width = _checks.positive_int("width", width)
        if self.width is not None:
            raise ValueError("predicted_feature_change needs an infinite-width limit (width=None)")
        if self.parametrization == "mup":
            return self.feature_change
        return self.movement / math.sqrt(width)


def _validate(x, y, lr, steps, parametrization, on_divergence, device, dtype):
    device, dtype = resolve(device, dtype, theory=True)
    x = _checks.vector("x", x, dtype=dtype, device=device)
    y = _checks.vector("y", y, dtype=dtype, device=device)
    if y.shape != x.shape:
        raise ValueError(
            f"y must have one target per input, shape {tuple(x.shape)}; got shape {tuple(y.shape)}"
        )
    lr = _checks.real("lr", lr, positive=True)
    steps = _checks.nonnegative_int("steps", steps)
    parametrization = _checks.choice("parametrization", parametrization, PARAMETRIZATIONS)
    _checks.choice("on_divergence", on_divergence, ON_DIVERGENCE)
    return x, y, lr, steps, parametrization, device, dtype



def _finish(
    parametrization, width, outputs, coeffs, feature, movement, y, on_divergence
) -> LinearLimit:
    """Stack the per-step records, find the first diverged step, raise or truncate."""
    outputs = torch.stack(outputs)
    coeffs = torch.stack([torch.stack(c) for c in coeffs], dim=1)  # (steps + 1, 4)
    feature = torch.stack(feature)
    movement = torch.stack(movement) if movement is not None else None
    scale = 1.0 + float(y.abs().max())
    bad = ~(coeffs.abs() <= DIVERGENCE_THRESHOLD).all(dim=1) | ~(
        outputs.abs() <= DIVERGENCE_THRESHOLD * scale
    ).all(dim=1)
    diverged_at = _diverged_at(bad, outputs, y, on_divergence)
    if diverged_at >= 0:
        keep = slice(0, diverged_at)
        outputs, coeffs, feature = outputs[keep], coeffs[keep], feature[keep]
        movement = movement[keep] if movement is not None else None
    a, b, c, d = coeffs.unbind(dim=1)
    return LinearLimit(parametrization, width, outputs, a, b, c, d, feature, movement, diverged_at)


def linear_limit(
    x: Any,
    y: Any,
    *,
    lr: float,
    steps: int,
    parametrization: str = "mup",
    init_z: float = 0.0,
    on_divergence: str = ON_DIVERGENCE[0],
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> LinearLimit:
    """Return the infinite-width limit of GD on ``f = v^T u xi / n`` (muP) or ``/ sqrt(n)`` (NTK).

    muP: ``f_t(xi) = xi (A_t C_t + B_t D_t)``, ``chi_t = (1/D) sum_a (f_t(xi_a) - y_a) xi_a``,
    ``(A, B) <- (A, B) - eta chi_t (C, D)``, ``(C, D) <- (C, D) - eta chi_t (A, B)`` from
    ``A_0 = D_0 = 1``, ``B_0 = C_0 = 0``; ``feature_change = sqrt((A_t - 1)^2 + B_t^2)``.
    NTK: ``f_t(xi) = xi (init_z + s_t)``, ``s_{t+1} = s_t - 2 eta chi_t`` (kernel GD with
    ``Theta(xi, xi') = 2 xi xi'``), coefficients frozen at ``1, 0, 0, 1``,
    ``movement = |eta sum_{s<t} chi_s|``. Derivation in the module docstring (Yang & Hu 2021).

    Args:
        x, y: the training inputs and targets, 1-D of the same length ``D``.
        lr: the width-independent learning rate ``eta`` (> 0).
        steps: number of GD steps (>= 0).
        parametrization: ``"mup"`` (feature learning) or ``"ntk"`` (kernel regime).
        init_z: NTK only: the limit ``Z`` of ``u_0.v_0 / sqrt(n)``, so ``f_0(xi) = Z xi``.
            The default 0 gives the mean of the (Gaussian-process) limit over initializations.
            Must be 0 for muP, whose initial output vanishes in the limit.
        on_divergence: ``"raise"`` (:class:`~ntk_lib.training.DivergenceError` with the step)
            or ``"stop"`` (truncate before the diverged step and set ``diverged_at``).
        device, dtype: where the results live; defaults ``default_device()`` and float64.
    """
    x, y, lr, steps, parametrization, device, dtype = _validate(
        x, y, lr, steps, parametrization, on_divergence, device, dtype
    )
    init_z = _checks.real("init_z", init_z)
    if parametrization == "mup" and init_z != 0.0:
        raise ValueError(
            "init_z applies to parametrization='ntk' only (the muP limit starts at f_0 = 0); "
            f"got {init_z}"
        )
    one = torch.ones((), device=device, dtype=dtype)
    zero = torch.zeros((), device=device, dtype=dtype)
    a, b, c, d = one, zero, zero, one
    s, total = zero, zero  # NTK: output shift and sum of chi
    outputs, coeffs, feature, movement = (
        [],
        ([], [], [], []),
        [],
        ([] if parametrization == "ntk" else None),
    )
    for t in range(steps + 1):
        f = x * (a * c + b * d) if parametrization == "mup" else x * (init_z + s)
        outputs.append(f)
        for lst, val in zip(coeffs, (a, b, c, d), strict=True):
            lst.append(val)
        if parametrization == "mup":
            feature.append(torch.sqrt((a - 1) ** 2 + b**2))
        else:
            feature.append(zero)
            movement.append((lr * total).abs())
        if t == steps:
            break
        chi = ((f - y) * x).mean()
        if parametrization == "mup":
            e = lr * chi
            a, b, c, d = a - e * c, b - e * d, c - e * a, d - e * b
        else:
            s = s - 2 * lr * chi
            total = total + chi
    return _finish(parametrization, None, outputs, coeffs, feature, movement, y, on_divergence)


def linear_finite(
    x: Any,
    y: Any,
    *,
    lr: float,
    steps: int,
    width: int,
    seed: int | torch.Generator | None,
    parametrization: str = "mup",
    on_divergence: str = ON_DIVERGENCE[0],
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> LinearLimit:
    """Return GD on the width-``n`` network itself, to compare with :func:`linear_limit`.

    muP: ``f = xi v.u / n``, ``u, v <- u - eta chi v, v - eta chi u``; NTK:
    ``f = xi v.u / sqrt(n)``, ``u, v <- u - (eta chi/sqrt(n)) v, v - (eta chi/sqrt(n)) u``; i.e.
    ``theta <- theta - eta n grad L`` and ``theta - eta grad L`` on ``L = (1/2D) sum (f - y)^2``.
    ``u_0`` then ``v_0`` are drawn by ``torch.randn(width, generator=...)`` in float64 on the
    CPU (the same numbers on every device and dtype). The coefficients ``A..D`` are tracked
    alongside (exact at any width); ``feature_change = ||u_t - u_0|| / sqrt(n)``,
    ``movement = ||u_t - u_0||``.

    Args: as :func:`linear_limit`, plus ``width`` (``n`` >= 1) and ``seed`` (an int, a
    ``torch.Generator`` or ``None`` for torch's global state).
    """
    x, y, lr, steps, parametrization, device, dtype = _validate(
        x, y, lr, steps, parametrization, on_divergence, device, dtype
    )
    width = _checks.positive_int("width", width)
    gen = generator(seed)
    u0 = torch.randn(width, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    v0 = torch.randn(width, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    root = math.sqrt(width)
    out_scale, step_scale = (
        (1.0 / width, 1.0) if parametrization == "mup" else (1.0 / root, 1.0 / root)
    )
    one = torch.ones((), device=device, dtype=dtype)
    zero = torch.zeros((), device=device, dtype=dtype)
    a, b, c, d = one, zero, zero, one
    u, v = u0, v0
    outputs, coeffs, feature, movement = [], ([], [], [], []), [], []
    for t in range(steps + 1):
        f = x * (torch.dot(v, u) * out_scale)
        outputs.append(f)
        for lst, val in zip(coeffs, (a, b, c, d), strict=True):
            lst.append(val)
        move = torch.linalg.vector_norm(u - u0)
        movement.append(move)
        feature.append(move / root)
        if t == steps:
            break
        e = lr * ((f - y) * x).mean() * step_scale
        u, v = u - e * v, v - e * u
        a, b, c, d = a - e * c, b - e * d, c - e * a, d - e * b
    return _finish(parametrization, width, outputs, coeffs, feature, movement, y, on_divergence)




# ---------------------------------------------------------------------------------------
# Two hidden layers: where W and W^T meet (gradient independence and its failure)
# ---------------------------------------------------------------------------------------

TRANSPOSES: tuple[str, ...] = ("same", "independent")
"""Accepted values of ``transpose`` in :func:`two_layer_step`."""


@dataclass(frozen=True)
class TwoLayerStep:
    """One muP SGD step of the two-hidden-layer network (:func:`two_layer_step`).

    Attributes:
        width: ``n``.
        transpose: ``"same"`` (true backpropagation) or ``"independent"`` (the backward pass
            multiplies by the transpose of an independent copy of ``W``).
        f0, f1: the outputs on the training inputs before and after the step, shape ``(D,)``.
        first_update: ``||U_1 - U_0||_F / sqrt(n)``, the size of the first feature update.
    """

    width: int
    transpose: str
    f0: torch.Tensor
    f1: torch.Tensor
    first_update: float


def two_layer_step(
    x: Any,
    y: Any,
    *,
    lr: float,
    width: int,
    seed: int | torch.Generator | None,
    transpose: str = "same",
    activation: str = "tanh",
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> TwoLayerStep:
    """Return one muP SGD step of ``f = v . phi(W phi(U x / sqrt(d)) / sqrt(n)) / n``.

    ``U (n x d)``, ``W (n x n)``, ``v (n)`` have i.i.d. ``N(0, 1)`` entries (drawn in that
    order, float64 on the CPU), and every tensor moves by ``-eta n`` times its gradient of
    ``L = (1/2D) sum_a (f(x_a) - y_a)^2``, as in :func:`~ntk_lib.nonlinear_limit.mlp_finite`.
    The backward pass to the first layer multiplies by ``W^T``: ``dL/dx^1 = W^T dL/dh^2 /
    sqrt(n)``. With
    ``transpose="independent"`` it uses ``W~^T`` for an independent copy ``W~`` instead (the
    *gradient independence assumption*). At initialisation the two give the same limit of
    the first gradient (``first_update``); after the step, the forward pass multiplies
    ``W_0`` by features that were built from ``W_0^T``, and the Master Theorem's correction
    ``Z-dot`` makes ``f1`` differ at order one (Yang & Hu 2021). Taught in lesson 09.
    """
    x, y, device, dtype = _training_set(x, y, device, dtype)
    lr = _checks.real("lr", lr, positive=True)
    width = _checks.positive_int("width", width)
    transpose = _checks.choice("transpose", transpose, TRANSPOSES)
    _, both = _activation(activation)
    gen = generator(seed)
    n_in, d = x.shape

    def draw(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).to(device, dtype)

    u, w, v = draw(width, d), draw(width, width), draw(width)
    w_back = draw(width, width) if transpose == "independent" else w
    rn, rd = math.sqrt(width), math.sqrt(d)

    def forward(u, w, v):
        p1, dp1 = both(u @ x.T / rd)  # (n, D)
        p2, dp2 = both(w @ p1 / rn)
        return p1, dp1, p2, dp2, v @ p2 / width

    p1, dp1, p2, dp2, f0 = forward(u, w, v)
    chi = (f0 - y) / n_in  # dL/df
    dh2 = v[:, None] * dp2 * chi / width  # dL/dh^2, (n, D)
    dh1 = (w_back.T @ dh2) / rn * dp1  # dL/dh^1
    step = lr * width
    du = step * dh1 @ x / rd
    w1 = w - step * dh2 @ p1.T / rn
    v1 = v - step * p2 @ chi / width
    f1 = forward(u - du, w1, v1)[-1]
    return TwoLayerStep(width, transpose, f0, f1, float(torch.linalg.matrix_norm(du) / rn))
