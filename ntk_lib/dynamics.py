"""Training dynamics under the MSE loss: full-batch gradient descent that records what moves.

The loss is ``L = (1/2D) sum_alpha (f(x_alpha) - y_alpha)^2`` over ``D`` training points
(ARCHITECTURE.md), so that gradient flow moves the outputs by ``df/dt = -(1/D) Theta (f - y)``
(Jacot et al. 2018; Lee et al. 2019). :func:`train_gd` runs the discrete version and
records the loss, the relative movement of the parameters and, optionally, the empirical
NTK, so that lessons can measure how all of these shrink with width.

The closed forms of the same dynamics on a fixed kernel (``mse_flow``, ``mse_gd``,
``mse_flow_params``, ``mse_flow_ensemble``) live in :mod:`ntk_lib.kernel_flow` and are
importable from here too.

Taught in lessons 01 and 03.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from . import _checks
from .kernel_flow import (  # noqa: F401 (the closed forms: lessons import them from here)
    RCOND,
    Gaussian,
    KernelDynamics,
    mse_flow,
    mse_flow_ensemble,
    mse_flow_params,
    mse_gd,
)
from .kernels import empirical_nngp, empirical_ntk
from .measure import change_since_init
from .models import MLP
from .training import (
    DIVERGENCE_FACTOR,
    ON_DIVERGENCE,
    Divergence,
    DivergenceError,  # noqa: F401 (lessons import it from here)
    full_batch_gd,
    mse_loss,
)


@dataclass
class TrainHistory:
    """What :func:`train_gd` recorded. Tensors are float64 on the CPU.

    Attributes:
        loss: the loss before each step and after the last one, shape ``(steps + 1,)``
            (shorter if training diverged: only finite values are kept).
        param_change: ``||theta_t - theta_0|| / ||theta_0||`` at the same times.
        ntk_steps, ntk: the steps at which the empirical NTK was recorded, and the NTKs
            (``(D, D)``; for several outputs the ``"mean"`` kernel unless ``train_gd`` was
            asked for ``ntk_outputs="full"``).
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
            raise ValueError(
                "no NNGP was recorded (for ntk_lib MLPs only): call train_gd with ntk_every=k"
            )
        return change_since_init(self.nngp)


def _flat_params(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters() if p.requires_grad]).to(
        torch.float64
    )


def train_gd(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    lr: float,
    steps: int,
    ntk_every: int | None = None,
    ntk_outputs: str = "mean",
    on_divergence: str = ON_DIVERGENCE[0],
    divergence_factor: float = DIVERGENCE_FACTOR,
    record_outputs: bool = False,
    progress: bool = False,
) -> TrainHistory:
    """Train ``model`` in place by full-batch gradient descent on the MSE loss; return its history.

    ``theta <- theta - lr * lr_scale * grad L`` with ``L = (1/2D) sum (f - y)^2`` (per-layer
    ``lr_scale`` from ``model.param_groups`` when the model has it, e.g.
    :class:`~ntk_lib.models.MLP`).

    Args:
        model: any module mapping ``x`` to outputs of ``y``'s shape.
        x, y: the training set; ``y`` of shape ``(D,)`` for a scalar-output model.
        lr: learning rate (> 0).
        steps: number of gradient steps (>= 0).
        ntk_every: record the empirical NTK (and, for an MLP, NNGP) on ``x`` every this many
            steps and at the end.
        ntk_outputs: for a model with ``K > 1`` outputs per input, which kernel is recorded:
            ``"mean"`` (the default: the ``(D, D)`` mean of the ``K`` diagonal blocks, which
            tends to the infinite-width ``Theta`` as the outputs decouple) or ``"full"``
            (``(D, D, K, K)``); see :func:`~ntk_lib.kernels.empirical_ntk`. A scalar-output
            model records ``(D, D)`` either way.
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
    _checks.choice("ntk_outputs", ntk_outputs, ("full", "mean"))
    ref = _checks.trainable("model", model)[0]
    x, y = _checks.points("x", x, like=ref), _checks.points("y", y, like=ref)
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"x and y must hold the same number of points; got shapes {tuple(x.shape)} "
            f"and {tuple(y.shape)}"
        )
    records = steps // ntk_every + 2 if ntk_every is not None else 0
    _checks.fits(
        "steps",
        steps,
        8
        * (
            (steps + 1) * y.numel() * record_outputs
            + 2 * records * (x.shape[0] * y[0].numel()) ** 2
        ),
        "the recorded outputs and kernels",
    )
    theta0 = _flat_params(model)
    norm0 = theta0.norm().clamp(min=torch.finfo(torch.float64).tiny)
    history = TrainHistory(loss=torch.empty(0), param_change=torch.empty(0))
    moves = []

    def loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if out.shape != target.shape:
            raise ValueError(
                f"model output shape {tuple(out.shape)} does not match y's shape"
                f" {tuple(target.shape)}"
            )
        return mse_loss(out, target)

    def record(step: int, out: torch.Tensor) -> None:
        if record_outputs:
            history.outputs.append(out.detach().to("cpu", torch.float64))
        if ntk_every is not None and (step % ntk_every == 0 or step == steps):
            history.ntk_steps.append(step)
            history.ntk.append(
                empirical_ntk(model, x, outputs=ntk_outputs).to("cpu", torch.float64)
            )
            if isinstance(model, MLP):
                history.nngp.append(empirical_nngp(model, x).to("cpu", torch.float64))
        moves.append(float((_flat_params(model) - theta0).norm() / norm0))

    run = full_batch_gd(
        model,
        x,
        y,
        lr=lr,
        steps=steps,
        loss=loss,
        on_step=record,
        divergence=divergence,
        progress=progress,
    )
    history.diverged_at = run.diverged_at
    history.loss = torch.tensor(run.losses, dtype=torch.float64)
    history.param_change = torch.tensor(moves, dtype=torch.float64)
    return history
