"""The house style and the recurring plots of the course.

NumPy appears here only at the plotting edge. The fitted log-log slope
(:func:`loglog_slope`) is also what the tests use to check scaling laws such as
"the empirical NTK converges to its limit like ``width^-1/2``".
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import torch

STYLE = {
    "figure.figsize": (6.0, 4.0),
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "lines.linewidth": 1.8,
    "image.cmap": "viridis",
}


def use_style() -> None:
    """Apply the course's matplotlib style (clean axes, light grid, readable sizes)."""
    mpl.rcParams.update(STYLE)


def _array(name: str, v: Sequence[float] | np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu().numpy()
    a = np.asarray(v, dtype=np.float64).reshape(-1)
    if a.size < 2 or not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise ValueError(f"{name} must hold at least two finite positive numbers for a log-log fit; got {a}")
    return a


def loglog_slope(x: Sequence[float] | np.ndarray | torch.Tensor, y: Sequence[float] | np.ndarray | torch.Tensor) -> tuple[float, float]:
    """Return ``(slope, prefactor)`` of the least-squares fit ``y = prefactor * x^slope`` in log-log."""
    lx, ly = np.log(_array("x", x)), np.log(_array("y", y))
    if lx.shape != ly.shape:
        raise ValueError(f"x and y must have the same length; got {lx.size} and {ly.size}")
    slope, intercept = np.polyfit(lx, ly, 1)
    return float(slope), float(np.exp(intercept))


def loglog_fit(
    ax: plt.Axes,
    x: Sequence[float] | np.ndarray | torch.Tensor,
    y: Sequence[float] | np.ndarray | torch.Tensor,
    *,
    label: str = "",
    yerr: Sequence[float] | np.ndarray | None = None,
    **style,
) -> float:
    """Plot ``y`` against ``x`` on log-log axes with the fitted power law; return the slope.

    The legend entry reads ``"<label> (slope -0.50)"``; ``yerr`` (e.g. the standard error
    over seeds) draws error bars.
    """
    x_a, y_a = _array("x", x), _array("y", y)
    slope, pref = loglog_slope(x_a, y_a)
    line = ax.errorbar(x_a, y_a, yerr=yerr, marker="o", linestyle="none", capsize=2, **style)
    grid = np.geomspace(x_a.min(), x_a.max(), 50)
    ax.plot(grid, pref * grid**slope, color=line[0].get_color(), alpha=0.6,
            label=f"{label} (slope {slope:+.2f})".strip())
    ax.set_xscale("log")
    ax.set_yscale("log")
    return slope


def loss_curves(ax: plt.Axes, curves: dict[str, Sequence[float]], *, log: bool = True) -> None:
    """Plot named loss curves against the step, on a log scale by default."""
    for name, values in curves.items():
        v = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
        ax.plot(np.arange(len(v)), v, label=name)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
