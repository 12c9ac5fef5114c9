"""The infinite-width limit of the one-hidden-layer nonlinear network in muP (Tensor Programs).

``f(x) = v . phi(U x / sqrt(d)) / n`` trained by SGD with muP's learning rates reduces, as
``n -> inf``, to an expectation over the initial Gaussians ``(Z^u, Z^v)`` of each
coordinate (:func:`mlp_limit`), computed by quadrature or Monte Carlo; :func:`mlp_finite`
trains the width-``n`` network itself for comparison. The linear network of the same
lesson, whose limit is four deterministic scalars, is :mod:`ntk_lib.tensor_programs`, from
which these names are importable too.

Reference: G. Yang, E. J. Hu, "Tensor Programs IV: Feature Learning in Infinite-Width
Neural Networks", ICML 2021. Taught in lesson 09.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from . import _checks
from .device import generator, resolve
from .training import DIVERGENCE_THRESHOLD, ON_DIVERGENCE, DivergenceError


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


def _training_set(x, y, device, dtype) -> tuple[torch.Tensor, torch.Tensor, torch.device,
                                                  torch.dtype]:
    """``(x, y, device, dtype)`` checked: D inputs and one target per input, float64 default."""
    device, dtype = resolve(device, dtype, theory=True)
    x = _inputs("x", x, None, dtype, device)
    y = _checks.vector("y", y, dtype=dtype, device=device)
    if y.shape != (x.shape[0],):
        raise ValueError(
            f"y must have one target per input, shape ({x.shape[0]},); got shape {tuple(y.shape)}"
        )
    return x, y, device, dtype


def _validate_mlp(x, y, x_test, lr, steps, activation, on_divergence, device, dtype):
    x, y, device, dtype = _training_set(x, y, device, dtype)
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
    :func:`~ntk_lib.tensor_programs.linear_limit` to 1e-13 (the integrand is a polynomial); for
    tanh with inputs of
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
            (``d = 1``, the network of :func:`~ntk_lib.tensor_programs.linear_limit` with
            ``activation="linear"``).
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
