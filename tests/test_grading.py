"""ntk_lib.grading: the checks the autograded exercises use fail loudly and say what was expected."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ntk_lib import grading


def test_check_close_passes_and_fails_with_the_expected_value():
    grading.check_close("v", torch.tensor([1.0, 2.0]), [1.0, 2.0 + 1e-9], rtol=1e-6)
    with pytest.raises(AssertionError, match=r"v: expected 2 at index \(1,\), got 4"):
        grading.check_close("v", [1.0, 4.0], [1.0, 2.0], rtol=1e-3, why="exact")
    with pytest.raises(AssertionError, match="expected 0.5, got 1"):
        grading.check_close("slope", 1.0, 0.5, atol=0.1)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -math.inf])
def test_check_close_against_a_non_finite_expected_value_fails(bad):
    # Even an identical NaN (or inf) answer must not pass: nothing can be checked.
    for value in (bad, 0.0):
        with pytest.raises(AssertionError, match="expected value itself contains NaN or infinite"):
            grading.check_close("x", value, bad, rtol=1.0, atol=1e9)
    with pytest.raises(AssertionError, match="NaN or infinite"):
        grading.check_close("x", np.array([1.0, 1.0]), np.array([1.0, bad]), rtol=1.0)


def test_check_close_non_finite_answer_says_what_was_expected():
    with pytest.raises(AssertionError, match="expected finite values close to 1, got NaN"):
        grading.check_close("x", float("nan"), 1.0, rtol=1.0)


def test_check_close_shape_and_type_messages():
    with pytest.raises(AssertionError, match=r"expected shape \(2,\)"):
        grading.check_close("x", [1.0], [1.0, 2.0])
    with pytest.raises(AssertionError, match="x: expected a number"):
        grading.check_close("x", None, 1.0)
    with pytest.raises(AssertionError, match="x: expected a number"):
        grading.check_close("x", "0.5", 0.5)


def test_check_between():
    grading.check_between("s", torch.tensor(-0.5), -0.6, -0.4)
    with pytest.raises(AssertionError, match=r"expected a value in \[-0.6, -0.4\], got -1"):
        grading.check_between("s", -1.0, -0.6, -0.4, why="lazy")
    with pytest.raises(AssertionError, match="expected a value in"):
        grading.check_between("s", float("nan"), -1.0, 1.0)
    with pytest.raises(AssertionError, match="empty or NaN"):
        grading.check_between("s", 0.0, float("nan"), 1.0)
    with pytest.raises(AssertionError, match="empty or NaN"):
        grading.check_between("s", 0.0, 1.0, -1.0)
    with pytest.raises(AssertionError, match="expected a single number"):
        grading.check_between("s", [0.0, 0.1], -1.0, 1.0)
