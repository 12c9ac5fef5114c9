"""Coordinate checks: how big each layer's coordinates are, and how far they move, versus width.

A parametrization is right for wide networks when, during the first steps of training,
every layer's pre-activations ``h^l``, activations ``x^l = phi(h^l)``, their changes
``h^l_t - h^l_0`` and the output ``f`` have coordinates of a size that does not depend on
the width (Yang & Hu 2021; Yang et al. 2022, the ``mup`` package's "coord check"). A
log-log slope ``s`` of a coordinate size against the width means ``Theta(n^s)``: under
muP all slopes are about 0, in the NTK parametrization the changes fall like
``n^{-1/2}`` (``r = 1/2``: no feature learning), and under the standard parametrization
with a width-independent learning rate the output blows up.

The typical size of a coordinate is its mean absolute value (the ``mup`` package's
``l1`` statistic), averaged over seeds. :func:`max_stable_lr` finds, per width, the largest
learning rate that does not diverge, and fits its exponent.

Taught in lessons 07 and 08.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from . import _checks
from .families import SEEDS, Family, build, check_family, check_seeds, like_model
from .measure import largest_true, loglog_slope
from .models import MLP
from .training import Divergence, full_batch_gd, mse_loss

OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")
"""Optimizers accepted by :func:`coord_check`."""

KINDS: tuple[str, ...] = ("size", "change")
"""What a :class:`CoordCheck` holds: coordinate sizes, or sizes of the change since step 0."""


@dataclass(frozen=True)
class CoordCheck:
    """Coordinate sizes recorded by :func:`coord_check`.

    ``size[i, t, k]`` is the mean ``|coordinate|`` of quantity ``names[k]`` at width
    ``widths[i]`` before optimizer step ``t`` (so ``t = 0`` is the initialisation and
    ``t = steps`` is after the last step), averaged over the seeds; ``change`` is the same
    for the quantity minus its value at ``t = 0``. ``names`` are ``h1..hL`` (pre-activations),
    ``x1..xL`` (activations) and ``f`` (the output). float64, CPU.
    """

    widths: tuple[int, ...]
    names: tuple[str, ...]
    size: torch.Tensor
    change: torch.Tensor

    @property
    def steps(self) -> int:
        """Return the number of optimizer steps taken (records are at ``t = 0..steps``)."""
        return self.size.shape[1] - 1

    def _values(self, kind: str) -> torch.Tensor:
        return self.size if _checks.choice("kind", kind, KINDS) == "size" else self.change

    def slopes(self, kind: str = "size") -> torch.Tensor:
        """Return the log-log slope vs width, shape ``(steps + 1, len(names))``.

        ``NaN`` where a quantity is zero at some width (the change at ``t = 0``).
        """
        v = self._values(kind)
        out = torch.full(v.shape[1:], math.nan, dtype=torch.float64)
        for t in range(v.shape[1]):
            for k in range(v.shape[2]):
                if (v[:, t, k] > 0).all():
                    out[t, k] = loglog_slope(self.widths, v[:, t, k])[0]
        return out

    def ratio(self, kind: str, wide: int, narrow: int) -> torch.Tensor:
        """Return ``values(wide) / values(narrow)``, shape ``(steps + 1, len(names))``."""
        for name, w in (("wide", wide), ("narrow", narrow)):
            if w not in self.widths:
                raise ValueError(
                    f"{name} must be one of the recorded widths {list(self.widths)}; got {w!r}"
                )
        v = self._values(kind)
        return v[self.widths.index(wide)] / v[self.widths.index(narrow)]

    def column(self, name: str) -> int:
        """Return the index of quantity ``name`` in ``names``."""
        return self.names.index(_checks.choice("name", name, self.names))


def _batch(x, y, *, vector_y: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the checked batch: ``x`` of shape ``(N, d)``, ``y`` of shape ``(N,)`` (or ``(N,
    d_out)``)."""
    x = _checks.matrix("x", x)
    as_vector = vector_y or (y.ndim if hasattr(y, "ndim") else np.ndim(y)) == 1
    y = (_checks.vector if as_vector else _checks.matrix)("y", y, dtype=x.dtype, device=x.device)
    if y.shape[0] != x.shape[0]:
        shapes = f"({x.shape[0]},)" if vector_y else f"({x.shape[0]},) or ({x.shape[0]}, d_out)"
        raise ValueError(f"y must have shape {shapes} to match x; got {tuple(y.shape)}")
    return x, y


def _statistics(model: MLP, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Return ``[h^1..h^L, x^1..x^L, f]`` detached, and ``f`` with its graph (for the loss)."""
    inputs, pre = model.forward_cache(x)
    out = pre[-1].squeeze(-1) if model.d_out == 1 else pre[-1]
    return [h.detach() for h in pre[:-1]] + [a.detach() for a in inputs[1:]] + [out.detach()], out


def coord_check(
    models: Family,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    lr: float,
    steps: int = 3,
    optimizer: str = "sgd",
    seeds: Sequence[int] = SEEDS,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = mse_loss,
) -> CoordCheck:
    """Return the coordinate sizes of the networks of ``models`` over widths and steps.

    For each width and seed, builds the network ``models[width](generator(seed))`` (an
    :class:`~ntk_lib.models.MLP`, e.g. from :func:`~ntk_lib.families.mlp_family`) and
    takes ``steps`` full-batch steps on ``loss(f(x), y)`` (default the course's MSE
    ``(1/2D) sum (f - y)^2``) with per-layer rates ``lr * n^{-c}`` from
    :meth:`~ntk_lib.models.MLP.param_groups`, recording every layer before each step and
    after the last. ``c`` is the SGD exponent of the abc-parametrization; with
    ``optimizer="adam"`` the same per-layer rates are given to Adam (whose own abc
    degeneracy is ``c <- c - theta``, Yang & Hu 2021, App. H), which shows what a
    width-independent Adam rate does to each parametrization.

    Args:
        models: ``{width: factory}`` with at least two widths (:mod:`ntk_lib.families`).
        x, y: the batch, ``x`` of shape ``(N, d)``; ``y`` of shape ``(N,)``, or
            ``(N, d_out)`` for a vector output. Moved to the networks' device and dtype.

    Raises:
        ~ntk_lib.training.DivergenceError: when the loss becomes non-finite (lower ``lr``).
    """
    widths = check_family("models", models, minimum=2)
    lr = _checks.real("lr", lr, positive=True)
    steps = _checks.nonnegative_int("steps", steps)
    _checks.choice("optimizer", optimizer, OPTIMIZERS)
    seeds = check_seeds(seeds)
    x, y = _batch(x, y, vector_y=False)
    size = change = names = None
    for i, width in enumerate(widths):
        for seed in seeds:
            model = _mlp(build(models, width, seed))
            xm, ym = like_model(model, x=x, y=y)
            if names is None:
                depth = model.depth
                names = (
                    *[f"h{k}" for k in range(1, depth + 1)],
                    *[f"x{k}" for k in range(1, depth + 1)],
                    "f",
                )
                size = torch.zeros(len(widths), steps + 1, len(names), dtype=torch.float64)
                change = torch.zeros_like(size)
            if model.depth != len(names) // 2:
                raise ValueError(
                    f"models must share one depth; width {width} has {model.depth}, "
                    f"width {widths[0]} has {len(names) // 2}"
                )
            sizes, changes = _run(model, xm, ym, y.shape, lr, steps, optimizer, loss)
            for t in range(steps + 1):
                for k in range(len(names)):
                    size[i, t, k] += sizes[t][k] / len(seeds)
                    change[i, t, k] += changes[t][k] / len(seeds)
    return CoordCheck(widths, names, size, change)


def _run(model: MLP, x: torch.Tensor, y: torch.Tensor, y_shape: torch.Size, lr: float, steps: int,
         optimizer: str, loss: Callable) -> tuple[list[list[float]], list[list[float]]]:
    """Train one network; return per step the mean |coordinate| and |change| of each quantity."""
    groups = model.param_groups(lr)
    opt = torch.optim.SGD(groups, lr=lr) if optimizer == "sgd" else torch.optim.Adam(groups, lr=lr)
    cache, sizes, changes = {}, [], []

    def forward(net: MLP, xb: torch.Tensor) -> torch.Tensor:
        cache["stats"], out = _statistics(net, xb)
        if out.shape != y.shape:
            raise ValueError(
                f"y must have the networks' output shape {tuple(out.shape)}; got {tuple(y_shape)}"
            )
        return out

    def record(t: int, out: torch.Tensor) -> None:
        first = cache.setdefault("first", cache["stats"])
        sizes.append([float(s.abs().mean()) for s in cache["stats"]])
        pairs = zip(cache["stats"], first, strict=True)
        changes.append([float((s - s0).abs().mean()) for s, s0 in pairs])

    # Coordinate checks exist to watch sizes grow: only a non-finite loss diverges.
    full_batch_gd(model, x, y, lr=lr, steps=steps, loss=loss, optimizer=opt, forward=forward,
                  on_step=record, divergence=Divergence(math.inf, "raise"))
    return sizes, changes


def _mlp(model: torch.nn.Module) -> MLP:
    if not isinstance(model, MLP):
        raise TypeError(
            f"models must build ntk_lib.models.MLP networks (their layers are recorded); "
            f"got {type(model).__name__}"
        )
    return model


@dataclass(frozen=True)
class MaxLR:
    """The largest stable learning rate per width (:func:`max_stable_lr`) and its fitted exponent.

    ``lr[i]`` is the geometric mean over seeds of the bisected maximal rate at
    ``widths[i]``; ``exponent`` and ``prefactor`` fit ``lr = prefactor * width^exponent``.
    """

    widths: tuple[int, ...]
    lr: torch.Tensor
    exponent: float
    prefactor: float


def _stable(
    model_factory: Callable[[], torch.nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    lr: float,
    steps: int,
) -> bool:
    """Whether ``steps`` of full-batch GD at ``lr`` do not diverge (factor ``1e4``) and end below
    the start."""
    run = full_batch_gd(model_factory(), x, y, lr=lr, steps=steps, divergence=Divergence(1e4))
    return not run.diverged and run.losses[-1] < run.losses[0]


def max_stable_lr(
    models: Family,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    steps: int = 20,
    lr_range: tuple[float, float] = (1e-4, 1e4),
    iters: int = 12,
    seeds: Sequence[int] = SEEDS,
) -> MaxLR:
    """Return the maximal stable learning rate ``eta`` at each width, and its exponent in the width.

    A rate is *stable* when ``steps`` full-batch gradient steps on the MSE loss (per-layer
    rates ``eta n^{-c}``) keep the loss finite and end below the initial loss. The
    boundary is bisected in ``log eta`` inside ``lr_range`` (``iters`` halvings: the
    resolution is ``(hi/lo)^{2^-iters}``). The exponent is about ``0`` for muP and about
    ``-1`` for the standard parametrization with a width-independent rate, whose NTK grows
    like ``n`` (so ``eta < 2 D / lambda_max`` falls like ``1/n``).

    Raises:
        ValueError: if the low end of ``lr_range`` is already unstable or the high end stable.
    """
    widths = check_family("models", models, minimum=2)
    lo0, hi0 = (_checks.real(f"lr_range[{i}]", v, positive=True) for i, v in enumerate(lr_range))
    if lo0 >= hi0:
        raise ValueError(f"lr_range must be (low, high) with low < high; got {tuple(lr_range)}")
    iters = _checks.positive_int("iters", iters)
    steps = _checks.positive_int("steps", steps)
    seeds = check_seeds(seeds)
    x, y = _batch(x, y, vector_y=True)
    rates = []
    for width in widths:
        logs = []
        for seed in seeds:
            factory = functools.partial(build, models, width, seed)
            xm, ym = like_model(factory(), x=x, y=y)
            if not _stable(factory, xm, ym, lo0, steps):
                raise ValueError(
                    f"lr_range low end {lo0:g} is already unstable at width {width}: lower it"
                )
            if _stable(factory, xm, ym, hi0, steps):
                raise ValueError(
                    f"lr_range high end {hi0:g} is still stable at width {width}: raise it"
                )
            stable = functools.partial(_stable, factory, xm, ym, steps=steps)
            lo, _ = largest_true(stable, lo0, hi0, iters=iters)
            logs.append(math.log(lo))
        rates.append(math.exp(float(np.mean(logs))))
    exponent, prefactor = loglog_slope(widths, rates)
    return MaxLR(widths, torch.tensor(rates, dtype=torch.float64), exponent, prefactor)
