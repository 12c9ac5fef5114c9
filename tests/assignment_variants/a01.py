"""Submissions for assignment 01 that tests/test_assignments.py grades (see its docstring)."""

# Cheats that pass every visible check and must lose the hidden points.
HARDCODED = {
    # Returns the visible network's kernel whatever it is given.
    "ex01-ntk-by-hand-solution": (
        "def ntk_by_hand(model, x):\n"
        "    return ntk_lib.empirical_ntk(tiny, x_tiny)\n"
    ),
    # The value at the visible width, for every width.
    "ex01-relative-std-solution": (
        "def predicted_relative_std(width):\n"
        "    return 0.433\n"
    ),
    # Plausible numbers for the visible check of the form, the NTK case everywhere.
    "ex01-predict-solution": (
        "def predicted_exponents(parametrization):\n"
        "    return 0.0, -0.5\n"
    ),
    # Measures the visible case (NTK) whatever parametrization it is asked for.
    "ex01-measure-solution": (
        "def measure_exponents(parametrization, widths, seeds):\n"
        "    means, stds = [], []\n"
        "    for n in widths:\n"
        "        diag = torch.stack([ntk_lib.empirical_ntk(ntk_lib.MLP(\n"
        "            4, n, 1, parametrization='ntk', seed=s, dtype=F64), x_probe)[0, 0]\n"
        "            for s in seeds])\n"
        "        means.append(diag.mean().item())\n"
        "        stds.append(diag.std().item())\n"
        "    return (ntk_lib.plotting.loglog_slope(widths, means)[0],\n"
        "            ntk_lib.plotting.loglog_slope(widths, stds)[0])\n"
    ),
}

# Plausible mistakes that must lose points, with a message saying what was expected.
WRONG = {
    # Forgets the fourth moments: the relative std of an average of n terms "is 1/sqrt(n)".
    "ex01-relative-std-solution": (
        "def predicted_relative_std(width):\n"
        "    return 1 / math.sqrt(width)\n"
    ),
    # Forgets that the standard parametrization multiplies the readout's share by n.
    "ex01-predict-solution": (
        "def predicted_exponents(parametrization):\n"
        "    return 0.0, -0.5\n"
    ),
    # Biased sum instead of J J^T: a factor 2 on the kernel.
    "ex01-ntk-by-hand-solution": (
        "def ntk_by_hand(model, x):\n"
        "    return 2 * ntk_lib.empirical_ntk(model, x)\n"
    ),
}

WRONG_MESSAGE = "expected"
