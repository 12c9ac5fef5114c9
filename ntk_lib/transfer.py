"""muP in practice: learning-rate sweeps across widths, feature-kernel movement, linear probes.

Hyperparameter transfer (Yang et al. 2022, "muTransfer") says: tune the learning rate of a
narrow network in the maximal update parametrization (muP) and the same rate is (close to)
optimal at every width, because muP has a feature-learning infinite-width limit in which
each layer's update is of order one (Yang & Hu 2021). In the standard parametrization (SP)
with one global rate the optimum moves like ``1/width``. :func:`lr_sweep` measures this:
final training (and test) losses on a grid of widths x learning rates, with divergence
recorded as a flag rather than an infinite loss.

The other half of the lesson asks whether the features move and whether what they learn
is useful: :func:`feature_kernel` and :func:`kernel_change` measure the relative change of
the last-layer feature kernel ``x_t^T x_t / n`` over training (frozen in the NTK limit,
order one in muP), :func:`pretrain` records both over widths, and :func:`probe_accuracy`
scores a fresh linear readout fitted on frozen features (the "linear finetuning" of
pretrained features in Yang & Hu 2021; :func:`few_shot` draws its training examples).

Taught in lesson 08.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from . import _checks
from .families import SEEDS, Family, build, check_family, check_seeds, like_model
from .lazy import hidden_features
from .measure import accuracy, relative_change, ridge_predict
from .models import MLP
from .training import Divergence, full_batch_gd, mse_loss

METRICS: tuple[str, ...] = ("loss", "test_loss")
"""What :meth:`LRSweep.best_lr` can minimise."""


@dataclass(frozen=True)
class LRSweep:
    """Final losses of a learning-rate sweep over widths (:func:`lr_sweep`). float64, CPU.

    ``loss[i, j]`` is the training loss after the last step at ``widths[i]`` and
    ``lrs[j]``, averaged over the seeds; ``test_loss`` and ``test_accuracy`` likewise on
    the test set (``None`` without one). ``diverged[i, j]`` is ``True`` when any seed
    diverged; those entries hold the values at initialisation (a diverged run counts as
    having learned nothing), so every tensor is finite. Mask them when plotting.
    ``initial_loss[i]`` is the training loss at initialisation (mean over seeds).
    """

    widths: tuple[int, ...]
    lrs: tuple[float, ...]
    loss: torch.Tensor
    diverged: torch.Tensor
    initial_loss: torch.Tensor
    test_loss: torch.Tensor | None = None
    test_accuracy: torch.Tensor | None = None

    def best_index(self, metric: str = "loss") -> torch.Tensor:
        """Return, per width, the index into ``lrs`` of the lowest ``metric`` (skip diverged).

        Raises:
            ValueError: if every rate diverged at some width, or ``metric="test_loss"``
                without a test set.
        """
        values = self._metric(metric)
        for i, w in enumerate(self.widths):
            if bool(self.diverged[i].all()):
                raise ValueError(
                    f"every learning rate diverged at width {w}: add smaller rates to lrs"
                )
        return torch.where(self.diverged, torch.inf, values).argmin(dim=1)

    def best_lr(self, metric: str = "loss") -> torch.Tensor:
        """Return, per width, the rate of the lowest ``metric`` among runs that did not diverge.

        A float64 tensor of shape ``(len(widths),)``; see :meth:`best_index`.
        """
        return torch.tensor(self.lrs, dtype=torch.float64)[self.best_index(metric)]

    def _metric(self, metric: str) -> torch.Tensor:
        _checks.choice("metric", metric, METRICS)
        if metric == "test_loss":
            if self.test_loss is None:
                raise ValueError("metric='test_loss' needs a sweep run with x_test and y_test")
            return self.test_loss
        return self.loss


def _targets(name: str, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    y = torch.as_tensor(y)
    if y.ndim not in (1, 2) or y.shape[0] != x.shape[0]:
        raise ValueError(
            f"{name} must have shape ({x.shape[0]},) or ({x.shape[0]}, d_out); got {tuple(y.shape)}"
        )
    y = y.to(device=x.device, dtype=x.dtype)
    if not torch.isfinite(y).all():
        raise ValueError(f"{name} contains NaN or infinite entries")
    return y


def lr_sweep(
    models: Family,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    lrs: Sequence[float],
    steps: int,
    x_test: torch.Tensor | None = None,
    y_test: torch.Tensor | None = None,
    seeds: Sequence[int] = SEEDS,
    divergence_factor: float = 1e6,
) -> LRSweep:
    """Return the final losses of full-batch gradient descent on a grid of widths x learning rates.

    For each width ``n``, rate ``eta`` and seed, trains ``models[n](generator(seed))``
    (e.g. :func:`~ntk_lib.families.mlp_family` with a ``parametrization`` and a
    ``base_width``) for ``steps`` steps of full-batch gradient
    descent (as :func:`~ntk_lib.dynamics.train_gd`) on
    ``L = (1/2D) sum_alpha ||f(x_alpha) - y_alpha||^2`` with per-layer rates ``eta n^{-c}``
    (the network's ``param_groups``). With a
    ``base_width`` every parametrization equals SP at that width, so the sweeps of ``"mup"``
    and ``"standard"`` coincide there (the ``mup`` package's base shapes; Yang et al. 2022,
    Fig. 1 and Sec. 3). A run *diverges* when its loss becomes non-finite or exceeds
    ``divergence_factor`` times its initial value.

    Args:
        models: ``{width: factory}`` with at least one width (:mod:`ntk_lib.families`).
        x, y: the training set; ``y`` of shape ``(D,)`` or ``(D, d_out)`` (e.g. one-hot).
            Moved to the networks' device and dtype.
        lrs: at least one (positive) learning rate.
        x_test, y_test: an optional test set; with ``(N, d_out)`` one-hot targets the
            accuracy (argmax of the output against argmax of the target) is recorded too.
        seeds: initialisation seeds; losses are averaged over them.
    """
    widths = check_family("models", models)
    lrs = tuple(_checks.real(f"lrs[{i}]", v, positive=True) for i, v in enumerate(lrs))
    if not lrs:
        raise ValueError(f"lrs must hold at least one value; got {list(lrs)}")
    steps = _checks.positive_int("steps", steps)
    seeds = check_seeds(seeds)
    divergence_factor = _checks.real("divergence_factor", divergence_factor, positive=True)
    x = _checks.matrix("x", x)
    y = _targets("y", y, x)
    if (x_test is None) != (y_test is None):
        raise ValueError("give both x_test and y_test, or neither")
    if x_test is not None:
        x_test = _checks.matrix("x_test", x_test, cols=x.shape[1], dtype=x.dtype, device=x.device)
        y_test = _targets("y_test", y_test, x_test)
        if y_test.shape[1:] != y.shape[1:]:
            raise ValueError(
                f"y_test must have y's shape per point {tuple(y.shape[1:])}; "
                f"got {tuple(y_test.shape)}"
            )
    d_out = 1 if y.ndim == 1 else y.shape[1]
    shape = (len(widths), len(lrs))
    loss, test_loss, accuracy = (torch.zeros(shape, dtype=torch.float64) for _ in range(3))
    diverged = torch.zeros(shape, dtype=torch.bool)
    # at initialisation: training loss, test loss, test accuracy
    initial = torch.zeros(3, len(widths), dtype=torch.float64)
    for i, width in enumerate(widths):
        for j, lr in enumerate(lrs):
            for seed in seeds:
                model = build(models, width, seed)
                xm, ym = like_model(model, x=x, y=y)
                if j == 0 and x_test is not None:
                    test = like_model(model, x=x_test, y=y_test)
                    metrics0 = _test_metrics(model, *test)
                    initial[1:, i] += torch.tensor(metrics0, dtype=torch.float64) / len(seeds)
                first, last = _train(model, xm, ym, lr, steps, divergence_factor)
                if j == 0:
                    initial[0, i] += first / len(seeds)
                diverged[i, j] |= last is None
                if last is not None:
                    loss[i, j] += last / len(seeds)
                    if x_test is not None:
                        metrics = _test_metrics(model, *like_model(model, x=x_test, y=y_test))
                        test_loss[i, j] += metrics[0] / len(seeds)
                        accuracy[i, j] += metrics[1] / len(seeds)
    # Where some seed diverged, the whole entry reports the values at initialisation.
    loss, test_loss, accuracy = (torch.where(diverged, initial[k][:, None], v)
                                 for k, v in enumerate((loss, test_loss, accuracy)))
    has_test = x_test is not None
    return LRSweep(
        widths, lrs, loss, diverged, initial[0],
        test_loss if has_test else None, accuracy if has_test and d_out > 1 else None,
    )


def _train(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float, steps: int,
           factor: float) -> tuple[float, float | None]:
    """Run ``steps`` of full-batch GD; return the first and last losses (last ``None``:
    diverged)."""
    run = full_batch_gd(model, x, y, lr=lr, steps=steps, divergence=Divergence(factor))
    return run.losses[0] if run.losses else math.inf, None if run.diverged else run.losses[-1]


def _test_metrics(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Return the MSE loss and (one-hot targets) the argmax accuracy of ``model`` on ``(x, y)``."""
    with torch.no_grad():
        out = model(x)
    return float(mse_loss(out, y)), accuracy(out, y) or 0.0


def feature_kernel(model: MLP, x: torch.Tensor) -> torch.Tensor:
    """Return the feature kernel ``x^L(x_alpha) . x^L(x_beta) / n``, shape ``(N, N)``, float64.

    ``x^L = phi(h^L)`` are the activations that feed the readout and ``n`` their number
    (the width). In the NTK limit this kernel stays at its initial value during training;
    in muP it moves by order one (Yang & Hu 2021, Sec. 2 and the talk's "feature kernel").
    """
    feats = hidden_features(model, x).to(torch.float64)
    return feats @ feats.T / feats.shape[1]


def kernel_change(k0: torch.Tensor, k1: torch.Tensor, *, centre: bool = False) -> float:
    """Return the relative change ``||K_1 - K_0||_F / ||K_0||_F`` of a kernel matrix.

    With ``centre=True`` both kernels are first centred, ``K <- H K H`` with
    ``H = I - 11^T / N``: the kernel of the features minus their mean over the ``N``
    inputs. ReLU features have a large common mean, whose rank-one part dominates the
    Frobenius norm of ``K``; centring measures how the *geometry* of the inputs in feature
    space changes, which is what a new linear readout can use.
    """
    k0 = _checks.matrix("k0", k0, dtype=torch.float64)
    k1 = _checks.matrix("k1", k1, dtype=torch.float64, device=k0.device)
    if k0.shape != k1.shape or k0.shape[0] != k0.shape[1]:
        raise ValueError(
            "k0 and k1 must be square matrices of the same shape; "
            f"got {tuple(k0.shape)} and {tuple(k1.shape)}"
        )
    if centre:
        k0, k1 = _centred(k0), _centred(k1)
    if k0.norm() == 0:
        raise ValueError("k0 is zero (after centring, if asked): its relative change is undefined")
    return relative_change(k0, k1)


def _centred(k: torch.Tensor) -> torch.Tensor:
    """``H K H`` with ``H = I - 11^T/N``: subtract row and column means, add back the grand mean."""
    return k - k.mean(dim=0, keepdim=True) - k.mean(dim=1, keepdim=True) + k.mean()


@dataclass(frozen=True)
class Pretraining:
    """What :func:`pretrain` recorded, one row per width. float64, CPU.

    ``kernel_change[i, k]`` is the relative change of the feature kernel on the training
    inputs after ``steps[k]`` steps at ``widths[i]`` (0 at step 0); ``loss[i]`` is the
    final training loss; ``features_init[i]`` and ``features[i]`` are the last-layer
    features ``x^L`` of ``x_features`` before and after training, shape ``(N_f, widths[i])``.
    """

    widths: tuple[int, ...]
    steps: tuple[int, ...]
    kernel_change: torch.Tensor
    loss: torch.Tensor
    features_init: tuple[torch.Tensor, ...]
    features: tuple[torch.Tensor, ...]


def pretrain(
    models: Family,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    lr: float,
    steps: int,
    every: int = 10,
    x_features: torch.Tensor | None = None,
    seed: int = 0,
    centre: bool = True,
    divergence_factor: float = 1e6,
) -> Pretraining:
    """Return the feature-kernel movement and the features of networks pretrained at several widths.

    At each width ``n``, trains the :class:`~ntk_lib.models.MLP` ``models[n](generator(seed))``
    by full-batch gradient descent on ``(1/2D) sum_alpha ||f(x_alpha) - y_alpha||^2`` (per-layer
    rates) and records, every ``every`` steps, ``||K_t - K_0||_F / ||K_0||_F`` for the feature
    kernel ``K_t = x^L_t(x)^T x^L_t(x) / n`` (:func:`feature_kernel`), centred by default
    (see :func:`kernel_change`). In the NTK limit it does not move (at finite width its
    change falls at least like ``n^{-1/2}``, faster in lesson 08's measurements); under muP
    it moves by order one (Yang & Hu 2021). The features of
    ``x_features`` (default ``x``) before and after training feed :func:`probe_accuracy`.

    Raises:
        DivergenceError: if training diverges (loss non-finite or ``divergence_factor`` times
            its initial value): lower ``lr``.
    """
    widths = check_family("models", models)
    lr = _checks.real("lr", lr, positive=True)
    steps = _checks.positive_int("steps", steps)
    every = _checks.positive_int("every", every)
    seed = _checks.nonnegative_int("seed", seed)
    divergence_factor = _checks.real("divergence_factor", divergence_factor, positive=True)
    x = _checks.matrix("x", x)
    y = _targets("y", y, x)
    xf = x
    if x_features is not None:
        xf = _checks.matrix(
            "x_features", x_features, cols=x.shape[1], dtype=x.dtype, device=x.device
        )
    marks = tuple(sorted({*range(0, steps, every), steps}))
    change = torch.zeros(len(widths), len(marks), dtype=torch.float64)
    loss = torch.zeros(len(widths), dtype=torch.float64)
    before, after = [], []
    for i, width in enumerate(widths):
        model = build(models, width, seed)
        xm, ym, xfm = like_model(model, x=x, y=y, xf=xf)
        k0 = feature_kernel(model, xm)
        before.append(hidden_features(model, xfm).to("cpu", torch.float64))

        def record(step: int, _out: torch.Tensor) -> None:  # called within this iteration
            if step in marks[1:]:
                kernel = feature_kernel(model, xm)  # noqa: B023 (used before the loop moves on)
                change[i, marks.index(step)] = kernel_change(k0, kernel, centre=centre)  # noqa: B023

        run = full_batch_gd(
            model,
            xm,
            ym,
            lr=lr,
            steps=steps,
            on_step=record,
            divergence=Divergence(divergence_factor, "raise"),
        )
        loss[i] = run.losses[-1]
        after.append(hidden_features(model, xfm).to("cpu", torch.float64))
    return Pretraining(widths, marks, change, loss, tuple(before), tuple(after))


def few_shot(labels: torch.Tensor, shots: int, *, seed: int = 0) -> torch.Tensor:
    """Return the indices of ``shots`` randomly chosen points of every class in ``labels``, sorted.

    Raises:
        ValueError: if some class has fewer than ``shots`` points.
    """
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or labels.numel() < 1 or labels.is_floating_point():
        raise ValueError(
            "labels must be a 1-D tensor of integer class labels; "
            f"got {labels.dtype}, shape {tuple(labels.shape)}"
        )
    shots = _checks.positive_int("shots", shots)
    gen = torch.Generator().manual_seed(_checks.nonnegative_int("seed", seed))
    chosen = []
    for c in torch.unique(labels.cpu()):
        idx = torch.nonzero(labels.cpu() == c)[:, 0]
        if len(idx) < shots:
            raise ValueError(f"class {int(c)} has {len(idx)} points, fewer than shots={shots}")
        chosen.append(idx[torch.randperm(len(idx), generator=gen)[:shots]])
    return torch.sort(torch.cat(chosen)).values


def probe_accuracy(
    features_train: torch.Tensor,
    labels_train: torch.Tensor,
    features_test: torch.Tensor,
    labels_test: torch.Tensor,
    *,
    ridge: float = 1e-3,
) -> float:
    """Return the test accuracy of a ridge-regression readout fitted on frozen features.

    With one-hot targets ``Y`` of the training labels, the readout predicts
    ``F_test F^T (F F^T + ridge s I)^{-1} Y`` with ``s = mean_alpha ||F_alpha||^2``
    (:func:`~ntk_lib.measure.ridge_predict`, uncentred), and a test point gets the class of
    its largest prediction. Fitting a new readout on frozen
    pretrained features is the "linear finetuning" of Yang & Hu 2021; the labels are
    integer classes.
    """
    ftr = _checks.matrix("features_train", features_train, dtype=torch.float64)
    fte = _checks.matrix(
        "features_test", features_test, cols=ftr.shape[1], dtype=torch.float64, device=ftr.device
    )
    ridge = _checks.real("ridge", ridge, positive=True)
    ltr = torch.as_tensor(labels_train).to(ftr.device)
    lte = torch.as_tensor(labels_test).to(ftr.device)
    for name, lab, f in (("labels_train", ltr, ftr), ("labels_test", lte, fte)):
        if lab.ndim != 1 or lab.shape[0] != f.shape[0] or lab.is_floating_point():
            raise ValueError(
                f"{name} must be {f.shape[0]} integer class labels; "
                f"got {lab.dtype}, shape {tuple(lab.shape)}"
            )
    classes = torch.unique(ltr)
    targets = (ltr[:, None] == classes[None, :]).to(torch.float64)
    pred = ridge_predict(ftr, targets, fte, ridge, centre=False)
    return float((classes[pred.argmax(dim=1)] == lte).double().mean())
