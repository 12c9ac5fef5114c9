"""Coordinate checks: muP is width-independent, SP blows up, NTK freezes; maximal learning rates."""

from __future__ import annotations

import pytest
import torch

from ntk_lib import data
from ntk_lib.coordcheck import coord_check, max_stable_lr
from ntk_lib.dynamics import DivergenceError
from ntk_lib.families import mlp_family
from ntk_lib.parametrizations import ABC, classify


def _mlps(parametrization, widths, **kw):
    """The depth-2 bias-free MLPs of the batch below (16 inputs), on the CPU."""
    return mlp_family(16, widths, 2, parametrization=parametrization, device="cpu", **kw)


@pytest.fixture(scope="module")
def batch():
    x = data.sphere(32, 16, seed=0, dtype=torch.float32, device="cpu")
    return x, torch.sin(3 * x[:, 0])


def test_mup_activations_are_width_independent(batch):
    """The mup package's check: every layer within a factor 1.2 between widths 1024 and 4096, 3 SGD steps."""
    cc = coord_check(mlp_family(16, [1024, 4096], 3, parametrization="mup", device="cpu"), *batch, lr=0.5, steps=3,
                     seeds=(0, 1))
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
    cc = coord_check(_mlps("mup", [64, 256, 1024, 4096]), *batch, lr=0.1, steps=0, seeds=range(12))
    assert cc.slopes("size")[0, cc.column("f")].item() == pytest.approx(-0.5, abs=0.1)


def test_sp_output_grows_linearly_with_width_after_one_step(batch):
    """Zero readout, width-independent rate: f_1 = -lr chi x^L . x^L = Theta(n)."""
    cc = coord_check(_mlps("sp", [128, 256, 512, 1024, 2048], zero_readout=True), *batch, lr=0.05, steps=1)
    assert cc.slopes("size")[1, cc.column("f")].item() == pytest.approx(1.0, abs=0.1)
    # Features did not move in the first step (the zero readout sends no gradient back).
    assert (cc.change[:, 1, : cc.column("f")] == 0).all()


def test_ntk_feature_updates_fall_like_inverse_sqrt_width(batch):
    # tanh: with relu the units crossing their kink add a visible n^-1 correction at these widths.
    cc = coord_check(_mlps("ntk", [128, 256, 512, 1024, 2048], activation="tanh"), *batch, lr=0.5, steps=2)
    slopes = cc.slopes("change")[1:, : cc.column("f")]
    assert ((slopes > -0.6) & (slopes < -0.4)).all(), slopes
    assert cc.slopes("size")[:, : cc.column("f")].abs().max() < 0.05


def test_feature_change_exponent_is_minus_r_off_the_presets(batch):
    """A kernel-regime point with r = 3/4 (smaller readout init): Delta x^L = Theta(n^-3/4)."""
    abc = ABC((0.0, 0.5, 0.5), (0.0, 0.0, 0.25), 0.0, constants_in="multiplier")
    assert classify(abc).r == 0.75
    cc = coord_check(_mlps(abc, [256, 512, 1024, 2048, 4096]), *batch, lr=1.0, steps=2)
    slope = cc.slopes("change")[2, cc.column("x2")].item()
    assert slope == pytest.approx(-0.75, abs=0.1)


def test_record_layout_and_adam(batch):
    cc = coord_check(_mlps("sp", [32, 64]), *batch, lr=1e-3, steps=2, optimizer="adam", seeds=(0,))
    assert cc.names == ("h1", "h2", "x1", "x2", "f") and cc.size.shape == (2, 3, 5) and cc.steps == 2
    assert (cc.change[:, 0] == 0).all() and (cc.change[:, 1:] > 0).all()
    assert torch.isnan(cc.slopes("change")[0]).all()


def test_divergence_is_reported(batch):
    with pytest.raises(DivergenceError):
        coord_check(_mlps("sp", [64, 4096]), *batch, lr=1e3, steps=5, seeds=(0,))


def test_max_stable_lr_exponents(batch):
    """muP: a width-independent maximal rate; SP: it falls like 1/n (the NTK grows like n)."""
    x, y = batch
    f64 = dict(dtype=torch.float64)
    mup = max_stable_lr(_mlps("mup", [64, 256, 1024], **f64), x, y, steps=10, iters=8, lr_range=(1e-3, 1e3),
                        seeds=(0,))
    sp = max_stable_lr(_mlps("sp", [64, 256, 1024], **f64), x, y, steps=10, iters=8, lr_range=(1e-4, 1e3),
                       seeds=(0,))
    assert abs(mup.exponent) < 0.2, mup
    assert sp.exponent < -0.7, sp
    assert (mup.lr > 0).all() and mup.lr.shape == (3,)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(models=_mlps("mup", [64])), ValueError, "at least 2 distinct"),
        (dict(models={64: None, 32: None}), TypeError, r"models\[64\] must be a callable"),
        (dict(models={64: lambda g: None, -1: lambda g: None}), ValueError, r"models widths\[1\]"),
        (dict(models=("mup", [16, 32])), TypeError, "models must be a {width: factory} mapping"),
        (dict(lr=0.0), ValueError, "lr must be > 0"),
        (dict(optimizer="lbfgs"), ValueError, "optimizer"),
        (dict(seeds=()), ValueError, "seeds"),
        (dict(y=torch.zeros(5)), ValueError, "y must have shape"),
        (dict(y=torch.zeros(32, 2)), ValueError, r"y must have the networks' output shape \(32,\)"),
    ],
)
def test_coord_check_rejects_bad_input(batch, kwargs, error, match):
    args = dict(models=_mlps("mup", [16, 32]), x=batch[0], y=batch[1], lr=0.1, steps=1)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        coord_check(**args)


def test_family_rejects_bad_options():
    with pytest.raises(ValueError, match="parametrization"):
        mlp_family(16, [16, 32], 2, parametrization="mean-field")
    with pytest.raises(ValueError, match=r"widths\[1\]"):
        mlp_family(16, [16, -1], 2)


def test_other_bad_input(batch):
    x, y = batch
    cc = coord_check(_mlps("mup", [16, 32]), x, y, lr=0.1, steps=1, seeds=(0,))
    with pytest.raises(ValueError, match="wide must be one of"):
        cc.ratio("size", 64, 16)
    with pytest.raises(ValueError, match="kind"):
        cc.slopes("delta")
    with pytest.raises(ValueError, match="lr_range"):
        max_stable_lr(_mlps("mup", [16, 32]), x, y, lr_range=(1.0, 0.1))
    with pytest.raises(ValueError, match="low end"):
        max_stable_lr(_mlps("sp", [16, 32]), x, y, lr_range=(1e3, 1e4), iters=1)
