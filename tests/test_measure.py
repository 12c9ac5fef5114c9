"""The measurement floor: relative change, log-log slope, power iteration, bisection, probes."""

from __future__ import annotations

import math

import pytest
import torch

from ntk_lib import MLP, catapult, data, iterative, lazy, measure, plotting
from ntk_lib.kernels import empirical_ntk

F64 = torch.float64


def test_relative_change_since_init_and_between_refreshes():
    k0, k1, k2 = torch.eye(2, dtype=F64), 2 * torch.eye(2, dtype=F64), 4 * torch.eye(2, dtype=F64)
    torch.testing.assert_close(
        measure.change_since_init([k0, k1, k2]), torch.tensor([0.0, 1.0, 3.0], dtype=F64)
    )
    torch.testing.assert_close(
        measure.change_between_refreshes([k0, k1, k2]), torch.tensor([1.0, 1.0], dtype=F64)
    )
    assert lazy.relative_change is measure.relative_change
    with pytest.raises(ValueError, match="non-zero norm"):
        measure.relative_change(torch.zeros(2), torch.ones(2))


def test_loglog_slope_recovers_a_power_law_and_plotting_uses_the_same():
    x = [2.0, 8.0, 32.0]
    slope, pref = measure.loglog_slope(x, [3 * v**-0.5 for v in x])
    assert slope == pytest.approx(-0.5, abs=1e-12) and pref == pytest.approx(3.0, rel=1e-12)
    assert plotting.loglog_slope is measure.loglog_slope
    with pytest.raises(ValueError, match="positive"):
        measure.loglog_slope([1, 2], [1, -1])


def test_power_iteration_finds_the_top_eigenvalue():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(30, 30, generator=gen, dtype=F64)
    sym = a @ a.T
    v = torch.randn(30, generator=gen, dtype=F64)
    lam = measure.power_iteration(lambda u: sym @ u, v, iters=5000, rtol=1e-14)
    assert lam.item() == pytest.approx(torch.linalg.eigvalsh(sym)[-1].item(), rel=1e-9)
    indefinite = torch.diag(torch.tensor([-5.0, 1.0, 2.0], dtype=F64))
    est = measure.power_iteration(
        lambda u: indefinite @ u, torch.ones(3, dtype=F64), iters=200, estimate="norm"
    )
    assert est.item() == pytest.approx(5.0, rel=1e-9)


def test_top_eigenvalue_exact_and_power_agree_and_give_the_critical_rate():
    x = data.sphere(12, 4, seed=0, device="cpu")
    net = MLP(4, 32, 2, seed=0, dtype=F64, device="cpu")
    exact = measure.ntk_top_eigenvalue(net, x)
    assert exact == pytest.approx(
        torch.linalg.eigvalsh(empirical_ntk(net, x))[-1].item(), rel=1e-12
    )
    assert measure.ntk_top_eigenvalue(net, x, method="power") == pytest.approx(exact, rel=1e-8)
    assert measure.critical_lr(net, x) == pytest.approx(2 * 12 / exact, rel=1e-8)
    assert iterative.critical_lr(net, x) == measure.critical_lr(net, x)
    assert catapult.top_eigenvalue(net, x) == pytest.approx(exact / 12, rel=1e-12)


def test_largest_true_brackets_the_threshold():
    lo, hi = measure.largest_true(lambda r: r < math.pi, 1.0, 10.0, rtol=1e-6)
    assert lo < math.pi <= hi and hi - lo <= 1e-6 * lo
    lo, hi = measure.largest_true(lambda r: r < 2.0, 1.0, 16.0, iters=4)
    assert hi / lo == pytest.approx(16 ** (1 / 16), rel=1e-12)
    with pytest.raises(ValueError, match="exactly one"):
        measure.largest_true(lambda r: True, 1.0, 2.0)


def test_ridge_probe_is_scale_free_and_exact_on_linear_targets():
    """The penalty is ridge * mean ||F_alpha||^2: rescaling the features changes nothing."""
    gen = torch.Generator().manual_seed(1)
    f, ft = (
        torch.randn(40, 10, generator=gen, dtype=F64),
        torch.randn(15, 10, generator=gen, dtype=F64),
    )
    y = torch.randn(40, 3, generator=gen, dtype=F64)
    for centre in (False, True):
        a = measure.ridge_predict(f, y, ft, 0.1, centre=centre)
        b = measure.ridge_predict(1e3 * f, y, 1e3 * ft, 0.1, centre=centre)
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    w = torch.randn(10, generator=gen, dtype=F64)
    pred = measure.ridge_predict(f, f @ w, ft, 1e-12, centre=False)
    torch.testing.assert_close(pred, ft @ w, rtol=1e-6, atol=1e-6)


def test_accuracy_of_indices_and_one_hot_and_none_otherwise():
    out = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    assert measure.accuracy(out, torch.tensor([0, 1, 1])) == pytest.approx(2 / 3)
    assert measure.accuracy(out, torch.eye(2)[[0, 1, 1]]) == pytest.approx(2 / 3)
    assert measure.accuracy(out[:, 0], torch.tensor([0, 1, 1])) is None
