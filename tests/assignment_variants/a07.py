"""Submissions for assignment 07 that tests/test_assignments.py grades (see its docstring)."""

# Cheats that pass every visible check and must lose the hidden points.
HARDCODED = {
    # The visible case's exponents, whatever the parametrization.
    "ex07-per-layer-solution": (
        "def r_layers_per_layer(a, b, cs):\n"
        "    return [0.0, 0.0]\n"
    ),
    # Right at the depth the visible measurement uses, muP's slopes elsewhere.
    "ex07-predict-solution": (
        "def predicted_slopes(depth):\n"
        "    return [-1.0, 0.0, 0.0] if depth == 2 else [0.0] * (depth + 1)\n"
    ),
    # The visible measurement's numbers, without measuring.
    "ex07-measure-solution": (
        "def measured_slopes(depth, widths, seeds):\n"
        "    return [-1.01, -0.12, -0.15]\n"
    ),
    # muP's table entries for the visible depths only.
    "ex07-mup-solution": (
        "def mup_abc(depth):\n"
        "    return {\n"
        "        1: ABC((-0.5, 0.5), (0.5, 0.5), 0.0),\n"
        "        2: ABC((-0.5, 0.0, 0.5), (0.5, 0.5, 0.5), 0.0),\n"
        "        3: ABC((-0.5, 0.0, 0.0, 0.5), (0.5, 0.5, 0.5, 0.5), 0.0),\n"
        "    }[depth]\n"
    ),
}

# Plausible mistakes that must lose points, with a message saying what was expected.
WRONG = {
    # Uses layer l's own learning-rate exponent for the readout's update as well.
    "ex07-per-layer-solution": (
        "def r_layers_per_layer(a, b, cs):\n"
        "    L = len(a) - 1\n"
        "    return [min(a[L] + b[L], 2 * a[L] + cs[l]) - 1 + 2 * a[l] + cs[l] + (l == 0)\n"
        "            for l in range(L)]\n"
    ),
    # "A muP readout makes the whole network muP": every slope 0.
    "ex07-predict-solution": (
        "def predicted_slopes(depth):\n"
        "    return [0.0] * (depth + 1)\n"
    ),
    # SP's body with muP's readout: stable and feature learning, but r_1 = 1.
    "ex07-mup-solution": (
        "def mup_abc(depth):\n"
        "    return ABC((0.0,) * depth + (0.5,), (0.0,) + (0.5,) * depth, 0.0)\n"
    ),
}

WRONG_MESSAGE = "expected"
