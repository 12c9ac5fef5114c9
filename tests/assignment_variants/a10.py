"""Submissions for assignment 10 that tests/test_assignments.py grades (see its docstring)."""

# Cheats that pass every visible check and must lose the hidden points.
HARDCODED = {
    # The width-16 network of the visible check, whatever Jacobian it is given.
    "ex10-critical-lr-solution": (
        "def critical_lr(jac):\n"
        "    return float(iterative.critical_lr(make_net(), x))\n"
    ),
    # (f, lambda) after the visible check's window (K = 2, n = 64, eta lambda_0 = 1.5).
    "ex10-window-solution": (
        "def window(f, lam, lr, n, K):\n"
        "    return 0.23230420170165425, 2.059373599340629\n"
    ),
    # The values the visible measurement (K = 1, 2, 3) agrees with, and 2 for every other K.
    "ex10-predict-solution": (
        "def predicted_max_rate(K):\n"
        "    return {1: 4.0, 2: 2.0, 3: 2.44}.get(K, 2.0)\n"
    ),
}

# Plausible mistakes that must lose points, with a message saying what was expected.
WRONG = {
    # K steps along the gradient at theta_s with the residual not updated: rate K eta.
    "ex10-window-solution": (
        "def window(f, lam, lr, n, K):\n"
        "    e = K * lr\n"
        "    return (1 - e * lam + e**2 * f**2 / n) * f, lam + e * f**2 / n * (e * lam - 4)\n"
    ),
    # "Refreshing the features lets every K catapult like gradient descent."
    "ex10-predict-solution": (
        "def predicted_max_rate(K):\n"
        "    return 4.0\n"
    ),
}

WRONG_MESSAGE = "expected"
