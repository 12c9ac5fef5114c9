"""Shared test settings: per-dtype tolerances and the ``gpu`` marker's skip.

Tolerances (why these numbers): a float64 identity computed two ways (closed form against a
recursion, a structured path against autograd) agrees to ~1e-13 relative on the sizes the
tests use, so ``1e-10`` leaves three orders of margin and still catches any formula error;
float32 carries ~6e-8 relative rounding per operation and the tests chain up to ~1e3 of
them, hence ``1e-4``.
"""

from __future__ import annotations

import pytest
import torch

TOLERANCES: dict[torch.dtype, dict[str, float]] = {
    torch.float64: {"rtol": 1e-10, "atol": 1e-12},
    torch.float32: {"rtol": 1e-4, "atol": 1e-6},
}


@pytest.fixture
def tol():
    """Return ``tol(dtype) -> {"rtol": ..., "atol": ...}`` for ``torch.testing.assert_close``."""
    return lambda dtype: TOLERANCES[dtype]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip every test marked ``gpu`` when no CUDA device is present."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
