"""The training floor: the one divergence rule, its one default, the one full-batch loop."""

from __future__ import annotations

import inspect
import math

import pytest
import torch

from ntk_lib import MLP, dynamics, iterative, tensor_programs, training
from ntk_lib.training import (
    ON_DIVERGENCE,
    Divergence,
    DivergenceError,
    full_batch_gd,
    mse_loss,
)

F64 = torch.float64


def _data(n=8, d=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=gen, dtype=F64), torch.randn(n, generator=gen, dtype=F64)


def test_mse_loss_is_half_the_mean_squared_error_summed_over_outputs():
    f, y = torch.tensor([[1.0, 2.0], [0.0, 0.0]]), torch.tensor([[0.0, 0.0], [0.0, 1.0]])
    assert mse_loss(f, y).item() == pytest.approx((1 + 4 + 1) / (2 * 2))


def test_reference_is_the_larger_of_the_first_loss_and_the_loss_of_predicting_zero():
    rule = Divergence(10.0)
    rule.start(0.0, 2.0)  # a perfect start: the targets' scale is the reference
    assert not rule.check(1, 19.9) and rule.check(2, 20.1) and rule.diverged_at == 2
    rule = Divergence(10.0)
    rule.start(3.0, float("nan"))  # a non-finite zero-loss counts as 0
    assert rule.reference == 3.0 and rule.check(0, math.inf)


def test_raise_reports_the_step():
    rule = Divergence(2.0, "raise")
    rule.start(1.0, 1.0)
    with pytest.raises(DivergenceError, match="step 7") as info:
        rule.check(7, 3.0)
    assert info.value.step == 7 and info.value.loss == 3.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(factor=0.0), "divergence_factor"),
        (dict(on_divergence="ignore"), "on_divergence"),
    ],
)
def test_rule_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Divergence(**kwargs)


def test_one_default_everywhere():
    """Every trainer stops (and flags) by default; none defaults to raising."""
    trainers = [
        dynamics.train_gd,
        iterative.train,
        tensor_programs.linear_limit,
        tensor_programs.linear_finite,
        tensor_programs.mlp_limit,
        tensor_programs.mlp_finite,
    ]
    for fn in trainers:
        assert (
            inspect.signature(fn).parameters["on_divergence"].default == ON_DIVERGENCE[0] == "stop"
        )
    assert Divergence().on_divergence == "stop"
    assert dynamics.DivergenceError is DivergenceError and dynamics.mse_loss is mse_loss


def test_loop_checks_after_the_last_step_and_keeps_only_finite_losses():
    x, y = _data()
    model = MLP(3, 16, 1, seed=0, dtype=F64, device="cpu")
    run = full_batch_gd(model, x, y, lr=1e8, steps=1)
    assert run.diverged_at == 1 and len(run.losses) == 1 and math.isfinite(run.losses[0])
    with pytest.raises(DivergenceError, match="step 1"):
        full_batch_gd(
            MLP(3, 16, 1, seed=0, dtype=F64, device="cpu"),
            x,
            y,
            lr=1e8,
            steps=1,
            divergence=Divergence(on_divergence="raise"),
        )


def test_loop_is_gradient_descent_and_calls_back_every_step():
    x, y = _data()
    model = MLP(3, 16, 1, seed=0, dtype=F64, device="cpu")
    seen = []
    run = full_batch_gd(model, x, y, lr=0.1, steps=3, on_step=lambda t, out: seen.append(t))
    assert seen == [0, 1, 2, 3] and not run.diverged
    history = dynamics.train_gd(
        MLP(3, 16, 1, seed=0, dtype=F64, device="cpu"), x, y, lr=0.1, steps=3
    )
    torch.testing.assert_close(torch.tensor(run.losses, dtype=F64), history.loss, rtol=0, atol=0)


def test_every_trainer_uses_the_rule_of_the_floor():
    """Start 0.01 away from a perfect fit and train 10% above the critical rate: the loss grows
        ~13x in 10 steps, past 1.5 x the first loss (the old rule would call it divergent) but far
        below 1.5 x the loss of predicting 0 (the data's scale): train_gd and iterative.train agree
        that this is not divergence, and both flag a run that does reach the data's scale (the
    linear model at the same rate; the network, which catapults back there, at 10x the rate)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, generator=gen, dtype=F64)
    make = lambda: MLP(3, 64, 1, seed=0, dtype=F64, device="cpu")  # noqa: E731
    with torch.no_grad():
        y = make()(x) + 0.01 * torch.randn(8, generator=gen, dtype=F64)
    lr = 1.1 * iterative.critical_lr(make(), x)
    gd = dynamics.train_gd(make(), x, y, lr=lr, steps=10, divergence_factor=1.5)
    lin = iterative.train(
        make(), x, y, loss="mse", lr=lr, K=math.inf, steps=10, divergence_factor=1.5
    )
    for h in (gd, lin):
        assert not h.diverged and h.loss[-1] > 1.5 * h.loss[0]
    gd = dynamics.train_gd(make(), x, y, lr=10 * lr, steps=200, divergence_factor=1.5)
    lin = iterative.train(
        make(), x, y, loss="mse", lr=lr, K=math.inf, steps=200, divergence_factor=1.5
    )
    zero = float(mse_loss(torch.zeros_like(y), y))
    for h in (gd, lin):
        assert h.diverged and h.loss.max() <= 1.5 * zero
    assert training.DIVERGENCE_THRESHOLD == 1e8
