"""Iterative linearisation: the cost of a step of the linear model against a gradient step.

Prints, from one run, for the lesson's two models on scikit-learn's digits (cross-entropy,
float32):
- a plain GD step (``torch.optim.SGD``: forward, backward, update) and a step of
  ``iterative.train`` with ``K = 1`` (the same computation through the library);
- a step of the linear model between refreshes (``K = inf``) on each path: ``"jvp"`` with the
  full batch (goal: <= 1.5x a GD step on CPU), ``"jvp"`` with minibatches, ``"materialize"``
  (goal: faster than GD where ``path="auto"`` picks it);
- the cost of a refresh on the materialized path (building ``J``), and what ``"auto"`` picks.

A step's time is ``(T(steps = 2n + 1) - T(steps = n + 1)) / n`` for whole ``iterative.train``
calls (or plain loops), so it includes everything a step does and nothing done once per
refresh window (the refresh, building ``J``, tracing a tangent); ``n`` is ``--steps`` or more,
so that the ``n`` steps take at least half a second. The modes are timed in turns,
``--rounds`` times, and each keeps its best: on a shared machine a burst of load then hits
one round, not one mode.

Usage: ``python benchmarks/iterative.py [--device cuda] [--points 500] [--steps 30] [--rounds 5]``
"""

from __future__ import annotations

import argparse
import copy
import math
import platform

import torch

from ntk_lib import MLP, data, iterative
from ntk_lib.convnet import ConvNet
from timing import clock

BATCH = 64


def gd_loop(model: torch.nn.Module, x, y, steps: int, batch: int | None = None) -> None:
    """``steps`` plain SGD steps on the cross-entropy, full batch or minibatches of ``batch``."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    batches = (
        iterative.minibatches(x.shape[0], batch, steps) if batch else iter([slice(None)] * steps)
    )
    for idx in batches:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--points", type=int, default=500)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    device, n = torch.device(args.device), args.steps
    print(
        f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}, device {device}"
    )
    x, y, _, _ = data.digits(args.points, 100, device=device)
    models = {
        "MLP 64-128-128-10, standard parametrization": MLP(
            64, 128, 2, d_out=10, parametrization="standard", seed=0, device=device
        ),
        "ConvNet(16)": ConvNet(16, seed=0, device=device),
    }
    for name, base in models.items():
        n_params = sum(p.numel() for p in base.parameters())
        print(f"\n{name}: {n_params} parameters, {args.points} points")

        def train(steps, **kw):
            kw = {"loss": "cross_entropy", "lr": 0.05, "K": math.inf, **kw}
            return iterative.train(copy.deepcopy(base), x, y, steps=steps, **kw)

        modes = {  # label: (run(steps), the GD step it is compared with)
            "GD step (torch.optim.SGD), full batch": (
                lambda s: gd_loop(copy.deepcopy(base), x, y, s),
                "gd",
            ),
            "iterative.train, K = 1, full batch": (lambda s: train(s, K=1), "gd"),
            "linear step, path='jvp', full batch": (lambda s: train(s, path="jvp"), "gd"),
            "linear step, path='materialize', full batch": (
                lambda s: train(s, path="materialize"),
                "gd",
            ),
            f"GD step, minibatches of {BATCH}": (
                lambda s: gd_loop(copy.deepcopy(base), x, y, s, BATCH),
                "mini",
            ),
            f"linear step, path='jvp', minibatches of {BATCH}": (
                lambda s: train(s, path="jvp", batch_size=BATCH),
                "mini",
            ),
            f"linear step, path='materialize', minibatches of {BATCH}": (
                lambda s: train(s, path="materialize", batch_size=BATCH),
                "mini",
            ),
        }
        best = {label: math.inf for label in modes}
        refresh = {"jvp": math.inf, "materialize": math.inf}
        steps = {}
        for label, (run, _) in modes.items():  # warm-up, and enough steps for >= 0.5 s per mode
            run(2)
            rough = (clock(lambda: run(n + 1), device) - clock(lambda: run(1), device)) / n
            steps[label] = max(n, min(20 * n, math.ceil(0.5 / max(rough, 1e-6))))
        for _ in range(args.rounds):
            for label, (run, _) in modes.items():
                k = steps[label]
                long, short = (
                    clock(lambda: run(2 * k + 1), device),
                    clock(lambda: run(k + 1), device),
                )
                best[label] = min(best[label], (long - short) / k)
            for p in refresh:
                refresh[p] = min(refresh[p], clock(lambda: train(1, path=p), device))
        reference = {
            "gd": best[next(iter(modes))],
            "mini": best[f"GD step, minibatches of {BATCH}"],
        }
        for label, (_, ref) in modes.items():
            t = best[label]
            print(f"  {label:58s} {t * 1e3:8.2f} ms  {t / reference[ref]:6.2f}x GD")
        extra = refresh["materialize"] - refresh["jvp"]
        print(
            f"  a materialized refresh (J of {args.points * 10} x {n_params}): "
            f"{extra * 1e3:.0f} ms more than "
            f"a gradient step, = {extra / reference['gd']:.0f} GD steps"
        )
        picks = {K: train(K, K=K).path for K in (1, 10, 100)}  # "auto" looks at min(K, steps)
        print("  path='auto' picks: " + ", ".join(f"K = {K}: {p}" for K, p in picks.items()))


if __name__ == "__main__":
    main()
