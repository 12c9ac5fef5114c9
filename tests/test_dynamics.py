"""Full-batch gradient descent: the function-space step, the recorded movement, divergence."""

from __future__ import annotations

import pytest
import torch

from ntk_lib import MLP, data, empirical_ntk
from ntk_lib.dynamics import DivergenceError, mse_loss, train_gd

F64 = torch.float64


def _setup(width=256, seed=0, depth=2):
    x, y = data.regression_1d(12, seed=1, dtype=F64, device="cpu")
    return MLP(2, width, depth, sigma_b=0.1, seed=seed, dtype=F64, device="cpu"), x, y


def test_one_step_follows_the_ntk_to_second_order():
    """f_1 - f_0 = -(lr/D) Theta (f_0 - y) + O(lr^2): halving lr quarters the mismatch."""
    mismatch = []
    for lr in (0.2, 0.1, 0.05):
        model, x, y = _setup()
        f0 = model(x).detach()
        pred = -(lr / len(x)) * empirical_ntk(model, x) @ (f0 - y)
        train_gd(model, x, y, lr=lr, steps=1)
        mismatch.append(((model(x).detach() - f0) - pred).norm().item())
    assert mismatch[0] / mismatch[1] == pytest.approx(4.0, rel=0.1)
    assert mismatch[1] / mismatch[2] == pytest.approx(4.0, rel=0.1)


def test_history_records_loss_movement_and_ntk():
    model, x, y = _setup()
    theta0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    h = train_gd(model, x, y, lr=1.0, steps=30, ntk_every=10)
    assert h.loss.shape == (31,) and h.param_change.shape == (31,)
    assert h.loss[0].item() == pytest.approx(mse_loss(MLP(2, 256, 2, sigma_b=0.1, seed=0, dtype=F64, device="cpu")(x), y).item())
    assert h.loss[-1] < 0.2 * h.loss[0]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    assert h.param_change[0] == 0
    assert h.param_change[-1].item() == pytest.approx(((theta - theta0).norm() / theta0.norm()).item(), rel=1e-12)
    assert h.ntk_steps == [0, 10, 20, 30] and h.ntk_change()[0] == 0
    torch.testing.assert_close(h.ntk[-1], empirical_ntk(model, x))
    assert not h.diverged


def test_movement_shrinks_with_width():
    """One hidden layer: each of the ~n parameters moves O(1/sqrt(n)), ||theta_0|| ~ sqrt(n),
    so the relative change falls like n^-1/2. (With an n x n middle layer it is n^-1.)"""
    moves = []
    for width in (64, 1024):
        runs = []
        for seed in range(3):
            model, x, y = _setup(width, seed, depth=1)
            runs.append(train_gd(model, x, y, lr=1.0, steps=50).param_change[-1])
        moves.append(torch.stack(runs).mean())
    assert 0.15 < moves[1] / moves[0] < 0.45  # 16x wider: about 1/4


def test_divergence_is_detected_and_reported():
    model, x, y = _setup(64)
    h = train_gd(model, x, y, lr=200.0, steps=100)
    assert h.diverged and 0 < h.diverged_at <= 100
    assert torch.isfinite(h.loss).all() and len(h.loss) == h.diverged_at
    model, x, y = _setup(64)
    with pytest.raises(DivergenceError, match="diverged at step") as info:
        train_gd(model, x, y, lr=200.0, steps=100, on_divergence="raise")
    assert info.value.step == h.diverged_at


def test_train_gd_rejects_bad_input():
    model, x, y = _setup(16)
    with pytest.raises(ValueError, match="lr"):
        train_gd(model, x, y, lr=0.0, steps=1)
    with pytest.raises(ValueError, match="steps"):
        train_gd(model, x, y, lr=0.1, steps=-1)
    with pytest.raises(ValueError, match="on_divergence"):
        train_gd(model, x, y, lr=0.1, steps=1, on_divergence="ignore")
    with pytest.raises(ValueError, match="same number"):
        train_gd(model, x, y[:3], lr=0.1, steps=1)
    with pytest.raises(ValueError, match="does not match y"):
        train_gd(model, x, y[:, None], lr=0.1, steps=1)
    with pytest.raises(ValueError, match="ntk_every"):
        train_gd(model, x, y, lr=0.1, steps=1, ntk_every=0)
    with pytest.raises(ValueError, match="no NTK"):
        train_gd(model, x, y, lr=0.1, steps=1).ntk_change()
