"""Submissions for assignment 03 that tests/test_assignments.py grades (see its docstring)."""

HARDCODED = {
    # The answer for the visible kernel K, whatever kernel it is given.
    "ex03-fastest-rate-solution": (
        "def fastest_rate(k_train):\n"
        "    lam = torch.linalg.eigvalsh(K)\n"
        "    return 16 / (lam[0] + lam[-1]).item(), ((lam[-1] - lam[0]) / (lam[-1] + lam[0])).item()\n"
    ),
    # Zero at step 0 and a positive number otherwise: all the visible checks ask.
    "ex03-predict-solution": (
        "def predicted_distance(k_train, f0, y, lr, steps):\n"
        "    return 0.0 if steps == 0 else 4.0\n"
    ),
    # Always runs the visible case's rate and number of steps.
    "ex03-measure-solution": (
        "def measure_distance(model, lr, steps):\n"
        "    before = flat_parameters(model)\n"
        "    train_gd(model, x_train, y_train, lr=1.0, steps=200)\n"
        "    return (flat_parameters(model) - before).norm().item()\n"
    ),
    # The visible case's answer from ntk_lib, whatever it is given.
    "ex03-kernel-regression-solution": (
        "def kernel_regression(k_train, k_test_train, y, f0, f0_test):\n"
        "    return mse_flow(K, y_train, math.inf, k_test_train=K_test, f0_train=f0,\n"
        "                    f0_test=f0_test).test\n"
    ),
}

WRONG = {
    # Half the critical rate: stable, but not the fastest.
    "ex03-fastest-rate-solution": (
        "def fastest_rate(k_train):\n"
        "    lam = torch.linalg.eigvalsh(k_train)\n"
        "    eta = k_train.shape[0] / lam[-1].item()\n"
        "    return eta, (1 - eta * lam / k_train.shape[0]).abs().max().item()\n"
    ),
    # The t = infinity distance, whatever the number of steps.
    "ex03-predict-solution": (
        "def predicted_distance(k_train, f0, y, lr, steps):\n"
        "    r = y - f0\n"
        "    return math.sqrt((r @ torch.linalg.solve(k_train, r)).item())\n"
    ),
    # Forgets the initial function.
    "ex03-kernel-regression-solution": (
        "def kernel_regression(k_train, k_test_train, y, f0, f0_test):\n"
        "    return f0_test + k_test_train @ torch.linalg.solve(k_train, y)\n"
    ),
}

WRONG_MESSAGE = "expected"
