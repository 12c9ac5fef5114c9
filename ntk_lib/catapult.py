"""Large learning rates: the catapult mechanism's three phases in a real network.

**Why ``2/lambda_0``.** Near a minimum a wide network is a linear model: gradient descent
on the MSE loss ``L = (1/2D) sum_alpha (f(x_alpha) - y_alpha)^2`` moves the residual by
``(f - y)_{t+1} = (1 - (eta/D) Theta) (f - y)_t``. Along the top eigenvector of the NTK
``Theta`` the factor is ``1 - eta lam`` with ``lam = lambda_max(Theta)/D``, so the residual
shrinks iff ``eta < 2/lam`` (the convex-quadratic bound). Throughout this module ``lam`` is this
*normalised* top eigenvalue, so that ``2/lam`` and ``4/lam`` keep their meaning for any D.

**The two-scalar model** of the mechanism (Lewkowycz et al. 2020), its phases and phase
diagram are :mod:`ntk_lib.two_scalar` (importable from here too).

**Real networks.** :func:`train_catapult` trains a network in the NTK parametrization by
full-batch GD at ``eta = r * 2/lam_0`` and records the loss and ``lam_t``. Relu networks with
more than one hidden layer keep training well above the model's ``eta lam_0 = 4`` (up to
about 12 in Lewkowycz et al. 2020); :func:`max_trainable_rate` measures where they stop.

Reference: A. Lewkowycz, Y. Bahri, E. Dyer, J. Sohl-Dickstein, G. Gur-Ari, "The large
learning rate phase of deep learning: the catapult mechanism", arXiv:2003.02218 (2020).

Taught in lesson 04.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from . import _checks
from .dynamics import train_gd
from .measure import largest_true, ntk_top_eigenvalue
from .two_scalar import (  # noqa: F401 (the two-scalar model: lessons import it from here)
    DIVERGENCE_THRESHOLD,
    PHASES,
    TwoScalarOutcome,
    TwoScalarTrajectory,
    phase,
    phase_diagram,
    two_scalar,
)

# ---------------------------------------------------------------------------------------
# Real networks
# ---------------------------------------------------------------------------------------


def top_eigenvalue(model: torch.nn.Module, x: torch.Tensor) -> float:
    """Return ``lam = lambda_max(Theta)/D``, the normalised top eigenvalue of the NTK on ``x``.

    With the course's loss ``(1/2D) sum (f - y)^2`` a step of GD multiplies the residual along
    the top eigenvector by ``1 - eta lam``, so ``2/lam`` is the critical learning rate. For a
    model with ``K`` outputs per input (loss summed over outputs) ``Theta`` is the full
    ``(D K) x (D K)`` kernel of all outputs.
    """
    return ntk_top_eigenvalue(model, x) / x.shape[0]


def empirical_phase(
    loss: torch.Tensor,
    lam_final: float,
    eta: float,
    *,
    diverged: bool,
    rise: float = 1.1,
    converged: float = 1e-2,
) -> str:
    """Return ``"lazy"``, ``"catapult"`` or ``"divergent"`` for a recorded training run.

    - ``"lazy"``: the loss never rose above ``rise`` times its lowest value so far (GD on a
      fixed kernel with ``eta < 2/lam`` never raises the MSE loss) and ended below its start;
    - ``"catapult"``: the loss rose, then fell below ``converged`` times its initial value,
      and the top NTK eigenvalue ended below ``2/eta`` (``eta lam_final < 2``);
    - ``"divergent"``: anything else: the loop stopped on divergence, or the loss rose and
      did not come back down (a relu network whose units all died at a huge rate ends here
      too, with a small kernel but a loss that stays high).

    Args:
        loss: the losses at every step, shape ``(steps + 1,)``.
        lam_final: the normalised top NTK eigenvalue ``lambda_max(Theta)/D`` at the end.
        eta: the learning rate.
        diverged: whether the training loop stopped on divergence.
        rise: the factor (> 1) that counts as a rise of the loss.
        converged: the fraction (< 1) of the initial loss that counts as trained after a rise.
    """
    eta = _checks.real("eta", eta, positive=True)
    lam_final = _checks.real("lam_final", lam_final, nonnegative=True)
    rise = _checks.real("rise", rise, positive=True)
    converged = _checks.real("converged", converged, positive=True)
    if rise <= 1 or converged >= 1:
        raise ValueError(
            f"rise must be > 1 and converged < 1; got rise={rise}, converged={converged}"
        )
    loss = torch.as_tensor(loss, dtype=torch.float64).reshape(-1)
    if loss.numel() < 1:
        raise ValueError("loss must hold at least one value")
    if diverged or not torch.isfinite(loss).all():
        return "divergent"
    lowest = torch.cummin(loss, dim=0).values
    if not (loss[1:] > rise * lowest[:-1]).any():
        return "lazy" if loss[-1] <= loss[0] else "divergent"
    if loss[-1] < converged * loss[0] and eta * lam_final < 2:
        return "catapult"
    return "divergent"


@dataclass(frozen=True)
class CatapultRun:
    """One network trained at ``eta = r * 2/lam_0`` (:func:`train_catapult`).

    Attributes:
        r: the learning rate in units of the critical one, ``eta lam_0 / 2``.
        eta: the learning rate.
        lam0: the normalised top NTK eigenvalue ``lambda_max(Theta_0)/D`` at initialisation.
        loss: the loss at every step, shape ``(steps + 1,)`` (shorter if training diverged).
        ntk_steps: the steps at which the NTK was measured.
        lam: the normalised top NTK eigenvalue at those steps.
        diverged_at: the step at which training diverged, ``-1`` if it did not.
    """

    r: float
    eta: float
    lam0: float
    loss: torch.Tensor
    ntk_steps: torch.Tensor
    lam: torch.Tensor
    diverged_at: int

    @property
    def diverged(self) -> bool:
        """Whether training was stopped by divergence."""
        return self.diverged_at >= 0

    @property
    def phase(self) -> str:
        """The phase read off the run by :func:`empirical_phase`."""
        return empirical_phase(self.loss, self.lam[-1].item(), self.eta, diverged=self.diverged)

    @property
    def lam_change(self) -> float:
        """The relative change ``(lam_final - lam_0) / lam_0`` of the top eigenvalue."""
        return (self.lam[-1].item() - self.lam0) / self.lam0


def train_catapult(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    r: float,
    steps: int,
    ntk_every: int = 1,
    divergence_factor: float = 1e8,
    progress: bool = False,
) -> CatapultRun:
    """Train ``model`` in place by GD at ``eta = r * 2/lam_0``; return loss and top eigenvalue.

    ``lam_0 = lambda_max(Theta_0)/D`` is measured on ``x`` first (:func:`top_eigenvalue`), so
    ``r < 1`` is below the critical rate, ``1 < r < 2`` is the two-scalar model's catapult
    window and real relu networks train up to a larger ``r`` (Lewkowycz et al. 2020). The loss
    is the course's ``(1/2D) sum (f - y)^2`` (:func:`~ntk_lib.dynamics.train_gd`).

    Args:
        model: a scalar-output network, e.g. an :class:`~ntk_lib.models.MLP` (NTK parametrization).
        x, y: the training set, shapes ``(D, d_in)`` and ``(D,)``.
        r: the learning rate in units of ``2/lam_0`` (> 0).
        steps: number of GD steps.
        ntk_every: measure the NTK every this many steps (and at the end).
        divergence_factor: training stops as divergent when the loss exceeds this times its
            initial value. The catapult's peak grows with the width (10 to 1000 times the
            initial loss for widths 64 to 2048 in lesson 04), so the default is far above it.
        progress: show a progress bar.
    """
    r = _checks.real("r", r, positive=True)
    lam0 = top_eigenvalue(model, x)
    eta = 2 * r / lam0
    history = train_gd(
        model,
        x,
        y,
        lr=eta,
        steps=steps,
        ntk_every=ntk_every,
        divergence_factor=divergence_factor,
        progress=progress,
    )
    lam = torch.stack([torch.linalg.eigvalsh(k)[-1] for k in history.ntk]) / x.shape[0]
    return CatapultRun(
        r=r,
        eta=eta,
        lam0=lam0,
        loss=history.loss,
        ntk_steps=torch.tensor(history.ntk_steps),
        lam=lam,
        diverged_at=history.diverged_at,
    )


def max_trainable_rate(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    steps: int,
    r_low: float = 1.0,
    r_high: float = 10.0,
    tol: float = 0.02,
) -> float:
    """Return the measured largest trainable ``eta lam_0`` of ``model`` on ``(x, y)``, by bisection.

    Copies of ``model`` (left untouched) are trained by :func:`train_catapult` at
    ``r = eta lam_0 / 2`` between ``r_low`` (which must train) and ``r_high`` (which must not)
    until the bracket is narrower than ``tol`` relative; a rate is trainable when
    :func:`empirical_phase` does not call it divergent. Returns ``2 r`` at the bracket's
    middle. Lewkowycz et al. (2020) report about 12 for relu networks (4 for the two-scalar
    model). The kernel is measured only at the start and the end of each run.
    """
    r_low, r_high = (
        _checks.real("r_low", r_low, positive=True),
        _checks.real("r_high", r_high, positive=True),
    )
    tol = _checks.real("tol", tol, positive=True)
    if r_high <= r_low:
        raise ValueError(f"r_high must be > r_low; got r_low={r_low}, r_high={r_high}")
    steps = _checks.positive_int("steps", steps)

    def trainable(r: float) -> bool:
        run = train_catapult(copy.deepcopy(model), x, y, r=r, steps=steps, ntk_every=steps)
        return run.phase != "divergent"

    if not trainable(r_low):
        raise ValueError(f"r_low={r_low} does not train in {steps} steps: lower it")
    if trainable(r_high):
        raise ValueError(f"r_high={r_high} still trains in {steps} steps: raise it")
    return sum(largest_true(trainable, r_low, r_high, rtol=tol))
