"""Training dynamics under the MSE loss: full-batch gradient descent that records what moves.

The loss is ``L = (1/2D) sum_alpha (f(x_alpha) - y_alpha)^2`` over ``D`` training points
(DESIGN.md), so that gradient flow moves the outputs by ``df/dt = -(1/D) Theta (f - y)``
(Jacot et al. 2018; Lee et al. 2019). :func:`train_gd` runs the discrete version and
records the loss, the relative movement of the parameters and, optionally, the empirical
NTK, so that lessons can measure how all of these shrink with width.

Closed forms (Lee et al. 2019, Sec. 2; Bahri's lecture): with ``Theta = V diag(lam) V^T``
the training residual evolves mode by mode, ``f_t - y = V exp(-lr lam t / D) V^T (f_0 - y)``
under gradient flow (:func:`mse_flow`) and ``f_k - y = V (1 - lr lam / D)^k V^T (f_0 - y)``
under gradient descent (:func:`mse_gd`); test points follow through ``Theta_test,train``,
and the parameters of the linearised network through ``J^T`` (:func:`mse_flow_params`).
One eigendecomposition serves any number of times.

Taught in lessons 01 and 03.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from . import _checks
from .kernels import empirical_nngp, empirical_ntk
from .measure import change_since_init
from .models import MLP
from .training import (
    DIVERGENCE_FACTOR,
    ON_DIVERGENCE,
    Divergence,
    DivergenceError,
    full_batch_gd,
    mse_loss,
)


RCOND = 1e-12
"""Eigenvalues of the training kernel below ``RCOND * lam_max`` count as zero modes at ``t = inf``."""


@dataclass
class TrainHistory:
    """What :func:`train_gd` recorded. Tensors are float64 on the CPU.

    Attributes:
        loss: the loss before each step and after the last one, shape ``(steps + 1,)``
            (shorter if training diverged: only finite values are kept).
        param_change: ``||theta_t - theta_0|| / ||theta_0||`` at the same times.
        ntk_steps, ntk: the steps at which the empirical NTK was recorded, and the NTKs.
        nngp: the empirical NNGP (last-layer feature kernel) at the same steps, for an
            :class:`~ntk_lib.models.MLP` (empty otherwise).
        outputs: the outputs on ``x`` before each step and after the last one, if
            ``record_outputs``.
        diverged_at: the step whose loss was non-finite or exploded, ``-1`` if none.
    """

    loss: torch.Tensor
    param_change: torch.Tensor
    ntk_steps: list[int] = field(default_factory=list)
    ntk: list[torch.Tensor] = field(default_factory=list)
    nngp: list[torch.Tensor] = field(default_factory=list)
    outputs: list[torch.Tensor] = field(default_factory=list)
    diverged_at: int = -1

    @property
    def diverged(self) -> bool:
        """Whether training was stopped by divergence."""
        return self.diverged_at >= 0

    def ntk_change(self) -> torch.Tensor:
        """Return ``||Theta_t - Theta_0||_F / ||Theta_0||_F`` at each recorded step."""
        if not self.ntk:
            raise ValueError("no NTK was recorded: call train_gd with ntk_every=k")
        return change_since_init(self.ntk)

    def nngp_change(self) -> torch.Tensor:
        """Return ``||K_t - K_0||_F / ||K_0||_F`` of the empirical NNGP at each recorded step."""
        if not self.nngp:
            raise ValueError("no NNGP was recorded (for ntk_lib MLPs only): call train_gd with ntk_every=k")
        return change_since_init(self.nngp)


def _flat_params(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters() if p.requires_grad]).to(torch.float64)


def train_gd(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    lr: float,
    steps: int,
    ntk_every: int | None = None,
    on_divergence: str = ON_DIVERGENCE[0],
    divergence_factor: float = DIVERGENCE_FACTOR,
    record_outputs: bool = False,
    progress: bool = False,
) -> TrainHistory:
    """Train ``model`` in place by full-batch gradient descent on the MSE loss; return its history.

    ``theta <- theta - lr * lr_scale * grad L`` with ``L = (1/2D) sum (f - y)^2`` (per-layer
    ``lr_scale`` from ``model.param_groups`` when the model has it, e.g. :class:`~ntk_lib.models.MLP`).

    Args:
        model: any module mapping ``x`` to outputs of ``y``'s shape.
        x, y: the training set; ``y`` of shape ``(D,)`` for a scalar-output model.
        lr: learning rate (> 0).
        steps: number of gradient steps (>= 0).
        ntk_every: record the empirical NTK (and, for an MLP, NNGP) on ``x`` every this many
            steps and at the end.
        on_divergence: ``"stop"`` (return the history with ``diverged_at`` set) or ``"raise"``
            (:class:`~ntk_lib.training.DivergenceError`). Divergence: the rule of
            :mod:`ntk_lib.training`, a non-finite loss or one above ``divergence_factor``
            times the larger of the initial loss and the loss of predicting 0.
        record_outputs: keep the outputs on ``x`` at every step (float64, CPU).
        progress: show a tqdm progress bar.
    """
    lr = _checks.real("lr", lr, positive=True)
    steps = _checks.nonnegative_int("steps", steps)
    divergence = Divergence(divergence_factor, on_divergence)
    if ntk_every is not None:
        ntk_every = _checks.positive_int("ntk_every", ntk_every)
    ref = _checks.trainable("model", model)[0]
    x, y = _checks.points("x", x, like=ref), _checks.points("y", y, like=ref)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must hold the same number of points; got shapes {tuple(x.shape)} "
                         f"and {tuple(y.shape)}")
    records = steps // ntk_every + 2 if ntk_every is not None else 0
    _checks.fits("steps", steps, 8 * ((steps + 1) * y.numel() * record_outputs
                                      + 2 * records * (x.shape[0] * y[0].numel()) ** 2),
                 "the recorded outputs and kernels")
    theta0 = _flat_params(model)
    norm0 = theta0.norm().clamp(min=torch.finfo(torch.float64).tiny)
    history = TrainHistory(loss=torch.empty(0), param_change=torch.empty(0))
    moves = []

    def loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if out.shape != target.shape:
            raise ValueError(f"model output shape {tuple(out.shape)} does not match y's shape {tuple(target.shape)}")
        return mse_loss(out, target)

    def record(step: int, out: torch.Tensor) -> None:
        if record_outputs:
            history.outputs.append(out.detach().to("cpu", torch.float64))
        if ntk_every is not None and (step % ntk_every == 0 or step == steps):
            history.ntk_steps.append(step)
            history.ntk.append(empirical_ntk(model, x).to("cpu", torch.float64))
            if isinstance(model, MLP):
                history.nngp.append(empirical_nngp(model, x).to("cpu", torch.float64))
        moves.append(float((_flat_params(model) - theta0).norm() / norm0))

    run = full_batch_gd(model, x, y, lr=lr, steps=steps, loss=loss, on_step=record,
                        divergence=divergence, progress=progress)
    history.diverged_at = run.diverged_at
    history.loss = torch.tensor(run.losses, dtype=torch.float64)
    history.param_change = torch.tensor(moves, dtype=torch.float64)
    return history


# ---------------------------------------------------------------------------------------
# Closed-form MSE dynamics on a fixed kernel
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KernelDynamics:
    """Predictions of kernel gradient flow/descent on train and test points.

    ``train`` has shape ``(len(t), D)`` (or ``(D,)`` for a scalar time), ``test`` likewise
    with the test points, or ``None`` when no ``k_test_train`` was given.
    """

    train: torch.Tensor
    test: torch.Tensor | None


def _spectral(k_train, y_train, f0_train, lr):
    """Validate the inputs; return ``(lam, V, r0, y, f0, D)`` with ``r0 = V^T (y - f0)``."""
    source = k_train.dtype if isinstance(k_train, torch.Tensor) and k_train.is_floating_point() else torch.float64
    k = _checks.matrix("k_train", k_train, dtype=torch.float64)
    d = k.shape[0]
    if k.shape != (d, d):
        raise ValueError(f"k_train must be a square (D, D) kernel matrix; got shape {tuple(k.shape)}")
    # Rounding in the kernel's own precision (e.g. a float32 empirical NTK) is not an error.
    tol = max(1e-10, 10 * d * torch.finfo(source).eps)
    if (k - k.T).abs().max() > tol * k.abs().max():
        raise ValueError("k_train must be symmetric (a kernel matrix); got an asymmetric matrix")
    y = _vector("y_train", y_train, d, k.device)
    f0 = torch.zeros_like(y) if f0_train is None else _vector("f0_train", f0_train, d, k.device)
    _checks.real("lr", lr, positive=True)
    lam, v = torch.linalg.eigh((k + k.T) / 2)
    if lam[0] < -max(tol, 1e-8) * max(lam[-1].item(), 0.0) - 1e-300:
        raise ValueError(f"k_train must be positive semi-definite; its smallest eigenvalue is {lam[0].item():.3g}")
    return lam.clamp(min=0), v, v.T @ (y - f0), y, f0, d


def _vector(name, v, d, device):
    v = _checks.vector(name, v, dtype=torch.float64, device=device)
    if v.shape != (d,):
        raise ValueError(f"{name} must have shape ({d},) to match k_train; got {tuple(v.shape)}")
    return v


def _times(name, t, device):
    t = torch.as_tensor(t, dtype=torch.float64, device=device)
    if t.ndim > 1 or t.numel() < 1 or torch.isnan(t).any() or (t < 0).any():
        raise ValueError(f"{name} must be a non-negative number or a 1-D sequence of them; got {t.tolist()}")
    return t


def _flow_factors(lam: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``exp(-a lam)`` and ``(1 - exp(-a lam)) / lam`` for times ``a = lr t / D`` of shape ``(T, 1)``.

    The second is ``a`` on exact zero modes; at ``a = inf`` modes below ``RCOND * lam_max``
    do not move (decay 1, gain 0), the others relax fully (decay 0, gain ``1/lam``).
    """
    zero = lam <= RCOND * lam[-1]
    positive = lam > 0
    finite_gain = torch.where(positive, -torch.expm1(-a * lam) / torch.where(positive, lam, 1.0), a)
    inf = torch.isinf(a)
    decay = torch.where(inf, torch.where(zero, 1.0, 0.0), torch.exp(-a * lam))
    gain = torch.where(inf, torch.where(zero, 0.0, 1 / lam.clamp(min=1e-300)), finite_gain)
    return decay, gain


def _predict(lam, v, r0, y, decay, gain, k_test_train, f0_test, scalar):
    """``train = y - V (decay * r0)``; ``test = f0_test + K_test,train V (gain * r0)``."""
    train = y - (decay * r0) @ v.T
    test = None
    if k_test_train is not None:
        kt = _checks.matrix("k_test_train", k_test_train, cols=len(y), dtype=torch.float64, device=y.device)
        f0t = torch.zeros(kt.shape[0], dtype=torch.float64, device=y.device)
        if f0_test is not None:
            f0t = _vector("f0_test", f0_test, kt.shape[0], y.device)
        test = f0t + (gain * r0) @ (kt @ v).T
    if scalar:
        return KernelDynamics(train[0], None if test is None else test[0])
    return KernelDynamics(train, test)


def mse_flow(
    k_train: torch.Tensor,
    y_train: torch.Tensor,
    t: float | torch.Tensor,
    *,
    k_test_train: torch.Tensor | None = None,
    f0_train: torch.Tensor | None = None,
    f0_test: torch.Tensor | None = None,
    lr: float = 1.0,
) -> KernelDynamics:
    """Return train (and test) predictions of gradient flow on the MSE loss with a fixed kernel.

    Solves ``df/dt = -(lr/D) Theta (f - y)`` on the ``D`` training points (the loss
    ``(1/2D) sum (f - y)^2``; Jacot et al. 2018, Lee et al. 2019, eq. 9-10)::

        f_t(train) = y + exp(-lr Theta t / D) (f_0 - y)
        f_t(test)  = f_0(test) + Theta_test,train Theta^{-1} (I - exp(-lr Theta t / D)) (y - f_0)

    from one eigendecomposition ``Theta = V diag(lam) V^T``; the factor
    ``(1 - exp(-lr lam t/D)) / lam`` is evaluated with ``expm1`` and equals its limit
    ``lr t / D`` on zero modes, so singular kernels are exact at finite ``t``. At
    ``t = inf`` the test prediction is kernel regression, ``f_0 + Theta_test,train
    Theta^+ (y - f_0)``, with the pseudo-inverse: eigenvalues below ``RCOND * lam_max``
    (1e-12) are zero modes, which gradient flow never moves.

    Args:
        k_train: the ``(D, D)`` kernel on the training points (symmetric, PSD).
        y_train: targets, shape ``(D,)``.
        t: a time (``float('inf')`` allowed) or a 1-D sequence of times (>= 0).
        k_test_train: the ``(N, D)`` kernel between test and training points.
        f0_train, f0_test: outputs at ``t = 0`` (default zero: e.g. a centred network).
        lr: learning rate multiplying the time.
    """
    lam, v, r0, y, _, d = _spectral(k_train, y_train, f0_train, lr)
    times = _times("t", t, lam.device)
    _checks.fits("t", f"{times.numel()} times", 4 * times.numel() * d * 8, "the trajectories", lam.device)
    decay, gain = _flow_factors(lam, lr * times.reshape(-1, 1) / d)
    return _predict(lam, v, r0, y, decay, gain, k_test_train, f0_test, times.ndim == 0)


def mse_gd(
    k_train: torch.Tensor,
    y_train: torch.Tensor,
    steps: int | torch.Tensor,
    *,
    lr: float,
    k_test_train: torch.Tensor | None = None,
    f0_train: torch.Tensor | None = None,
    f0_test: torch.Tensor | None = None,
) -> KernelDynamics:
    """Return train (and test) predictions after ``steps`` of gradient descent with a fixed kernel.

    The discrete counterpart of :func:`mse_flow`: ``f_{k+1} = f_k - (lr/D) Theta (f_k - y)``,
    so mode by mode ``f_k - y`` shrinks by ``(1 - lr lam / D)^k`` and the test factor is
    ``(1 - (1 - lr lam/D)^k) / lam`` (limit ``k lr / D`` on zero modes). As ``lr -> 0`` with
    ``k lr`` fixed it tends to the flow. GD on this kernel converges iff
    ``lr < 2 D / lam_max``; beyond that the residual grows geometrically, and
    :class:`~ntk_lib.training.DivergenceError` reports the first of the asked steps whose
    predicted loss breaks the rule of :mod:`ntk_lib.training` (non-finite, or ``1e6`` times
    the larger of the initial loss and ``(1/2D) ||y||^2``).

    Args:
        steps: a number of steps or a 1-D sequence of them (integers >= 0).

    The other arguments are as in :func:`mse_flow`.
    """
    lam, v, r0, y, _, d = _spectral(k_train, y_train, f0_train, lr)
    k = _times("steps", steps, lam.device)
    if (k != k.round()).any() or torch.isinf(k).any():
        raise ValueError(f"steps must be whole numbers; got {k.tolist()}")
    u = lr * lam / d
    factor = (1 - u) ** k.reshape(-1, 1)  # (T, D)
    with torch.no_grad():
        small = u < 0.5  # accurate (1 - (1-u)^k) / lam via expm1/log1p where u is small
        accurate = -torch.expm1(k.reshape(-1, 1) * torch.log1p(-u.clamp(max=0.5)))
        numer = torch.where(small, accurate, 1 - factor)
        gain = torch.where(lam > 0, numer / torch.where(lam > 0, lam, 1.0), k.reshape(-1, 1) * lr / d)
    # The rule of ntk_lib.training on the predicted loss (1/2D) ||f_k - y||^2 = (1/2D) sum (factor r0)^2.
    loss = 0.5 * ((factor * r0) ** 2).sum(dim=1) / d
    divergence = Divergence(DIVERGENCE_FACTOR, "raise")
    divergence.start(0.5 * float(r0.pow(2).sum()) / d, 0.5 * float(y.pow(2).sum()) / d)
    bad = ~(torch.isfinite(factor).all(1) & torch.isfinite(gain).all(1)) | (
        loss > divergence.factor * divergence.reference)
    if bad.any():
        step = int(k.reshape(-1)[bad].min())
        divergence.check(step, float(loss[k.reshape(-1) == step][0]))
    return _predict(lam, v, r0, y, factor, gain, k_test_train, f0_test, k.ndim == 0)


def mse_flow_params(
    jac_train: torch.Tensor,
    y_train: torch.Tensor,
    t: float | torch.Tensor,
    *,
    f0_train: torch.Tensor | None = None,
    lr: float = 1.0,
) -> torch.Tensor:
    """Return ``theta_t - theta_0`` of the linearised network under gradient flow, shape ``(T, P)`` or ``(P,)``.

    With ``J`` the ``(D, P)`` Jacobian at ``theta_0`` and ``Theta = J J^T`` (Lee et al.
    2019, eq. 8)::

        theta_t - theta_0 = J^T Theta^{-1} (I - exp(-lr Theta t / D)) (y - f_0)

    which is what ``(lr/D) int_0^t J^T (y - f_s) ds`` integrates to; at ``t = inf`` it is the
    minimum-norm change that interpolates the data.
    """
    jac = _checks.matrix("jac_train", jac_train, dtype=torch.float64)
    lam, v, r0, y, _, d = _spectral(jac @ jac.T, y_train, f0_train, lr)
    times = _times("t", t, lam.device)
    _, gain = _flow_factors(lam, lr * times.reshape(-1, 1) / d)
    out = (gain * r0) @ (jac.T @ v).T
    return out[0] if times.ndim == 0 else out
