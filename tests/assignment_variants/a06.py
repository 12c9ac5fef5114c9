"""Submissions for assignment 06 that tests/test_assignments.py grades (see its docstring)."""

# Cheats that pass every visible check and must lose the hidden points.
HARDCODED = {
    # The exponents for the visible readout (s = 1/2), whatever s.
    "ex06-lr-solution": (
        "def lr_exponents(s):\n"
        "    return (0.5, -0.5, -1.0)\n"
    ),
    # The visible case's exponent, whatever s.
    "ex06-predict-solution": (
        "def predicted_output_exponent(s):\n"
        "    return 0.5\n"
    ),
    # The visible measurement's number, without measuring.
    "ex06-measure-solution": (
        "def measured_output_exponent(s, lr_exps, widths, seeds):\n"
        "    return 0.59\n"
    ),
}

# Plausible mistakes that must lose points, with a message saying what was expected.
WRONG = {
    # The lecture's rates n/d, 1, 1/n, whatever the readout's initialisation.
    "ex06-lr-solution": (
        "def lr_exponents(s):\n"
        "    return (1.0, 0.0, -1.0)\n"
    ),
    # "Updates that meet the spectral condition keep the output step of order one."
    "ex06-predict-solution": (
        "def predicted_output_exponent(s):\n"
        "    return 0.0\n"
    ),
}

WRONG_MESSAGE = "expected"
