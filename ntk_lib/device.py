"""Where and in which precision things run: device choice, seeding, dtype defaults.

Training runs in float32 unless asked; closed forms and theory checks run in float64
(ARCHITECTURE.md, *Conventions*). Lessons call :func:`default_device` once and scale their
experiments up with :func:`full_scale` when a CUDA GPU is present.
"""

from __future__ import annotations

import random

import numpy as np
import torch

from . import _checks

TRAIN_DTYPE = torch.float32
"""Default dtype of networks and training loops."""

THEORY_DTYPE = torch.float64
"""Default dtype of closed forms and theory checks."""


def default_device() -> torch.device:
    """Return ``cuda`` when a CUDA GPU is available, else ``cpu``."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def full_scale(device: torch.device | str | None = None) -> bool:
    """Return whether lessons should run their ``FULL`` (GPU-sized) experiments on ``device``."""
    return (default_device() if device is None else _checks.available(device)).type == "cuda"


def resolve(
    device: torch.device | str | None, dtype: torch.dtype | None, *, theory: bool = False
) -> tuple[torch.device, torch.dtype]:
    """Return ``(device, dtype)`` with the library defaults filled in.

    ``device`` defaults to :func:`default_device`; ``dtype`` to float64 when ``theory``
    (closed forms) and float32 otherwise (training).
    """
    if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
        raise ValueError(
            f"dtype must be a floating torch.dtype such as torch.float64; got {dtype!r}"
        )
    device = _checks.available(device) if device is not None else default_device()
    return device, dtype or (THEORY_DTYPE if theory else TRAIN_DTYPE)


def generator(seed: int | torch.Generator | None) -> torch.Generator | None:
    """Return a CPU ``torch.Generator`` for ``seed`` (an int), ``seed`` itself, or ``None``.

    ``None`` means "use torch's global random state". Random tensors are always drawn on
    the CPU and then moved, so the same seed gives the same numbers on every device.
    """
    if seed is None or isinstance(seed, torch.Generator):
        return seed
    return torch.Generator().manual_seed(_checks.nonnegative_int("seed", seed))


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and CUDA) global random generators."""
    seed = _checks.nonnegative_int("seed", seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
