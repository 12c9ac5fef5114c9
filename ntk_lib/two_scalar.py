"""The two-scalar model of the catapult mechanism (Lewkowycz et al. 2020), on whole grids.

For the width-``n`` two-layer linear network ``f = v.u / sqrt(n)`` on one example (``x = 1``,
``y = 0``, loss ``f^2/2``, so D = 1) with ``lam = (|u|^2 + |v|^2)/n`` (its NTK), one step of
gradient descent gives exactly::

    f_{t+1}   = (1 - eta lam_t + eta^2 f_t^2 / n) f_t,
    lam_{t+1} = lam_t + (eta f_t^2 / n) (eta lam_t - 4).

For ``n >> (eta f_0)^2`` it has three phases: *lazy* (``eta < 2/lam_0``: f decays, lam
moves by ``O(1/n)``), *catapult* (``2/lam_0 < eta < 4/lam_0``: ``|f|`` grows like
``|1 - eta lam_0|^t`` to ``O(sqrt(n))`` in a time ``O(log n)``, which drives lam down until
``lam < 2/eta``, and then f decays), and *divergent* (``eta > 4/lam_0``: lam grows with f).
The dynamics depend on ``(f, lam, eta, n)`` only through ``eta lam`` and ``eta^2 f^2/n``.
The names are importable from :mod:`ntk_lib.catapult` too, next to the real networks.

Reference: A. Lewkowycz, Y. Bahri, E. Dyer, J. Sohl-Dickstein, G. Gur-Ari, "The large
learning rate phase of deep learning: the catapult mechanism", arXiv:2003.02218 (2020).
Taught in lesson 04.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from . import _checks
from .device import resolve
from .training import DIVERGENCE_THRESHOLD

PHASES: tuple[str, ...] = ("lazy", "catapult", "divergent")
"""Phase names; the integer phase codes of :class:`TwoScalarOutcome` index this tuple."""

# A grid point of the two-scalar model has diverged once eta^2 f^2 / n or |eta lam| exceeds
# DIVERGENCE_THRESHOLD (ntk_lib.training) or is not finite. Beyond it the quadratic term
# dominates and |f| grows at least like its cube each step, so no trajectory comes back.

_CHUNK = 2**17  # grid points per block on the CPU: a block's ~10 work arrays stay in the L3 cache
_BOUNDARY_RTOL = 1e-12  # eta * lam0 this close to 2 or 4 counts as that boundary


# ---------------------------------------------------------------------------------------
# The two-scalar model
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TwoScalarOutcome:
    """Where each point of a grid of two-scalar runs ended up (:func:`phase_diagram`).

    All tensors have the grid's shape (the broadcast shape of ``f0, lam0, eta, n``).

    Attributes:
        eta, n, f0, lam0: the inputs, broadcast to the grid.
        f_final, lam_final: the state after the last step (frozen at the last in-bounds
            state where the point diverged).
        peak_abs_f: ``max_t |f_t|`` over the run.
        diverged_at: the step whose state crossed :data:`~ntk_lib.training.DIVERGENCE_THRESHOLD`,
            ``-1`` where
            none did.
    """

    eta: torch.Tensor
    n: torch.Tensor
    f0: torch.Tensor
    lam0: torch.Tensor
    f_final: torch.Tensor
    lam_final: torch.Tensor
    peak_abs_f: torch.Tensor
    diverged_at: torch.Tensor

    @property
    def diverged(self) -> torch.Tensor:
        """Whether each point diverged (a boolean grid)."""
        return self.diverged_at >= 0

    @property
    def final_eta_lam(self) -> torch.Tensor:
        """The product ``eta * lam`` after the last step; below 2 where training ended stable."""
        return self.eta * self.lam_final

    @property
    def phases(self) -> torch.Tensor:
        """Integer grid of phase codes (indices into :data:`PHASES`) read off the runs.

        ``2`` (divergent) where the point diverged; else ``1`` (catapult) where ``|f|`` (so
        the loss ``f^2/2``) ever rose above ``|f_0|``; else ``0`` (lazy).
        """
        codes = (self.peak_abs_f > self.f0.abs()).long()
        return codes.masked_fill(self.diverged, 2)


@dataclass(frozen=True)
class TwoScalarTrajectory(TwoScalarOutcome):
    """The full trajectories of a grid of two-scalar runs (:func:`two_scalar`), besides the
    outcome fields of :class:`TwoScalarOutcome`.

    Attributes:
        f, lam: shape ``(steps + 1, *grid)``; row ``t`` is the state after ``t`` steps. From
            ``diverged_at`` on, a diverged point repeats its last in-bounds state.
    """

    f: torch.Tensor
    lam: torch.Tensor

    @property
    def steps(self) -> int:
        """Number of steps taken."""
        return self.f.shape[0] - 1

    @property
    def loss(self) -> torch.Tensor:
        """The loss ``f^2/2`` of the one-example network, shape ``(steps + 1, *grid)``."""
        return 0.5 * self.f.square()

    @property
    def peak_step(self) -> torch.Tensor:
        """Grid of the step at which ``|f|`` (the loss) peaked (the first, on ties)."""
        return self.f.abs().argmax(dim=0)


def _grid_tensors(
    values: dict[str, Any], device: torch.device, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """The named inputs as tensors broadcast to one grid shape, validated."""
    tensors = {name: _real_tensor(name, value, device, dtype) for name, value in values.items()}
    try:
        shape = torch.broadcast_shapes(*(t.shape for t in tensors.values()))
    except RuntimeError as err:
        got = ", ".join(f"{k} {tuple(t.shape)}" for k, t in tensors.items())
        raise ValueError(
            f"{', '.join(tensors)} must broadcast to one grid shape; got shapes {got}"
        ) from err
    for name, positive in (("eta", True), ("n", True), ("lam0", False)):
        t = tensors[name]
        bad = t <= 0 if positive else t < 0
        if bad.any():
            accepted = "> 0" if positive else ">= 0"
            raise ValueError(f"{name} must be {accepted} everywhere; got {_describe(t[bad])}")
    return {k: t.expand(shape).contiguous() for k, t in tensors.items()}


def _real_tensor(name: str, value: Any, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``value`` (a number, array or tensor of real numbers) as a finite tensor."""
    if isinstance(value, torch.Tensor):
        t = value.detach()
        ok = t.is_floating_point() or (not t.is_complex() and t.dtype != torch.bool)
    else:
        try:
            arr = np.asarray(value)
        except ValueError as err:  # ragged nested lists
            raise TypeError(
                f"{name} must be a real number or an array of real numbers; got {value!r}"
            ) from err
        ok = np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
        t = torch.as_tensor(arr) if ok else None
    if not ok:
        raise TypeError(f"{name} must be a real number or an array of real numbers; got {value!r}")
    t = t.to(device=device, dtype=dtype)
    if not torch.isfinite(t).all():
        raise ValueError(
            f"{name} must be finite everywhere; got {_describe(t[~torch.isfinite(t)])}"
        )
    return t


def _describe(t: torch.Tensor) -> str:
    first = t.reshape(-1)[0].item()
    return f"{first:g}" if t.numel() == 1 else f"{t.numel()} such values, e.g. {first:g}"


def _evolve(
    grid: dict[str, torch.Tensor], steps: int, threshold: float, record: bool
) -> tuple[dict[str, torch.Tensor], torch.Tensor | None, torch.Tensor | None]:
    """Iterate the two-scalar map on every point of ``grid``; return the outcome fields
    (flattened) and, if ``record``, the trajectories of shape ``(steps + 1, points)``.

    A point that diverges is frozen by setting its ``eta`` to 0, which makes the map the
    identity, so every op runs on whole blocks without masks, in place. On the CPU the grid is
    cut into blocks of ``_CHUNK`` points, each iterated through all steps while it sits in
    cache (2-3x faster than sweeping the whole grid at every step).
    """
    f0, lam0, eta, n = (grid[k].reshape(-1) for k in ("f0", "lam0", "eta", "n"))
    points = f0.numel()
    out = {k: torch.empty_like(f0) for k in ("f_final", "lam_final", "peak_abs_f")}
    out["diverged_at"] = torch.full((points,), -1, dtype=torch.long, device=f0.device)
    f_traj = torch.empty((steps + 1, points), dtype=f0.dtype, device=f0.device) if record else None
    lam_traj = torch.empty_like(f_traj) if record else None

    def block(sl: slice) -> None:
        f, lam, eta_b = f0[sl].clone(), lam0[sl].clone(), eta[sl].clone()
        e = eta_b / n[sl]
        f_prev, lam_prev = torch.empty_like(f), torch.empty_like(f)
        omm, d, q, tmp = (torch.empty_like(f) for _ in range(4))
        one = torch.ones((), dtype=f.dtype, device=f.device)
        peak = f.abs()
        diverged_at = out["diverged_at"][sl]
        for t in range(steps + 1):
            torch.addcmul(one, eta_b, lam, value=-1.0, out=omm)  # 1 - eta lam
            torch.mul(f, f, out=d).mul_(e)  # eta f^2 / n
            torch.mul(d, eta_b, out=q)  # eta^2 f^2 / n
            q_max, (omm_min, omm_max) = q.max(), omm.aminmax()
            if not (q_max <= threshold and 1 - threshold <= omm_min and omm_max <= 1 + threshold):
                bad = torch.nonzero(~((q <= threshold) & ((omm - 1).abs() <= threshold))).squeeze(1)
                diverged_at[bad] = t
                if t > 0:  # back to the last in-bounds state
                    f[bad], lam[bad] = f_prev[bad], lam_prev[bad]
                for buf, frozen in ((eta_b, 0.0), (e, 0.0), (d, 0.0), (q, 0.0), (omm, 1.0)):
                    buf[bad] = frozen  # eta = 0 makes the map the identity
            if record:
                f_traj[t, sl], lam_traj[t, sl] = f, lam
            else:
                torch.maximum(peak, torch.abs(f, out=tmp), out=peak)
            if t == steps:
                break
            torch.add(omm, 3.0, out=tmp)  # 4 - eta lam
            torch.addcmul(lam, d, tmp, value=-1.0, out=lam_prev)  # lam + (eta f^2/n)(eta lam - 4)
            q.add_(omm)  # 1 - eta lam + eta^2 f^2 / n
            torch.mul(f, q, out=f_prev)
            f, f_prev, lam, lam_prev = f_prev, f, lam_prev, lam
        out["f_final"][sl], out["lam_final"][sl], out["peak_abs_f"][sl] = f, lam, peak

    chunk = _CHUNK if f0.device.type == "cpu" else max(points, 1)
    for start in range(0, points, chunk):
        block(slice(start, min(start + chunk, points)))
    if record:
        out["peak_abs_f"] = f_traj.abs().amax(dim=0)
    return out, f_traj, lam_traj


def _prepare(f0, lam0, eta, n, steps, threshold, device, dtype):
    """Validated grid tensors (float64 by default), step count and threshold of a two-scalar run."""
    device, dtype = resolve(device, dtype, theory=True)
    grid = _grid_tensors({"f0": f0, "lam0": lam0, "eta": eta, "n": n}, device, dtype)
    steps = _checks.nonnegative_int("steps", steps)
    return grid, steps, _checks.real("threshold", threshold, positive=True)


def two_scalar(
    f0: Any,
    lam0: Any,
    eta: Any,
    n: Any,
    steps: int,
    *,
    threshold: float = DIVERGENCE_THRESHOLD,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> TwoScalarTrajectory:
    """Return the trajectories of the two-scalar model on a whole grid of parameters at once.

    ``f_{t+1} = (1 - eta lam_t + eta^2 f_t^2/n) f_t`` and
    ``lam_{t+1} = lam_t + (eta f_t^2/n)(eta lam_t - 4)``: exactly gradient descent on the
    width-``n`` network ``f = v.u/sqrt(n)`` with one example (``x = 1``, ``y = 0``, loss
    ``f^2/2``) and ``lam = (|u|^2 + |v|^2)/n`` (Lewkowycz et al. 2020).

    Args:
        f0, lam0, eta, n: numbers or arrays that broadcast to one grid shape, e.g.
            ``eta[:, None]`` against ``n[None, :]`` for a phase diagram. ``eta > 0``,
            ``n > 0`` (any real), ``lam0 >= 0``.
        steps: number of steps (>= 0).
        threshold: a point diverges at the first step where ``eta^2 f^2/n`` or ``|eta lam|``
            exceeds this or is not finite (:data:`~ntk_lib.training.DIVERGENCE_THRESHOLD`). It is
            then frozen at
            its last in-bounds state, so the trajectories never hold inf or NaN.
        device, dtype: defaults ``default_device()`` and float64.

    Memory is ``2 (steps + 1)`` numbers per grid point; :func:`phase_diagram` keeps only where
    each point ended.
    """
    grid, steps, threshold = _prepare(f0, lam0, eta, n, steps, threshold, device, dtype)
    shape = grid["f0"].shape
    _checks.fits(
        "steps",
        steps,
        2 * (steps + 1) * grid["f0"].numel() * grid["f0"].element_size(),
        f"the trajectories of {grid['f0'].numel()} grid points",
        grid["f0"].device,
    )
    out, f, lam = _evolve(grid, steps, threshold, record=True)
    fields = {k: v.reshape(shape) for k, v in out.items()}
    return TwoScalarTrajectory(
        **grid, **fields, f=f.reshape(steps + 1, *shape), lam=lam.reshape(steps + 1, *shape)
    )


def phase_diagram(
    f0: Any,
    lam0: Any,
    eta: Any,
    n: Any,
    steps: int,
    *,
    threshold: float = DIVERGENCE_THRESHOLD,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> TwoScalarOutcome:
    """Return where each point of a grid of two-scalar runs ends up, without its trajectory.

    The same runs as :func:`two_scalar` (same arguments, bitwise the same final states) with
    a memory of a few numbers per grid point, for large grids: ``outcome.phases`` is the
    phase diagram.
    """
    grid, steps, threshold = _prepare(f0, lam0, eta, n, steps, threshold, device, dtype)
    shape = grid["f0"].shape
    out, _, _ = _evolve(grid, steps, threshold, record=False)
    return TwoScalarOutcome(**grid, **{k: v.reshape(shape) for k, v in out.items()})


def phase(eta: float, lam0: float) -> str:
    """Return the phase of gradient descent at rate ``eta`` from top eigenvalue ``lam0``.

    ``"lazy"`` for ``eta lam0 <= 2``, ``"catapult"`` for ``2 < eta lam0 < 4``, ``"divergent"``
    for ``eta lam0 >= 4``: the phases of the two-scalar model at large width
    (Lewkowycz et al. 2020), with ``lam0`` the normalised top NTK eigenvalue (see the module
    docstring). Products within a relative ``1e-12`` of a boundary count as on it.
    """
    x = _checks.real("eta", eta, positive=True) * _checks.real("lam0", lam0, positive=True)
    if x <= 2 * (1 + _BOUNDARY_RTOL):
        return "lazy"
    return "catapult" if x < 4 * (1 - _BOUNDARY_RTOL) else "divergent"
