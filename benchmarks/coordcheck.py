"""Coordinate checks: the cost of :func:`ntk_lib.coordcheck.coord_check` over seven widths.

Prints, from one run, the time of a muP coordinate check (relu MLP with 2 hidden layers,
widths 64 ... 4096, 5 SGD steps, 32 points, float32; goal < 30 s on 2 CPU cores, and
widths up to 16384 in < 30 s on a GPU) against the obvious alternative, the ``mup``
package's recipe: an ``nn.Sequential`` of ``nn.Linear`` layers (PyTorch's own float32
init) with forward hooks that record each module's mean ``|output|`` during the training
forward pass. Both take the same steps on the same batch.

Usage: ``python benchmarks/coordcheck.py [--device cuda] [--max-width 16384]``
"""

from __future__ import annotations

import argparse
import platform

import torch
from torch import nn

from ntk_lib import data
from ntk_lib.coordcheck import coord_check
from ntk_lib.families import mlp_family
from ntk_lib.dynamics import mse_loss
from timing import clock


def hooks_recipe(widths: list[int], x: torch.Tensor, y: torch.Tensor, steps: int, seeds: int) -> dict:
    """The mup-package recipe: hooks record every module's mean |output| in the training forward."""
    records = {}
    for width in widths:
        for seed in range(seeds):
            torch.manual_seed(seed)
            net = nn.Sequential(nn.Linear(x.shape[1], width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                                nn.Linear(width, 1)).to(x.device)
            opt = torch.optim.SGD(net.parameters(), lr=0.1)
            for t in range(steps + 1):
                handles = [m.register_forward_hook(
                    lambda mod, inp, out, key=(width, seed, t, i): records.__setitem__(key, out.abs().mean().item()))
                    for i, m in enumerate(net)]
                out = net(x)[:, 0]
                for h in handles:
                    h.remove()
                if t < steps:
                    opt.zero_grad()
                    mse_loss(out, y).backward()
                    opt.step()
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-width", type=int, default=4096)
    parser.add_argument("--seeds", type=int, default=1)
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, device {device}")
    widths = [args.max_width // 2**k for k in range(6, -1, -1)]
    x = data.sphere(32, 16, seed=0, device=device, dtype=torch.float32)
    y = torch.sin(3 * x[:, 0])
    hooks_recipe(widths[:2], x, y, 1, 1)  # warm-up
    checks = []
    t_ours = clock(lambda: checks.append(
        coord_check(mlp_family(16, widths, 2, parametrization="mup", device=device), x, y, lr=0.5,
                    steps=5, seeds=range(args.seeds))), device)
    t_hooks = clock(lambda: hooks_recipe(widths, x, y, 5, args.seeds), device)
    check = checks[0]
    print(f"\ncoordinate check, widths {widths[0]}..{widths[-1]} (7), 5 SGD steps, {args.seeds} seed(s), depth 2, float32")
    print(f"  ntk_lib coord_check (muP):   {t_ours:7.2f} s   (goal < 30 s)")
    print(f"  mup-style hooks on nn.Linear: {t_hooks:7.2f} s   ratio ours/hooks {t_ours / t_hooks:.2f}")
    print(f"  largest slope |s| of any muP coordinate after step 1: {check.slopes('size')[1:].abs().max():.2f}")


if __name__ == "__main__":
    main()
