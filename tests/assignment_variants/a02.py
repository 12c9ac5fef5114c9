"""Submissions for assignment 02 that tests/test_assignments.py grades (see its docstring)."""

HARDCODED = {
    # The visible case's value (depth 2, sigma_b = 0.5) for every depth and bias.
    "ex02-ntk-diagonal-solution": (
        "def relu_ntk_diagonal(depth, sigma_b):\n"
        "    return 7.5\n"
    ),
    "ex02-predict-solution": (
        "def predicted_output_variance(depth, sigma_b):\n"
        "    return 2.75\n"
    ),
    # Measures the visible setting whatever it is asked for.
    "ex02-measure-solution": (
        "def measure_output_variance(depth, sigma_b, n_nets, seed0):\n"
        "    with torch.no_grad():\n"
        "        f = torch.cat([ntk_lib.MLP(2, 64, 2, sigma_b=0.5, seed=s, dtype=F64, **RELU)(x0)\n"
        "                       .reshape(1) for s in range(0, 400)])\n"
        "    return (f**2).mean().item(), (f**2).std().item() / math.sqrt(400)\n"
    ),
    # The exact probability of the visible case and its textbook standard error.
    "ex02-monte-carlo-solution": (
        "def mc_both_positive(k11, k22, k12, n, seed):\n"
        "    p = 1 / 3\n"
        "    return p, math.sqrt(p * (1 - p) / n)\n"
    ),
}

WRONG = {
    # Forgets that the biases accumulate in K^l from layer to layer.
    "ex02-ntk-diagonal-solution": (
        "def relu_ntk_diagonal(depth, sigma_b):\n"
        "    return (depth + 1) * (2.0 + sigma_b**2)\n"
    ),
    # Forgets the first layer's bias.
    "ex02-predict-solution": (
        "def predicted_output_variance(depth, sigma_b):\n"
        "    return 2.0 + depth * sigma_b**2\n"
    ),
    # Divides by n instead of sqrt(n) for the standard error.
    "ex02-monte-carlo-solution": (
        "def mc_both_positive(k11, k22, k12, n, seed):\n"
        "    z = torch.randn(2, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)\n"
        "    u = math.sqrt(k11) * z[0]\n"
        "    v = k12 / math.sqrt(k11) * z[0] + math.sqrt(k22 - k12**2 / k11) * z[1]\n"
        "    s = ((u > 0) & (v > 0)).to(torch.float64)\n"
        "    return s.mean().item(), s.std().item() / n\n"
    ),
}

WRONG_MESSAGE = "expected"
