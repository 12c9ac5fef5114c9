"""Datasets, device helpers, plotting utilities and the grading messages."""

from __future__ import annotations

import math

import matplotlib
import numpy as np
import pytest
import torch

import ntk_lib
from ntk_lib import data, grading
from ntk_lib.device import full_scale, generator, resolve, seed_everything
from ntk_lib.plotting import loglog_fit, loglog_slope, loss_curves, use_style

matplotlib.use("Agg")


def test_sphere_circle_regression():
    x = data.sphere(50, 7, seed=1)
    assert x.shape == (50, 7) and x.dtype == torch.float64
    torch.testing.assert_close((x * x).sum(1) / 7, torch.ones(50, dtype=torch.float64))
    assert torch.equal(x, data.sphere(50, 7, seed=1)) and not torch.equal(x, data.sphere(50, 7, seed=2))
    angles, pts = data.circle(8)
    torch.testing.assert_close(pts[2], torch.tensor([0.0, math.sqrt(2)], dtype=torch.float64))
    assert angles[1].item() == pytest.approx(math.pi / 4)
    x, y = data.regression_1d(20, seed=0)
    assert x.shape == (20, 2) and y.shape == (20,) and x.dtype == torch.float32
    t = torch.atan2(x[:, 1], x[:, 0]).double()
    torch.testing.assert_close(y.double(), torch.sin(2 * t) + 0.5 * torch.cos(t), rtol=1e-5, atol=1e-5)


def test_digits():
    xtr, ytr, xte, yte = data.digits(200, 150, classes=(3, 8), seed=0, device="cpu")
    assert xtr.shape == (200, 64) and xte.shape == (150, 64)
    assert set(ytr.tolist()) == {0, 1} and ytr.dtype == torch.int64
    assert (xtr.double() ** 2).mean().item() == pytest.approx(1.0, rel=1e-5)
    with pytest.raises(ValueError, match="n_train"):
        data.digits(2000, 1)


def test_digits_pixels_constant_on_a_small_training_split_stay_bounded():
    """A pixel that is 0 on all training images but not on some test image must not blow up."""
    xtr, _, xte, _ = data.digits(20, 500, seed=0, device="cpu", dtype=torch.float64)
    assert (xtr.std(0) == 0).any()  # such pixels exist at this size
    assert xte.abs().max().item() < 50 and (xte**2).mean().item() < 5


def test_data_rejects_bad_input():
    with pytest.raises(ValueError, match="n must be a positive"):
        data.sphere(0, 3)
    with pytest.raises(ValueError, match="radius"):
        data.sphere(3, 3, radius=-1.0)
    with pytest.raises(ValueError, match="noise"):
        data.regression_1d(3, noise=-1.0)


def test_device_helpers():
    assert resolve("cpu", None) == (torch.device("cpu"), torch.float32)
    assert resolve("cpu", None, theory=True)[1] == torch.float64
    assert full_scale("cpu") is False
    assert generator(None) is None
    seed_everything(4)
    a = torch.rand(3)
    seed_everything(4)
    assert torch.equal(a, torch.rand(3))
    assert ntk_lib.default_device().type in ("cpu", "cuda")


def test_loglog_slope_and_plots():
    x = np.array([64, 128, 256, 512])
    slope, pref = loglog_slope(x, 3.0 * x**-0.5)
    assert slope == pytest.approx(-0.5, abs=1e-12) and pref == pytest.approx(3.0, rel=1e-12)
    with pytest.raises(ValueError, match="positive"):
        loglog_slope([1, 2], [1, -1])
    with pytest.raises(ValueError, match="same length"):
        loglog_slope([1, 2, 3], [1, 2])
    use_style()
    fig, ax = matplotlib.pyplot.subplots()
    assert loglog_fit(ax, x, x**2.0, label="y") == pytest.approx(2.0)
    assert "slope +2.00" in ax.get_lines()[-1].get_label()
    loss_curves(ax, {"gd": torch.tensor([1.0, 0.5, 0.25])})
    matplotlib.pyplot.close(fig)


def test_grading_messages_are_useful():
    with pytest.raises(AssertionError, match=r"K: expected a tensor of shape \(3, 3\), got \(3, 2\)"):
        grading.check_shape("K", torch.zeros(3, 2), (3, 3))
    with pytest.raises(AssertionError, match=r"expected 1 at index \(1,\), got 1.1.*Monte Carlo"):
        grading.check_close("v", [1.0, 1.1], [1.0, 1.0], rtol=0.01, why="Monte Carlo")
    with pytest.raises(AssertionError, match="NaN"):
        grading.check_close("v", [float("nan")], [1.0])
    with pytest.raises(AssertionError, match=r"in \[-0.7, -0.3\], got -1"):
        grading.check_between("slope", -1.0, -0.7, -0.3)
    with pytest.raises(AssertionError, match="expected a Tensor, got list"):
        grading.check_type("K", [1], torch.Tensor)
    grading.check_close("v", torch.ones(2), np.ones(2))
    grading.check_between("slope", -0.5, -0.7, -0.3)


def _draw_line(a: float = 1.0, b: int = 1) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0, 1], [0, a * b])
    ax.set_title(f"a={a} b={b}")
    plt.show()


def test_twin_renders_every_grid_point_in_row_major_order():
    import base64
    import re

    import matplotlib.pyplot as plt

    from ntk_lib.plotting import twin

    before = set(plt.get_fignums())
    t = twin(_draw_line, a=[0.5, 2.0, 3.0], b=[1, 4], labels={"a": "eta"}, start={"b": 4})
    assert set(plt.get_fignums()) == before  # every frame's figure is closed
    assert len(t.frames) == 6 and len(set(t.frames)) == 6  # distinct pictures
    assert all(base64.b64decode(f.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n" for f in t.frames)
    assert t.values == (("0.5", "2", "3"), ("1", "4"))
    assert t.start == (0, 1)
    page = t._repr_html_()
    # the initial frame is the one of the start values, (a=0.5, b=4): index 1 in C order
    assert f'src="{t.frames[1]}"' in page
    assert 'data-params="eta = 0.5, b = 4"' in page
    assert page.count('type="range"') == 2
    assert "http" not in re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page)  # no network
    assert repr(t) == "<kernel-free twin: a (3 values) x b (2 values), 6 frames>"


def test_twin_takes_a_returned_figure_and_rejects_bad_input():
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    from ntk_lib.plotting import twin

    def returns_figure(k: int) -> Figure:
        fig = Figure(figsize=(2, 1.5))
        fig.add_subplot().plot([0, k])
        return fig

    assert len(twin(returns_figure, k=[1, 2]).frames) == 2
    with pytest.raises(ValueError, match="at least one parameter grid"):
        twin(returns_figure)
    with pytest.raises(ValueError, match="non-empty sequence"):
        twin(returns_figure, k=[])
    with pytest.raises(ValueError, match=r"start\['k'\] = 5"):
        twin(returns_figure, k=[1, 2], start={"k": 5})
    with pytest.raises(ValueError, match="not grid keywords"):
        twin(returns_figure, k=[1, 2], labels={"q": "Q"})
    with pytest.raises(ValueError, match="dpi"):
        twin(returns_figure, k=[1, 2], dpi=1000)
    with pytest.raises(ValueError, match="made none"):
        twin(lambda k: None, k=[1])
    with pytest.raises(ValueError, match="max_bytes"):
        twin(_draw_line, a=[1.0, 2.0, 3.0], max_bytes=1000)
    plt.close("all")
