"""Learning-rate sweeps across widths, feature-kernel movement and linear probes (lesson 08)."""

from __future__ import annotations

import math
from functools import cache

import pytest
import torch

from ntk_lib import MLP, data
from ntk_lib.dynamics import DivergenceError, train_gd
from ntk_lib.families import mlp_family
from ntk_lib.kernels import nngp_ntk
from ntk_lib.lazy import hidden_features
from ntk_lib.parametrizations import ABC, preset
from ntk_lib.transfer import (
    feature_kernel,
    few_shot,
    kernel_change,
    lr_sweep,
    pretrain,
    probe_accuracy,
)

F64 = torch.float64
# NTK scaling with its constants in the init, so that at the base width it *is* SP (lesson 08).
NTK_AT_BASE = ABC(preset("ntk", 2).a, preset("ntk", 2).b, 0.0)


def _mlps(parametrization, widths, base_width=64, **kw):
    """Depth-2 bias-free MLPs on the digits (64 inputs, 10 outputs), on the CPU."""
    return mlp_family(64, widths, 2, d_out=10, parametrization=parametrization,
                      base_width=base_width, device="cpu", **kw)


@cache
def _all_digits():
    return data.digits(1697, 100, seed=0, device="cpu")[:2]


def _digits(n: int = 32, start: int = 0):
    x, labels = _all_digits()
    x, labels = x[start : start + n], labels[start : start + n]
    return x, torch.nn.functional.one_hot(labels, 10).float(), labels


def test_mup_and_sp_sweeps_coincide_at_the_base_width_only():
    """muP with base width B is SP at width B (bit for bit), and differs from it when wider."""
    x, y, _ = _digits()
    kw = dict(steps=5, x_test=x[:8], y_test=y[:8], lrs=(0.05, 0.5, 1e4), seeds=(0,))
    sp, mup = (lr_sweep(_mlps(p, (16, 64), 16), x, y, **kw) for p in ("standard", "mup"))
    assert torch.equal(sp.loss[0], mup.loss[0]) and torch.equal(sp.diverged[0], mup.diverged[0])
    assert torch.equal(sp.test_loss[0], mup.test_loss[0])
    assert not torch.allclose(sp.loss[1], mup.loss[1])


def test_sweep_loss_is_the_loss_of_train_gd():
    x, y, _ = _digits(24)
    sweep = lr_sweep(_mlps("mup", (48,), 16, dtype=F64), x, y, lrs=(0.3,), steps=7, seeds=(3,))
    model = MLP(64, 48, 2, parametrization="mup", base_width=16, bias=False, d_out=10, seed=3,
                dtype=F64, device="cpu")
    history = train_gd(model, x.to(F64), y.to(F64), lr=0.3, steps=7)
    assert sweep.loss[0, 0].item() == pytest.approx(history.loss[-1].item(), rel=1e-12)
    assert sweep.initial_loss[0].item() == pytest.approx(history.loss[0].item(), rel=1e-12)


def test_divergence_is_flagged_and_every_value_stays_finite():
    x, y, _ = _digits()
    sweep = lr_sweep(_mlps("standard", (16, 128)), x, y, lrs=(0.01, 1e4), steps=10,
                     x_test=x[:10], y_test=y[:10], seeds=(0,))
    assert sweep.diverged[:, 1].all() and not sweep.diverged[:, 0].any()
    for values in (sweep.loss, sweep.test_loss, sweep.test_accuracy):
        assert torch.isfinite(values).all()
    # diverged: reported as the loss at initialisation (no progress)
    torch.testing.assert_close(sweep.loss[:, 1], sweep.initial_loss)
    assert (sweep.loss[:, 0] < sweep.initial_loss).all()
    assert ((sweep.test_accuracy >= 0) & (sweep.test_accuracy <= 1)).all()
    torch.testing.assert_close(sweep.best_lr(), torch.tensor([0.01, 0.01], dtype=F64))


def test_best_lr_drifts_under_sp_and_stays_under_mup():
    """TP5 Fig. 1 on a tiny problem: 16x wider moves SP's best rate down by >= 4x (1/n: 16x)
    and muP's by at most one grid step (measured on three data subsets and seeds)."""
    x, y, _ = _digits(32)
    lrs = [2.0**k for k in range(-6, 2)]
    best = {p: lr_sweep(_mlps(p, (16, 256), 16), x, y, lrs=lrs, steps=20, seeds=(0,)).best_lr()
            for p in ("standard", "mup")}
    assert best["standard"][1] <= best["standard"][0] / 4
    assert 0.5 <= best["mup"][1] / best["mup"][0] <= 2


def test_best_lr_refuses_what_it_cannot_answer():
    x, y, _ = _digits(16)
    sweep = lr_sweep(_mlps("standard", (16,)), x, y, lrs=(1e4,), steps=3)
    with pytest.raises(ValueError, match="every learning rate diverged at width 16"):
        sweep.best_lr()
    with pytest.raises(ValueError, match="x_test"):
        sweep.best_lr("test_loss")
    with pytest.raises(ValueError, match="metric"):
        sweep.best_lr("accuracy")


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(lrs=(-0.1,)), ValueError, r"lrs\[0\] must be > 0"),
        (dict(lrs=()), ValueError, "at least one value"),
        (dict(models={0: lambda g: None}), ValueError, r"models widths\[0\]"),
        (dict(models={16.0: lambda g: None}), TypeError, r"models widths\[0\]"),
        (dict(models={}), ValueError, "at least one width"),
        (dict(steps=0), ValueError, "steps"),
        (dict(seeds=()), ValueError, "seeds"),
        (dict(y=torch.zeros(5, 10)), ValueError, r"y must have shape \(16,\)"),
        (dict(x_test=torch.zeros(4, 64)), ValueError, "both x_test and y_test"),
        (dict(x_test=torch.zeros(4, 64), y_test=torch.zeros(4, 3)), ValueError, "y_test"),
        (dict(x_test=torch.zeros(4, 63), y_test=torch.zeros(4, 10)), ValueError, "64 columns"),
    ],
)
def test_lr_sweep_rejects_bad_input(kwargs, error, match):
    x, y, _ = _digits(16)
    args = dict(models=_mlps("mup", (16,)), lrs=(0.1,), x=x, y=y, steps=2)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        lr_sweep(**args)


def test_feature_kernel_tends_to_the_nngp():
    """NTK parametrization, sigma_b = 0: x^L . x^L' / n -> K^{L+1} of the closed form. Monte
    Carlo: the mean over 8 networks of width 1024 has relative fluctuations of about 3% per
    entry (measured: max over the 21 entries 1-6% for four sets of seeds); checked at 12%."""
    x = data.sphere(6, 5, seed=2, device="cpu")
    nets = [MLP(5, 1024, 2, parametrization="ntk", bias=False, seed=s, dtype=F64, device="cpu")
            for s in range(8)]
    nngp, _ = nngp_ntk(x, depth=2)
    mean = torch.stack([feature_kernel(net, x) for net in nets]).mean(0)
    torch.testing.assert_close(mean, nngp, rtol=0.12, atol=0.0)
    feats = hidden_features(nets[0], x).double()
    assert feats.shape == (6, 1024) and feats.dtype == F64 and (feats >= 0).all()


def test_kernel_change_is_relative_and_centring_ignores_the_mean():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(7, 30, generator=gen, dtype=F64)
    k = a @ a.T / 30
    assert kernel_change(k, k) == 0
    assert kernel_change(k, 2 * k) == pytest.approx(1.0, rel=1e-12)
    assert kernel_change(3 * k, 6 * k, centre=True) == pytest.approx(1.0, rel=1e-12)
    shifted = a + torch.randn(1, 30, generator=gen, dtype=F64)  # every input moved alike
    k_shift = shifted @ shifted.T / 30
    assert kernel_change(k, k_shift) > 0.1
    assert kernel_change(k, k_shift, centre=True) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="same shape"):
        kernel_change(k, k[:3, :3])
    with pytest.raises(ValueError, match="zero"):
        kernel_change(torch.ones(4, 4), torch.eye(4), centre=True)


def test_feature_kernel_moves_under_mup_and_freezes_under_ntk():
    """Same network at the base width 32; 32x wider the NTK feature kernel moves much less
    (theory: 1/n, i.e. 1/32; measured ~0.05-0.1) while muP's keeps an order-one change."""
    x, y, _ = _digits(32)
    runs = {p: pretrain(_mlps(p, (32, 1024), 32), x, y, lr=0.1, steps=30, every=15)
            for p in ("mup", NTK_AT_BASE)}
    ntk, mup = runs[NTK_AT_BASE].kernel_change[:, -1], runs["mup"].kernel_change[:, -1]
    assert ntk[0] == pytest.approx(mup[0].item(), rel=1e-4)  # both SP at width 32
    assert ntk[1] / ntk[0] < 0.25
    assert mup[1] / mup[0] > 0.4
    assert runs["mup"].steps == (0, 15, 30) and (runs["mup"].kernel_change[:, 0] == 0).all()
    # Same seed, same function at init: the random features are those of SP in both.
    torch.testing.assert_close(runs["mup"].features_init[1], runs[NTK_AT_BASE].features_init[1],
                               rtol=1e-5, atol=1e-5)


def test_pretrain_reports_divergence():
    x, y, _ = _digits(16)
    with pytest.raises(DivergenceError):
        pretrain(_mlps("standard", (64,)), x, y, lr=1e4, steps=10, every=5)
    with pytest.raises(ValueError, match="every"):
        pretrain(_mlps("mup", (64,)), x, y, lr=0.1, steps=10, every=0)


def test_few_shot_picks_shots_per_class():
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    idx = few_shot(labels, 2, seed=1)
    assert torch.equal(torch.bincount(labels[idx]), torch.tensor([2, 2, 2]))
    assert torch.equal(idx, torch.sort(idx).values)
    assert torch.equal(idx, few_shot(labels, 2, seed=1))
    assert len({tuple(few_shot(labels, 2, seed=s).tolist()) for s in range(10)}) > 1
    with pytest.raises(ValueError, match="class 1 has 3 points"):
        few_shot(labels, 4)
    with pytest.raises(ValueError, match="integer class labels"):
        few_shot(labels.float(), 1)


def test_probe_accuracy_is_ridge_regression():
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(40, 12, generator=gen, dtype=F64)
    labels = torch.randint(0, 3, (40,), generator=gen)
    ftr, ltr, fte, lte = feats[:25], labels[:25], feats[25:], labels[25:]
    ridge = 0.3
    # The same readout in primal form: W = (F^T F / s + ridge I)^{-1} F^T Y / s.
    s = ftr.pow(2).sum(1).mean()
    y = torch.nn.functional.one_hot(ltr, 3).to(F64)
    w = torch.linalg.solve(ftr.T @ ftr / s + ridge * torch.eye(12, dtype=F64), ftr.T @ y / s)
    expected = float(((fte @ w).argmax(1) == lte).double().mean())
    assert probe_accuracy(ftr, ltr, fte, lte, ridge=ridge) == pytest.approx(expected, abs=1e-12)
    # Class-indicator features are perfectly separable; labels need not start at 0.
    onehot = torch.nn.functional.one_hot(labels, 3).to(F64)
    assert probe_accuracy(onehot[:25], ltr + 5, onehot[25:], lte + 5) == 1.0
    with pytest.raises(ValueError, match="integer class labels"):
        probe_accuracy(ftr, ltr.float(), fte, lte)
    with pytest.raises(ValueError, match="12 columns"):
        probe_accuracy(ftr, ltr, fte[:, :5], lte)
    assert not math.isnan(probe_accuracy(ftr, ltr, fte, lte))
