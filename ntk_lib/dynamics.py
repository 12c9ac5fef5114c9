"""Training dynamics under the MSE loss: full-batch gradient descent that records what moves.

The loss is ``L = (1/2D) sum_alpha (f(x_alpha) - y_alpha)^2`` over ``D`` training points
(DESIGN.md), so that gradient flow moves the outputs by ``df/dt = -(1/D) Theta (f - y)``
(Jacot et al. 2018; Lee et al. 2019). :func:`train_gd` runs the discrete version and
records the loss, the relative movement of the parameters and, optionally, the empirical
NTK, so that lessons can measure how all of these shrink with width.

Taught in lessons 01 and 03.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from . import _checks
from .kernels import empirical_ntk


class DivergenceError(RuntimeError):
    """Training diverged: the loss became non-finite or grew by ``divergence_factor``."""

    def __init__(self, step: int, loss: float) -> None:
        super().__init__(f"training diverged at step {step} (loss {loss:.3g})")
        self.step, self.loss = step, loss


@dataclass
class TrainHistory:
    """What :func:`train_gd` recorded. Tensors are float64 on the CPU.

    Attributes:
        loss: the loss before each step and after the last one, shape ``(steps + 1,)``
            (shorter if training diverged: only finite values are kept).
        param_change: ``||theta_t - theta_0|| / ||theta_0||`` at the same times.
        ntk_steps, ntk: the steps at which the empirical NTK was recorded, and the NTKs.
        diverged_at: the step whose loss was non-finite or exploded, ``-1`` if none.
    """

    loss: torch.Tensor
    param_change: torch.Tensor
    ntk_steps: list[int] = field(default_factory=list)
    ntk: list[torch.Tensor] = field(default_factory=list)
    diverged_at: int = -1

    @property
    def diverged(self) -> bool:
        """Whether training was stopped by divergence."""
        return self.diverged_at >= 0

    def ntk_change(self) -> torch.Tensor:
        """Return ``||Theta_t - Theta_0||_F / ||Theta_0||_F`` at each recorded step."""
        if not self.ntk:
            raise ValueError("no NTK was recorded: call train_gd with ntk_every=k")
        return torch.stack([(k - self.ntk[0]).norm() / self.ntk[0].norm() for k in self.ntk])


def mse_loss(f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Return ``(1/2D) sum (f - y)^2`` (summed over output dimensions, averaged over points)."""
    return 0.5 * (f - y).pow(2).sum() / f.shape[0]


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
    on_divergence: str = "stop",
    divergence_factor: float = 1e6,
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
        ntk_every: record the empirical NTK on ``x`` every this many steps (and at the end).
        on_divergence: ``"stop"`` (return the history with ``diverged_at`` set) or ``"raise"``
            (:class:`DivergenceError`). Divergence means a non-finite loss or a loss larger
            than ``divergence_factor`` times the initial one.
        progress: show a tqdm progress bar.
    """
    lr = _checks.real("lr", lr, positive=True)
    steps = _checks.nonnegative_int("steps", steps)
    _checks.choice("on_divergence", on_divergence, ("stop", "raise"))
    divergence_factor = _checks.real("divergence_factor", divergence_factor, positive=True)
    if ntk_every is not None:
        ntk_every = _checks.positive_int("ntk_every", ntk_every)
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError("x and y must be torch tensors")
    if x.shape[0] != y.shape[0] or x.shape[0] < 1:
        raise ValueError(f"x and y must hold the same number (>= 1) of points; got {x.shape[0]} and {y.shape[0]}")
    groups = model.param_groups(lr) if hasattr(model, "param_groups") else [{"params": list(model.parameters())}]
    optimizer = torch.optim.SGD(groups, lr=lr)
    theta0 = _flat_params(model)
    norm0 = theta0.norm().clamp(min=torch.finfo(torch.float64).tiny)
    history = TrainHistory(loss=torch.empty(0), param_change=torch.empty(0))
    losses, moves = [], []
    for step in tqdm(range(steps + 1), disable=not progress, leave=False):
        optimizer.zero_grad(set_to_none=True)
        out = model(x)
        if out.shape != y.shape:
            raise ValueError(f"model output shape {tuple(out.shape)} does not match y's shape {tuple(y.shape)}")
        loss = mse_loss(out, y)
        value = float(loss.detach())
        if not math.isfinite(value) or (losses and value > divergence_factor * max(losses[0], 1e-30)):
            history.diverged_at = step
            if on_divergence == "raise":
                raise DivergenceError(step, value)
            break
        losses.append(value)
        if ntk_every is not None and (step % ntk_every == 0 or step == steps):
            history.ntk_steps.append(step)
            history.ntk.append(empirical_ntk(model, x).to("cpu", torch.float64))
        moves.append(float((_flat_params(model) - theta0).norm() / norm0))
        if step < steps:
            loss.backward()
            optimizer.step()
    history.loss = torch.tensor(losses, dtype=torch.float64)
    history.param_change = torch.tensor(moves, dtype=torch.float64)
    return history
