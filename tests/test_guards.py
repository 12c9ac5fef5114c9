"""Every public entry point guards its input: one test per class of bad input (issue 15).

Each bad call must raise a ValueError/TypeError whose message names the argument, before any
large allocation, and leave the model untouched.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ntk_lib import MLP, catapult, coordcheck, data, dynamics, iterative, kernels, lazy, measure
from ntk_lib.families import mlp_family
from ntk_lib.training import DivergenceError

F64 = torch.float64
NAN = float("nan")


def _net():
    return MLP(3, 16, 1, seed=0, dtype=F64, device="cpu")


def _x(n=6):
    return torch.randn(n, 3, generator=torch.Generator().manual_seed(0), dtype=F64)


def _y(n=6):
    return torch.randn(n, generator=torch.Generator().manual_seed(1), dtype=F64)


def _with_nan(t):
    t = t.clone()
    t.view(-1)[0] = NAN
    return t


NON_FINITE = {
    "nngp_ntk": (lambda: kernels.nngp_ntk(_with_nan(_x()), depth=1), "x1"),
    "empirical_ntk": (lambda: kernels.empirical_ntk(_net(), _with_nan(_x())), "x1"),
    "empirical_ntk x2": (lambda: kernels.empirical_ntk(_net(), _x(), _with_nan(_x())), "x2"),
    "empirical_nngp": (lambda: kernels.empirical_nngp(_net(), _with_nan(_x())), "x1"),
    "train_gd x": (lambda: dynamics.train_gd(_net(), _with_nan(_x()), _y(), lr=0.1, steps=1), "x"),
    "train_gd y": (lambda: dynamics.train_gd(_net(), _x(), _with_nan(_y()), lr=0.1, steps=1), "y"),
    "critical_lr": (lambda: iterative.critical_lr(_net(), _with_nan(_x())), "x"),
    "top_eigenvalue": (lambda: catapult.top_eigenvalue(_net(), _with_nan(_x())), "x"),
    "kappa_ratio": (lambda: lazy.kappa_ratio(_net(), _with_nan(_x()[0])), "x"),
    "iterative.train": (
        lambda: iterative.train(_net(), _x(), _with_nan(_y()), loss="mse", lr=0.1, K=1, steps=1),
        "y",
    ),
    "coord_check": (
        lambda: coordcheck.coord_check(
            mlp_family(3, [8, 16], 1, device="cpu"), _with_nan(_x()).float(), _y().float(), lr=0.1
        ),
        "x",
    ),
    "mse_flow": (
        lambda: dynamics.mse_flow(torch.eye(6, dtype=F64), _with_nan(_y()), 1.0),
        "y_train",
    ),
    "linear_probe": (
        lambda: lazy.linear_probe(_with_nan(_x()), _y(), _x(), _y()),
        "features_train",
    ),
}


@pytest.mark.parametrize("case", NON_FINITE, ids=list(NON_FINITE))
def test_non_finite_inputs_are_refused_with_the_argument_named(case):
    call, name = NON_FINITE[case]
    with pytest.raises(ValueError, match=rf"^{name} contains NaN or infinite entries"):
        call()


def test_shape_errors_show_the_shape_the_user_passed():
    with pytest.raises(ValueError, match=r"x1 of shape \(6, 4\)"):
        kernels.empirical_ntk(_net(), torch.zeros(6, 4, dtype=F64))
    with pytest.raises(
        ValueError, match=r"x1 must be a batch of at least one point.*got shape \(\)"
    ):
        kernels.empirical_ntk(_net(), torch.tensor(1.0))
    with pytest.raises(
        ValueError, match=r"y must be a batch of at least one point.*got shape \(\)"
    ):
        dynamics.train_gd(_net(), _x(), torch.tensor(1.0), lr=0.1, steps=1)
    with pytest.raises(ValueError, match=r"got shapes \(6, 3\) and \(5,\)"):
        dynamics.train_gd(_net(), _x(), _y(5), lr=0.1, steps=1)


def test_integer_and_mixed_dtype_inputs_are_converted_or_refused_clearly():
    net = _net()
    ints = torch.tensor([[1, 0, 2], [0, 1, 1]])
    torch.testing.assert_close(
        kernels.empirical_ntk(net, ints), kernels.empirical_ntk(net, ints.double())
    )
    torch.testing.assert_close(
        kernels.empirical_ntk(net, ints.float()), kernels.empirical_ntk(net, ints.double())
    )
    history = dynamics.train_gd(_net(), ints, torch.tensor([1, -1]), lr=0.1, steps=1)
    assert history.loss.dtype == F64 and torch.isfinite(history.loss).all()
    with pytest.raises(ValueError, match=r"x must be torch.float64 .* got torch.float32"):
        net(ints.float())


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA"
)
@pytest.mark.parametrize(
    "call",
    [
        lambda: MLP(3, 8, 1, device="cuda"),
        lambda: data.sphere(4, 3, device="cuda"),
        lambda: mlp_family(3, [8], 1, device="cuda"),
        lambda: iterative.train(
            _net(), _x(), _y(), loss="mse", lr=0.1, K=1, steps=1, device="cuda"
        ),
        lambda: data.sphere(4, 3, device="tpu"),
    ],
)
def test_a_device_that_is_not_there_is_a_value_error_naming_device(call):
    with pytest.raises(ValueError, match="device"):
        call()


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: MLP(16, 10**9, 2, device="cpu"), "width"),
        (
            lambda: coordcheck.coord_check(
                mlp_family(16, [8, 10**9], 2, device="cpu"),
                torch.ones(4, 16),
                torch.ones(4),
                lr=0.1,
            ),
            "width",
        ),
        (lambda: kernels.nngp_ntk(torch.ones(10**6, 2), depth=1), "x1"),
        (lambda: kernels.empirical_ntk(MLP(2, 4, 1, device="cpu"), torch.ones(10**6, 2)), "x1"),
        (lambda: data.sphere(10**12, 3), "n"),
        (lambda: catapult.two_scalar(1.0, 1.0, 0.5, 100.0, 10**12, device="cpu"), "steps"),
        (
            lambda: dynamics.train_gd(
                _net(), _x(), _y(), lr=0.1, steps=10**12, record_outputs=True
            ),
            "steps",
        ),
    ],
    ids=["MLP", "coord_check", "nngp_ntk", "empirical_ntk", "sphere", "two_scalar", "train_gd"],
)
def test_sizes_that_cannot_fit_are_refused_before_allocating(call, name):
    with pytest.raises(ValueError, match=rf"^{name}=.* needs about .* GiB"):
        call()


def test_models_without_trainable_parameters_are_refused():
    frozen = _net().requires_grad_(False)
    for call in (
        lambda: kernels.empirical_ntk(frozen, _x()),
        lambda: dynamics.train_gd(frozen, _x(), _y(), lr=0.1, steps=1),
        lambda: lazy.kappa_ratio(frozen, _x()[0]),
        lambda: iterative.critical_lr(frozen, _x()),
        lambda: iterative.train(frozen, _x(), _y(), loss="mse", lr=0.1, K=1, steps=1),
    ):
        with pytest.raises(ValueError, match="model has no trainable parameter"):
            call()


class _Centre(nn.Module):
    def forward(self, h):
        return h - h.mean(dim=0)


def test_batch_dependent_outputs_are_refused_by_every_empirical_ntk_method():
    """Today's failure: per-example Jacobians gave 0 and NTK-vector products 3.05."""
    net = nn.Sequential(nn.Linear(3, 8, dtype=F64), _Centre(), nn.Linear(8, 1, dtype=F64))
    for method in ("auto", "jacobian", "ntvp"):
        with pytest.raises(ValueError, match="model's outputs depend on the batch"):
            kernels.empirical_ntk(net, _x(), method=method)


@pytest.mark.parametrize("layer", [nn.BatchNorm1d(8, dtype=F64), nn.Dropout(0.5)])
def test_train_mode_batch_norm_or_dropout_is_refused_and_the_model_untouched(layer):
    net = nn.Sequential(nn.Linear(3, 8, dtype=F64), layer, nn.Linear(8, 1, dtype=F64))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    for call in (
        lambda: kernels.empirical_ntk(net, _x()),
        lambda: iterative.critical_lr(net, _x()),
        lambda: lazy.kappa_ratio(net, _x()[0]),
        lambda: catapult.top_eigenvalue(net, _x()),
    ):
        with pytest.raises(ValueError, match=r"model has .* in training mode.*model.eval\(\)"):
            call()
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    net.eval()
    jac, ntvp = (kernels.empirical_ntk(net, _x(), method=m) for m in ("jacobian", "ntvp"))
    torch.testing.assert_close(jac, ntvp)


def test_cross_entropy_needs_class_scores():
    with pytest.raises(ValueError, match=r"loss='cross_entropy' needs class scores.*\(6,\)"):
        iterative.train(
            _net(),
            _x(),
            torch.zeros(6, dtype=torch.long),
            loss="cross_entropy",
            lr=0.1,
            K=1,
            steps=1,
        )
    net3 = MLP(3, 16, 1, d_out=3, seed=0, dtype=F64, device="cpu")
    with pytest.raises(ValueError, match=r"y must hold class indices in \[0, 3\)"):
        iterative.train(
            net3, _x(), torch.tensor([0, 1, 2, 3, 0, 1]), loss="cross_entropy", lr=0.1, K=1, steps=1
        )


def test_mse_gd_past_the_critical_rate_reports_divergence():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(6, 6, generator=gen, dtype=F64)
    k, y = a @ a.T, torch.randn(6, generator=gen, dtype=F64)
    critical = 2 * 6 / torch.linalg.eigvalsh(k)[-1].item()
    fine = dynamics.mse_gd(k, y, [0, 1000], lr=0.99 * critical)
    assert fine.train.abs().max() < 10 * y.abs().max()
    with pytest.raises(DivergenceError, match="step 1000") as info:
        dynamics.mse_gd(k, y, [0, 10, 1000], lr=1.5 * critical)
    assert info.value.step == 1000  # step 10 grew the loss by 4^10 ~ 1e6 x: not yet past the rule


def test_measurements_refuse_a_model_that_is_not_a_module():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        measure.ntk_top_eigenvalue(lambda x: x, _x())
