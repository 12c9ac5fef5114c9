"""Submissions for assignment 04 that tests/test_assignments.py grades (see its docstring)."""

HARDCODED = {
    # The visible kernel's answer, diag(1, 2, 4).
    "ex04-critical-rate-solution": (
        "def critical_rate(theta):\n"
        "    return 1.5\n"
    ),
    # Replays the visible case's step, whatever it is given.
    "ex04-two-scalar-solution": (
        "def two_scalar_step(f, lam, y, eta, n):\n"
        "    return simulated_step(0.5, 0.7, 50, 0)[1]\n"
    ),
    "ex04-predict-solution": (
        "def predicted_t_peak(eta_lam0, n):\n"
        "    return 7.0\n"
    ),
    # Always measures the visible rate and widths.
    "ex04-measure-solution": (
        "def measure_peak_scaling(eta_lam0, widths):\n"
        "    return reference_scaling(3.0, WIDTHS)\n"
    ),
}

WRONG = {
    # Forgets the 1/D of the course's loss.
    "ex04-critical-rate-solution": (
        "def critical_rate(theta):\n"
        "    return 2 / torch.linalg.eigvalsh(theta)[-1].item()\n"
    ),
    # The lesson's y = 0 recursion, with the target ignored.
    "ex04-two-scalar-solution": (
        "def two_scalar_step(f, lam, y, eta, n):\n"
        "    return (1 - eta * lam + eta**2 * f**2 / n) * f, lam + eta * f**2 / n * (eta * lam - 4)\n"
    ),
    # Peak when f^2 / n (instead of eta^2 f^2 / n ~ 1 with |f| ~ sqrt(n)): twice too late.
    "ex04-predict-solution": (
        "def predicted_t_peak(eta_lam0, n):\n"
        "    return math.log(n) / math.log(abs(eta_lam0 - 1))\n"
    ),
}

WRONG_MESSAGE = "expected"
