"""Friendly checks for the autograded tests of the exercises.

Each check raises ``AssertionError`` with a message a student can act on: what was
expected, what was received, and the tolerance used (and why it is that loose), rather
than a bare ``assert``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def _as_array(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().to(torch.float64).numpy()
    return np.asarray(value, dtype=np.float64)


def check_type(name: str, value: Any, expected: type | tuple[type, ...]) -> None:
    """Fail unless ``value`` is an instance of ``expected``."""
    if not isinstance(value, expected):
        names = expected.__name__ if isinstance(expected, type) else " or ".join(t.__name__ for t in expected)
        raise AssertionError(f"{name}: expected a {names}, got {type(value).__name__}")


def check_shape(name: str, value: Any, shape: Sequence[int]) -> None:
    """Fail unless ``value`` (tensor or array) has exactly ``shape``."""
    got = tuple(value.shape) if hasattr(value, "shape") else None
    if got != tuple(shape):
        raise AssertionError(f"{name}: expected a tensor of shape {tuple(shape)}, got {got if got is not None else type(value).__name__}")


def check_close(name: str, value: Any, expected: Any, *, rtol: float = 1e-6, atol: float = 0.0, why: str = "") -> None:
    """Fail unless ``|value - expected| <= atol + rtol |expected|`` elementwise.

    ``why`` explains the tolerance to the student (e.g. "Monte Carlo with 10^4 samples").
    """
    v, e = _as_array(value), _as_array(expected)
    if v.shape != e.shape:
        raise AssertionError(f"{name}: expected shape {e.shape}, got {v.shape}")
    if not np.all(np.isfinite(v)):
        raise AssertionError(f"{name}: contains NaN or infinite values")
    err = np.abs(v - e)
    bound = atol + rtol * np.abs(e)
    if np.any(err > bound):
        i = np.unravel_index(np.argmax(err - bound), err.shape) if err.ndim else ()
        where = f" at index {tuple(int(k) for k in i)}" if err.ndim else ""
        note = f" ({why})" if why else ""
        raise AssertionError(
            f"{name}: expected {e[i]:.6g}{where}, got {v[i]:.6g}; allowed error "
            f"{bound[i] if err.ndim else bound:.2g} = atol {atol:g} + rtol {rtol:g} * |expected|{note}"
        )


def check_between(name: str, value: float, low: float, high: float, *, why: str = "") -> None:
    """Fail unless ``low <= value <= high`` (e.g. a fitted slope in a theory's range)."""
    value = float(value)
    if not low <= value <= high:
        note = f" ({why})" if why else ""
        raise AssertionError(f"{name}: expected a value in [{low:g}, {high:g}], got {value:.4g}{note}")
