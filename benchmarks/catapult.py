"""Two-scalar model: the phase diagram on a 1000 x 1000 grid for 200 steps.

Prints, from one run: the time of ``catapult.phase_diagram`` on a grid of 1000 values of
``eta lam0`` in [0.5, 5] by 1000 widths ``n`` in [10, 10^6] (float64, 200 steps, best of 3),
next to the obvious implementation (the whole grid updated each step, divergence masked with
``torch.where``) with the speed-up and the fraction of grid points whose phase agrees; and the
machine's load average, since the goal (under 2 s on 2 CPU cores) is for an idle machine.

Usage: ``python benchmarks/catapult.py [--device cuda] [--size 1000] [--steps 200]``
"""

from __future__ import annotations

import argparse
import os
import platform

import torch

from ntk_lib.catapult import DIVERGENCE_THRESHOLD, phase_diagram
from timing import best_time


def naive_phases(eta: torch.Tensor, n: torch.Tensor, steps: int) -> torch.Tensor:
    """The textbook version: full-grid tensors, a fresh temporary per op, a mask per step."""
    f = torch.ones(torch.broadcast_shapes(eta.shape, n.shape), dtype=eta.dtype, device=eta.device)
    lam, peak = torch.ones_like(f), torch.ones_like(f)
    diverged = torch.zeros_like(f, dtype=torch.bool)
    for _ in range(steps):
        f_new = (1 - eta * lam + eta**2 * f**2 / n) * f
        lam_new = lam + eta * f**2 / n * (eta * lam - 4)
        bad = ~(
            (eta**2 * f_new**2 / n <= DIVERGENCE_THRESHOLD)
            & ((eta * lam_new).abs() <= DIVERGENCE_THRESHOLD)
        )
        diverged |= bad
        f, lam = torch.where(diverged, f, f_new), torch.where(diverged, lam, lam_new)
        peak = torch.maximum(peak, f.abs())
    return torch.where(diverged, 2, (peak > 1).long())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    load = os.getloadavg()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, device {device}"
    )
    print(f"load average before: {load[0]:.2f} (1 min), {load[1]:.2f} (5 min)")
    if device.type == "cuda":
        print(f"gpu: {torch.cuda.get_device_name(device)}")

    size, steps = args.size, args.steps
    eta = torch.linspace(0.5, 5.0, size, dtype=torch.float64, device=device)[:, None]
    n = torch.logspace(1, 6, size, dtype=torch.float64, device=device)[None, :]
    print(f"\nphase diagram: {size} x {size} grid (eta lam0 x n), {steps} steps, float64")
    t_lib = best_time(
        lambda: phase_diagram(1.0, 1.0, eta, n, steps, device=device), args.repeats, device
    )
    t_naive = best_time(lambda: naive_phases(eta, n, steps), args.repeats, device)
    codes = phase_diagram(1.0, 1.0, eta, n, steps, device=device).phases
    agree = (codes == naive_phases(eta, n, steps)).double().mean().item()
    counts = torch.bincount(codes.reshape(-1), minlength=3).tolist()
    per_point = t_lib / (size**2 * steps) * 1e9
    print(f"  phase_diagram: {t_lib:7.2f} s   ({per_point:.2f} ns per point and step)")
    print(f"  naive        : {t_naive:7.2f} s   speed-up {t_naive / t_lib:.1f}x")
    print(f"  phases agree on {agree:.4%} of the grid")
    print(f"  lazy / catapult / divergent points: {counts[0]:,} / {counts[1]:,} / {counts[2]:,}")
    print(f"load average after: {os.getloadavg()[0]:.2f} (1 min)")


if __name__ == "__main__":
    main()
