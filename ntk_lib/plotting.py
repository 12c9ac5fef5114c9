"""The house style, the recurring plots of the course, and kernel-free twins of widgets.

:func:`twin` pre-renders a parameter sweep as frames switched by a slider in the browser,
so the online book has a working control where a notebook has an ``ipywidgets`` one.

NumPy appears here only at the plotting edge. The fitted log-log slope that
:func:`loglog_fit` draws is :func:`ntk_lib.measure.loglog_slope` (also importable from
here); the science modules fit it there, and none of them imports this module
(ARCHITECTURE.md).
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from .measure import loglog_slope, positive_values  # noqa: F401 (loglog_slope: lessons import it here)

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
    x_a, y_a = positive_values("x", x), positive_values("y", y)
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
        v = (
            values.detach().cpu().numpy()
            if isinstance(values, torch.Tensor)
            else np.asarray(values)
        )
        ax.plot(np.arange(len(v)), v, label=name)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()


# --- kernel-free twins of interactive controls ---------------------------------------------

TWIN_MAX_BYTES = 2_000_000
_twin_ids = itertools.count(1)

_TWIN_JS = """(function () {
  var root = document.getElementById("%(id)s");
  var frames = %(frames)s, labels = %(labels)s, shape = %(shape)s;
  var sliders = root.querySelectorAll("input.ntk-twin-slider");
  var outs = root.querySelectorAll("output.ntk-twin-value");
  var values = %(values)s;
  var img = root.querySelector("img.ntk-twin-frame");
  function update() {
    var index = 0;
    for (var i = 0; i < sliders.length; i++) {
      var k = parseInt(sliders[i].value, 10);
      index = index * shape[i] + k;
      outs[i].textContent = values[i][k];
    }
    img.src = frames[index];
    img.alt = labels[index];
    img.setAttribute("data-params", labels[index]);
  }
  for (var i = 0; i < sliders.length; i++) {
    sliders[i].addEventListener("input", update);
  }
  update();
})();"""


@dataclass(frozen=True)
class Twin:
    """Pre-rendered frames of a parameter sweep with sliders that switch between them.

    Displayed in a notebook or in the static book it is self-contained HTML (the frames as
    inline PNG data, the slider logic as inline JavaScript): no kernel, server or network.
    Made by :func:`twin`.
    """

    names: tuple[str, ...]
    labels: tuple[str, ...]
    values: tuple[tuple[str, ...], ...]
    frames: tuple[str, ...]
    start: tuple[int, ...]
    ident: str

    @property
    def nbytes(self) -> int:
        """Size of the encoded frames in bytes (what the page carries)."""
        return sum(len(f) for f in self.frames)

    def __repr__(self) -> str:
        axes = " x ".join(
            f"{n} ({len(v)} values)" for n, v in zip(self.names, self.values, strict=True)
        )
        return f"<kernel-free twin: {axes}, {len(self.frames)} frames>"

    def _repr_html_(self) -> str:
        rows = []
        for i, (label, vals, k) in enumerate(
            zip(self.labels, self.values, self.start, strict=True)
        ):
            rows.append(
                f'<label style="display:block;font-family:sans-serif;font-size:0.9em">'
                f"{html.escape(label)} "
                f'<input type="range" class="ntk-twin-slider" data-axis="{i}" '
                f'data-label="{html.escape(label)}" min="0" '
                f'max="{len(vals) - 1}" step="1" value="{k}" style="vertical-align:middle;'
                f'width:16em"> <output class="ntk-twin-value">{html.escape(vals[k])}</output>'
                "</label>"
            )
        flat = _frame_labels(self.labels, self.values)
        index = int(np.ravel_multi_index(self.start, [len(v) for v in self.values]))
        script = _TWIN_JS % {
            "id": self.ident,
            "frames": json.dumps(list(self.frames)),
            "labels": json.dumps(flat),
            "shape": json.dumps([len(v) for v in self.values]),
            "values": json.dumps([list(v) for v in self.values]),
        }
        return (
            f'<div class="ntk-twin" id="{self.ident}">'
            + "".join(rows)
            + f'<img class="ntk-twin-frame" style="max-width:100%" src="{self.frames[index]}" '
            f'alt="{html.escape(flat[index])}" data-params="{html.escape(flat[index])}">'
            + f"<script>{script}</script></div>"
        )


def _frame_labels(labels: Sequence[str], values: Sequence[Sequence[str]]) -> list[str]:
    """``"label1 = v1, label2 = v2"`` for every frame, in row-major (C) order."""
    return [
        ", ".join(f"{lab} = {v}" for lab, v in zip(labels, combo, strict=True))
        for combo in itertools.product(*values)
    ]


def _format(value: object) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _render(draw: Callable[..., object], params: dict[str, object], dpi: int) -> str:
    """Call ``draw(**params)`` with ``plt.show`` silenced; return its figure as a PNG data URL."""
    before = set(plt.get_fignums())
    show = plt.show
    plt.show = lambda *args, **kwargs: None
    try:
        result = draw(**params)
    finally:
        plt.show = show
    new = [plt.figure(n) for n in plt.get_fignums() if n not in before]
    figure = result if isinstance(result, Figure) else (new[-1] if new else None)
    if figure is None:
        raise ValueError(
            f"draw must make a matplotlib figure (return it, or leave it open); "
            f"draw({params}) made none"
        )
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    for fig in {*new, figure}:
        plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def twin(
    draw: Callable[..., object],
    *,
    labels: dict[str, str] | None = None,
    start: dict[str, object] | None = None,
    dpi: int = 72,
    max_bytes: int = TWIN_MAX_BYTES,
    **grid: Sequence[object],
) -> Twin:
    """Return the kernel-free twin of an ``interact(draw, ...)`` control: pre-rendered frames.

    ``draw(**params)`` is called once for every combination of the ``grid`` values (one
    keyword per slider, e.g. ``twin(show, eta=[0.5, 1, 2], width=[64, 256])``) and must make
    a matplotlib figure, as the function given to ``ipywidgets.interact`` does (its
    ``plt.show()`` is silenced while rendering). The frames are stored as PNG and switched in
    the browser by one slider per keyword, labelled ``labels.get(name, name)`` and starting at
    ``start`` (default: the first value). The result displays as self-contained HTML, so it
    works in the static book with no kernel and no network; the frames must fit in
    ``max_bytes`` (lower ``dpi`` or the grid if they do not).
    """
    if not grid:
        raise ValueError("twin needs at least one parameter grid, e.g. twin(draw, eta=[0.5, 1, 2])")
    for name, vals in grid.items():
        if isinstance(vals, (str, bytes)) or not isinstance(vals, Sequence) or len(vals) == 0:
            raise ValueError(f"grid {name}= must be a non-empty sequence of values; got {vals!r}")
    labels = dict(labels or {})
    start = dict(start or {})
    unknown = (set(labels) | set(start)) - set(grid)
    if unknown:
        raise ValueError(
            f"labels/start name {sorted(unknown)}, which are not grid keywords {list(grid)}"
        )
    if not isinstance(dpi, int) or not 20 <= dpi <= 300:
        raise ValueError(f"dpi must be an integer in [20, 300]; got {dpi!r}")
    names = tuple(grid)
    first = []
    for name in names:
        if name in start and start[name] not in grid[name]:
            raise ValueError(f"start[{name!r}] = {start[name]!r} is not one of {list(grid[name])}")
        first.append(list(grid[name]).index(start[name]) if name in start else 0)
    frames, size = [], 0
    for combo in itertools.product(*(grid[n] for n in names)):
        frame = _render(draw, dict(zip(names, combo, strict=True)), dpi)
        size += len(frame)
        if size > max_bytes:
            raise ValueError(
                f"the frames exceed max_bytes = {max_bytes} after {len(frames) + 1} of "
                f"{math.prod(len(grid[n]) for n in names)}; lower dpi (got {dpi}) or the grid"
            )
        frames.append(frame)
    return Twin(
        names=names,
        labels=tuple(labels.get(n, n) for n in names),
        values=tuple(tuple(_format(v) for v in grid[n]) for n in names),
        frames=tuple(frames),
        start=tuple(first),
        ident=f"ntk-twin-{next(_twin_ids)}",
    )
