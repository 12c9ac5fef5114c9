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
    h = train_gd(model, x, y, lr=1.0, steps=30, ntk_every=10, record_outputs=True)
    assert h.loss.shape == (31,) and h.param_change.shape == (31,) and len(h.outputs) == 31
    torch.testing.assert_close(h.outputs[-1], model(x).detach())
    torch.testing.assert_close(h.loss, torch.stack([0.5 * ((f - y) ** 2).mean() for f in h.outputs]))
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


# --- closed-form kernel dynamics ---

from ntk_lib import nngp_ntk  # noqa: E402
from ntk_lib.dynamics import mse_flow, mse_flow_params, mse_gd  # noqa: E402


def _kernel_problem(n_train=15, n_test=6, seed=0):
    x, xt = data.sphere(n_train, 3, seed=seed), data.sphere(n_test, 3, seed=seed + 100)
    k = nngp_ntk(x, depth=2, sigma_b=0.1)[1]
    kt = nngp_ntk(xt, x, depth=2, sigma_b=0.1)[1]
    y, f0 = torch.sin(2 * x[:, 0]), 0.2 * torch.cos(x[:, 1])
    return k, kt, y, f0, 0.1 * torch.sin(xt[:, 2])


def test_mse_flow_matches_matrix_exponential_and_kernel_regression():
    k, kt, y, f0, f0t = _kernel_problem()
    d, lr = len(y), 0.7
    times = torch.tensor([0.0, 0.5, 3.0, 40.0, float("inf")], dtype=F64)
    sol = mse_flow(k, y, times, k_test_train=kt, f0_train=f0, f0_test=f0t, lr=lr)
    assert sol.train.shape == (5, d) and sol.test.shape == (5, 6)
    for i, t in enumerate(times[:-1]):
        e = torch.linalg.matrix_exp(-lr * t * k / d)
        torch.testing.assert_close(sol.train[i], y + e @ (f0 - y), rtol=1e-10, atol=1e-12)
        gain = torch.linalg.solve(k, torch.eye(d, dtype=F64) - e)
        torch.testing.assert_close(sol.test[i], f0t + kt @ gain @ (y - f0), rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(sol.train[-1], y, rtol=0, atol=1e-12)  # interpolates
    torch.testing.assert_close(sol.test[-1], f0t + kt @ torch.linalg.solve(k, y - f0), rtol=1e-9, atol=1e-10)
    one = mse_flow(k, y, 3.0, k_test_train=kt, f0_train=f0, f0_test=f0t, lr=lr)
    assert one.train.shape == (d,)
    torch.testing.assert_close(one.test, sol.test[2])


def test_mse_flow_matches_the_integrated_ode():
    """RK4 with step 1e-3 on df/dt = -(lr/D) Theta (f - y), for train and test together."""
    k, kt, y, f0, f0t = _kernel_problem(8, 3)
    d, lr, t_end, h = len(y), 2.0, 5.0, 1e-3
    gain = torch.cat([k, kt])  # train and test outputs both move by -(lr/D) K_{., train} (f - y)

    def rhs(f):
        return -(lr / d) * gain @ (f[:d] - y)

    f = torch.cat([f0, f0t])
    for _ in range(int(t_end / h)):
        k1 = rhs(f)
        k2 = rhs(f + h / 2 * k1)
        k3 = rhs(f + h / 2 * k2)
        k4 = rhs(f + h * k3)
        f = f + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    sol = mse_flow(k, y, t_end, k_test_train=kt, f0_train=f0, f0_test=f0t, lr=lr)
    torch.testing.assert_close(torch.cat([sol.train, sol.test]), f, rtol=1e-9, atol=1e-10)


def test_mse_gd_is_gd_and_tends_to_the_flow():
    k, kt, y, f0, f0t = _kernel_problem()
    d, lr = len(y), 0.5
    f, ft = f0.clone(), f0t.clone()
    for _ in range(25):  # the explicit iteration, train and test
        f, ft = f - (lr / d) * k @ (f - y), ft - (lr / d) * kt @ (f - y)
    sol = mse_gd(k, y, [0, 25], lr=lr, k_test_train=kt, f0_train=f0, f0_test=f0t)
    torch.testing.assert_close(sol.train[1], f, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(sol.test[1], ft, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(sol.train[0], f0)
    flow = mse_flow(k, y, 4.0, k_test_train=kt, f0_train=f0, f0_test=f0t)
    errs = []
    for lr in (0.1, 0.01, 0.001):
        gd = mse_gd(k, y, round(4.0 / lr), lr=lr, k_test_train=kt, f0_train=f0, f0_test=f0t)
        errs.append((gd.test - flow.test).abs().max().item())
    assert errs[0] / errs[1] == pytest.approx(10, rel=0.1) and errs[1] / errs[2] == pytest.approx(10, rel=0.1)


def test_singular_kernel_is_handled():
    """A rank-deficient kernel (duplicated point): finite times exact, t=inf uses the pseudo-inverse."""
    x = data.sphere(6, 3, seed=3)
    x = torch.cat([x, x[:2]])
    k = nngp_ntk(x, depth=1)[1]
    y = torch.cat([torch.arange(6, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64)])
    kt = nngp_ntk(data.sphere(4, 3, seed=9), x, depth=1)[1]
    sol = mse_flow(k, y, [1.0, float("inf")], k_test_train=kt)
    assert torch.isfinite(sol.train).all() and torch.isfinite(sol.test).all()
    torch.testing.assert_close(sol.train[-1], y, rtol=0, atol=1e-9)
    torch.testing.assert_close(sol.test[-1], kt @ torch.linalg.pinv(k, rtol=1e-12) @ y, rtol=1e-8, atol=1e-8)
    e = torch.linalg.matrix_exp(-k / len(y))
    torch.testing.assert_close(sol.train[0], y - e @ y, rtol=1e-9, atol=1e-10)


def test_param_flow_is_the_linearised_networks_change():
    """theta_t - theta_0 from the closed form equals training the linear model J delta by GD with small steps."""
    gen = torch.Generator().manual_seed(0)
    jac = torch.randn(6, 20, generator=gen, dtype=F64)
    y, f0 = torch.randn(6, generator=gen, dtype=F64), torch.randn(6, generator=gen, dtype=F64)
    dtheta = mse_flow_params(jac, y, [2.0, float("inf")], f0_train=f0, lr=1.0)
    f_t = mse_flow(jac @ jac.T, y, 2.0, f0_train=f0).train
    torch.testing.assert_close(f0 + jac @ dtheta[0], f_t, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(f0 + jac @ dtheta[1], y, rtol=1e-9, atol=1e-10)
    # the t = inf change is the minimum-norm solution of J dtheta = y - f0
    torch.testing.assert_close(dtheta[1], torch.linalg.pinv(jac) @ (y - f0), rtol=1e-9, atol=1e-10)


def test_float32_kernels_are_accepted():
    """A float32 kernel whose smallest eigenvalue is -1e-7 lam_max (rounding) is accepted; the
    same matrix claimed exact (float64) is rejected as not PSD."""
    q, _ = torch.linalg.qr(torch.randn(12, 12, dtype=F64, generator=torch.Generator().manual_seed(0)))
    lam = torch.linspace(6.0, 1.0, 12, dtype=F64)
    lam[-1] = -6e-7
    k = (q * lam) @ q.T
    k = (k + k.T) / 2
    y = torch.ones(12, dtype=F64)
    sol = mse_flow(k.float(), y, 1.0)
    assert torch.isfinite(sol.train).all()
    with pytest.raises(ValueError, match="positive semi-definite"):
        mse_flow(k, y, 1.0)


def test_mse_flow_rejects_bad_input():
    k, kt, y, f0, _ = _kernel_problem(5, 2)
    with pytest.raises(ValueError, match="symmetric"):
        mse_flow(k + torch.triu(torch.ones_like(k), 1), y, 1.0)
    with pytest.raises(ValueError, match="square"):
        mse_flow(k[:, :3], y, 1.0)
    with pytest.raises(ValueError, match="positive semi-definite"):
        mse_flow(-k, y, 1.0)
    with pytest.raises(ValueError, match=r"y_train must have shape \(5,\)"):
        mse_flow(k, y[:3], 1.0)
    with pytest.raises(ValueError, match="t must be a non-negative"):
        mse_flow(k, y, -1.0)
    with pytest.raises(ValueError, match="lr"):
        mse_flow(k, y, 1.0, lr=-0.1)
    with pytest.raises(ValueError, match="k_test_train must have 5 columns"):
        mse_flow(k, y, 1.0, k_test_train=kt[:, :4])
    with pytest.raises(ValueError, match="f0_test"):
        mse_flow(k, y, 1.0, k_test_train=kt, f0_test=torch.zeros(3))
    with pytest.raises(ValueError, match="steps must be whole"):
        mse_gd(k, y, 2.5, lr=0.1)
    with pytest.raises(DivergenceError):
        mse_gd(k, y, 10_000, lr=100.0)
