"""Submissions for assignment 09 that tests/test_assignments.py grades (see its docstring)."""

# Cheats that pass every visible check and must lose the hidden points.
HARDCODED = {
    # The visible trajectory (the lesson's data, lr = 0.1, 8 steps), looked up by the slope.
    "ex09-slope-kernel-solution": (
        "VISIBLE = {\n"
        "    0.0: (0.2733333333333333, 2.0373555555555556),\n"
        "    0.273333333: (0.4564753905555555, 2.150557508400617),\n"
        "    0.456475391: (0.5800633577434482, 2.2611727187631394),\n"
        "    0.580063358: (0.6602731028832538, 2.345537188389494),\n"
        "    0.660273103: (0.7101026927446907, 2.4023602109523234),\n"
        "    0.710102693: (0.7399979877458498, 2.4379469082019405),\n"
        "    0.739997988: (0.7575088099515321, 2.4592864541631108),\n"
        "    0.75750881: (0.7676110898896888, 2.471758945818889),\n"
        "}\n"
        "\n"
        "\n"
        "def slope_kernel_step(s, k, x, y, lr):\n"
        "    return VISIBLE[round(s, 9)]\n"
    ),
    # The lesson's inputs' value, whatever the inputs.
    "ex09-predict-solution": (
        "def predicted_eta_crit(x):\n"
        "    return 4 / 7\n"
    ),
    # The visible measurement, without measuring.
    "ex09-measure-solution": (
        "def measured_eta_crit(x, y):\n"
        "    return 0.5823\n"
    ),
}

# Plausible mistakes that must lose points, with a message saying what was expected.
WRONG = {
    # Half the cross term in the kernel's update (2 e s instead of 4 e s).
    "ex09-slope-kernel-solution": (
        "def slope_kernel_step(s, k, x, y, lr):\n"
        "    e = lr * float(((s * x - y) * x).mean())\n"
        "    return s * (1 + e**2) - e * k, k * (1 + e**2) - 2 * e * s\n"
    ),
    # Forgets the factor 2 of the kernel 2 xi xi': twice the critical rate.
    "ex09-predict-solution": (
        "def predicted_eta_crit(x):\n"
        "    return float(2 * len(x) / (x * x).sum())\n"
    ),
}

WRONG_MESSAGE = "expected"
