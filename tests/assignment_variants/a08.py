"""Submissions for assignment 08 that tests/test_assignments.py grades (see its docstring)."""

# Cheats that pass every visible check and must lose the hidden points.
HARDCODED = {
    # Both visible readouts (SP's, and SP's with a muP-size initialisation) give -1.
    "ex08-exponent-solution": (
        "def critical_exponent(a_out, b_out):\n"
        "    return -1.0\n"
    ),
    # The visible measurement's number, without measuring.
    "ex08-measure-solution": (
        "def measured_exponent(a_out, b_out, widths):\n"
        "    return -0.48\n"
    ),
}

# Plausible mistakes that must lose points, with a message saying what was expected.
WRONG = {
    # Counts only the readout's own contribution and forgets the body's, which flows back
    # through the readout.
    "ex08-exponent-solution": (
        "def critical_exponent(a_out, b_out):\n"
        "    return -(1 - 2 * a_out)\n"
    ),
    # "Anything short of muP falls like SP."
    "ex08-predict-solution": "p_between = -1.0\n",
    # The kernel change without the lesson's centring.
    "ex08-kernel-change-solution": (
        "def relative_kernel_change(f0, f1):\n"
        "    f0, f1 = f0.to(torch.float64), f1.to(torch.float64)\n"
        "    k0, k1 = f0 @ f0.T / f0.shape[1], f1 @ f1.T / f1.shape[1]\n"
        "    return float((k1 - k0).norm() / k0.norm())\n"
    ),
}

WRONG_MESSAGE = "expected"
