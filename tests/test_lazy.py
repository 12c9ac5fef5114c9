"""Lazy versus rich training: the output-scale family, its exponents, its measurements."""

from __future__ import annotations

import math

import pytest
import torch

from ntk_lib import data, empirical_ntk
from ntk_lib.lazy import (
    family,
    hidden_features,
    kappa_ratio,
    linear_probe,
    output_scaling,
    relative_change,
    ridge_cv,
    scaled_mlp,
    sweep,
    train_scaled,
)
from ntk_lib.models import MLP
from ntk_lib.parametrizations import classify, preset

F64 = torch.float64


def _task(n=12):
    return data.regression_1d(n, seed=1, dtype=F64, device="cpu")


@pytest.mark.parametrize("q", [0.5, 0.6, 0.75, 0.9, 1.0])
def test_output_scaling_is_the_abc_family_with_r_equal_one_minus_q(q):
    abc = output_scaling(q)
    assert abc.a == (0.0, q) and abc.b == (0.0, 0.0) and abc.c == pytest.approx(1 - 2 * q)
    cls = classify(abc)
    assert cls.stable and cls.nontrivial
    assert cls.r == pytest.approx(1 - q, abs=1e-12)
    assert cls.regime == ("feature learning" if q == 1.0 else "kernel")


def test_output_scaling_ends_of_the_family():
    assert output_scaling(1.0) == preset("mf", 1)
    assert classify(output_scaling(0.4)).regime == "unstable"  # output blows up at init
    assert classify(output_scaling(1.2)).regime == "unstable"  # r = 2 - 2q < 0
    with pytest.raises(TypeError, match="q must be a real number"):
        output_scaling("1/2")


def test_same_seed_same_lr_weighted_kernel_and_rescaled_output():
    """f_q = D^{1/2-q} f_{1/2}, lr D^{2q-1} Theta_q = Theta_{1/2} exactly: Chizat et al.'s alpha."""
    x, _ = _task()
    width = 300
    kw = dict(device="cpu")
    base = scaled_mlp(2, width, 0.5, **kw)
    k_base = empirical_ntk(base, x)
    for q in (0.75, 1.0):
        net = scaled_mlp(2, width, q, **kw)
        torch.testing.assert_close(net(x), width ** (0.5 - q) * base(x), rtol=1e-12, atol=1e-14)
        weighted = width ** (2 * q - 1) * empirical_ntk(net, x)
        torch.testing.assert_close(weighted, k_base, rtol=1e-12, atol=1e-14)
        assert net.layers[-1].scale.lr_scale == pytest.approx(width ** (2 * q - 1))


def test_relative_change_closed_form_and_errors():
    a = torch.tensor([[3.0, 0.0], [0.0, 4.0]])
    b = a + torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    assert relative_change(a, b) == pytest.approx(1 / 5)
    assert relative_change(a, a) == 0.0
    with pytest.raises(ValueError, match="same shape"):
        relative_change(a, a[:1])
    with pytest.raises(ValueError, match="non-zero norm"):
        relative_change(torch.zeros(2, 2), a)
    with pytest.raises(TypeError, match="torch tensors"):
        relative_change(a.numpy(), a)


def test_hidden_features_are_the_first_layer_activations():
    x, _ = _task()
    net = scaled_mlp(2, 64, 1.0, device="cpu")
    w, b = net.layers[0].weight, net.layers[0].bias
    scale = net.layers[0].scale
    expected = torch.tanh(scale.weight_mult * x @ w.T + scale.bias_mult * b)
    torch.testing.assert_close(hidden_features(net, x), expected)
    with pytest.raises(TypeError, match="at least one hidden layer"):
        hidden_features(MLP(2, 8, 0, device="cpu"), x)


def test_train_scaled_records_what_moved():
    x, y = _task()
    run = train_scaled(x, y, 1.0, 128, lr=1.0, steps=60, seed=3, device="cpu")
    fresh = scaled_mlp(2, 128, 1.0, seed=3, device="cpu")
    moved = relative_change(hidden_features(fresh, x), hidden_features(run.model, x))
    assert run.feature_change == pytest.approx(moved)
    assert run.ntk_change == pytest.approx(float(run.history.ntk_change()[-1]))
    assert run.history.ntk_steps == [0, 60]
    assert run.final_loss < 0.1 * float(run.history.loss[0])
    lazy = train_scaled(x, y, 0.5, 128, lr=1.0, steps=60, seed=3, record_ntk=False, device="cpu")
    assert math.isnan(lazy.ntk_change) and lazy.feature_change > 0


def test_train_scaled_flags_divergence_instead_of_nan_features():
    x, y = _task()
    run = train_scaled(x, y, 1.0, 64, lr=1e4, steps=20, device="cpu")
    assert run.history.diverged and math.isnan(run.feature_change)


def test_feature_change_exponent_is_minus_r():
    """Growing width: the fitted slope of the feature change is q - 1 = -r (here 64..1024, 3 seeds).

    Measured: -0.50 (q = 1/2) and 0.00 (q = 1); the tolerance 0.15 covers the seed noise of
    the q = 1/2 runs (their random f_0 sets how much must be learned).
    """
    x, y = _task(16)
    families = {q: family(2, (64, 256, 1024), q, device="cpu") for q in (0.5, 1.0)}
    res = sweep(families, x, y, seeds=(0, 1, 2), lr=1.0, steps=100)
    assert res.feature.shape == (2, 3, 3) and torch.isfinite(res.loss).all()
    slopes = res.slopes("feature")
    assert slopes[0].item() == pytest.approx(-0.5, abs=0.15)
    assert slopes[1].item() == pytest.approx(0.0, abs=0.1)
    ntk = res.slopes("ntk")
    assert ntk[0] < -0.6 and abs(ntk[1]) < 0.15  # the NTK moves even less when lazy, O(1) when rich
    assert (res.sem("feature") >= 0).all() and res.mean("ntk").shape == (2, 3)
    with pytest.raises(ValueError, match="kind must be one of"):
        res.slopes("features")


def test_sweep_rejects_bad_grids():
    x, y = _task()
    with pytest.raises(ValueError, match="widths must hold at least one width"):
        family(2, (), 0.5)
    with pytest.raises(ValueError, match=r"widths\[0\] must be a positive integer"):
        family(2, (0,), 0.5)
    with pytest.raises(TypeError, match="families must be a non-empty"):
        sweep({}, x, y, lr=1.0, steps=1)
    with pytest.raises(ValueError, match="share one list of widths"):
        sweep({0.5: family(2, (8, 16), 0.5), 1.0: family(2, (8,), 1.0)}, x, y, lr=1.0, steps=1)


def test_linear_probe_exact_on_linear_targets_and_mean_when_overregularised():
    gen = torch.Generator().manual_seed(0)
    phi = torch.randn(40, 10, generator=gen, dtype=F64)
    phi_t = torch.randn(200, 10, generator=gen, dtype=F64)
    w = torch.randn(10, generator=gen, dtype=F64)
    err = linear_probe(phi, phi @ w + 2.0, phi_t, phi_t @ w + 2.0, ridge=1e-10)
    assert err < 1e-12  # 40 points, 10 features: least squares recovers w exactly
    heavy = linear_probe(phi, phi @ w, phi_t, phi_t @ w, ridge=1e8)
    mean_err = float(((phi @ w).mean() - phi_t @ w).pow(2).mean() / (phi_t @ w).var())
    assert heavy == pytest.approx(mean_err, rel=1e-4)  # infinite ridge: predict the training mean
    with pytest.raises(ValueError, match="one entry per row"):
        linear_probe(phi, w, phi_t, phi_t @ w)
    with pytest.raises(ValueError, match="10 columns"):
        linear_probe(phi, phi @ w, phi_t[:, :5], phi_t @ w)


def test_kappa_ratio_matches_the_full_hessian_on_a_small_network():
    x, _ = _task()
    net = scaled_mlp(2, 6, 0.75, seed=2, device="cpu")
    params = tuple(p.detach().clone() for p in net.parameters())
    names = [n for n, _ in net.named_parameters()]

    def f(*ps):
        return torch.func.functional_call(net, dict(zip(names, ps)), (x[:1],)).sum()

    blocks = torch.autograd.functional.hessian(f, params)
    sizes = [p.numel() for p in params]
    rows = [torch.cat([blocks[i][j].reshape(sizes[i], sizes[j]) for j in range(len(params))], 1)
            for i in range(len(params))]
    full = torch.cat(rows, 0)
    grad = torch.cat([g.reshape(-1) for g in torch.autograd.functional.jacobian(f, params)])
    expected = torch.linalg.eigvalsh(full).abs().max() / grad.pow(2).sum()
    assert kappa_ratio(net, x[0], iters=300) == pytest.approx(expected.item(), rel=1e-6)


def test_kappa_ratio_scales_as_width_to_the_q_minus_1():
    """||grad f||^2 ~ D^{1-2q}, ||Hessian|| ~ D^{-q} (one block per unit): kappa ~ D^{q-1}.

    The Hessian norm is the largest of D block norms, which grows like sqrt(log D) with
    Gaussian readout weights: about +0.07 on the slope at these widths, hence the tolerance.
    """
    x, _ = _task()
    widths = (64, 256, 1024, 4096)
    for q in (0.5, 1.0):
        kappas = [sum(kappa_ratio(scaled_mlp(2, w, q, seed=s, device="cpu"), x[0], iters=60)
                      for s in range(3)) for w in widths]
        slope = torch.tensor(kappas).log().diff().mean().item() / math.log(4)
        assert slope == pytest.approx(q - 1, abs=0.12)
    with pytest.raises(ValueError, match="one input"):
        kappa_ratio(scaled_mlp(2, 8, 0.5, device="cpu"), x[:2])


def test_ridge_cv_picks_the_smallest_held_out_error_and_regularises_noise():
    gen = torch.Generator().manual_seed(0)
    phi = torch.randn(40, 10, generator=gen, dtype=torch.float64)
    w = torch.randn(10, generator=gen, dtype=torch.float64)
    ridges = [1e-8, 1e-4, 1e-2, 1e0, 1e2]
    clean = ridge_cv(phi, phi @ w, ridges=ridges)
    assert clean.errors.shape == (5,) and clean.ridge == ridges[int(clean.errors.argmin())]
    # by hand: fold 0 of the same permutation, ridge 1e-2
    order = torch.randperm(40, generator=torch.Generator().manual_seed(0))
    errs = []
    for f in range(4):
        held = torch.zeros(40, dtype=torch.bool)
        held[order[f::4]] = True
        target = phi @ w
        errs.append(linear_probe(phi[~held], target[~held], phi[held], target[held], ridge=1e-2))
    assert abs(float(clean.errors[2]) - sum(errs) / 4) < 1e-12
    # exact linear targets need no penalty; pure noise needs a heavy one (predict the mean)
    noise = ridge_cv(phi, torch.randn(40, generator=gen, dtype=torch.float64), ridges=ridges)
    assert clean.ridge <= 1e-4 and float(clean.errors.min()) < 1e-6
    assert noise.ridge >= 1.0


def test_ridge_cv_rejects_bad_arguments():
    phi, y = torch.randn(10, 3, dtype=torch.float64), torch.randn(10, dtype=torch.float64)
    with pytest.raises(ValueError, match="folds"):
        ridge_cv(phi, y, ridges=[1.0], folds=6)
    with pytest.raises(ValueError, match="ridges"):
        ridge_cv(phi, y, ridges=[])
    with pytest.raises(ValueError, match="ridges\\[1\\]"):
        ridge_cv(phi, y, ridges=[1.0, -1.0])
    with pytest.raises(ValueError, match="y must have one entry"):
        ridge_cv(phi, y[:5], ridges=[1.0])
