"""Small deterministic datasets that need no download.

Everything here is generated from a seed or ships inside a package (scikit-learn's
``digits``), so lessons and tests run offline and give the same numbers every time.
"""

from __future__ import annotations

import math

import torch

from . import _checks
from .device import generator, resolve


def sphere(
    n: int,
    d: int,
    *,
    radius: float | None = None,
    seed: int | torch.Generator | None = 0,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Return ``n`` points drawn uniformly on the sphere of ``radius`` in ``R^d``, shape ``(n, d)``.

    The default radius ``sqrt(d)`` makes ``x.x / d = 1``, so that ``K^1(x, x) =
    sigma_w^2 + sigma_b^2`` in the course convention. Default dtype float64 (theory).
    """
    n, d = _checks.positive_int("n", n), _checks.positive_int("d", d)
    radius = math.sqrt(d) if radius is None else _checks.real("radius", radius, positive=True)
    device, dtype = resolve(device, dtype, theory=True)
    _checks.fits("n", n, 2 * n * d * 8, f"{n} x {d} float64 points")
    z = torch.randn(n, d, generator=generator(seed), dtype=torch.float64)
    return (radius * z / z.norm(dim=1, keepdim=True)).to(device=device, dtype=dtype)


def circle(
    n: int,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(angles, points)``: ``n`` equally spaced angles in ``[0, 2 pi)`` and the points
    ``sqrt(2) (cos a, sin a)`` on the circle with ``x.x / d = 1``, shapes ``(n,)`` and ``(n, 2)``.

    The kernel between the first point and the others, plotted against the angle, is the
    classic picture of an NTK (Jacot et al. 2018, Fig. 1).
    """
    n = _checks.positive_int("n", n)
    device, dtype = resolve(device, dtype, theory=True)
    _checks.fits("n", n, 6 * n * 8, f"{n} points on the circle")
    angles = torch.arange(n, dtype=torch.float64) * (2 * math.pi / n)
    points = math.sqrt(2) * torch.stack([angles.cos(), angles.sin()], dim=1)
    return angles.to(device=device, dtype=dtype), points.to(device=device, dtype=dtype)


def regression_1d(
    n: int,
    *,
    noise: float = 0.0,
    seed: int | torch.Generator | None = 0,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(x, y)``: ``n`` inputs on the unit circle parametrised by ``t`` in ``[-pi, pi)``
    and targets ``y = sin(2t) + 0.5 cos(t) + noise * N(0, 1)``.

    Inputs are the 2-D points ``sqrt(2) (cos t, sin t)`` (norm fixed, as in the NTK
    literature's toy problems), sorted by ``t``; shapes ``(n, 2)`` and ``(n,)``.
    """
    n = _checks.positive_int("n", n)
    noise = _checks.real("noise", noise, nonnegative=True)
    device, dtype = resolve(device, dtype)
    _checks.fits("n", n, 8 * n * 8, f"{n} points and targets")
    gen = generator(seed)
    t = torch.sort(torch.rand(n, generator=gen, dtype=torch.float64) * 2 * math.pi - math.pi).values
    x = math.sqrt(2) * torch.stack([t.cos(), t.sin()], dim=1)
    y = (
        torch.sin(2 * t)
        + 0.5 * torch.cos(t)
        + noise * torch.randn(n, generator=gen, dtype=torch.float64)
    )
    return x.to(device=device, dtype=dtype), y.to(device=device, dtype=dtype)


def digits(
    n_train: int = 500,
    n_test: int = 500,
    *,
    classes: tuple[int, ...] = tuple(range(10)),
    seed: int = 0,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return ``(x_train, y_train, x_test, y_test)`` from scikit-learn's 8x8 digits (1797 images).

    Images are flattened to 64 features, standardised with the training set's mean and
    standard deviation (pixels constant on the training split are only centred) and
    rescaled so that ``x.x / 64 = 1`` on average on the training split; labels are
    indices into ``classes`` (``int64``). The split is a seeded random permutation.
    """
    from sklearn.datasets import load_digits  # ships with scikit-learn: no download

    n_train, n_test = (
        _checks.positive_int("n_train", n_train),
        _checks.positive_int("n_test", n_test),
    )
    bunch = load_digits()
    keep = torch.isin(torch.as_tensor(bunch.target), torch.as_tensor(list(classes)))
    x_all = torch.as_tensor(bunch.data, dtype=torch.float64)[keep]
    labels = torch.as_tensor(bunch.target)[keep]
    if n_train + n_test > len(labels):
        raise ValueError(
            f"n_train + n_test must be at most {len(labels)} for classes={classes}; "
            f"got {n_train + n_test}"
        )
    y_all = torch.searchsorted(torch.as_tensor(sorted(classes)), labels)
    order = torch.randperm(len(labels), generator=generator(seed))
    train, test = order[:n_train], order[n_train : n_train + n_test]
    mean, std = x_all[train].mean(0), x_all[train].std(0)
    # A pixel constant on the training split is left unscaled: dividing by a clamped tiny
    # std would blow it up wherever it is not constant on the test split.
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    x_all = (x_all - mean) / std
    x_all = x_all / x_all[train].pow(2).mean().sqrt()
    device, dtype = resolve(device, dtype)
    x_all = x_all.to(device=device, dtype=dtype)
    y_all = y_all.to(device)
    return x_all[train], y_all[train], x_all[test], y_all[test]


def one_hot(
    labels: torch.Tensor,
    num_classes: int | None = None,
    *,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Return the one-hot targets of class indices, shape ``(N, num_classes)``: a regression task.

    Row ``a`` is ``e_{labels[a]}``; with them, kernel regression or an MSE-trained network
    with ``num_classes`` outputs is a classifier (predicted class: the largest output,
    scored by :func:`accuracy`). ``num_classes`` defaults to ``labels.max() + 1``; dtype
    defaults to float64 (theory) on the labels' device.
    """
    labels = torch.as_tensor(labels)
    if (
        labels.ndim != 1
        or labels.numel() < 1
        or labels.is_floating_point()
        or labels.is_complex()
        or labels.dtype == torch.bool
    ):
        raise ValueError(
            f"labels must be a 1-D integer tensor of class indices with at least one entry; got "
            f"shape {tuple(labels.shape)}, dtype {labels.dtype}"
        )
    if labels.min() < 0:
        raise ValueError(f"labels must be class indices >= 0; got {int(labels.min())}")
    if num_classes is None:
        num_classes = int(labels.max()) + 1
    num_classes = _checks.positive_int("num_classes", num_classes)
    if labels.max() >= num_classes:
        raise ValueError(f"labels must be < num_classes={num_classes}; got {int(labels.max())}")
    _, dtype = resolve(labels.device, dtype, theory=True)
    return torch.nn.functional.one_hot(labels.long(), num_classes).to(dtype)


def accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Return the fraction of points whose largest output is the true class, refusing bad input.

    The strict front of :func:`ntk_lib.measure.accuracy` (the one scoring rule, which the
    trainers call and which answers ``None`` for outputs that are not class scores): here
    such input raises, naming the argument.

    Args:
        outputs: scores of shape ``(N, K)`` with ``K >= 2`` (network outputs, kernel
            regression predictions, logits), finite.
        targets: class indices ``(N,)`` (integers) or targets ``(N, K)`` whose largest
            entry marks the class (one-hot, or one-hot shifted and scaled).
    """
    from .measure import accuracy as score  # the measurement floor sits above data

    if not isinstance(outputs, torch.Tensor):
        outputs = torch.as_tensor(outputs)
    if outputs.ndim != 2 or outputs.shape[1] < 2 or outputs.shape[0] < 1:
        raise ValueError(
            f"outputs must have shape (N, K) with K >= 2 classes; got {tuple(outputs.shape)}"
        )
    if outputs.is_complex() or not torch.isfinite(outputs.to(torch.float64)).all():
        raise ValueError("outputs contains NaN, infinite or complex entries")
    targets = torch.as_tensor(targets, device=outputs.device)
    value = None if targets.dtype == torch.bool else score(outputs, targets)
    if value is None:
        raise ValueError(
            f"targets must be class indices of shape ({outputs.shape[0]},) (integers) or scores of "
            f"outputs' shape {tuple(outputs.shape)}; got shape {tuple(targets.shape)}, dtype"
            f" {targets.dtype}"
        )
    return value
