"""Empirical NTK: the three methods side by side, for one output and for ten, and the closed form.

Prints, from one run:

- one output: the time of each ``empirical_ntk`` method on a 3-hidden-layer relu MLP
  (width 1024, 32 input dimensions, 256 points, float32) with the ratio to the
  Jacobian-contraction method of PyTorch's NTK tutorial and the largest disagreement;
- ten outputs (the same network with a 10-output readout): the structured ``"full"``
  ``(N, N, 10, 10)`` and ``"mean"`` ``(N, N)`` kernels against torch.func's Jacobian
  contraction and NTK-vector products for the same outputs, with the ratios and
  disagreements (goals: structured ``"mean"`` >= 30x and ``"full"`` >= 10x the Jacobian
  contraction). The slow methods take minutes on a CPU and are timed once; the structured
  ones are the best of ``--repeats`` after a warm-up;
- the time of ``nngp_ntk`` for 2000 points of dimension 32 at depth 5 in float64.

Usage: ``python benchmarks/empirical_ntk.py [--device cuda] [--points 256] [--width 1024]
[--outputs 10] [--skip-scalar]``
"""

from __future__ import annotations

import argparse
import os
import platform

import torch

from ntk_lib import MLP, data, empirical_ntk, nngp_ntk
from timing import best_time, clock


def _compare(label: str, value: torch.Tensor, ref: torch.Tensor) -> str:
    diff = (value - ref).abs().max().item()
    return f"max |diff| to {label} {diff:.2e} (relative {diff / ref.abs().max().item():.1e})"


def scalar_section(args, device) -> None:
    model = MLP(32, args.width, 3, seed=0, device=device, dtype=torch.float32)
    x = data.sphere(args.points, 32, seed=1, device=device, dtype=torch.float32)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"\none output: relu MLP depth 3, width {args.width}, d_in 32, {args.points} points, "
          f"{n_params:,} parameters, float32")
    ref = empirical_ntk(model, x, method="jacobian")
    times = {}
    for method in ("jacobian", "ntvp", "structured"):
        times[method] = best_time(lambda: empirical_ntk(model, x, method=method), args.repeats, device)
        got = empirical_ntk(model, x, method=method)
        print(f"  {method:>10}: {times[method] * 1e3:9.1f} ms   speed-up vs jacobian "
              f"{times['jacobian'] / times[method]:7.1f}x   {_compare('jacobian', got, ref)}")


def multi_output_section(args, device) -> None:
    k = args.outputs
    model = MLP(32, args.width, 3, d_out=k, seed=0, device=device, dtype=torch.float32)
    x = data.sphere(args.points, 32, seed=1, device=device, dtype=torch.float32)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"\n{k} outputs: relu MLP depth 3, width {args.width}, d_in 32, {args.points} points, "
          f"{n_params:,} parameters, float32")
    results, times = {}, {}
    for outputs in ("full", "mean"):
        for method in ("structured", "jacobian", "ntvp"):
            def run(method=method, outputs=outputs):
                results[method, outputs] = empirical_ntk(model, x, method=method, outputs=outputs)

            if method == "structured":
                times[method, outputs] = best_time(run, args.repeats, device)
            else:  # minutes on a CPU: one timed run
                times[method, outputs] = clock(run, device)
            print(f"  {outputs:>4} {method:>10}: {times[method, outputs] * 1e3:11.1f} ms", flush=True)
    print("\n  summary (ratio = time of the method / time of structured, same outputs):")
    for outputs in ("full", "mean"):
        ref = results["jacobian", outputs]
        shape = tuple(ref.shape)
        for method in ("jacobian", "ntvp", "structured"):
            ratio = times[method, outputs] / times["structured", outputs]
            line = f"  {outputs:>4} {shape!s:>20} {method:>10}: {times[method, outputs] * 1e3:11.1f} ms  {ratio:8.1f}x"
            if method != "jacobian":
                line += "   " + _compare("jacobian", results[method, outputs], ref)
            print(line)
    jac_full = times["jacobian", "full"] / times["structured", "full"]
    jac_mean = times["jacobian", "mean"] / times["structured", "mean"]
    print(f"\n  structured vs Jacobian contraction: full {jac_full:.1f}x (goal >= 10x), "
          f"mean {jac_mean:.1f}x (goal >= 30x)")
    print(f"  structured vs NTK-vector products: full "
          f"{times['ntvp', 'full'] / times['structured', 'full']:.1f}x, mean "
          f"{times['ntvp', 'mean'] / times['structured', 'mean']:.1f}x")
    full = results["structured", "full"]
    mean_of_full = full.diagonal(dim1=2, dim2=3).mean(-1)
    print(f"  structured mean = mean of the full kernel's diagonal blocks: "
          f"{_compare('that', results['structured', 'mean'], mean_of_full)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--points", type=int, default=256)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--outputs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-scalar", action="store_true", help="only the multi-output section")
    args = parser.parse_args()
    device = torch.device(args.device)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
          f"load average {load:.1f}, torch {torch.__version__}, device {device}")
    if device.type == "cuda":
        print(f"gpu: {torch.cuda.get_device_name(device)}")
    if not args.skip_scalar:
        scalar_section(args, device)
    multi_output_section(args, device)
    x2k = data.sphere(2000, 32, seed=2, device=device)
    for activation in ("relu", "erf"):
        t = best_time(lambda: nngp_ntk(x2k, depth=5, activation=activation, sigma_b=0.1), args.repeats, device)
        print(f"\nclosed form: nngp_ntk, 2000 points, d 32, depth 5, {activation}, float64: {t * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
