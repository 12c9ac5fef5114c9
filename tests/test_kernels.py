"""Closed-form NNGP/NTK against an arbitrary-precision reference and Monte Carlo; the empirical
NTK's three methods against each other and, as the width grows, against the closed form."""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest
import torch

from ntk_lib import MLP, _checks, data, empirical_ntk, kernels, nngp_ntk
from ntk_lib.plotting import loglog_slope

F64 = torch.float64


# --- an independent reference: the recursion in 40-digit arithmetic, one pair at a time ---


def _reference(x, xp, depth, activation, sw, sb):
    """(nngp, ntk) for one pair of inputs, with mpmath at 40 digits (textbook formulas)."""
    mp.mp.dps = 40
    sw2, sb2 = mp.mpf(sw) ** 2, mp.mpf(sb) ** 2
    x, xp = [mp.mpf(float(v)) for v in x], [mp.mpf(float(v)) for v in xp]
    d = len(x)
    k11 = sw2 * mp.fsum(a * a for a in x) / d + sb2
    k22 = sw2 * mp.fsum(a * a for a in xp) / d + sb2
    k12 = sw2 * mp.fsum(a * b for a, b in zip(x, xp)) / d + sb2
    ntk = k12
    for _ in range(depth):
        if activation == "relu":
            p = mp.sqrt(k11 * k22)
            theta = mp.acos(max(min(k12 / p, 1), -1)) if p > 0 else mp.pi / 2
            e_phi = p * (mp.sin(theta) + (mp.pi - theta) * mp.cos(theta)) / (2 * mp.pi)
            e_dphi = (mp.pi - theta) / (2 * mp.pi)
            k11, k22 = k11 / 2, k22 / 2
        elif activation == "erf":
            a1, a2 = 1 + 2 * k11, 1 + 2 * k22
            e_phi = 2 / mp.pi * mp.asin(2 * k12 / mp.sqrt(a1 * a2))
            e_dphi = 4 / mp.pi / mp.sqrt(a1 * a2 - 4 * k12**2)
            k11, k22 = 2 / mp.pi * mp.asin(2 * k11 / a1), 2 / mp.pi * mp.asin(2 * k22 / a2)
        else:
            e_phi, e_dphi = k12, 1
        k11, k22 = sw2 * k11 + sb2, sw2 * k22 + sb2
        k12 = sw2 * e_phi + sb2
        ntk = k12 + sw2 * e_dphi * ntk
    return float(k12), float(ntk)


def _pairs():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(6, 5, generator=gen, dtype=F64)
    x[1] = x[0] + 1e-7 * torch.randn(5, generator=gen, dtype=F64)  # nearly equal: the hard case
    x[2] = 2.5 * x[0]  # parallel, different norm
    x[3] = -x[4]  # opposite
    return x


@pytest.mark.parametrize("activation", ["relu", "erf", "identity"])
@pytest.mark.parametrize(("depth", "sw", "sb"), [(1, 1.0, 0.0), (3, 1.5, 0.3), (5, math.sqrt(2), 0.1)])
def test_closed_form_matches_40_digit_reference(activation, depth, sw, sb):
    x = _pairs()
    nngp, ntk = nngp_ntk(x, depth=depth, activation=activation, sigma_w=sw, sigma_b=sb)
    for i in range(len(x)):
        for j in range(len(x)):
            k_ref, t_ref = _reference(x[i], x[j], depth, activation, sw, sb)
            scale = math.sqrt(abs(nngp[i, i] * nngp[j, j]))
            assert abs(nngp[i, j].item() - k_ref) <= 1e-13 * scale, (i, j)
            t_scale = math.sqrt(abs(ntk[i, i] * ntk[j, j]))
            assert abs(ntk[i, j].item() - t_ref) <= 1e-13 * t_scale, (i, j)


def test_relu_diagonal_exact_at_depth_5():
    """On the diagonal theta = 0 exactly: K^{l+1} = sw^2 K^l / 2 + sb^2, Theta^{l+1} = K^{l+1} + sw^2 Theta^l / 2."""
    x = data.sphere(300, 16, seed=0) * torch.linspace(0.1, 3.0, 300, dtype=F64)[:, None]
    sw, sb = 1.3, 0.2
    nngp, ntk = nngp_ntk(x, depth=5, sigma_w=sw, sigma_b=sb)
    k = sw**2 * (x * x).sum(1) / 16 + sb**2
    t = k.clone()
    for _ in range(5):
        k = sw**2 * k / 2 + sb**2
        t = k + sw**2 * t / 2
    assert ((nngp.diagonal() - k) / k).abs().max() < 1e-13
    assert ((ntk.diagonal() - t) / t).abs().max() < 1e-13
    # Same points passed as x2 (different floating-point path): still exact.
    _, ntk_cross = nngp_ntk(x[:50], x[:80], depth=5, sigma_w=sw, sigma_b=sb)
    assert ((ntk_cross.diagonal() - t[:50]) / t[:50]).abs().max() < 1e-13


def test_naive_arccos_would_fail_near_the_diagonal():
    """Why the care is needed: the naive formula is off by ~1e-9 where ours is exact to ~1e-15."""
    x = _pairs()[:2]
    t_ref = _reference(x[0], x[1], 5, "relu", 1.0, 0.0)[1]
    ours = nngp_ntk(x, depth=5)[1][0, 1].item()
    assert abs(ours - t_ref) < 1e-14 * t_ref
    k11, k22 = (x[0] @ x[0]).item() / 5, (x[1] @ x[1]).item() / 5
    k12, t = (x[0] @ x[1]).item() / 5, (x[0] @ x[1]).item() / 5
    for _ in range(5):  # the textbook recursion in float64
        p = math.sqrt(k11 * k22)
        th = math.acos(min(k12 / p, 1.0))
        k12 = p * (math.sin(th) + (math.pi - th) * math.cos(th)) / (2 * math.pi)
        t = k12 + (math.pi - th) / (2 * math.pi) * t
        k11, k22 = k11 / 2, k22 / 2
    assert abs(t - t_ref) > 1e-11 * t_ref


@pytest.mark.parametrize("activation", ["relu", "erf", "identity"])
def test_zero_norm_inputs(activation):
    x = torch.tensor([[0.0, 0.0, 0.0], [1.0, -2.0, 0.5], [0.0, 0.0, 0.0]], dtype=F64)
    for sb in (0.0, 0.4):
        nngp, ntk = nngp_ntk(x, depth=3, activation=activation, sigma_b=sb)
        assert torch.isfinite(nngp).all() and torch.isfinite(ntk).all()
        for i in range(3):
            for j in range(3):
                k_ref, t_ref = _reference(x[i], x[j], 3, activation, 1.0, sb)
                assert nngp[i, j].item() == pytest.approx(k_ref, abs=1e-14)
                assert ntk[i, j].item() == pytest.approx(t_ref, abs=1e-14)


def test_symmetry_and_cross_consistency():
    x = data.sphere(40, 7, seed=1)
    for activation in ("relu", "erf", "identity"):
        nngp, ntk = nngp_ntk(x, depth=3, activation=activation, sigma_b=0.2)
        assert torch.equal(nngp, nngp.T) and torch.equal(ntk, ntk.T)
        nngp2, ntk2 = nngp_ntk(x, x.clone(), depth=3, activation=activation, sigma_b=0.2)
        torch.testing.assert_close(ntk2, ntk, rtol=1e-13, atol=1e-13)
        sub = nngp_ntk(x[5:9], x[20:31], depth=3, activation=activation, sigma_b=0.2)[1]
        torch.testing.assert_close(sub, ntk[5:9, 20:31], rtol=1e-13, atol=1e-13)
        assert torch.linalg.eigvalsh(ntk).min() > -1e-10  # a kernel: positive semi-definite


@pytest.mark.parametrize("activation", ["relu", "erf"])
@pytest.mark.parametrize("layer", [1, 2, 3])
def test_each_layer_map_matches_monte_carlo(activation, layer):
    """Sample (u, v) ~ N(0, K^l) and estimate E[phi(u)phi(v)], E[phi'(u)phi'(v)]; compare with
    what the closed form puts into K^{l+1} and Theta^{l+1}. Tolerance: 5 standard errors."""
    sw, sb = 1.2, 0.3
    x = torch.tensor([[1.0, 0.5, -0.3], [0.2, -1.1, 0.9]], dtype=F64)
    k_l, t_l = nngp_ntk(x, depth=layer - 1, activation=activation, sigma_w=sw, sigma_b=sb)
    k_next, t_next = nngp_ntk(x, depth=layer, activation=activation, sigma_w=sw, sigma_b=sb)
    gen = torch.Generator().manual_seed(layer)
    uv = torch.randn(400_000, 2, generator=gen, dtype=F64) @ torch.linalg.cholesky(k_l).T
    phi = torch.relu if activation == "relu" else torch.erf
    dphi = (lambda h: (h > 0).to(F64)) if activation == "relu" else (lambda h: 2 / math.sqrt(math.pi) * torch.exp(-h * h))
    prod, dprod = phi(uv[:, 0]) * phi(uv[:, 1]), dphi(uv[:, 0]) * dphi(uv[:, 1])
    se, dse = prod.std() / math.sqrt(len(prod)), dprod.std() / math.sqrt(len(prod))
    e_phi = (k_next[0, 1] - sb**2) / sw**2
    e_dphi = (t_next[0, 1] - k_next[0, 1]) / (sw**2 * t_l[0, 1])
    assert abs(prod.mean() - e_phi) < 5 * se
    assert abs(dprod.mean() - e_dphi) < 5 * dse


# --- empirical NTK ---


def _tiny_cnn():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv1d(1, 4, 3), torch.nn.Tanh(), torch.nn.Flatten(), torch.nn.Linear(4 * 6, 1)
    ).double()


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(activation="relu", depth=2, sigma_b=0.3),
        dict(activation="erf", depth=3, sigma_w=1.5, sigma_b=0.1),
        dict(activation="tanh", depth=1),
        dict(activation="identity", depth=2, bias=False),
        dict(activation="relu", depth=0),
        dict(activation="relu", depth=2, parametrization="standard", sigma_b=0.5),
        dict(activation="relu", depth=2, width=[7, 13]),
    ],
)
def test_empirical_methods_agree_float64(kwargs):
    kwargs = {"width": 33, **kwargs}
    model = MLP(5, kwargs.pop("width"), kwargs.pop("depth"), seed=1, dtype=F64, device="cpu", **kwargs)
    x1, x2 = data.sphere(9, 5, seed=2), data.sphere(4, 5, seed=3)
    for a, b in [(x1, None), (x1, x2)]:
        ref = empirical_ntk(model, a, b, method="jacobian")
        scale = ref.abs().max()
        for method in ("structured", "ntvp", "auto"):
            assert (empirical_ntk(model, a, b, method=method) - ref).abs().max() <= 1e-10 * scale, method


def test_empirical_ntk_generic_module():
    model = _tiny_cnn()
    x = torch.randn(5, 1, 8, dtype=F64, generator=torch.Generator().manual_seed(0))
    jac = empirical_ntk(model, x, method="jacobian")
    torch.testing.assert_close(empirical_ntk(model, x, method="ntvp"), jac, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(empirical_ntk(model, x), jac, rtol=1e-10, atol=1e-12)
    # Theta(x, x) = J J^T built by hand from autograd.
    rows = []
    for xi in x:
        model.zero_grad()
        model(xi[None]).sum().backward()
        rows.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    j = torch.stack(rows)
    torch.testing.assert_close(jac, j @ j.T, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="structured"):
        empirical_ntk(model, x, method="structured")


@pytest.mark.parametrize("activation", ["relu", "erf"])
def test_empirical_ntk_converges_to_closed_form(activation):
    """Relative Frobenius error averaged over seeds falls like width^-1/2 (fluctuations of an
    average over n hidden units); the fitted slope must lie in [-0.7, -0.3]."""
    x = data.sphere(12, 4, seed=0)
    _, limit = nngp_ntk(x, depth=2, activation=activation, sigma_b=0.2)
    widths = [64, 128, 256, 512, 1024, 2048]
    errors = []
    for width in widths:
        errs = [
            (empirical_ntk(MLP(4, width, 2, activation=activation, sigma_b=0.2, seed=s, dtype=F64, device="cpu"), x) - limit).norm()
            / limit.norm()
            for s in range(12)
        ]
        errors.append(float(torch.stack(errs).mean()))
    slope, _ = loglog_slope(widths, errors)
    assert -0.7 <= slope <= -0.3, (slope, errors)
    assert errors[-1] < 0.08


def test_output_variance_matches_nngp_diagonal():
    """f(x) over random networks is Gaussian with covariance K (the NNGP). 3000 networks:
    the standard error of a variance estimate is K sqrt(2/3000) ~ 2.6%; we allow 4 of them."""
    x = torch.tensor([[1.0, 0.0, 1.0], [0.3, -1.2, 0.4]], dtype=F64)
    nngp, _ = nngp_ntk(x, depth=2, sigma_w=1.4, sigma_b=0.2)
    outs = torch.stack(
        [MLP(3, 256, 2, sigma_w=1.4, sigma_b=0.2, seed=s, dtype=F64, device="cpu")(x) for s in range(3000)]
    ).detach()
    cov = outs.T @ outs / len(outs)
    for i, j in [(0, 0), (1, 1), (0, 1)]:
        se = math.sqrt((nngp[i, i] * nngp[j, j] + nngp[i, j] ** 2) / len(outs))
        assert abs(cov[i, j] - nngp[i, j]) < 4 * se, (i, j, cov[i, j].item(), nngp[i, j].item())
    assert abs(outs.mean(0)).max() < 4 * math.sqrt(nngp.diagonal().max() / len(outs))


# --- bad input ---


def test_nngp_ntk_rejects_bad_input():
    x = torch.ones(3, 2, dtype=F64)
    with pytest.raises(ValueError, match="activation"):
        nngp_ntk(x, depth=1, activation="softplus")
    with pytest.raises(ValueError, match="sigma_w"):
        nngp_ntk(x, depth=1, sigma_w=-1.0)
    with pytest.raises(ValueError, match="sigma_b"):
        nngp_ntk(x, depth=1, sigma_b=-0.1)
    with pytest.raises(ValueError, match="depth"):
        nngp_ntk(x, depth=-1)
    with pytest.raises(TypeError, match="depth"):
        nngp_ntk(x, depth=1.5)
    with pytest.raises(ValueError, match="x2 must have 2 columns"):
        nngp_ntk(x, torch.ones(3, 4), depth=1)
    with pytest.raises(ValueError, match="x1 must be a 2-D"):
        nngp_ntk(torch.ones(3), depth=1)
    with pytest.raises(ValueError, match="x1 contains NaN"):
        nngp_ntk(torch.tensor([[float("nan"), 1.0]]), depth=1)
    with pytest.raises(ValueError, match="at least one point"):
        nngp_ntk(torch.ones(0, 2), depth=1)
    nngp, _ = nngp_ntk(np.ones((2, 2)), depth=1)  # arrays are accepted
    assert nngp.dtype == F64


def test_empirical_ntk_rejects_bad_input():
    model = MLP(3, 8, 1, seed=0, device="cpu")
    x = torch.ones(4, 3)
    with pytest.raises(ValueError, match="method"):
        empirical_ntk(model, x, method="fast")
    with pytest.raises(ValueError, match="d_in=3"):
        empirical_ntk(model, torch.ones(4, 2))
    with pytest.raises(ValueError, match="x2 must have the same per-point shape"):
        empirical_ntk(model, x, torch.ones(4, 5))
    with pytest.raises(ValueError, match="outputs"):
        empirical_ntk(model, x, outputs="trace")
    with pytest.raises(TypeError, match="model"):
        empirical_ntk(lambda t: t, x)
    with pytest.raises(ValueError, match="x1 must be a batch"):
        empirical_ntk(model, torch.ones(0, 3))


def test_empirical_ntk_refuses_non_finite_and_oversize_requests(monkeypatch):
    model = MLP(3, 8, 1, d_out=4, seed=0, device="cpu", dtype=F64)
    x = torch.ones(4, 3, dtype=F64)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="x1 contains NaN or infinite"):
            empirical_ntk(model, x.clone().fill_(bad))
        with pytest.raises(ValueError, match="x2 contains NaN or infinite"):
            empirical_ntk(model, x, torch.full((2, 3), bad, dtype=F64))
    # 10^5 points and 4 outputs: 1.6e11 entries of the full kernel cannot fit; the message
    # names the sizes and the way out, and nothing is allocated first.
    big = torch.zeros(100_000, 3, dtype=F64)
    with pytest.raises(ValueError, match=r"x1='N1=100000 points of x1 \(x2=None\)'.*K=4 outputs") as info:
        empirical_ntk(model, big)
    assert "outputs='mean'" in str(info.value)
    monkeypatch.setattr(_checks, "_free_bytes", lambda device: 2**20)  # a 1 MiB device
    with pytest.raises(ValueError, match="N2=300 points of x2"):
        empirical_ntk(model, torch.zeros(300, 3, dtype=F64), torch.zeros(300, 3, dtype=F64), outputs="mean")
    empirical_ntk(model, x, outputs="mean")  # small requests still fit


def test_empirical_ntk_refuses_batch_mixing_models_without_touching_them():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.BatchNorm1d(5), torch.nn.Linear(5, 2)).double()
    x = torch.randn(6, 3, dtype=F64)
    before = model[1].running_mean.clone()
    with pytest.raises(ValueError, match=r"BatchNorm1d in training mode.*model.eval\(\)"):
        empirical_ntk(model, x)
    assert torch.equal(model[1].running_mean, before)
    model.eval()
    ref = empirical_ntk(model, x, method="jacobian")
    torch.testing.assert_close(empirical_ntk(model, x, method="ntvp"), ref, rtol=1e-10, atol=1e-12)
    assert torch.equal(model[1].running_mean, before)
    frozen = MLP(3, 4, 1, seed=0, device="cpu").requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        empirical_ntk(frozen, x.float())


# --- many outputs ---


class _OddOutputs(torch.nn.Module):
    """Outputs of shape (N, 2, 3): six outputs per input, read in row-major order."""

    def __init__(self, d):
        super().__init__()
        torch.manual_seed(1)
        self.conv = torch.nn.Conv1d(1, 2, 3)
        self.head = torch.nn.Linear(2 * (d - 2), 6)

    def forward(self, x):
        h = torch.tanh(self.conv(x[:, None, :])).flatten(1)
        return self.head(h).reshape(-1, 2, 3)


def _per_output_jacobian(model, x):
    """(N, K, P): one torch.autograd.grad per output of every input, the plainest reference."""
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for xi in x:
        out = model(xi[None]).reshape(-1)
        rows.append(torch.stack([
            torch.cat([g.reshape(-1) for g in torch.autograd.grad(o, params, retain_graph=True)]) for o in out
        ]))
    return torch.stack(rows)


def _models_with_many_outputs():
    yield MLP(5, 11, 2, d_out=3, sigma_b=0.3, seed=2, dtype=F64, device="cpu")
    yield MLP(5, 9, 1, d_out=4, activation="erf", parametrization="mup", base_width=4, seed=3, dtype=F64, device="cpu")
    yield MLP(5, 7, 0, d_out=2, sigma_b=0.5, seed=4, dtype=F64, device="cpu")  # linear model
    partly = MLP(5, 8, 2, d_out=3, sigma_b=0.2, seed=5, dtype=F64, device="cpu")
    partly.layers[1].weight.requires_grad_(False)  # a frozen layer contributes nothing
    partly.layers[2].bias.requires_grad_(False)
    yield partly
    yield _OddOutputs(5).double()


@pytest.mark.parametrize("model", list(_models_with_many_outputs()), ids=lambda m: type(m).__name__)
def test_many_outputs_match_per_output_autograd(model):
    """Every method, "full" and "mean", x2 = None or not, against sum_p dfk/dp dfl/dp by autograd."""
    x1, x2 = data.sphere(6, 5, seed=6), data.sphere(3, 5, seed=7)
    j1, j2 = _per_output_jacobian(model, x1), _per_output_jacobian(model, x2)
    k = j1.shape[1]
    full_11 = torch.einsum("akp,blp->abkl", j1, j1)
    full_12 = torch.einsum("akp,blp->abkl", j1, j2)
    methods = ("structured", "jacobian", "ntvp", "auto") if isinstance(model, MLP) else ("jacobian", "ntvp", "auto")
    for b, ref in ((None, full_11), (x2, full_12)):
        ref_mean = ref.diagonal(dim1=2, dim2=3).mean(-1)
        for method in methods:
            full = empirical_ntk(model, x1, b, method=method)
            mean = empirical_ntk(model, x1, b, method=method, outputs="mean")
            assert full.shape == (6, len(ref[0]), k, k) and mean.shape == (6, len(ref[0]))
            torch.testing.assert_close(full, ref, rtol=1e-10, atol=1e-12, msg=method)
            torch.testing.assert_close(mean, ref_mean, rtol=1e-10, atol=1e-12, msg=method)
    symmetric = empirical_ntk(model, x1)
    assert torch.equal(symmetric, symmetric.permute(1, 0, 3, 2))  # Theta[b, a, l, k] = Theta[a, b, k, l]


def test_scalar_models_keep_the_n1_by_n2_kernel():
    """(N,) and (N, 1) outputs: the same (N1, N2) matrix whatever ``outputs`` says."""
    x = data.sphere(5, 4, seed=0)
    vec = MLP(4, 16, 2, seed=0, dtype=F64, device="cpu")
    col = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).double()
    for model in (vec, col):
        ref = empirical_ntk(model, x, method="jacobian")
        assert ref.shape == (5, 5)
        for method in ("jacobian", "ntvp", "auto"):
            for outputs in ("full", "mean"):
                torch.testing.assert_close(empirical_ntk(model, x, method=method, outputs=outputs), ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("outputs", ["full", "mean"])
def test_blocked_computation_equals_one_block(monkeypatch, outputs):
    """With a tiny memory budget every method works in blocks of points; same kernel."""
    mlp = MLP(4, 10, 2, d_out=3, sigma_b=0.1, seed=0, dtype=F64, device="cpu")
    odd = _OddOutputs(4).double()
    x1, x2 = data.sphere(11, 4, seed=1), data.sphere(7, 4, seed=2)
    refs = {
        (id(m), b is None): empirical_ntk(m, x1, b, method="jacobian", outputs=outputs)
        for m in (mlp, odd) for b in (None, x2)
    }
    monkeypatch.setattr(kernels, "_FEATURE_MEMORY", 20_000)  # a few points per block
    for m in (mlp, odd):
        for b in (None, x2):
            for method in ("structured", "jacobian", "ntvp") if m is mlp else ("jacobian", "ntvp"):
                got = empirical_ntk(m, x1, b, method=method, outputs=outputs)
                torch.testing.assert_close(got, refs[id(m), b is None], rtol=1e-10, atol=1e-12)


def test_auto_picks_by_cost():
    """Structured for an MLP; for other models the Jacobian contraction while K is small
    (its cost grows like K^2), NTK-vector products for many outputs."""
    x = torch.zeros(64, 4, dtype=F64)
    mlp = MLP(4, 8, 1, d_out=10, seed=0, dtype=F64, device="cpu")
    assert kernels._auto_method(mlp, dict(mlp.named_parameters()), 64, 64, 10, False, True) == "structured"
    net = torch.nn.Sequential(torch.nn.Linear(4, 64), torch.nn.Tanh(), torch.nn.Linear(64, 20)).double()
    params = dict(net.named_parameters())
    assert kernels._auto_method(net, params, len(x), len(x), 1, True, True) == "jacobian"
    assert kernels._auto_method(net, params, len(x), len(x), 20, True, True) == "jacobian"  # mean: O(K)
    assert kernels._auto_method(net, params, len(x), len(x), 20, False, True) == "ntvp"  # full: O(K^2)


def test_off_diagonal_output_blocks_vanish_with_width():
    """At infinite width the K x K block is Theta I_K: the off-diagonal blocks, relative to the
    diagonal ones, fall like width^-1/2 (a sum over n independent units); fitted slope in
    [-0.75, -0.3], and the diagonal blocks tend to nngp_ntk's Theta."""
    x = data.sphere(8, 4, seed=0)
    _, theta = nngp_ntk(x, depth=2)
    widths = [32, 128, 512, 2048]
    off, diag = [], []
    for n in widths:
        o, d = [], []
        for seed in range(4):
            full = empirical_ntk(MLP(4, n, 2, d_out=3, seed=seed, dtype=F64, device="cpu"), x)
            eye = torch.eye(3, dtype=F64)
            o.append((full * (1 - eye)).norm() / (full * eye).norm())
            d.append((full.diagonal(dim1=2, dim2=3) - theta[..., None]).norm() / (theta.norm() * math.sqrt(3)))
        off.append(float(torch.stack(o).mean()))
        diag.append(float(torch.stack(d).mean()))
    slope_off, _ = loglog_slope(widths, off)
    slope_diag, _ = loglog_slope(widths, diag)
    print(f"off-diagonal blocks: slope {slope_off:.2f} (predicted -0.5); diagonal vs Theta: slope {slope_diag:.2f}")
    assert -0.75 <= slope_off <= -0.3, off
    assert -0.75 <= slope_diag <= -0.3, diag
    assert off[-1] < 0.05


@pytest.mark.gpu
def test_gpu_matches_cpu():
    x = data.sphere(64, 8, seed=0)
    for activation in ("relu", "erf"):
        cpu = nngp_ntk(x, depth=4, activation=activation, sigma_b=0.1)
        gpu = nngp_ntk(x.cuda(), depth=4, activation=activation, sigma_b=0.1)
        for a, b in zip(cpu, gpu):
            torch.testing.assert_close(b.cpu(), a, rtol=1e-12, atol=1e-12)
    model = MLP(8, 256, 3, seed=0, dtype=F64, device="cpu")
    cpu = empirical_ntk(model, x)
    gpu = empirical_ntk(model.cuda(), x.cuda())
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-10, atol=1e-10)
    many = MLP(8, 256, 3, d_out=10, seed=0, dtype=F64, device="cpu")
    for outputs in ("full", "mean"):
        cpu = empirical_ntk(many, x, outputs=outputs)
        gpu = empirical_ntk(many.cuda(), x.cuda(), outputs=outputs)
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-10, atol=1e-10)
        many = many.cpu()


def test_relu_kernels_finite_for_antipodal_inputs():
    # circle(8) holds antipodal pairs whose 1 - cos rounds to 2 + eps: no NaN may come out.
    from ntk_lib import data

    _, x = data.circle(8, dtype=torch.float64)
    for depth in (1, 3):
        nngp, ntk = nngp_ntk(x, depth=depth, activation="relu")
        assert torch.isfinite(nngp).all() and torch.isfinite(ntk).all()
        assert torch.allclose(nngp, nngp.T) and torch.allclose(ntk, ntk.T)
    nngp, _ = nngp_ntk(x[[1, 5]], depth=1, activation="relu", sigma_w=2**0.5)
    assert abs(nngp[0, 1].item()) < 1e-12  # E[relu(u) relu(-u)] = 0
