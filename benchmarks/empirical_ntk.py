"""Empirical NTK: the three methods side by side, and the closed form at scale.

Prints, from one run: the time of each ``empirical_ntk`` method on a 3-hidden-layer relu
MLP (width 1024, 32 input dimensions, 256 points, float32) with the ratio to the
Jacobian-contraction method of PyTorch's NTK tutorial and the largest disagreement; and
the time of ``nngp_ntk`` for 2000 points of dimension 32 at depth 5 in float64.

Usage: ``python benchmarks/empirical_ntk.py [--device cuda] [--points 256] [--width 1024]``
"""

from __future__ import annotations

import argparse
import platform

import torch

from ntk_lib import MLP, data, empirical_ntk, nngp_ntk
from timing import best_time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--points", type=int, default=256)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, device {device}")
    if device.type == "cuda":
        print(f"gpu: {torch.cuda.get_device_name(device)}")

    model = MLP(32, args.width, 3, seed=0, device=device, dtype=torch.float32)
    x = data.sphere(args.points, 32, seed=1, device=device, dtype=torch.float32)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"\nempirical NTK: relu MLP depth 3, width {args.width}, d_in 32, {args.points} points, "
          f"{n_params:,} parameters, float32")
    ref = empirical_ntk(model, x, method="jacobian")
    times = {}
    for method in ("jacobian", "ntvp", "structured"):
        times[method] = best_time(lambda: empirical_ntk(model, x, method=method), args.repeats, device)
        diff = (empirical_ntk(model, x, method=method) - ref).abs().max().item()
        rel = diff / ref.abs().max().item()
        print(f"  {method:>10}: {times[method] * 1e3:9.1f} ms   speed-up vs jacobian {times['jacobian'] / times[method]:7.1f}x"
              f"   max |diff| {diff:.2e} (relative {rel:.1e})")

    x2k = data.sphere(2000, 32, seed=2, device=device)
    for activation in ("relu", "erf"):
        t = best_time(lambda: nngp_ntk(x2k, depth=5, activation=activation, sigma_b=0.1), args.repeats, device)
        print(f"\nclosed form: nngp_ntk, 2000 points, d 32, depth 5, {activation}, float64: {t * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
