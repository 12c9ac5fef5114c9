"""Infinite-width limits of one-hidden-layer networks trained by SGD (Tensor Programs).

Two networks of lesson 09. The linear one (scalar input, :func:`linear_limit`,
:func:`linear_finite`) reduces to four deterministic scalars, derived below. The nonlinear
one in muP, ``f(x) = v . phi(U x / sqrt(d)) / n`` (:func:`mlp_limit`, :func:`mlp_finite`),
reduces to an expectation over the initial Gaussians ``(Z^u, Z^v)`` of each coordinate;
see :func:`mlp_limit`.

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
from .training import DIVERGENCE_THRESHOLD, ON_DIVERGENCE, DivergenceError

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


def _diverged_at(
    bad: torch.Tensor, outputs: torch.Tensor, y: torch.Tensor, on_divergence: str
) -> int:
    """Return the first step flagged in ``bad`` (``-1`` if none); raise there if so asked."""
    if not bad.any():
        return -1
    step = int(torch.nonzero(bad)[0, 0])
    if on_divergence == "raise":
        raise DivergenceError(step, 0.5 * float(((outputs[step] - y) ** 2).mean()))
    return step


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
# The nonlinear one-hidden-layer network in muP, and its limit from the Z variables
# ---------------------------------------------------------------------------------------

METHODS: tuple[str, ...] = ("auto", "quadrature", "monte_carlo")
"""Accepted values of ``method`` in :func:`mlp_limit`."""

QUADRATURE_NODES: dict[int, int] = {2: 256, 3: 48, 4: 20}
"""Default Gauss-Hermite nodes per dimension, by the dimension ``r + 1`` of the integral
(``r`` = rank of the inputs). ``method="auto"`` uses quadrature only in 2 dimensions:
after some training the integrand has a steep front (the coordinates whose ``u`` changes
sign), so a product rule converges only algebraically and quasi-Monte Carlo is the better
rule from 3 dimensions on."""

MAX_NODES = 300
"""numpy's Gauss-Hermite weights underflow beyond this many nodes."""

MC_PAIRS = 2**13
"""Default number of antithetic pairs ``(Z^u, +Z^v), (Z^u, -Z^v)`` for Monte Carlo."""

MC_REPLICAS = 8
"""Independent scramblings of the Sobol points; their spread gives ``error``."""


@dataclass(frozen=True)
class MLPRun:
    """A trajectory of the one-hidden-layer network in muP: the limit or one finite width.

    Tensors have ``steps + 1`` rows (fewer if the run diverged with ``on_divergence="stop"``).

    Attributes:
        activation: the name of ``phi``.
        width: ``None`` for the infinite-width limit, else ``n``.
        outputs: ``f_t(x_a)`` on the training inputs, shape ``(steps + 1, D)``.
        test_outputs: ``f_t`` on ``x_test``, shape ``(steps + 1, M)``, or ``None``.
        feature_change: ``||U_t - U_0||_F / sqrt(n)`` (its limit ``sqrt(E|Z^{u_t} -
            Z^{u_0}|^2)`` for ``width=None``), shape ``(steps + 1,)``.
        method: ``"quadrature"`` or ``"monte_carlo"`` for a limit, ``"network"`` otherwise.
        points: the number of ``(Z^u, Z^v)`` points of the limit's integral (0 for a network).
        error: the limit's estimated integration error on ``outputs`` (quadrature: distance
            to a coarser rule; Monte Carlo: standard error over independent scramblings);
            ``None`` for a network.
        diverged_at: the step at which the run diverged, ``-1`` if it did not.
    """

    activation: str
    width: int | None
    outputs: torch.Tensor
    test_outputs: torch.Tensor | None
    feature_change: torch.Tensor
    method: str
    points: int
    error: torch.Tensor | None
    diverged_at: int = -1

    @property
    def diverged(self) -> bool:
        """Whether the run was stopped by divergence."""
        return self.diverged_at >= 0


def _activation(name):
    """Return ``(name, both)`` where ``both(h) = (phi(h), phi'(h))``."""
    from . import activations

    if name == "linear":
        name = "identity"
    if not isinstance(name, str) or name not in activations.NAMES:
        accepted = ", ".join(map(repr, (*activations.NAMES, "linear")))
        raise ValueError(f"activation must be one of {accepted}; got {name!r}")
    phi, dphi = activations.get(name)
    if name == "tanh":

        def both(h):
            p = torch.tanh(h)
            return p, 1 - p * p

    else:

        def both(h):
            return phi(h), dphi(h)

    return name, both


def _validate_mlp(x, y, x_test, lr, steps, activation, on_divergence, device, dtype):
    device, dtype = resolve(device, dtype, theory=True)
    x = _inputs("x", x, None, dtype, device)
    y = _checks.vector("y", y, dtype=dtype, device=device)
    if y.shape != (x.shape[0],):
        raise ValueError(
            f"y must have one target per input, shape ({x.shape[0]},); got shape {tuple(y.shape)}"
        )
    if x_test is not None:
        x_test = _inputs("x_test", x_test, x.shape[1], dtype, device)
    lr = _checks.real("lr", lr, positive=True)
    steps = _checks.nonnegative_int("steps", steps)
    name, both = _activation(activation)
    _checks.choice("on_divergence", on_divergence, ON_DIVERGENCE)
    return x, y, x_test, lr, steps, (name, both), device, dtype


def _inputs(name, x, cols, dtype, device):
    """A (D, d) matrix; a 1-D vector is read as D scalar inputs (d = 1), as in linear_limit."""
    ndim = x.ndim if isinstance(x, torch.Tensor) else getattr(_as_array(x), "ndim", None)
    if ndim == 1:
        return _checks.vector(name, x, dtype=dtype, device=device)[:, None]
    return _checks.matrix(name, x, cols=cols, dtype=dtype, device=device)


def _as_array(x):
    import numpy as np

    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        return None  # _checks.matrix then raises its TypeError


def _mlp_finish(name, width, outs, tests, feats, y, on_divergence, method, points, error):
    outputs = torch.stack(outs)
    test_outputs = torch.stack(tests) if tests is not None else None
    feature = torch.stack(feats)
    scale = 1.0 + float(y.abs().max())
    bad = ~(outputs.abs() <= DIVERGENCE_THRESHOLD * scale).all(dim=1) | ~torch.isfinite(feature)
    diverged_at = _diverged_at(bad, outputs, y, on_divergence)
    if diverged_at >= 0:
        keep = slice(0, diverged_at)
        outputs, feature = outputs[keep], feature[keep]
        test_outputs = test_outputs[keep] if test_outputs is not None else None
        error = error[keep] if error is not None else None
    return MLPRun(name, width, outputs, test_outputs, feature, method, points, error, diverged_at)


def _gauss_hermite(q, device, dtype):
    """Nodes and weights of the q-point Gauss-Hermite rule for N(0, 1), exactly symmetric."""
    import numpy as np

    z, w = np.polynomial.hermite_e.hermegauss(q)
    z, w = (z - z[::-1]) / 2, (w + w[::-1]) / 2
    w = w / w.sum()
    return (
        torch.as_tensor(z, dtype=dtype, device=device),
        torch.as_tensor(w, dtype=dtype, device=device),
    )


def _quadrature_points(r, q, device, dtype):
    """Antithetic pairs of a tensor Gauss-Hermite rule in r + 1 dimensions.

    Returns ``z`` of shape ``(P, r)``, ``v`` of shape ``(P,)`` (the positive half of the
    ``Z^v`` nodes; the partner of each point is ``(z, -v)``) and pair weights ``(P,)``.
    """
    nodes, weights = _gauss_hermite(q, device, dtype)
    half = nodes > 0
    vz, vw = nodes[half], weights[half]  # q even: no node at 0; pairs carry both halves
    grids = torch.meshgrid(*([nodes] * r), vz, indexing="ij")
    wgrids = torch.meshgrid(*([weights] * r), vw, indexing="ij")
    pts = torch.stack([g.reshape(-1) for g in grids], dim=1)
    w = torch.stack([g.reshape(-1) for g in wgrids], dim=1).prod(dim=1)
    return pts[:, :r], pts[:, r], w


def _sobol_points(r, pairs, seed, device, dtype):
    """Antithetic pairs of scrambled Sobol points mapped to N(0, I_{r+1}) (one replica)."""
    engine = torch.quasirandom.SobolEngine(r + 1, scramble=True, seed=seed)
    u = engine.draw(pairs, dtype=torch.float64)
    u = u.clamp(1e-12, 1 - 1e-12)  # the point 0 of an unscrambled net
    g = math.sqrt(2.0) * torch.special.erfinv(2 * u - 1)
    g = g.to(device=device, dtype=dtype)
    return g[:, :r], g[:, r], torch.full((pairs,), 0.5 / pairs, device=device, dtype=dtype)


def _limit_run(z0, v0, w, c, c_test, y, lr, steps, both, scale):
    """Evolve the (Z^u, Z^v) points of one integration rule; return f, f_test, feature change.

    Each pair holds the points (z, v) and (z, -v); ``c`` (D, r) and ``c_test`` (M, r) are the
    inputs in the orthonormal basis of their span, ``scale = sqrt(d)``.
    """
    z = torch.stack([z0, z0])  # (2, P, r)
    v = torch.stack([v0, -v0])  # (2, P)
    start = z.clone()
    n_in = c.shape[0]
    outs, tests, feats = [], ([] if c_test is not None else None), []

    def expect(p):  # E[Z^v phi(Z^h)] with the pair summed first: exactly 0 at t = 0
        return torch.einsum("p,pa->a", w, (v[..., None] * p).sum(dim=0))

    for t in range(steps + 1):
        h = z @ c.T / scale  # (2, P, D): Z^{h(x_a)}
        p, dp = both(h)
        f = expect(p)
        outs.append(f)
        if c_test is not None:
            tests.append(expect(both(z @ c_test.T / scale)[0]))
        feats.append(torch.sqrt(w @ ((z - start) ** 2).sum(dim=(0, 2))))
        if t == steps or not torch.isfinite(f).all():
            if t < steps:  # keep the shapes; _mlp_finish stops at the first bad step
                outs += [f] * (steps - t)
                feats += [feats[-1]] * (steps - t)
                if tests is not None:
                    tests += [tests[-1]] * (steps - t)
            break
        chi = (f - y) * (lr / n_in)  # (D,), deterministic in the limit
        dz = (v[..., None] * (dp * chi)) @ c / scale
        dv = p @ chi
        z, v = z - dz, v - dv
    return outs, tests, feats


def mlp_limit(
    x: Any,
    y: Any,
    *,
    lr: float,
    steps: int,
    activation: str = "tanh",
    x_test: Any = None,
    method: str = "auto",
    nodes: int | None = None,
    pairs: int = MC_PAIRS,
    seed: int = 0,
    on_divergence: str = ON_DIVERGENCE[0],
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> MLPRun:
    r"""Return the infinite-width limit of muP SGD on ``f(x) = v . phi(U x / sqrt(d)) / n``.

    The network: inputs ``x in R^d``, ``U in R^{n x d}``, ``v in R^n`` with i.i.d.
    ``N(0, 1)`` entries, ``f(x) = (1/n) sum_i v_i phi(u_i . x / sqrt(d))``, loss
    ``L = (1/2D) sum_a (f(x_a) - y_a)^2``, full-batch updates ``U <- U - eta n grad_U L``,
    ``v <- v - eta n grad_v L``. Per coordinate ``i`` these read, with
    ``chi_a = f_t(x_a) - y_a``,

    .. math::

        v_i \leftarrow v_i - \frac{\eta}{D} \sum_a \chi_a \phi(h_{ia}), \qquad
        u_i \leftarrow u_i - \frac{\eta}{D} \sum_a \chi_a v_i \phi'(h_{ia})
            \frac{x_a}{\sqrt d}, \qquad h_{ia} = \frac{u_i \cdot x_a}{\sqrt d},

    so the ``n`` rows ``(u_i, v_i)`` evolve independently given the ``D`` scalars
    ``chi_a``. The Master Theorem (Yang & Hu 2021) makes each scalar deterministic in the
    limit: ``f_t(x) = E[Z^{v_t} phi(Z^{h_t(x)})]``, where ``(Z^{u_t}, Z^{v_t})`` is the
    same update applied to the initial Gaussians ``(Z^{u_0}, Z^{v_0}) ~ N(0, I_{d+1})``.
    ``f_0 = E[Z^{v_0}] E[phi(Z^{h_0})] = 0``. Only the part of ``Z^u`` in the span of the
    inputs (dimension ``r <= min(D, d)``) ever matters, so the expectation is an integral
    over ``r + 1`` dimensions:

    - ``method="quadrature"``: a tensor Gauss-Hermite rule with ``nodes`` points per
      dimension (default :data:`QUADRATURE_NODES`); ``error`` is the distance to the rule
      with a third fewer nodes (an order of magnitude: near a steep front the convergence
      is not monotone);
    - ``method="monte_carlo"``: :data:`MC_REPLICAS` independently scrambled Sobol sets of
      ``pairs`` antithetic pairs each, mapped to Gaussians; ``error`` is the standard error
      of their mean (it ignores the feedback of the integration error through ``chi``);
    - ``method="auto"``: quadrature when ``r = 1`` (a 2-D integral), else Monte Carlo.

    Both rules pair every point ``(Z^u, Z^v)`` with ``(Z^u, -Z^v)`` (antithetic
    variables), which makes ``f_0 = 0`` exactly, as in the limit. Accuracy (tested in
    ``tests/test_tensor_programs.py``): the linear activation reproduces
    :func:`linear_limit` to 1e-13 (the integrand is a polynomial); for tanh with inputs of
    order one the default rules are within about 1e-4 relative error of finer ones after
    40-50 steps, and much closer early on, where the integrand is smoother (an independent
    adaptive quadrature agrees to 1e-8 after two steps). With training, the coordinates
    whose ``u`` changes sign form a steep front in the integrand, which is what limits the
    accuracy; ``error`` tracks it.

    Both rules pair every point ``(Z^u, Z^v)`` with ``(Z^u, -Z^v)`` (antithetic
    variables), which makes ``f_0 = 0`` exactly, as in the limit.

    Taught in lesson 09.

    Args:
        x: training inputs, shape ``(D, d)``; a 1-D tensor is read as ``D`` scalar inputs
            (``d = 1``, the network of :func:`linear_limit` with ``activation="linear"``).
        y: targets, shape ``(D,)``.
        lr: the width-independent learning rate ``eta`` (> 0).
        steps: number of full-batch steps (>= 0).
        activation: ``"tanh"``, ``"erf"``, ``"relu"``, ``"identity"`` or ``"linear"``.
        x_test: optional further inputs ``(M, d)`` on which ``test_outputs`` are computed.
        method, nodes, pairs, seed: the integration rule (above); ``seed`` scrambles Sobol.
        on_divergence: ``"raise"`` (:class:`~ntk_lib.training.DivergenceError` with the step) or
            ``"stop"``.
        device, dtype: where the integral is computed; defaults ``default_device()``, float64.
    """
    x, y, x_test, lr, steps, (name, both), device, dtype = _validate_mlp(
        x, y, x_test, lr, steps, activation, on_divergence, device, dtype
    )
    method = _checks.choice("method", method, METHODS)
    pairs = _checks.positive_int("pairs", pairs)
    seed = _checks.nonnegative_int("seed", seed)
    if nodes is not None:
        nodes = _checks.positive_int("nodes", nodes)
        if nodes < 4 or nodes % 2 or nodes > MAX_NODES:
            raise ValueError(f"nodes must be an even integer from 4 to {MAX_NODES}; got {nodes}")
    inputs = x if x_test is None else torch.cat([x, x_test])
    # orthonormal basis of the span of the inputs: Z^u enters only through it
    _, s, vh = torch.linalg.svd(inputs, full_matrices=False)
    r = max(1, int((s > s[0] * 1e-12).sum()))
    basis = vh[:r].T  # (d, r)
    c, c_test = x @ basis, (x_test @ basis if x_test is not None else None)
    scale = math.sqrt(x.shape[1])
    if method == "auto":
        method = "quadrature" if r == 1 else "monte_carlo"
    if method == "quadrature":
        q = nodes or QUADRATURE_NODES.get(r + 1, 12)
        if q ** (r + 1) > 2**22:
            raise ValueError(
                f"method='quadrature' needs {q}^{r + 1} points for inputs of rank {r}; "
                "use method='monte_carlo' (or fewer nodes)"
            )
        coarse = max(4, 2 * round(q / 3))
        runs = [
            _limit_run(
                *_quadrature_points(r, k, device, dtype), c, c_test, y, lr, steps, both, scale
            )
            for k in (q, coarse)
        ]
        outs, tests, feats = runs[0]
        error = (torch.stack(runs[0][0]) - torch.stack(runs[1][0])).abs()
        points = q ** (r + 1)
    else:
        runs = [
            _limit_run(
                *_sobol_points(r, pairs, seed * MC_REPLICAS + k, device, dtype),
                c,
                c_test,
                y,
                lr,
                steps,
                both,
                scale,
            )
            for k in range(MC_REPLICAS)
        ]

        def mean(j):
            return [torch.stack([run[j][t] for run in runs]).mean(dim=0) for t in range(steps + 1)]

        outs, feats = mean(0), mean(2)
        tests = mean(1) if x_test is not None else None
        spread = torch.stack([torch.stack(run[0]) for run in runs])  # (replicas, T, D)
        error = spread.std(dim=0) / math.sqrt(MC_REPLICAS)
        points = 2 * pairs * MC_REPLICAS
    return _mlp_finish(name, None, outs, tests, feats, y, on_divergence, method, points, error)


def mlp_finite(
    x: Any,
    y: Any,
    *,
    lr: float,
    steps: int,
    activation: str = "tanh",
    width: int,
    seed: int | torch.Generator | None,
    x_test: Any = None,
    on_divergence: str = ON_DIVERGENCE[0],
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> MLPRun:
    """Return muP SGD on the width-``n`` network itself, to compare with :func:`mlp_limit`.

    ``f(x) = v . phi(U x / sqrt(d)) / n``; ``U <- U - eta n grad_U L``,
    ``v <- v - eta n grad_v L`` on ``L = (1/2D) sum_a (f(x_a) - y_a)^2`` (gradients written
    out; the tests check them against autograd). ``U`` (``n x d``) then ``v`` (``n``) are
    drawn by ``torch.randn(..., generator=...)`` in float64 on the CPU, so the same seed
    gives the same network on every device and dtype. ``feature_change`` is
    ``||U_t - U_0||_F / sqrt(n)``. Taught in lesson 09.

    Args: as :func:`mlp_limit` (without the integration options), plus ``width`` (``n``
    >= 1) and ``seed`` (an int, a ``torch.Generator`` or ``None`` for torch's global state).
    """
    x, y, x_test, lr, steps, (name, both), device, dtype = _validate_mlp(
        x, y, x_test, lr, steps, activation, on_divergence, device, dtype
    )
    width = _checks.positive_int("width", width)
    gen = generator(seed)
    n_in, d = x.shape
    u = torch.randn(width, d, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    v = torch.randn(width, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    start, scale = u.clone(), math.sqrt(d)
    outs, tests, feats = [], ([] if x_test is not None else None), []
    for t in range(steps + 1):
        p, dp = both(u @ x.T / scale)  # (n, D)
        f = v @ p / width
        outs.append(f)
        if x_test is not None:
            tests.append(v @ both(u @ x_test.T / scale)[0] / width)
        feats.append(torch.linalg.matrix_norm(u - start) / math.sqrt(width))
        if t == steps or not torch.isfinite(f).all():
            if t < steps:
                outs += [f] * (steps - t)
                feats += [feats[-1]] * (steps - t)
                if tests is not None:
                    tests += [tests[-1]] * (steps - t)
            break
        chi = (f - y) * (lr / n_in)
        u, v = u - (v[:, None] * (dp * chi)) @ x / scale, v - p @ chi
    return _mlp_finish(name, width, outs, tests, feats, y, on_divergence, "network", 0, None)


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
    ``L = (1/2D) sum_a (f(x_a) - y_a)^2``, as in :func:`mlp_finite`. The backward pass to the
    first layer multiplies by ``W^T``: ``dL/dx^1 = W^T dL/dh^2 / sqrt(n)``. With
    ``transpose="independent"`` it uses ``W~^T`` for an independent copy ``W~`` instead (the
    *gradient independence assumption*). At initialisation the two give the same limit of
    the first gradient (``first_update``); after the step, the forward pass multiplies
    ``W_0`` by features that were built from ``W_0^T``, and the Master Theorem's correction
    ``Z-dot`` makes ``f1`` differ at order one (Yang & Hu 2021). Taught in lesson 09.
    """
    device, dtype = resolve(device, dtype, theory=True)
    x = _inputs("x", x, None, dtype, device)
    y = _checks.vector("y", y, dtype=dtype, device=device)
    if y.shape != (x.shape[0],):
        raise ValueError(
            f"y must have one target per input, shape ({x.shape[0]},); got shape {tuple(y.shape)}"
        )
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
