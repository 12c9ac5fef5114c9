"""CPU/GPU parity of every module that takes ``device=``: the same seed, the same numbers.

Marked ``gpu``: they run only where CUDA is (``make gpu-check`` runs them first) and skip
cleanly elsewhere. ``NTK_LIB_PARITY_DEVICE=cpu`` runs them against the CPU itself, which
checks the tests' own code on a machine without a GPU.

Tolerances: float64 computations agree to ~1e-10 (different BLAS and reduction orders, a
few hundred flops deep); float32 training to ~1e-4 relative over a few steps.
"""

from __future__ import annotations

import os

import pytest
import torch

import ntk_lib
from ntk_lib import coordcheck, data, dynamics, kernels, linearize, tensor_programs
from ntk_lib.convnet import ConvNet
from ntk_lib.families import mlp_family
from ntk_lib.models import MLP

DEVICE = os.environ.get("NTK_LIB_PARITY_DEVICE", "cuda")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs CUDA"),
]
F64 = {"rtol": 1e-9, "atol": 1e-10}


def close(on_device: torch.Tensor, on_cpu: torch.Tensor, **tol) -> None:
    assert on_device.device.type == torch.device(DEVICE).type
    torch.testing.assert_close(on_device.cpu(), on_cpu, **(tol or F64))


def test_data_is_the_same_on_every_device():
    close(data.sphere(20, 5, seed=3, device=DEVICE), data.sphere(20, 5, seed=3))
    x_dev, y_dev, *_ = data.digits(64, 32, device=DEVICE)
    x_cpu, y_cpu, *_ = data.digits(64, 32)
    close(x_dev, x_cpu, rtol=0, atol=0)
    assert torch.equal(y_dev.cpu(), y_cpu)


def test_mlp_and_convnet_draw_the_same_weights_on_every_device():
    for make in (lambda d: MLP(5, 64, 2, d_out=3, seed=7, device=d, dtype=torch.float64),
                 lambda d: ConvNet(4, seed=7, device=d, dtype=torch.float64)):
        on_dev, on_cpu = make(DEVICE), make("cpu")
        for a, b in zip(on_dev.parameters(), on_cpu.parameters(), strict=True):
            close(a.detach(), b.detach(), rtol=0, atol=0)


def test_kernels_and_closed_form_dynamics():
    x = data.sphere(24, 6, seed=0, dtype=torch.float64)
    y = torch.sin(3 * x[:, 0])
    nngp_c, ntk_c = kernels.nngp_ntk(x, depth=3, sigma_b=0.1)
    nngp_d, ntk_d = kernels.nngp_ntk(x.to(DEVICE), depth=3, sigma_b=0.1)
    close(nngp_d, nngp_c)
    close(ntk_d, ntk_c)
    times = torch.tensor([0.0, 1.0, 10.0, float("inf")], dtype=torch.float64)
    flow_c = dynamics.mse_flow(ntk_c, y, times)
    flow_d = dynamics.mse_flow(ntk_d, y.to(DEVICE), times.to(DEVICE))
    close(flow_d.train, flow_c.train)
    model = MLP(6, 128, 2, d_out=3, seed=1, dtype=torch.float64)
    emp_c = {o: kernels.empirical_ntk(model, x, outputs=o) for o in ("full", "mean")}
    model = model.to(DEVICE)
    for o in ("full", "mean"):
        close(kernels.empirical_ntk(model, x.to(DEVICE), outputs=o), emp_c[o])


def test_training_and_linearisation():
    x = data.sphere(16, 4, seed=0, dtype=torch.float64)
    y = torch.cos(2 * x[:, 1])
    runs = {}
    for d in ("cpu", DEVICE):
        model = MLP(4, 256, 2, seed=2, device=d, dtype=torch.float64)
        lin = linearize.linearize(model)
        hist = dynamics.train_gd(model, x.to(d), y.to(d), lr=0.5, steps=20)
        runs[d] = (torch.as_tensor(hist.loss), lin(x.to(d)).detach())
    close(runs[DEVICE][1], runs["cpu"][1])
    torch.testing.assert_close(runs[DEVICE][0].cpu(), runs["cpu"][0], rtol=1e-8, atol=1e-12)


def test_coordinate_check():
    x = data.sphere(16, 8, seed=0)
    y = torch.sin(x[:, 0])
    result = {}
    for d in ("cpu", DEVICE):
        family = mlp_family(8, [64, 256], 2, parametrization="mup", device=d)
        check = coordcheck.coord_check(family, x.to(d), y.to(d), lr=0.5, steps=2, seeds=[0])
        result[d] = check.slopes("size")
    torch.testing.assert_close(torch.as_tensor(result[DEVICE]).cpu(),
                               torch.as_tensor(result["cpu"]), rtol=1e-3, atol=1e-4)


def test_tensor_programs_finite_and_limit():
    x = data.sphere(4, 3, seed=0, dtype=torch.float64)
    y = torch.tensor([1.0, -0.5, 0.25, 0.0], dtype=torch.float64)
    kw = {"lr": 0.2, "steps": 3}
    fin_c = tensor_programs.mlp_finite(x, y, width=512, seed=0, **kw)
    fin_d = tensor_programs.mlp_finite(x, y, width=512, seed=0, device=DEVICE, **kw)
    close(fin_d.outputs, fin_c.outputs)
    lim_c = tensor_programs.mlp_limit(x, y, **kw)
    lim_d = tensor_programs.mlp_limit(x.to(DEVICE), y.to(DEVICE), **kw)
    torch.testing.assert_close(torch.as_tensor(lim_d.outputs).cpu(), lim_c.outputs, **F64)


def test_default_device_is_cuda_when_there_is_one():
    if DEVICE == "cuda":
        assert ntk_lib.default_device().type == "cuda"
        assert ntk_lib.device.full_scale()
