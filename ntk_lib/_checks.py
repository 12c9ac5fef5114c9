"""Argument validation shared by every module of :mod:`ntk_lib`.

Each check raises at the library's edge with a message that names the argument, the
value that was given and what is accepted, so that a learner never has to decode a shape
error from deep inside torch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch


def choice(name: str, value: Any, accepted: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``accepted`` (a string option), else raise ``ValueError``."""
    accepted = tuple(accepted)
    if not isinstance(value, str) or value not in accepted:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, accepted))}; got {value!r}")
    return value


def _integer(name: str, value: Any, minimum: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a {what} integer; got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be a {what} integer (>= {minimum}); got {value}")
    return int(value)


def positive_int(name: str, value: Any) -> int:
    """Return ``value`` as an ``int`` if it is an integer >= 1, else raise."""
    return _integer(name, value, 1, "positive")


def nonnegative_int(name: str, value: Any) -> int:
    """Return ``value`` as an ``int`` if it is an integer >= 0, else raise."""
    return _integer(name, value, 0, "non-negative")


def real(name: str, value: Any, *, positive: bool = False, nonnegative: bool = False) -> float:
    """Return ``value`` as a finite ``float``, optionally required to be > 0 or >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number; got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite; got {value}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0; got {value}")
    if nonnegative and value < 0:
        raise ValueError(f"{name} must be >= 0; got {value}")
    return value


def vector(
    name: str,
    v: Any,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Return ``v`` as a 1-D finite floating tensor with at least one entry (tensor, array or list)."""
    if not isinstance(v, torch.Tensor):
        try:
            v = torch.as_tensor(np.asarray(v, dtype=np.float64))
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name} must be a 1-D array of numbers; got {type(v).__name__}") from err
    if v.ndim != 1 or v.numel() < 1:
        raise ValueError(f"{name} must be a 1-D vector with at least one entry; got shape {tuple(v.shape)}")
    if v.is_complex() or v.dtype == torch.bool:
        raise TypeError(f"{name} must hold real numbers; got dtype {v.dtype}")
    return matrix(name, v[None], dtype=dtype, device=device)[0]


def matrix(
    name: str,
    x: Any,
    *,
    cols: int | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Return ``x`` as a 2-D floating tensor of shape ``(rows, cols)`` with at least one row.

    Accepts tensors, NumPy arrays and nested lists. ``cols`` (if given) is the required
    number of columns, e.g. a model's input dimension.
    """
    if not isinstance(x, torch.Tensor):
        try:
            x = torch.as_tensor(np.asarray(x, dtype=np.float64))
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name} must be a 2-D array of numbers; got {type(x).__name__}") from err
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D tensor of shape (points, dims); got shape {tuple(x.shape)}")
    if x.shape[0] < 1:
        raise ValueError(f"{name} must contain at least one point; got shape {tuple(x.shape)}")
    if cols is not None and x.shape[1] != cols:
        raise ValueError(f"{name} must have {cols} columns (the input dimension); got shape {tuple(x.shape)}")
    if not (x.is_floating_point() or dtype is not None):
        x = x.to(torch.get_default_dtype())
    x = x.to(device=device if device is not None else x.device, dtype=dtype or x.dtype)
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite entries")
    return x
