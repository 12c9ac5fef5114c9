"""The infinite-width limit of the linear 1-hidden-layer network: the recursion, convergence of
finite widths to it, feature movement in muP vs NTK, validation and divergence."""

from __future__ import annotations

import math

import pytest
import torch

from ntk_lib import tensor_programs as tp
from ntk_lib.training import DivergenceError
from ntk_lib.plotting import loglog_slope

F64 = torch.float64
X = torch.tensor([-1.0, 0.5, 1.5], dtype=F64)
Y = torch.tensor([-0.8, 0.5, 1.2], dtype=F64)
LR, STEPS = 0.3, 15  # 2 lr mean(x^2) = 0.7 < 2: both limits converge
WIDTHS = [2**k for k in range(6, 15)]
SEEDS = range(8)


def test_limit_output_at_init_is_exactly_zero():
    for p in ("mup", "ntk"):
        lim = tp.linear_limit(X, Y, lr=LR, steps=STEPS, parametrization=p, device="cpu")
        assert lim.outputs.shape == (STEPS + 1, 3) and lim.outputs.dtype == F64
        assert torch.equal(lim.outputs[0], torch.zeros(3, dtype=F64))
        assert (lim.A[0], lim.B[0], lim.C[0], lim.D[0]) == (1, 0, 0, 1)
        assert lim.outputs[-1].abs().max() > 0.3  # and it does move
    # a finite width starts at xi u0.v0/n, not 0
    assert (
        tp.linear_finite(X, Y, lr=LR, steps=0, width=64, seed=0, device="cpu")
        .outputs[0]
        .abs()
        .max()
        > 0
    )


def test_limit_recursion_by_hand():
    """Step 1 is -2 eta chi_0 xi in both limits; step 2 already differs (muP's kernel moves)."""
    mup = tp.linear_limit(X, Y, lr=LR, steps=2, device="cpu")
    ntk = tp.linear_limit(X, Y, lr=LR, steps=2, parametrization="ntk", device="cpu")
    chi0 = -(X * Y).mean()
    torch.testing.assert_close(mup.outputs[1], -2 * LR * chi0 * X, rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(ntk.outputs[1], -2 * LR * chi0 * X, rtol=1e-14, atol=1e-15)
    # step 2 of muP by hand: A=D=1, B=C=-e0, then (A,B) <- (A,B) - e1 (C,D) etc.
    e0 = LR * chi0
    a, b, c, d = 1.0, -e0, -e0, 1.0
    e1 = LR * ((X * (a * c + b * d) - Y) * X).mean()
    a, b, c, d = a - e1 * c, b - e1 * d, c - e1 * a, d - e1 * b
    torch.testing.assert_close(mup.outputs[2], X * (a * c + b * d), rtol=1e-14, atol=1e-15)
    assert (mup.outputs[2] - ntk.outputs[2]).abs().max() > 1e-3
    torch.testing.assert_close(mup.A, mup.D)  # the u <-> v symmetry of the recursion
    torch.testing.assert_close(mup.B, mup.C)
    # NTK's init_z enters linearly through the kernel's eigenvalue 2 mean(x^2) on x
    shifted = tp.linear_limit(X, Y, lr=LR, steps=2, parametrization="ntk", init_z=0.7, device="cpu")
    decay = (1 - 2 * LR * (X**2).mean()) ** torch.arange(3, dtype=F64)
    torch.testing.assert_close(shifted.outputs - ntk.outputs, 0.7 * decay[:, None] * X)


def _hand_gd(width, seed, lr, steps, parametrization):
    """Plain autograd GD on u, v (theta <- theta - lr n^c grad L): an independent implementation."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(width, generator=g, dtype=F64).requires_grad_()
    v = torch.randn(width, generator=g, dtype=F64).requires_grad_()
    u0 = u.detach().clone()
    norm, rate = (width, lr * width) if parametrization == "mup" else (math.sqrt(width), lr)
    outs, moves = [], []
    for t in range(steps + 1):
        f = torch.outer(X, (v @ u)[None]).squeeze(1) / norm
        outs.append(f.detach())
        moves.append((u.detach() - u0).norm() / math.sqrt(width))
        if t == steps:
            break
        loss = 0.5 * ((f - Y) ** 2).mean()
        gu, gv = torch.autograd.grad(loss, (u, v))
        with torch.no_grad():
            u -= rate * gu
            v -= rate * gv
    return torch.stack(outs), torch.stack(moves), u.detach(), v.detach(), u0


@pytest.mark.parametrize("parametrization", ["mup", "ntk"])
def test_finite_width_equals_handwritten_gd(parametrization):
    width, seed = 4096, 3
    run = tp.linear_finite(
        X, Y, lr=LR, steps=6, width=width, seed=seed, parametrization=parametrization, device="cpu"
    )
    outs, moves, u, v, u0 = _hand_gd(width, seed, LR, 6, parametrization)
    assert run.width == width
    torch.testing.assert_close(run.outputs, outs, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(run.feature_change, moves, rtol=1e-10, atol=1e-12)
    # the coefficients really express the final weights through the initial ones
    g = torch.Generator().manual_seed(seed)
    u0_, v0_ = (
        torch.randn(width, generator=g, dtype=F64),
        torch.randn(width, generator=g, dtype=F64),
    )
    torch.testing.assert_close(run.A[-1] * u0_ + run.B[-1] * v0_, u)
    torch.testing.assert_close(run.C[-1] * u0_ + run.D[-1] * v0_, v)


def _mean_error(parametrization, width, steps=STEPS, lr=LR):
    errs = []
    for seed in SEEDS:
        run = tp.linear_finite(
            X,
            Y,
            lr=lr,
            steps=steps,
            width=width,
            seed=seed,
            parametrization=parametrization,
            device="cpu",
        )
        # NTK: compare with the limit started from this network's own Z = u0.v0/sqrt(n)
        z = float(run.outputs[0, 0] / X[0]) if parametrization == "ntk" else 0.0
        lim = tp.linear_limit(
            X, Y, lr=lr, steps=steps, parametrization=parametrization, init_z=z, device="cpu"
        )
        errs.append((run.outputs - lim.outputs).abs().max())
    return float(torch.stack(errs).mean())


@pytest.mark.parametrize("parametrization", ["mup", "ntk"])
def test_finite_width_converges_to_the_limit_like_inverse_sqrt_width(parametrization):
    errors = [_mean_error(parametrization, n) for n in WIDTHS]
    slope, _ = loglog_slope(WIDTHS, errors)
    assert -0.7 <= slope <= -0.3, (slope, errors)
    assert errors[-1] < 0.05


def test_ntk_mean_over_initializations_is_the_default_limit():
    lim = tp.linear_limit(X, Y, lr=LR, steps=STEPS, parametrization="ntk", device="cpu")
    runs = torch.stack(
        [
            tp.linear_finite(
                X, Y, lr=LR, steps=STEPS, width=1024, seed=s, parametrization="ntk", device="cpu"
            ).outputs
            for s in range(200)
        ]
    )
    stderr = runs.std(dim=0) / math.sqrt(len(runs))
    assert ((runs.mean(dim=0) - lim.outputs).abs() <= 4 * stderr + 0.02).all()


def test_mup_feature_change_is_order_one_and_matches_finite_width():
    lim = tp.linear_limit(X, Y, lr=LR, steps=STEPS, device="cpu")
    torch.testing.assert_close(lim.feature_change, torch.sqrt((lim.A - 1) ** 2 + lim.B**2))
    assert lim.feature_change[0] == 0 and lim.feature_change[-1] > 0.2
    assert lim.movement is None
    for width in (256, 16384):
        finite = torch.stack(
            [
                tp.linear_finite(
                    X, Y, lr=LR, steps=STEPS, width=width, seed=s, device="cpu"
                ).feature_change
                for s in SEEDS
            ]
        ).mean(dim=0)
        tol = 0.15 if width == 256 else 0.02
        torch.testing.assert_close(finite, lim.feature_change, rtol=tol, atol=1e-3)
    torch.testing.assert_close(lim.predicted_feature_change(10**6), lim.feature_change)


def test_ntk_feature_change_falls_like_inverse_sqrt_width():
    lim = tp.linear_limit(X, Y, lr=LR, steps=STEPS, parametrization="ntk", device="cpu")
    assert torch.equal(lim.feature_change, torch.zeros(STEPS + 1, dtype=F64))
    assert torch.equal(lim.B, torch.zeros(STEPS + 1, dtype=F64))
    changes = []
    for width in WIDTHS[::2]:
        runs = [
            tp.linear_finite(
                X, Y, lr=LR, steps=STEPS, width=width, seed=s, parametrization="ntk", device="cpu"
            )
            for s in range(16)
        ]
        changes.append(float(torch.stack([r.feature_change[-1] for r in runs]).mean()))
        # pathwise: ||u_t - u_0|| -> |eta sum chi_s| of the limit with the same Z
        if width == WIDTHS[-1]:
            for r in runs:
                z = float(r.outputs[0, 0] / X[0])
                pred = tp.linear_limit(
                    X, Y, lr=LR, steps=STEPS, parametrization="ntk", init_z=z, device="cpu"
                )
                torch.testing.assert_close(
                    r.feature_change, pred.predicted_feature_change(width), rtol=0.05, atol=1e-4
                )
    slope, _ = loglog_slope(WIDTHS[::2], changes)
    assert -0.6 <= slope <= -0.4, (slope, changes)  # |eta sum chi| varies with Z: 16 seeds


@pytest.mark.parametrize(
    "kwargs, error, needle",
    [
        ({"x": [[1.0, 2.0]], "y": [1.0]}, ValueError, "x must be a 1-D"),
        ({"x": [], "y": []}, ValueError, "x must be a 1-D"),
        ({"x": [1.0, 2.0], "y": [1.0]}, ValueError, "y must have one target per input"),
        ({"x": "ab"}, TypeError, "x must be a 1-D array"),
        ({"x": [1.0, float("nan")], "y": [0.0, 0.0]}, ValueError, "x contains NaN"),
        ({"lr": 0.0}, ValueError, "lr must be > 0"),
        ({"lr": -1.0}, ValueError, "lr must be > 0"),
        ({"lr": "fast"}, TypeError, "lr must be a real number"),
        ({"steps": -1}, ValueError, "steps must be a non-negative integer"),
        ({"steps": 2.5}, TypeError, "steps must be a non-negative integer"),
        ({"parametrization": "sp"}, ValueError, "parametrization must be one of 'mup', 'ntk'"),
        ({"on_divergence": "ignore"}, ValueError, "on_divergence must be one of"),
        ({"dtype": torch.int64}, ValueError, "dtype must be a floating"),
    ],
)
def test_bad_inputs_are_rejected(kwargs, error, needle):
    args = {"x": [1.0, 2.0], "y": [0.5, 1.0], "lr": 0.1, "steps": 3} | kwargs
    x, y = args.pop("x"), args.pop("y", [0.5, 1.0])
    with pytest.raises(error, match=needle):
        tp.linear_limit(x, y, device="cpu", **args)
    with pytest.raises(error, match=needle):
        tp.linear_finite(x, y, width=8, seed=0, device="cpu", **args)


def test_bad_width_seed_and_init_z_are_rejected():
    for width, error in ((0, ValueError), (-4, ValueError), (8.0, TypeError)):
        with pytest.raises(error, match="width must be a positive integer"):
            tp.linear_finite(X, Y, lr=0.1, steps=2, width=width, seed=0)
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        tp.linear_finite(X, Y, lr=0.1, steps=2, width=8, seed=-1)
    with pytest.raises(ValueError, match="init_z applies to parametrization='ntk' only"):
        tp.linear_limit(X, Y, lr=0.1, steps=2, init_z=1.0)
    with pytest.raises(ValueError, match="infinite-width limit"):
        tp.linear_finite(X, Y, lr=0.1, steps=2, width=8, seed=0).predicted_feature_change(8)


@pytest.mark.parametrize("parametrization, lr", [("mup", 10.0), ("ntk", 10.0)])
def test_divergence_is_reported_with_its_step(parametrization, lr):
    with pytest.raises(DivergenceError) as info:
        tp.linear_limit(X, Y, lr=lr, steps=50, parametrization=parametrization, device="cpu",
                        on_divergence="raise")
    step = info.value.step
    assert 0 < step <= 50 and f"step {step}" in str(info.value)
    stopped = tp.linear_limit(
        X, Y, lr=lr, steps=50, parametrization=parametrization, on_divergence="stop", device="cpu"
    )
    assert stopped.diverged and stopped.diverged_at == step
    assert stopped.outputs.shape == (step, 3) and torch.isfinite(stopped.outputs).all()
    assert torch.isfinite(torch.stack([stopped.A, stopped.B, stopped.C, stopped.D])).all()
    with pytest.raises(DivergenceError):
        tp.linear_finite(
            X, Y, lr=lr, steps=50, width=256, seed=0, parametrization=parametrization, device="cpu",
            on_divergence="raise",
        )
    finite = tp.linear_finite(
        X,
        Y,
        lr=lr,
        steps=50,
        width=256,
        seed=0,
        parametrization=parametrization,
        on_divergence="stop",
        device="cpu",
    )
    assert (
        finite.diverged
        and torch.isfinite(finite.outputs).all()
        and torch.isfinite(finite.feature_change).all()
    )
    # a converging run is not flagged
    assert not tp.linear_limit(
        X, Y, lr=LR, steps=200, parametrization=parametrization, device="cpu"
    ).diverged


def test_dtype_and_device():
    lim = tp.linear_limit([1, 2], [0.5, 1], lr=0.1, steps=3, device="cpu")
    assert lim.outputs.dtype == F64 and lim.width is None
    run = tp.linear_finite(
        X, Y, lr=0.1, steps=3, width=64, seed=0, dtype=torch.float32, device="cpu"
    )
    ref = tp.linear_finite(X, Y, lr=0.1, steps=3, width=64, seed=0, device="cpu")
    assert run.outputs.dtype == torch.float32
    torch.testing.assert_close(run.outputs.double(), ref.outputs, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_matches_cpu():
    for p in ("mup", "ntk"):
        gpu = tp.linear_finite(
            X, Y, lr=LR, steps=10, width=4096, seed=1, parametrization=p, device="cuda"
        )
        cpu = tp.linear_finite(
            X, Y, lr=LR, steps=10, width=4096, seed=1, parametrization=p, device="cpu"
        )
        assert gpu.outputs.device.type == "cuda"
        torch.testing.assert_close(gpu.outputs.cpu(), cpu.outputs)
        torch.testing.assert_close(
            tp.linear_limit(X, Y, lr=LR, steps=10, parametrization=p, device="cuda").outputs.cpu(),
            tp.linear_limit(X, Y, lr=LR, steps=10, parametrization=p, device="cpu").outputs,
        )
