"""Linear models: the cost of the closed-form dynamics and of a linearised training step.

Prints, from one run:
- ``mse_flow`` at 100 time points for D = 1000 training points (and 200 test points)
  against one eigendecomposition of the 1000 x 1000 kernel (goal: ratio <= 2);
- one GD step of the linearised network (``linearize(model)``: forward + JVP, then the
  backward through it) against one GD step of the network itself (goal: ratio <= 2),
  for a 2-hidden-layer relu MLP of width 1024 on 256 points.

Usage: ``python benchmarks/linear_models.py [--device cuda]``
"""

from __future__ import annotations

import argparse
import platform

import torch

from ntk_lib import MLP, data, nngp_ntk
from ntk_lib.dynamics import mse_flow, mse_loss
from ntk_lib.linearize import linearize
from timing import best_time


def gd_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float = 0.1) -> None:
    """One plain full-batch GD step on the MSE loss."""
    model.zero_grad(set_to_none=True)
    mse_loss(model(x), y).backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= lr * p.grad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, device {device}")

    x, xt = data.sphere(1000, 16, seed=0, device=device), data.sphere(200, 16, seed=1, device=device)
    k, kt = nngp_ntk(x, depth=3)[1], nngp_ntk(xt, x, depth=3)[1]
    y = torch.sin(x[:, 0])
    times = torch.logspace(-2, 4, 100, dtype=torch.float64)
    t_eig = best_time(lambda: torch.linalg.eigh(k), args.repeats, device)
    t_flow = best_time(lambda: mse_flow(k, y, times, k_test_train=kt), args.repeats, device)
    print("\nmse_flow, D = 1000 train / 200 test points, float64")
    print(f"  one eigendecomposition: {t_eig * 1e3:8.1f} ms")
    print(f"  100 time points:        {t_flow * 1e3:8.1f} ms   ratio {t_flow / t_eig:.2f} (goal <= 2)")

    model = MLP(32, 1024, 2, seed=0, device=device)
    lin = linearize(model)
    xb, yb = data.sphere(256, 32, seed=2, device=device, dtype=torch.float32), torch.zeros(256, device=device)
    t_net = best_time(lambda: gd_step(model, xb, yb), args.repeats, device)
    t_lin = best_time(lambda: gd_step(lin, xb, yb), args.repeats, device)
    print("\nGD step, relu MLP depth 2, width 1024, 256 points, float32")
    print(f"  network:    {t_net * 1e3:8.1f} ms")
    print(f"  linearised: {t_lin * 1e3:8.1f} ms   ratio {t_lin / t_net:.2f} (goal <= 2)")


if __name__ == "__main__":
    main()
