"""Coordinate checks: muP is width-independent, SP blows up, NTK freezes; maximal learning rates."""

from __future__ import annotations

import pytest
import torch

from ntk_lib import data
from ntk_lib.coordcheck import coord_check, max_stable_lr
from ntk_lib.dynamics import DivergenceError
from ntk_lib.parametrizations import ABC, classify


@pytest.fixture(scope="module")
def batch():
    x = data.sphere(32, 16, seed=0, dtype=torch.float32, device="cpu")
    return x, torch.sin(3 * x[:, 0])


def test_mup_activations_are_width_independent(batch):
    """The mup package's check: every layer within a factor 1.2 between widths 1024 and 4096, 3 SGD steps."""
    cc = coord_check("mup", [1024, 4096], *batch, lr=0.5, steps=3, depth=3, seeds=(0, 1), device="cpu")
    size, change = cc.ratio("size", 4096, 1024), cc.ratio("change", 4096, 1024)
    hidden = slice(0, cc.column("f"))
    assert ((size[:, hidden] > 1 / 1.2) & (size[:, hidden] < 1.2)).all(), size
    # ...and the features really move: their change from init is Theta(1), not vanishing.
    assert ((change[1:, hidden] > 1 / 1.2) & (change[1:, hidden] < 1.2)).all(), change
    assert (cc.change[-1, 1:, hidden] > 0.02).all()
    # The output is Theta(1) once f_0 = Theta(n^-1/2) has been swamped by the updates.
    assert 1 / 1.2 < size[3, cc.column("f")] < 1.2


def test_mup_output_vanishes_at_init(batch):
    """f_0 = n^-1/2 w^{L+1} . x^L with w ~ N(0, 1/n): Theta(n^-1/2) -> 0 (Yang & Hu 2021, Cor. 3.10)."""
    cc = coord_check("mup", [64, 256, 1024, 4096], *batch, lr=0.1, steps=0, seeds=range(12), device="cpu")
    assert cc.slopes("size")[0, cc.column("f")].item() == pytest.approx(-0.5, abs=0.1)


def test_sp_output_grows_linearly_with_width_after_one_step(batch):
    """Zero readout, width-independent rate: f_1 = -lr chi x^L . x^L = Theta(n)."""
    cc = coord_check("sp", [128, 256, 512, 1024, 2048], *batch, lr=0.05, steps=1, zero_readout=True, device="cpu")
    assert cc.slopes("size")[1, cc.column("f")].item() == pytest.approx(1.0, abs=0.1)
    # Features did not move in the first step (the zero readout sends no gradient back).
    assert (cc.change[:, 1, : cc.column("f")] == 0).all()


def test_ntk_feature_updates_fall_like_inverse_sqrt_width(batch):
    # tanh: with relu the units crossing their kink add a visible n^-1 correction at these widths.
    cc = coord_check("ntk", [128, 256, 512, 1024, 2048], *batch, lr=0.5, steps=2, activation="tanh", device="cpu")
    slopes = cc.slopes("change")[1:, : cc.column("f")]
    assert ((slopes > -0.6) & (slopes < -0.4)).all(), slopes
    assert cc.slopes("size")[:, : cc.column("f")].abs().max() < 0.05


def test_feature_change_exponent_is_minus_r_off_the_presets(batch):
    """A kernel-regime point with r = 3/4 (smaller readout init): Delta x^L = Theta(n^-3/4)."""
    abc = ABC((0.0, 0.5, 0.5), (0.0, 0.0, 0.25), 0.0, constants_in="multiplier")
    assert classify(abc).r == 0.75
    cc = coord_check(abc, [256, 512, 1024, 2048, 4096], *batch, lr=1.0, steps=2, device="cpu")
    slope = cc.slopes("change")[2, cc.column("x2")].item()
    assert slope == pytest.approx(-0.75, abs=0.1)


def test_record_layout_and_adam(batch):
    cc = coord_check("sp", [32, 64], *batch, lr=1e-3, steps=2, depth=2, optimizer="adam", seeds=(0,), device="cpu")
    assert cc.names == ("h1", "h2", "x1", "x2", "f") and cc.size.shape == (2, 3, 5) and cc.steps == 2
    assert (cc.change[:, 0] == 0).all() and (cc.change[:, 1:] > 0).all()
    assert torch.isnan(cc.slopes("change")[0]).all()


def test_divergence_is_reported(batch):
    with pytest.raises(DivergenceError):
        coord_check("sp", [64, 4096], *batch, lr=1e3, steps=5, seeds=(0,), device="cpu")


def test_max_stable_lr_exponents(batch):
    """muP: a width-independent maximal rate; SP: it falls like 1/n (the NTK grows like n)."""
    x, y = batch
    mup = max_stable_lr("mup", [64, 256, 1024], x.double(), y.double(), steps=10, iters=8, lr_range=(1e-3, 1e3))
    sp = max_stable_lr("sp", [64, 256, 1024], x.double(), y.double(), steps=10, iters=8, lr_range=(1e-4, 1e3))
    assert abs(mup.exponent) < 0.2, mup
    assert sp.exponent < -0.7, sp
    assert (mup.lr > 0).all() and mup.lr.shape == (3,)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(widths=[64]), ValueError, "at least two distinct"),
        (dict(widths=[64, 64]), ValueError, "at least two distinct"),
        (dict(widths=[64, -1]), ValueError, r"widths\[1\]"),
        (dict(lr=0.0), ValueError, "lr must be > 0"),
        (dict(optimizer="lbfgs"), ValueError, "optimizer"),
        (dict(seeds=()), ValueError, "seeds"),
        (dict(y=torch.zeros(5)), ValueError, "y must have shape"),
        (dict(parametrization="mean-field"), ValueError, "parametrization"),
    ],
)
def test_coord_check_rejects_bad_input(batch, kwargs, error, match):
    args = dict(parametrization="mup", widths=[16, 32], x=batch[0], y=batch[1], lr=0.1, steps=1, device="cpu")
    args.update(kwargs)
    with pytest.raises(error, match=match):
        coord_check(**args)


def test_other_bad_input(batch):
    x, y = batch
    cc = coord_check("mup", [16, 32], x, y, lr=0.1, steps=1, seeds=(0,), device="cpu")
    with pytest.raises(ValueError, match="wide must be one of"):
        cc.ratio("size", 64, 16)
    with pytest.raises(ValueError, match="kind"):
        cc.slopes("delta")
    with pytest.raises(ValueError, match="lr_range"):
        max_stable_lr("mup", [16, 32], x, y, lr_range=(1.0, 0.1))
    with pytest.raises(ValueError, match="low end"):
        max_stable_lr("sp", [16, 32], x, y, lr_range=(1e3, 1e4), iters=1)
