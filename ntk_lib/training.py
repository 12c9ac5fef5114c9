"""The training floor: the course's MSE loss, the one divergence rule, one full-batch loop.

Every trainer of the package sits on this module: :func:`~ntk_lib.dynamics.train_gd`,
:func:`~ntk_lib.transfer.lr_sweep` and :func:`~ntk_lib.transfer.pretrain`,
:func:`~ntk_lib.coordcheck.coord_check` (all through :func:`full_batch_gd`) and
:func:`~ntk_lib.iterative.train` (through :class:`Divergence`). See ARCHITECTURE.md.

**Loss.** ``L = (1/2D) sum_alpha ||f(x_alpha) - y_alpha||^2`` over ``D`` points, so that
gradient flow moves the outputs by ``df/dt = -(1/D) Theta (f - y)`` (Jacot et al. 2018;
Lee et al. 2019).

**Divergence.** A run diverges at the first step whose loss is not finite or exceeds
``factor * max(L_0, L_zero)``, with ``L_0`` the first loss and ``L_zero`` the loss of
predicting 0 (the targets' own scale: a run that starts almost at a perfect fit, or on a
first minibatch fitted by chance, must not count as divergent when its loss merely rises
to the scale of the data). The loss after the last step is checked too. What happens then
is ``on_divergence``: ``"stop"`` (the default everywhere: the run ends and reports the step
in its ``diverged_at``) or ``"raise"`` (:class:`DivergenceError` with the step). No trainer
returns a non-finite loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from . import _checks

ON_DIVERGENCE: tuple[str, ...] = ("stop", "raise")
"""What a trainer does when its run diverges; the first is every trainer's default."""

DIVERGENCE_FACTOR = 1e6
"""The default ``factor`` of the divergence rule (module docstring)."""

DIVERGENCE_THRESHOLD = 1e8
"""Where a recursion of a few scalars (the two-scalar catapult model, the tensor-program
limit), which has no loss to compare with, counts as diverged: a state above this in size."""

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class DivergenceError(RuntimeError):
    """Training diverged at ``step`` (its loss ``loss`` was non-finite or exploded)."""

    def __init__(self, step: int, loss: float) -> None:
        super().__init__(
            f"training diverged at step {step} (loss {loss:.3g}): lower the learning rate"
        )
        self.step, self.loss = step, loss


def mse_loss(f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Return ``(1/2D) sum_alpha ||f_alpha - y_alpha||^2`` (summed over outputs, averaged over
    points)."""
    return 0.5 * (f - y).pow(2).sum() / f.shape[0]


@dataclass
class Divergence:
    """The one divergence rule (module docstring), for one run.

    Call :meth:`start` with the first loss (and the loss of predicting 0), then
    :meth:`check` every loss; ``diverged_at`` is the first step that diverged, ``-1`` if none.
    """

    factor: float = DIVERGENCE_FACTOR
    on_divergence: str = ON_DIVERGENCE[0]
    reference: float | None = None
    diverged_at: int = -1

    def __post_init__(self) -> None:
        if self.factor != math.inf:  # inf: only a non-finite loss diverges
            self.factor = _checks.real("divergence_factor", self.factor, positive=True)
        _checks.choice("on_divergence", self.on_divergence, ON_DIVERGENCE)

    def start(self, first: float, zero: float = 0.0) -> None:
        """Set the reference ``max(first, zero)`` (a non-finite value counts as 0)."""
        finite = [v for v in (first, zero) if math.isfinite(v)]
        self.reference = max([*finite, 1e-30])

    def check(self, step: int, value: float) -> bool:
        """Return whether ``value`` (the loss at ``step``) diverged; raise if so asked."""
        if math.isfinite(value) and (
            self.reference is None or value <= self.factor * self.reference
        ):
            return False
        self.diverged_at = step
        if self.on_divergence == "raise":
            raise DivergenceError(step, value)
        return True

    @property
    def diverged(self) -> bool:
        """Whether the run diverged."""
        return self.diverged_at >= 0


@dataclass
class Run:
    """What :func:`full_batch_gd` returns: the finite losses before each step (and after the
    last), and ``diverged_at`` (``-1`` if the run did not diverge)."""

    losses: list[float] = field(default_factory=list)
    diverged_at: int = -1

    @property
    def diverged(self) -> bool:
        """Whether the run stopped on divergence."""
        return self.diverged_at >= 0


def sgd(model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    """Return plain SGD with per-layer rates ``model.param_groups(lr)`` when the model has them."""
    if hasattr(model, "param_groups"):
        return torch.optim.SGD(model.param_groups(lr), lr=lr)
    return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)


def full_batch_gd(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    lr: float,
    steps: int,
    loss: Loss = mse_loss,
    optimizer: torch.optim.Optimizer | None = None,
    forward: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor] | None = None,
    on_step: Callable[[int, torch.Tensor], None] | None = None,
    divergence: Divergence | None = None,
    progress: bool = False,
) -> Run:
    """Train ``model`` in place by ``steps`` full-batch gradient steps on ``loss``; return the
    :class:`Run`.

    At each ``t = 0..steps`` the loop evaluates ``out = forward(model, x)`` (default
    ``model(x)``) and ``L_t = loss(out, y)``, applies the divergence rule, calls
    ``on_step(t, out)`` and, for ``t < steps``, takes the step
    ``theta <- theta - lr lr_scale grad L_t`` (``optimizer`` default :func:`sgd`). The inputs
    are the caller's to check; this loop only trains.

    Args:
        divergence: the rule's settings and state (default :class:`Divergence`, which stops);
            its reference is set at ``t = 0`` unless it already has one.
        on_step: called after the divergence check, so it never sees a diverged step.
    """
    optimizer = optimizer if optimizer is not None else sgd(model, lr)
    divergence = divergence if divergence is not None else Divergence()
    run = Run()
    for step in tqdm(range(steps + 1), disable=not progress, leave=False):
        optimizer.zero_grad(set_to_none=True)
        out = model(x) if forward is None else forward(model, x)
        value = loss(out, y)
        scalar = float(value.detach())
        if divergence.reference is None:
            with torch.no_grad():
                divergence.start(scalar, float(loss(torch.zeros_like(out), y)))
        if divergence.check(step, scalar):
            break
        run.losses.append(scalar)
        if on_step is not None:
            on_step(step, out)
        if step < steps:
            value.backward()
            optimizer.step()
    run.diverged_at = divergence.diverged_at
    return run
