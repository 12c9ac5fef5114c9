"""Wall-clock timing shared by the benchmark scripts (run them as ``python benchmarks/NAME.py``)."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def clock(fn: Callable[[], object], device: torch.device) -> float:
    """Wall-clock time of one call ``fn()``; on CUDA the device is synchronised around it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def best_time(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Best wall-clock time of ``fn()`` over ``repeats`` runs (:func:`clock`), after one warm-up run."""
    fn()
    return min(clock(fn, device) for _ in range(repeats))
