"""Iterative linearisation: K = 1 is gradient descent, K = inf is training the linearised network,
in between the model is exactly affine in the parameter change, and both paths agree.

Every identity is checked in float64 on several modules (an MLP, a convolutional network, a
module with odd parameter shapes, a frozen parameter, a buffer and a matrix-valued output, tied
weights, and batch norm in training mode), full batch and minibatch, MSE and cross-entropy:
tolerances are float64 rounding accumulated over the steps (1e-10), float32 ones 1e-5.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, jacrev

from ntk_lib import MLP, data, empirical_ntk, iterative
from ntk_lib.convnet import ConvNet
from ntk_lib.dynamics import DivergenceError, mse_loss
from ntk_lib.linearize import linearize

F64 = torch.float64
TIGHT = {"rtol": 1e-10, "atol": 1e-10}


class Odd(nn.Module):
    """Parameters of shapes (), (3,), (4, 3, 2); a frozen parameter; a buffer; output (N, 2, 3)."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(3)
        self.scale = nn.Parameter(torch.tensor(0.7, dtype=F64))
        self.shift = nn.Parameter(torch.randn(3, generator=gen, dtype=F64))
        self.core = nn.Parameter(torch.randn(4, 3, 2, generator=gen, dtype=F64) / 2)
        self.frozen = nn.Parameter(torch.randn(4, generator=gen, dtype=F64), requires_grad=False)
        self.register_buffer("mix", torch.randn(2, 2, generator=gen, dtype=F64))

    def forward(self, x):
        h = torch.tanh(
            torch.einsum("ni,ijk->njk", x + self.frozen, self.core) + self.shift[:, None]
        )
        return (self.scale * (h @ self.mix) + h.sum(1, keepdim=True)).transpose(1, 2)


class Tied(nn.Module):
    """An autoencoder-like model whose readout reuses the first layer's weight (tied parameters)."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(4)
        self.w = nn.Parameter(torch.randn(5, 4, generator=gen, dtype=F64) / 2)
        self.b = nn.Parameter(torch.zeros(5, dtype=F64))
        self.dec = nn.Linear(5, 4, bias=False, dtype=F64)
        self.dec.weight = self.w  # shared: appears once in named_parameters()

    def forward(self, x):
        return F.linear(torch.tanh(F.linear(x, self.w) + self.b), self.dec.weight.T)


class Embed(nn.Module):
    """Integer inputs, an embedding, layer norm, dropout (in eval mode), an unused parameter."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(6)
        self.embed = nn.Embedding(10, 6, dtype=F64)
        self.norm = nn.LayerNorm(6, dtype=F64)
        self.readout = nn.Linear(6, 3, dtype=F64)
        self.unused = nn.Parameter(torch.ones(2, dtype=F64))
        self.dropout = nn.Dropout(0.5)
        self.eval()

    def forward(self, x):
        return self.readout(self.dropout(torch.tanh(self.norm(self.embed(x)).mean(1))))


class BatchNormNet(nn.Module):
    """Batch norm in training mode: outputs depend on the whole batch; running stats are buffers."""

    def __init__(self, d_in=4, d_out=3) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.l1 = nn.Linear(d_in, 8, dtype=F64)
        self.bn = nn.BatchNorm1d(8, dtype=F64)
        self.l2 = nn.Linear(8, d_out, dtype=F64)

    def forward(self, x):
        return self.l2(torch.relu(self.bn(self.l1(x))))


def _regression(n=24, d=4, d_out=None, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=F64)
    shape = (n,) if d_out is None else (n, *d_out) if isinstance(d_out, tuple) else (n, d_out)
    return x, torch.randn(shape, generator=gen, dtype=F64)


def _classes(n=40, seed=0):
    x, y, _, _ = data.digits(n, 10, seed=seed, dtype=F64, device="cpu")
    return x, y


def _cases():
    """(name, model factory, x, y, loss) for the identities."""
    xc, yc = _classes()
    return [
        (
            "mlp-ce",
            lambda: MLP(
                64, 16, 2, d_out=10, parametrization="standard", seed=0, dtype=F64, device="cpu"
            ),
            xc,
            yc,
            "cross_entropy",
        ),
        (
            "mlp-mse-scalar",
            lambda: MLP(4, 16, 2, activation="tanh", sigma_b=0.3, seed=1, dtype=F64, device="cpu"),
            *_regression(),
            "mse",
        ),
        ("conv-ce", lambda: ConvNet(3, seed=2, dtype=F64, device="cpu"), xc, yc, "cross_entropy"),
        ("odd-mse", Odd, *_regression(d_out=(2, 3)), "mse"),
        ("tied-mse", Tied, *_regression(d_out=4), "mse_sum"),
        (
            "embed-mse",
            Embed,
            torch.randint(0, 10, (24, 5), generator=torch.Generator().manual_seed(7)),
            _regression(d_out=3)[1],
            "mse",
        ),
    ]


CASES = _cases()
IDS = [c[0] for c in CASES]
LOSSES = {
    "mse": mse_loss,
    "mse_sum": lambda f, y: 0.5 * (f - y).pow(2).sum(),
    "cross_entropy": F.cross_entropy,
}


def _lr(base, loss, x):
    """The summed loss (the paper's 1/2 ||f - y||^2) needs lr divided by the number of points."""
    return base / len(x) if loss == "mse_sum" else base


def _batches(n, batch_size, steps, seed=0):
    if batch_size is None:
        return [None] * steps
    return list(iterative.minibatches(n, batch_size, steps, seed))


def _sgd_reference(
    module, params, x, y, loss, lr, steps, batch_size, momentum=0.0, weight_decay=0.0
):
    """Plain torch training of ``module`` (network or Taylor model) with the same batch order."""
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    losses = []
    for idx in _batches(len(x), batch_size, steps):
        xb, yb = (x, y) if idx is None else (x[idx], y[idx])
        opt.zero_grad()
        value = LOSSES[loss](module(xb), yb)
        value.backward()
        opt.step()
        losses.append(value.item())
    return torch.tensor(losses, dtype=F64)


def _flat(module):
    return torch.cat([p.detach().reshape(-1) for p in module.parameters() if p.requires_grad])


@pytest.mark.parametrize("batch_size", [None, 8])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_k1_is_gradient_descent(case, batch_size):
    _, make, x, y, loss = case
    lr = _lr(0.3, loss, x)
    ref = make()
    ref_losses = _sgd_reference(ref, ref.parameters(), x, y, loss, lr, 50, batch_size)
    for path in ("jvp", "materialize"):
        model = make()
        h = iterative.train(
            model, x, y, loss=loss, lr=lr, K=1, steps=50, batch_size=batch_size, path=path
        )
        torch.testing.assert_close(_flat(model), _flat(ref), **TIGHT)
        torch.testing.assert_close(h.loss, ref_losses, **TIGHT)
        assert h.refresh_steps == list(range(50)) and h.n_refreshes == 49 and h.path == path


def test_k1_is_gradient_descent_in_float32_and_with_momentum_and_weight_decay():
    x, y, _, _ = data.digits(60, 10, device="cpu")

    def make():
        return MLP(64, 32, 2, d_out=10, parametrization="standard", seed=0, device="cpu")

    sgd = {"momentum": 0.9, "weight_decay": 1e-3}
    for batch_size in (None, 16):
        ref, model = make(), make()
        _sgd_reference(ref, ref.parameters(), x, y, "cross_entropy", 0.2, 50, batch_size, **sgd)
        iterative.train(
            model, x, y, loss="cross_entropy", lr=0.2, K=1, steps=50, batch_size=batch_size, **sgd
        )
        assert model.layers[0].weight.dtype == torch.float32
        torch.testing.assert_close(_flat(model), _flat(ref), rtol=1e-5, atol=1e-6)


def test_k1_with_batch_norm_matches_gradient_descent_and_its_running_statistics():
    """A point's output depends on the batch: no point-by-point Jacobian, but K = 1 is still GD,
    and the buffers see exactly GD's forward passes."""
    x, y = _regression(d_out=3)
    ref, model = BatchNormNet(), BatchNormNet()
    _sgd_reference(ref, ref.parameters(), x, y, "mse", 0.1, 30, 8)
    iterative.train(model, x, y, loss="mse", lr=0.1, K=1, steps=30, batch_size=8)
    torch.testing.assert_close(_flat(model), _flat(ref), **TIGHT)
    torch.testing.assert_close(model.bn.running_mean, ref.bn.running_mean, **TIGHT)
    assert model.bn.num_batches_tracked == ref.bn.num_batches_tracked == 30
    with pytest.raises(ValueError, match="materialize.*point by point"):
        iterative.train(BatchNormNet(), x, y, loss="mse", lr=0.1, K=5, steps=3, path="materialize")
    h = iterative.train(
        BatchNormNet(), x, y, loss="mse", lr=0.1, K=5, steps=3, path="auto", jacobian_memory=2**30
    )
    assert h.path == "jvp"


@pytest.mark.parametrize("batch_size", [None, 8])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_k_infinite_is_training_the_linearised_network(case, batch_size):
    _, make, x, y, loss = case
    lr, steps = _lr(0.3, loss, x), 30
    lin = linearize(make())
    ref_losses = _sgd_reference(lin, lin.theta, x, y, loss, lr, steps, batch_size, momentum=0.5)
    for path in ("jvp", "materialize"):
        model = make()
        h = iterative.train(
            model,
            x,
            y,
            loss=loss,
            lr=lr,
            K=math.inf,
            steps=steps,
            batch_size=batch_size,
            path=path,
            momentum=0.5,
        )
        torch.testing.assert_close(
            _flat(model), torch.cat([p.detach().reshape(-1) for p in lin.theta]), **TIGHT
        )
        torch.testing.assert_close(h.loss, ref_losses, **TIGHT)
        assert h.refresh_steps == [0] and h.n_refreshes == 0
        torch.testing.assert_close(iterative.taylor_model(model, h)(x), lin(x), **TIGHT)


def _jacobian(model, x):
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    theta = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}

    def f(flat):
        params, i = {}, 0
        for n in names:
            params[n] = flat[i : i + theta[n].numel()].reshape(theta[n].shape)
            i += theta[n].numel()
        return functional_call(model, params, (x,)).reshape(-1)

    return jacrev(f)(torch.cat([theta[n].reshape(-1) for n in names]))


@pytest.mark.parametrize("batch_size", [None, 8])
@pytest.mark.parametrize("path", ["jvp", "materialize"])
@pytest.mark.parametrize("case", [CASES[1], CASES[3]], ids=[IDS[1], IDS[3]])
def test_between_refreshes_the_model_is_affine_in_the_parameter_change(case, path, batch_size):
    """Every output the loss sees is f(x; theta_s) + J_s(x) (theta_t - theta_s), J_s the explicit
    Jacobian at the last refresh (a second-order term would show at 1e-4 here)."""
    _, make, x, y, _ = case
    model, seen = make(), []

    def loss(out, target):
        seen.append((out.detach().clone(), _flat(model)))
        return mse_loss(out, target)

    K, steps = 4, 12
    iterative.train(
        model, x, y, loss=loss, lr=0.5, K=K, steps=steps, batch_size=batch_size, path=path
    )
    probe = make()
    for t, (idx, (out, theta)) in enumerate(zip(_batches(len(x), batch_size, steps), seen)):
        s = K * (t // K)
        _load(probe, seen[s][1])
        xb = x if idx is None else x[idx]
        expected = probe(xb).reshape(-1) + _jacobian(probe, xb) @ (theta - seen[s][1])
        torch.testing.assert_close(out.reshape(-1), expected, rtol=1e-11, atol=1e-11)
        if t % K:
            _load(probe, theta)
            assert (
                probe(xb).reshape(-1) - expected
            ).abs().max() > 1e-8  # the network itself has moved on


def _load(model, flat):
    with torch.no_grad():
        i = 0
        for p in (p for p in model.parameters() if p.requires_grad):
            p.copy_(flat[i : i + p.numel()].reshape(p.shape))
            i += p.numel()


@pytest.mark.parametrize("batch_size", [None, 8])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_materialized_path_equals_jvp_path(case, batch_size):
    _, make, x, y, loss = case
    runs = []
    for path in ("jvp", "materialize"):
        model = make()
        h = iterative.train(
            model,
            x,
            y,
            loss=loss,
            lr=_lr(0.1, loss, x),
            K=7,
            steps=40,
            batch_size=batch_size,
            path=path,
            momentum=0.9,
        )
        runs.append((_flat(model), h.loss))
    torch.testing.assert_close(runs[0][0], runs[1][0], **TIGHT)
    torch.testing.assert_close(runs[0][1], runs[1][1], **TIGHT)


class _Square(torch.autograd.Function):
    """x^2 with a first derivative only (once_differentiable) and a forward-mode rule."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        ctx.save_for_forward(x)
        return x * x

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        return 2 * ctx.saved_tensors[0] * g

    @staticmethod
    def jvp(ctx, t):
        return 2 * ctx.saved_tensors[0] * t


class Squares(nn.Module):
    def __init__(self, custom: bool) -> None:
        super().__init__()
        torch.manual_seed(8)
        self.l1, self.l2, self.custom = (
            nn.Linear(3, 4, dtype=F64),
            nn.Linear(4, 2, dtype=F64),
            custom,
        )

    def forward(self, x):
        h = torch.tanh(self.l1(x))
        return self.l2(_Square.apply(h) if self.custom else h * h)


def test_custom_autograd_functions_without_double_backward():
    """Reverse over reverse would be silently wrong through a once_differentiable function: the
    full-batch path must notice and use dual numbers, giving the plain model's result."""
    x, y = _regression(n=10, d=3, d_out=2)
    runs = [Squares(custom) for custom in (True, False)]
    for model in runs:
        iterative.train(model, x, y, loss="mse", lr=0.3, K=3, steps=9, path="jvp")
    torch.testing.assert_close(_flat(runs[0]), _flat(runs[1]), **TIGHT)


def test_adaptive_schedule_spans_gradient_descent_to_linearised_training():
    """tol -> 0 refreshes at every step (GD); tol -> inf never (K = inf); in between it refreshes
    exactly at the steps whose drift exceeded tol."""
    _, make, x, y, loss = CASES[0]
    ref = {}
    for K in (1, math.inf):
        model = make()
        iterative.train(model, x, y, loss=loss, lr=0.5, K=K, steps=30)
        ref[K] = _flat(model)
    for tol, K in ((1e-12, 1), (1e12, math.inf)):
        model = make()
        iterative.train(model, x, y, loss=loss, lr=0.5, K="adaptive", tol=tol, steps=30)
        torch.testing.assert_close(_flat(model), ref[K], **TIGHT)
    model = make()
    h = iterative.train(model, x, y, loss=loss, lr=0.5, K="adaptive", tol=0.05, steps=60)
    assert 2 <= h.n_refreshes <= 40
    triggered = [t for t, d in enumerate(h.drift.tolist()) if d > 0.05]
    assert triggered == h.refresh_steps[1:]
    assert h.drift.shape == (60,) and h.drift[0] == 0


def test_history_records_refreshes_evaluations_and_ntk_change():
    x, y = _regression(n=30)
    xt, yt = _regression(n=10, seed=1)
    model = MLP(4, 32, 1, sigma_b=0.2, seed=0, dtype=F64, device="cpu")
    theta0 = empirical_ntk(model, x[:6])
    h = iterative.train(
        model,
        x,
        y,
        loss="mse",
        lr=0.5,
        K=10,
        steps=35,
        x_test=xt,
        y_test=yt,
        eval_every=10,
        ntk_probe=6,
    )
    assert h.refresh_steps == [0, 10, 20, 30] and h.n_refreshes == 3 and not h.diverged
    assert (
        h.eval_steps == [0, 10, 20, 30, 35]
        and h.test_loss.shape == (5,)
        and h.test_accuracy is None
    )
    assert h.loss.shape == (35,) and h.accuracy is None and h.drift is None
    assert h.ntk_change_between_refreshes.shape == (4,) and h.ntk_change_since_init.shape == (4,)
    theta_t = empirical_ntk(model, x[:6])
    assert h.ntk_change_since_init[-1].item() == pytest.approx(
        ((theta_t - theta0).norm() / theta0.norm()).item(), rel=1e-9
    )
    # test loss at a refresh step is the network's own
    model2 = MLP(4, 32, 1, sigma_b=0.2, seed=0, dtype=F64, device="cpu")
    h2 = iterative.train(model2, x, y, loss="mse", lr=0.5, K=10, steps=10)
    assert h.test_loss[1].item() == pytest.approx(mse_loss(model2(xt), yt).item(), rel=1e-10)
    assert h.expansion_point.keys() == dict(model.named_parameters()).keys() and h2.n_refreshes == 0


def test_classification_records_accuracy():
    x, y, xt, yt = data.digits(100, 50, dtype=F64, device="cpu")
    model = MLP(64, 32, 1, d_out=10, parametrization="standard", seed=0, dtype=F64, device="cpu")
    h = iterative.train(
        model, x, y, loss="cross_entropy", lr=0.5, K=10, steps=40, x_test=xt, y_test=yt
    )
    assert h.accuracy.shape == (40,) and h.test_accuracy.shape == (5,)
    assert (
        h.accuracy[-1] > 0.9
        and h.test_accuracy[-1] > 0.6
        and h.test_accuracy[-1] > h.test_accuracy[0] + 0.3
    )
    one_hot = F.one_hot(y, 10).to(F64)
    h = iterative.train(model, x, one_hot, loss="mse", lr=0.5, K=10, steps=3)
    assert h.accuracy.shape == (3,)


def test_critical_lr_is_2d_over_the_top_ntk_eigenvalue():
    """Power iteration on J J^T against the eigenvalues of the explicit kernel (scalar output:
    empirical_ntk; matrix-valued output: the Jacobian of all N * 6 outputs)."""
    x, _ = _regression(n=20)
    mlp = MLP(4, 64, 1, sigma_b=0.2, seed=0, dtype=F64, device="cpu")
    lam = torch.linalg.eigvalsh(empirical_ntk(mlp, x))[-1].item()
    assert iterative.critical_lr(mlp, x) == pytest.approx(2 * 20 / lam, rel=1e-8)
    odd = Odd()
    jac = _jacobian(odd, x)
    lam = torch.linalg.eigvalsh(jac @ jac.T)[-1].item()
    assert iterative.critical_lr(odd, x, loss="mse_sum") == pytest.approx(2 / lam, rel=1e-8)
    with pytest.raises(ValueError, match="loss must be one of"):
        iterative.critical_lr(odd, x, loss="cross_entropy")


def test_linearised_training_diverges_above_the_closed_form_threshold():
    """K = inf with the MSE loss is GD on a linear model: the residual's top mode is multiplied by
    1 - lr lam_max / D each step, so training converges below lr = 2D / lam_max and diverges above
    (here 10 one-hot outputs per digit)."""
    x, labels, _, _ = data.digits(40, 10, dtype=F64, device="cpu")
    y = F.one_hot(labels, 10).to(F64)
    def make():
        return MLP(64, 32, 2, d_out=10, parametrization="standard", seed=0, dtype=F64, device="cpu")

    lr_max = iterative.critical_lr(make(), x)
    h = iterative.train(make(), x, y, loss="mse", lr=0.95 * lr_max, K=math.inf, steps=400)
    assert not h.diverged and h.loss[-1] < 0.5 * h.loss[0]
    with pytest.raises(DivergenceError, match="diverged at step") as info:
        iterative.train(make(), x, y, loss="mse", lr=1.05 * lr_max, K=math.inf, steps=400,
                        on_divergence="raise")
    h = iterative.train(make(), x, y, loss="mse", lr=1.05 * lr_max, K=math.inf, steps=400)
    assert h.diverged_at == info.value.step > 5 and len(h.loss) == h.diverged_at
    assert torch.isfinite(h.loss).all()


def test_divergence_is_judged_against_the_targets_scale_and_checked_after_the_last_step():
    x = torch.randn(20, 4, dtype=F64, generator=torch.Generator().manual_seed(0))
    make = lambda: MLP(4, 16, 1, seed=0, dtype=F64, device="cpu")  # noqa: E731
    # Targets the network already fits: loss[0] = 0, yet a tiny weight decay is no divergence.
    model = make()
    with torch.no_grad():
        y = model(x).clone()
    h = iterative.train(model, x, y, loss="mse", lr=0.1, K=1, steps=5, weight_decay=1e-3)
    assert not h.diverged and h.loss[0] == 0
    # One huge step: the loss it produces is seen only after the loop, and still reported.
    y = torch.randn(20, dtype=F64, generator=torch.Generator().manual_seed(1))
    with pytest.raises(DivergenceError, match="step 1"):
        iterative.train(make(), x, y, loss="mse", lr=1e6, K=math.inf, steps=1, on_divergence="raise")
    h = iterative.train(make(), x, y, loss="mse", lr=1e6, K=math.inf, steps=1, x_test=x, y_test=y)
    assert h.diverged_at == 1 and torch.isfinite(h.test_loss).all()


class BatchNormConv(nn.Module):
    """Batch norm inside a convolutional network: materializing pays, but is not per point."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.c1 = nn.Conv2d(1, 16, 3, padding=1, dtype=F64)
        self.bn = nn.BatchNorm2d(16, dtype=F64)
        self.c2 = nn.Conv2d(16, 16, 3, padding=1, dtype=F64)
        self.out = nn.Linear(16, 10, dtype=F64)

    def forward(self, x):
        h = torch.relu(self.c2(torch.relu(self.bn(self.c1(x.reshape(-1, 1, 8, 8))))))
        return self.out(h.mean((2, 3)))


def test_auto_fallback_from_materialize_leaves_the_running_statistics_as_jvp_does():
    x, y, _, _ = data.digits(16, 10, dtype=F64, device="cpu")
    models = {path: BatchNormConv() for path in ("jvp", "auto")}
    for path, model in models.items():
        h = iterative.train(model, x, y, loss="cross_entropy", lr=0.1, K=math.inf, steps=30,
                            path=path, jacobian_memory=2**30)
        assert h.path == "jvp"
    assert int(models["auto"].bn.num_batches_tracked) == int(models["jvp"].bn.num_batches_tracked) == 1
    torch.testing.assert_close(models["auto"].bn.running_mean, models["jvp"].bn.running_mean, **TIGHT)


def test_auto_path_materializes_only_where_it_pays():
    """Weight sharing makes the convolutional network's forward pass cost ~30x its parameter count:
    over a 100-step window the two matrix-vector products win; over 10 steps building J doesn't."""
    x, y, _, _ = data.digits(16, 10, dtype=F64, device="cpu")
    conv = lambda: ConvNet(16, seed=0, dtype=F64, device="cpu")  # noqa: E731

    def path(model, **kw):
        return iterative.train(
            model, x, y, **{"loss": "cross_entropy", "lr": 0.1, "K": 100, "steps": 100, **kw}
        ).path

    assert path(conv()) == "materialize"
    assert path(conv(), K=10) == path(conv(), steps=10) == path(conv(), K=1) == "jvp"
    assert path(conv(), jacobian_memory=2**20) == "jvp"  # J is 160 x 5050 x 8 bytes = 6.5 MB
    assert (
        path(MLP(64, 64, 2, d_out=10, seed=0, dtype=F64, device="cpu")) == "jvp"
    )  # 10 outputs, no sharing


def test_minibatches_are_epochs_of_disjoint_batches():
    batches = list(iterative.minibatches(10, 3, 7, seed=1))
    assert len(batches) == 7 and all(b.shape == (3,) for b in batches)
    for epoch in (batches[:3], batches[3:6]):
        assert len(set(torch.cat(epoch).tolist())) == 9
    assert all(torch.equal(a, b) for a, b in zip(batches, iterative.minibatches(10, 3, 7, seed=1)))


def test_train_rejects_bad_input():
    x, y = _regression(n=10)
    model = MLP(4, 8, 1, seed=0, dtype=F64, device="cpu")
    ok = {"loss": "mse", "lr": 0.1, "K": 2, "steps": 1}

    def call(**kw):
        args = {**ok, **kw}
        return iterative.train(model, args.pop("x", x), args.pop("y", y), **args)

    for K in (0, -3, -math.inf):
        with pytest.raises(ValueError, match="K must be a positive integer"):
            call(K=K)
    for K in (2.5, math.nan, "often"):
        with pytest.raises(ValueError, match="K must be"):
            call(K=K)
    for K in (None, True, [2]):
        with pytest.raises(TypeError, match="K must be"):
            call(K=K)
    with pytest.raises(ValueError, match="K must be"):
        call(K=torch.tensor(2.5))
    with pytest.raises(ValueError, match="loss must return a scalar"):
        call(loss=lambda out, target: (out - target) ** 2)
    with pytest.raises(ValueError, match="ntk_probe must be at most"):
        call(ntk_probe=11)
    for lr in (0.0, -1.0, math.inf):
        with pytest.raises(ValueError, match="lr must be"):
            call(lr=lr)
    with pytest.raises(ValueError, match="at least one point|same number"):
        call(x=x[:0], y=y[:0])
    with pytest.raises(ValueError, match="same number"):
        call(y=y[:5])
    with pytest.raises(ValueError, match="batch_size"):
        call(batch_size=11)
    with pytest.raises(ValueError, match="batch_size"):
        call(batch_size=0)
    with pytest.raises(ValueError, match="needs tol"):
        call(K="adaptive")
    with pytest.raises(ValueError, match="tol is only used"):
        call(tol=0.1)
    with pytest.raises(ValueError, match="path must be one of"):
        call(path="fast")
    with pytest.raises(ValueError, match="loss must be one of"):
        call(loss="hinge")
    with pytest.raises(TypeError, match="loss must be"):
        call(loss=3)
    with pytest.raises(ValueError, match="steps"):
        call(steps=-1)
    with pytest.raises(ValueError, match="x_test and y_test"):
        call(x_test=x)
    with pytest.raises(TypeError, match="model must be"):
        iterative.train("net", x, y, **ok)
    xc, yc = _classes()
    with pytest.raises(ValueError, match="one-hot"):
        iterative.train(MLP(64, 8, 1, d_out=10, seed=0, dtype=F64, device="cpu"), xc, yc, **ok)


@pytest.mark.gpu
@pytest.mark.parametrize("path", ["jvp", "materialize"])
@pytest.mark.parametrize("batch_size", [None, 8])
def test_cuda_matches_cpu(path, batch_size):
    _, make, x, y, loss = CASES[2]
    runs = []
    for device in ("cpu", "cuda"):
        model = make()
        h = iterative.train(
            model,
            x,
            y,
            loss=loss,
            lr=0.3,
            K=5,
            steps=20,
            batch_size=batch_size,
            path=path,
            device=device,
            x_test=x,
            y_test=y,
        )
        assert next(model.parameters()).device.type == device
        runs.append((_flat(model).cpu(), h.loss, h.test_loss))
    for a, b in zip(*runs):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
