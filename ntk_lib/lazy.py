"""Lazy versus rich training: one hidden layer with the output scaled by ``n^{-q}``.

The family of lesson 05 is the one-hidden-layer network of width ``n``

.. math::

   f(x) = n^{-q} \\sum_{i=1}^{n} v_i\\, \\phi(u_i \\cdot x + b_i), \\qquad
   u_i \\sim \\mathcal{N}(0, \\sigma_w^2 I_d / d),\\ v_i \\sim \\mathcal{N}(0, \\sigma_w^2),

trained by gradient descent with the learning rate ``eta n^{2q-1}``. In abc terms it is
``ABC((0, q), (0, 0), 1 - 2q)`` (:func:`output_scaling`), for which Yang & Hu (2021)
give ``r = 1 - q`` when ``1/2 <= q <= 1``: the hidden features move by ``n^{-r}``, so
``q = 1/2`` (the NTK parametrization) trains *lazily* and ``q = 1`` (mean field) learns
features. ``f = alpha (f_{1/2})`` with ``alpha = n^{1/2 - q}`` and the learning rate
``eta / alpha^2`` is the lazy-training scaling of Chizat, Oyallon & Bach (2019) with an
``alpha`` that depends on the width.

:func:`kappa_ratio` measures the ratio ``||nabla^2 f|| / ||nabla f||^2`` that decides
whether training is lazy (of order ``n^{q-1}`` here); :func:`train_scaled` trains one member
and measures how far its hidden features and its NTK moved; :func:`sweep` does it over
exponents, widths and seeds; :func:`linear_probe` scores features by ridge regression on
another task (transfer).

Taught in lesson 05.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from . import _checks
from .device import generator
from .dynamics import TrainHistory, train_gd
from .families import (
    SEEDS,
    Factory,
    Family,
    build,
    check_family,
    check_seeds,
    check_widths,
    like_model,
)
from .measure import loglog_slope, power_iteration, relative_change, ridge_predict
from .models import MLP
from .parametrizations import ABC

KINDS: tuple[str, ...] = ("feature", "ntk")
"""What :meth:`Sweep.slopes` can fit: the relative change of the features or of the NTK."""


def output_scaling(q: float) -> ABC:
    """Return ``ABC((0, q), (0, 0), 1 - 2q)``: the network ``n^{-q} sum_i v_i phi(u_i . x)``.

    The readout multiplier is ``n^{-q}`` (``a_2 = q``), all weights are initialised with
    width-independent variances (``b = 0``) and the learning rate is ``eta n^{2q-1}``
    (``c = 1 - 2q``), which keeps ``2 a_2 + c = 1``: the tangent kernel times the learning
    rate is of order one for every ``q`` (Yang & Hu 2021). ``q = 1`` is the preset ``"mf"``;
    ``q = 1/2`` is the NTK parametrization. Lesson 05.
    """
    q = _checks.real("q", q)
    return ABC((0.0, q), (0.0, 0.0), 1.0 - 2.0 * q)


def hidden_features(model: MLP, x: torch.Tensor) -> torch.Tensor:
    """Return the last hidden layer's activations ``x^L = phi(h^L(x))``, shape ``(N, width)``.

    In the model's dtype and on its device, without gradient: the features a linear
    readout sees (lessons 05 and 08).
    """
    if not isinstance(model, MLP) or model.depth < 1:
        raise TypeError(
            f"model must be an ntk_lib.models.MLP with at least one hidden layer; got {model!r:.80}"
        )
    ref = model.layers[0].weight
    x = _checks.matrix("x", x, cols=model.d_in, dtype=ref.dtype, device=ref.device)
    with torch.no_grad():
        return model.forward_cache(x)[0][-1].detach().clone()


def kappa_ratio(
    model: torch.nn.Module, x: torch.Tensor, *, iters: int = 100, seed: int = 0
) -> float:
    """Return ``kappa = ||nabla_theta^2 f(x)|| / ||nabla_theta f(x)||^2`` at one input ``x``.

    ``||nabla^2 f||`` is the spectral norm of the Hessian of the output with respect to the
    trainable parameters, found by ``iters`` steps of power iteration on Hessian-vector
    products (double backpropagation; no Hessian is formed). Chizat, Oyallon & Bach (2019):
    training stays lazy when ``kappa ||y - f_0||`` is small; for :func:`scaled_mlp`,
    ``kappa`` of order ``n^{q-1}`` (Pleiss, lecture 11). Lesson 05.
    """
    iters = _checks.positive_int("iters", iters)
    params = _checks.trainable("model", model)
    _checks.deterministic("model", model)
    ref = params[0]
    x = _checks.points("x", x, like=ref)
    x = x.reshape(1, -1) if x.ndim == 1 else x
    if x.ndim != 2 or x.shape[0] != 1:
        raise ValueError(
            f"x must be one input, of shape (d,) or (1, d); got shape {tuple(x.shape)}"
        )
    out = model(x).reshape(-1)
    if out.numel() != 1:
        raise ValueError(f"kappa_ratio needs a scalar-output model; got {out.numel()} outputs")
    grads = torch.autograd.grad(out[0], params, create_graph=True)
    grad_sq = float(sum(g.detach().pow(2).sum() for g in grads))
    if grad_sq == 0:
        raise ValueError("the gradient of f at x is zero: kappa is undefined")
    # parameters whose gradient is constant (e.g. the readout bias) have zero Hessian rows
    live = [(g, p) for g, p in zip(grads, params, strict=False) if g.requires_grad]
    shapes = [p.shape for _, p in live]
    sizes = [p.numel() for _, p in live]

    def hessian_times(v: torch.Tensor) -> torch.Tensor:
        chunks = zip(v.split(sizes), shapes, live, strict=True)
        pieces = [c.reshape(s).to(p.dtype) for c, s, (_, p) in chunks]
        hv = torch.autograd.grad(
            [g for g, _ in live],
            [p for _, p in live],
            grad_outputs=pieces,
            retain_graph=True,
            allow_unused=True,
        )
        return torch.cat(
            [
                torch.zeros(s, dtype=v.dtype, device=v.device)
                if h is None
                else h.detach().reshape(-1).to(v.dtype)
                for h, s in zip(hv, sizes, strict=False)
            ]
        )

    gen = generator(_checks.nonnegative_int("seed", seed))
    start = torch.cat(
        [torch.randn(s, generator=gen, dtype=torch.float64).reshape(-1) for s in shapes]
    )
    norm = float(
        power_iteration(
            hessian_times, start.to(ref.device, ref.dtype), iters=iters, estimate="norm"
        )
    )
    return norm / grad_sq


@dataclass
class ScaledRun:
    """One training run of :func:`train_scaled`.

    ``feature_change`` is :func:`~ntk_lib.measure.relative_change` of the hidden features on the
    training
    inputs between initialisation and the end; ``ntk_change`` the same for the empirical
    NTK (``nan`` if it was not recorded); ``model`` is the trained network and
    ``history`` what :func:`~ntk_lib.dynamics.train_gd` recorded.
    """

    q: float
    width: int
    seed: int
    feature_change: float
    ntk_change: float
    history: TrainHistory
    model: MLP

    @property
    def final_loss(self) -> float:
        """Return the training loss after the last step (or at divergence)."""
        return float(self.history.loss[-1])


def scaled_mlp(
    d_in: int,
    width: int,
    q: float,
    *,
    activation: str = "tanh",
    sigma_w: float = 1.5,
    sigma_b: float = 0.5,
    seed: int | torch.Generator | None = 0,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = torch.float64,
) -> MLP:
    """Return the one-hidden-layer :class:`~ntk_lib.models.MLP` with the output scale ``n^{-q}``.

    Its parametrization is :func:`output_scaling` ``(q)``.

    The hidden units have biases ``b_i ~ N(0, sigma_b^2)`` (the weight of a constant input);
    the readout bias starts at zero, so that the same ``seed`` gives, for every ``q``, the
    same raw weights, the output ``f_q = n^{1/2-q} f_{1/2}`` and the same
    learning-rate-weighted tangent kernel ``eta n^{2q-1} Theta_q``.
    """
    model = MLP(
        d_in,
        width,
        1,
        activation=activation,
        sigma_w=sigma_w,
        sigma_b=sigma_b,
        parametrization=output_scaling(q),
        seed=seed,
        device=device,
        dtype=dtype,
    )
    if model.layers[-1].bias is not None:  # None when sigma_b = 0 leaves it out
        with torch.no_grad():
            model.layers[-1].bias.zero_()
    return model


def family(d_in: int, widths: Sequence[int], q: float, **model_kw) -> dict[int, Factory]:
    """Return ``{width: factory}`` of :func:`scaled_mlp` networks with output scale ``n^{-q}``.

    ``model_kw`` go to :func:`scaled_mlp` (``activation``, ``sigma_w``, ``sigma_b``,
    ``device``, ``dtype``); the factories take the generator of the seed
    (:mod:`ntk_lib.families`). What :func:`sweep` takes, one family per ``q``.
    """
    widths = check_widths("widths", widths, minimum=1)
    scaled_mlp(d_in, 1, q, **model_kw)  # every option checked now, on a width-1 network

    def factory(width: int) -> Factory:
        return lambda gen: scaled_mlp(d_in, width, q, seed=gen, **model_kw)

    return {w: factory(w) for w in widths}


def train_scaled(
    x: torch.Tensor,
    y: torch.Tensor,
    q: float,
    width: int,
    *,
    lr: float,
    steps: int,
    seed: int = 0,
    record_ntk: bool = True,
    **model_kw,
) -> ScaledRun:
    """Return the :class:`ScaledRun` of :func:`scaled_mlp` trained on ``(x, y)``.

    Full-batch gradient descent at the rate ``lr n^{2q-1}``.

    The loss is ``(1/2N) sum (f - y)^2`` (:func:`~ntk_lib.dynamics.train_gd`); ``model_kw``
    go to :func:`scaled_mlp` (``activation``, ``sigma_w``, ``sigma_b``, ``device``,
    ``dtype``). With ``record_ntk`` the empirical NTK is recorded at the first and last
    step only. A run that diverges is returned with ``history.diverged`` set.
    """
    seed = _checks.nonnegative_int("seed", seed)
    x = _checks.matrix("x", x)
    model = scaled_mlp(x.shape[1], width, q, seed=generator(seed), **model_kw)
    return _train_run(model, x, y, float(q), seed, lr=lr, steps=steps, record_ntk=record_ntk)


def _train_run(
    model: MLP,
    x: torch.Tensor,
    y: torch.Tensor,
    q: float,
    seed: int,
    *,
    lr: float,
    steps: int,
    record_ntk: bool,
) -> ScaledRun:
    """Train ``model`` (one member of the family of ``q``) and measure what moved."""
    x, y = like_model(model, x=x, y=torch.as_tensor(y))
    before = hidden_features(model, x)
    steps = _checks.nonnegative_int("steps", steps)
    ntk_every = max(steps, 1) if record_ntk else None
    history = train_gd(model, x, y, lr=lr, steps=steps, ntk_every=ntk_every)
    diverged = history.diverged
    feature = math.nan if diverged else relative_change(before, hidden_features(model, x))
    ntk = float(history.ntk_change()[-1]) if record_ntk and not diverged else math.nan
    return ScaledRun(q, model.widths[0], seed, feature, ntk, history, model)


@dataclass(frozen=True)
class Sweep:
    """Relative changes measured by :func:`sweep`.

    ``feature[i, j, k]`` and ``ntk[i, j, k]`` are the relative changes of the features and
    of the NTK for exponent ``qs[i]``, width ``widths[j]`` and seed ``seeds[k]``;
    ``loss`` the final training losses (float64, CPU; ``nan`` where a run diverged).
    """

    qs: tuple[float, ...]
    widths: tuple[int, ...]
    seeds: tuple[int, ...]
    feature: torch.Tensor
    ntk: torch.Tensor
    loss: torch.Tensor

    def mean(self, kind: str = "feature") -> torch.Tensor:
        """Return the seed-averaged relative change, shape ``(len(qs), len(widths))``."""
        return self._values(kind).mean(dim=2)

    def sem(self, kind: str = "feature") -> torch.Tensor:
        """Return the standard error over seeds, shape ``(len(qs), len(widths))``."""
        v = self._values(kind)
        if v.shape[2] < 2:
            return torch.zeros(v.shape[:2], dtype=v.dtype)
        return v.std(dim=2) / math.sqrt(v.shape[2])

    def slopes(self, kind: str = "feature") -> torch.Tensor:
        """Return the log-log slope against width of the seed-averaged change, one per ``q``.

        The prediction for the features is ``-r = q - 1`` (:func:`output_scaling`).
        """
        mean = self.mean(kind)
        slopes = [loglog_slope(self.widths, row)[0] for row in mean]
        return torch.tensor(slopes, dtype=torch.float64)

    def _values(self, kind: str) -> torch.Tensor:
        _checks.choice("kind", kind, KINDS)
        return self.feature if kind == "feature" else self.ntk


def sweep(
    families: Mapping[float, Family],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    lr: float,
    steps: int,
    seeds: Sequence[int] = SEEDS,
    record_ntk: bool = True,
    progress: bool = False,
) -> Sweep:
    """Return the :class:`Sweep` of training every network of ``families`` for every seed.

    ``families`` maps each exponent ``q`` to its ``{width: factory}`` (:func:`family`);
    all must share the same widths. Every run trains for the same ``steps`` at the same
    ``lr`` (times ``n^{2q-1}``, from the networks' per-layer rates). Lesson 05 fits the
    slopes against width: ``q - 1`` for the features (Yang & Hu 2021).
    """
    if not isinstance(families, Mapping) or not families:
        raise TypeError(
            "families must be a non-empty {q: {width: factory}} mapping (see ntk_lib.lazy.family); "
            f"got {families!r:.60}"
        )
    qs = tuple(_checks.real(f"families' q #{i}", q) for i, q in enumerate(families))
    widths = check_family(f"families[{qs[0]}]", families[qs[0]])
    for q in qs[1:]:
        if check_family(f"families[{q}]", families[q]) != widths:
            raise ValueError(
                f"families must share one list of widths; families[{q}] has "
                f"{list(families[q])}, families[{qs[0]}] has {list(widths)}"
            )
    seeds = check_seeds(seeds)
    x = _checks.matrix("x", x)
    shape = (len(qs), len(widths), len(seeds))
    feature, ntk, loss = (torch.full(shape, math.nan, dtype=torch.float64) for _ in range(3))
    jobs = [(i, j, k) for i in range(shape[0]) for j in range(shape[1]) for k in range(shape[2])]
    if progress:
        from tqdm.auto import tqdm

        jobs = tqdm(jobs, leave=False)
    for i, j, k in jobs:
        model = build(families[qs[i]], widths[j], seeds[k])
        run = _train_run(model, x, y, qs[i], seeds[k], lr=lr, steps=steps, record_ntk=record_ntk)
        feature[i, j, k], ntk[i, j, k] = run.feature_change, run.ntk_change
        loss[i, j, k] = math.nan if run.history.diverged else run.final_loss
    return Sweep(qs, widths, seeds, feature, ntk, loss)


def linear_probe(
    features_train: torch.Tensor,
    y_train: torch.Tensor,
    features_test: torch.Tensor,
    y_test: torch.Tensor,
    *,
    ridge: float = 1e-2,
) -> float:
    """Return the relative test error ``mean (pred - y_test)^2 / var(y_test)`` of a ridge probe.

    The probe is a ridge regression on fixed features.

    Features are centred with the training mean; with ``K = Phi Phi^T`` (training Gram matrix)
    the prediction is ``ybar + Phi_test Phi^T (K + lambda I)^{-1} (y - ybar)`` with
    ``lambda = ridge * mean(diag K)``, so ``ridge`` does not depend on the width. 0 is a
    perfect fit, about 1 is no better than predicting the mean. Transfer in lesson 05:
    features learned on one task, probed on another.
    """
    phi = _checks.matrix("features_train", features_train, dtype=torch.float64)
    phi_t = _checks.matrix(
        "features_test", features_test, cols=phi.shape[1], dtype=torch.float64, device=phi.device
    )
    y = _checks.vector("y_train", y_train, dtype=torch.float64, device=phi.device)
    y_t = _checks.vector("y_test", y_test, dtype=torch.float64, device=phi.device)
    if y.shape[0] != phi.shape[0] or y_t.shape[0] != phi_t.shape[0]:
        raise ValueError(
            f"y_train and y_test must have one entry per row of the features; got {y.shape[0]} for "
            f"{phi.shape[0]} and {y_t.shape[0]} for {phi_t.shape[0]}"
        )
    if y_t.shape[0] < 2:
        raise ValueError(
            "y_test must hold at least two points (its variance normalises the error); "
            f"got {y_t.shape[0]}"
        )
    ridge = _checks.real("ridge", ridge, positive=True)
    pred = ridge_predict(phi, y, phi_t, ridge, centre=True)
    return float(((pred - y_t) ** 2).mean() / y_t.var())


@dataclass(frozen=True)
class RidgeCV:
    """The cross-validation of :func:`ridge_cv`.

    ``errors[k]`` is the mean over the folds of the held-out :func:`linear_probe` error
    with the penalty ``ridges[k]``; ``ridge`` is the penalty with the smallest one (the
    largest of them on ties, the safer choice).
    """

    ridges: tuple[float, ...]
    errors: torch.Tensor
    ridge: float


def ridge_cv(
    features: torch.Tensor,
    y: torch.Tensor,
    *,
    ridges: Sequence[float],
    folds: int = 4,
    seed: int = 0,
) -> RidgeCV:
    """Return the :class:`RidgeCV` choosing :func:`linear_probe`'s ``ridge`` by k-fold CV.

    The rows of ``features`` (the training points of the probe, never its test points) are
    split into ``folds`` interleaved folds of a random permutation drawn from ``seed``; each
    fold is predicted by a probe fitted on the others. Tuning the penalty per feature set
    compares every set at its best (Hastie, Tibshirani & Friedman 2009, sec. 7.10). Lesson
    05 uses it to compare random, lazily and richly trained features.
    """
    phi = _checks.matrix("features", features, dtype=torch.float64)
    yv = _checks.vector("y", y, dtype=torch.float64, device=phi.device)
    if yv.shape[0] != phi.shape[0]:
        raise ValueError(
            f"y must have one entry per row of features; got {yv.shape[0]} for {phi.shape[0]}"
        )
    if isinstance(ridges, (str, bytes)) or not isinstance(ridges, Sequence) or not ridges:
        raise ValueError(f"ridges must be a non-empty sequence of positive numbers; got {ridges!r}")
    grid = tuple(_checks.real(f"ridges[{k}]", r, positive=True) for k, r in enumerate(ridges))
    folds = _checks.positive_int("folds", folds)
    if not 2 <= folds <= phi.shape[0] // 2:
        raise ValueError(
            f"folds must be between 2 and half the number of rows ({phi.shape[0] // 2}), so that "
            f"every held-out fold has two points; got {folds}"
        )
    seed = _checks.nonnegative_int("seed", seed)
    order = torch.randperm(phi.shape[0], generator=torch.Generator().manual_seed(seed))
    order = order.to(phi.device)
    errors = torch.zeros(len(grid), dtype=torch.float64)
    for f in range(folds):
        held = torch.zeros(phi.shape[0], dtype=torch.bool, device=phi.device)
        held[order[f::folds]] = True
        for k, r in enumerate(grid):
            errors[k] += linear_probe(phi[~held], yv[~held], phi[held], yv[held], ridge=r) / folds
    best = min(range(len(grid)), key=lambda k: (float(errors[k]), -grid[k]))
    return RidgeCV(grid, errors, grid[best])
