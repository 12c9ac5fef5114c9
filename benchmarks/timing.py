"""Wall-clock timing shared by the benchmark scripts (run them as ``python benchmarks/NAME.py``)."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def best_time(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Best wall-clock time of ``fn()`` over ``repeats`` runs, after one warm-up run.

    On CUDA the device is synchronised around each run, so the time covers the kernels.
    """
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times)
