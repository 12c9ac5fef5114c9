"""Submissions for assignment 05 that tests/test_assignments.py grades (see its docstring)."""

HARDCODED = {
    # Right for the two visible cases (the lesson's own rates), wrong elsewhere.
    "ex05-exponents-solution": (
        "def exponents(q, c):\n"
        "    return 1 - q, 'kernel' if q < 1 else 'feature learning'\n"
    ),
    "ex05-predict-solution": (
        "def predicted_output_exponent(q):\n"
        "    return -0.5\n"
    ),
    # Measures the visible q = 1 whatever q it is given.
    "ex05-measure-solution": (
        "def measure_output_exponent(q, widths, seeds):\n"
        "    return reference_exponent(1.0, WIDTHS, SEEDS)\n"
    ),
    # Compares with the network it was tested on in the visible check.
    "ex05-feature-change-solution": (
        "def feature_change(before, after, x):\n"
        "    return 0.0 if before is after else run.feature_change\n"
    ),
}

WRONG = {
    # Ignores the output multiplier: r = c.
    "ex05-exponents-solution": (
        "def exponents(q, c):\n"
        "    r, speed = c, 1 - 2 * q - c\n"
        "    if speed > 1e-12:\n"
        "        return r, 'unstable'\n"
        "    if speed < -1e-12:\n"
        "        return r, 'trivial'\n"
        "    return r, 'feature learning' if abs(r) < 1e-12 else 'kernel'\n"
    ),
    # Forgets the square root of the sum of independent terms.
    "ex05-predict-solution": (
        "def predicted_output_exponent(q):\n"
        "    return 1 - q\n"
    ),
    # The squared change instead of its norm ratio.
    "ex05-feature-change-solution": (
        "def feature_change(before, after, x):\n"
        "    with torch.no_grad():\n"
        "        phi0, phi1 = before.forward_cache(x)[0][1], after.forward_cache(x)[0][1]\n"
        "    return float(((phi1 - phi0).norm() / phi0.norm()) ** 2)\n"
    ),
}

WRONG_MESSAGE = "expected"
