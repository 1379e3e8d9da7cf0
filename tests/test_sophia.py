"""SophiaG (optim.py): golden steps by hand, SOUL's code as a reference, state round trips, loop wiring."""

import math

import pytest
import torch

from safealign.config import build
from safealign.errors import ConfigError
from safealign.checkpoints import latest_checkpoint
from safealign.loop import TrainConfig, build_optimizer, make_accelerator, train
from safealign.methods.base import trainable_parameters
from safealign.methods.sft import SFT, SFTConfig
from safealign.models import load_tokenizer
from safealign.optim import SophiaG
from tests.helpers import logged_losses, lora_model, stream


def _step(opt, p, grad):
    p.grad = torch.tensor(grad, dtype=p.dtype)
    opt.step()


def test_one_step_by_hand():
    # lr 0.01, wd 0.1, β = (0.9, 0.95), ρ·bs = 0.04·5120 = 204.8; fresh state: h = 0.05·g², m = 0.1·g
    p = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64, requires_grad=True)
    opt = SophiaG([p], lr=0.01, betas=(0.9, 0.95), rho=0.04, weight_decay=0.1)
    _step(opt, p, [0.5, -0.005, 0.0])
    # θ0: 1·(1 − 0.001) − 0.01·min(0.05 / (204.8·0.0125), 1) = 0.999 − 0.01·0.01953125
    # θ1: |m| / (ρ·bs·h) = 5e-4 / 2.56e-4 > 1, clipped: −2·0.999 + 0.01 (sign(m) = −1)
    # θ2: g = 0 → m = 0 → no move beyond the weight decay
    torch.testing.assert_close(p.detach(), torch.tensor([0.9988046875, -1.988, 0.4995], dtype=torch.float64),
                               rtol=0, atol=1e-12)
    state = opt.state[p]
    torch.testing.assert_close(state["exp_avg"], torch.tensor([0.05, -0.0005, 0.0], dtype=torch.float64))
    torch.testing.assert_close(state["hessian"], torch.tensor([0.0125, 1.25e-6, 0.0], dtype=torch.float64))
    assert float(state["step"]) == 1.0


def _by_hand(theta, grads, lr, wd, b1, b2, rho, k, bs=5120):
    """Plain-float transcription of the module docstring, per coordinate."""
    m, h = [0.0] * len(theta), [0.0] * len(theta)
    theta = list(theta)
    trace = []
    for t, g in enumerate(grads, start=1):
        for i in range(len(theta)):
            if (t - 1) % k == 0:
                h[i] = b2 * h[i] + (1 - b2) * g[i] ** 2
            theta[i] *= 1 - lr * wd
            m[i] = b1 * m[i] + (1 - b1) * g[i]
            ratio = min(abs(m[i]) / (rho * bs * h[i] + 1e-15), 1.0)
            theta[i] -= lr * math.copysign(1.0, m[i]) * ratio if m[i] != 0 else 0.0
        trace.append((list(theta), list(m), list(h)))
    return trace


def test_hessian_ema_every_k_steps_and_three_steps_by_hand():
    grads = [[0.3, -0.2], [1.0, 0.01], [-0.5, 0.4], [0.2, -0.3]]
    p = torch.tensor([0.7, -0.4], dtype=torch.float64, requires_grad=True)
    opt = SophiaG([p], lr=0.05, betas=(0.8, 0.9), rho=0.01, weight_decay=0.2, hessian_interval=2)
    expected = _by_hand([0.7, -0.4], grads, lr=0.05, wd=0.2, b1=0.8, b2=0.9, rho=0.01, k=2)
    hessians = []
    for g, (theta, m, h) in zip(grads, expected):
        _step(opt, p, g)
        hessians.append(opt.state[p]["hessian"].clone())
        torch.testing.assert_close(p.detach(), torch.tensor(theta, dtype=torch.float64), rtol=0, atol=1e-12)
        torch.testing.assert_close(opt.state[p]["exp_avg"], torch.tensor(m, dtype=torch.float64))
        torch.testing.assert_close(opt.state[p]["hessian"], torch.tensor(h, dtype=torch.float64))
    # k = 2: the EMA moves at steps 1 and 3 only, h3 = 0.9·h1 + 0.1·g3²
    assert torch.equal(hessians[0], hessians[1]) and torch.equal(hessians[2], hessians[3])
    torch.testing.assert_close(hessians[2], 0.9 * hessians[0] + 0.1 * torch.tensor([0.25, 0.16], dtype=torch.float64))


def test_every_coordinate_moves_at_most_lr():
    torch.manual_seed(0)
    p = torch.randn(1000, dtype=torch.float64, requires_grad=True)
    opt = SophiaG([p], lr=1e-3, rho=0.04, weight_decay=0.0)
    for _ in range(5):
        before = p.detach().clone()
        _step(opt, p, (torch.randn(1000, dtype=torch.float64) * 10 ** torch.empty(1000).uniform_(-6, 1)).tolist())
        delta = (p.detach() - before).abs()
        assert delta.max() <= 1e-3 * (1 + 1e-12)
        assert (delta > 1e-3 * (1 - 1e-12)).any()  # small gradients: |m| ≫ ρ·bs·h, the step is clipped to exactly lr
        assert (delta < 1e-3 * 0.5).any()  # large gradients: a Newton-like step below lr


def _soul_reference(theta, grads, lr, wd, b1, b2, rho, bs=5120):
    """OPTML-Group/SOUL src/optim/sophia.py SophiaG.step, transcribed: update_hessian(), update_exp_avg(), then
    _single_tensor_sophiag, which decays the weights and updates exp_avg a second time before the clipped step."""
    m, h = torch.zeros_like(theta), torch.zeros_like(theta)
    theta = theta.clone()
    for g in grads:
        h = h * b2 + (1 - b2) * g * g
        m = m * b1 + (1 - b1) * g
        theta = theta * (1 - lr * wd)
        m = m * b1 + (1 - b1) * g
        ratio = (m.abs() / (rho * bs * h + 1e-15)).clamp(None, 1)
        theta = theta - lr * m.sign() * ratio
    return theta


def test_beta1_squared_reproduces_souls_double_momentum_update():
    torch.manual_seed(1)
    theta0 = torch.randn(50, dtype=torch.float64)
    grads = [torch.randn(50, dtype=torch.float64) * 1e-2 for _ in range(6)]
    want = _soul_reference(theta0, grads, lr=1e-3, wd=0.1, b1=0.9, b2=0.95, rho=0.04)
    p = theta0.clone().requires_grad_(True)
    opt = SophiaG([p], lr=1e-3, betas=(0.9 ** 2, 0.95), rho=0.04, weight_decay=0.1)
    for g in grads:
        p.grad = g.clone()
        opt.step()
    torch.testing.assert_close(p.detach(), want, rtol=0, atol=1e-12)


def test_state_dict_round_trip_continues_exactly(tmp_path):
    torch.manual_seed(2)
    grads = [torch.randn(2, 3) for _ in range(6)]
    a = torch.randn(2, 3, requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    opt = SophiaG([{"params": [a], "weight_decay": 0.1}, {"params": [b], "weight_decay": 0.0}], lr=1e-2, hessian_interval=2)

    def run(opt, a, b, gs):
        for g in gs:
            a.grad, b.grad = g.clone(), g[0].clone()
            opt.step()

    run(opt, a, b, grads[:3])
    torch.save(opt.state_dict(), tmp_path / "opt.pt")
    a2, b2 = a.detach().clone().requires_grad_(True), b.detach().clone().requires_grad_(True)
    opt2 = SophiaG([{"params": [a2], "weight_decay": 0.1}, {"params": [b2], "weight_decay": 0.0}], lr=1e-2, hessian_interval=2)
    opt2.load_state_dict(torch.load(tmp_path / "opt.pt", weights_only=True))
    assert set(opt2.state[a2]) == {"step", "exp_avg", "hessian"} and float(opt2.state[a2]["step"]) == 3.0
    run(opt, a, b, grads[3:])
    run(opt2, a2, b2, grads[3:])
    assert torch.equal(a, a2) and torch.equal(b, b2)
    for x, y in ((a, a2), (b, b2)):
        for key in ("exp_avg", "hessian", "step"):
            assert torch.equal(opt.state[x][key], opt2.state[y][key])


def _sft_run(tiny_llama, out_dir, steps, stop_after=None, **overrides):
    tok = load_tokenizer(str(tiny_llama))
    cfg = TrainConfig(**{"optimizer": "sophiag", "lr": 5e-3, "max_steps": steps, "batch_size": 2, "log_every": 1, **overrides})
    return train(lora_model(tiny_llama), SFT(SFTConfig(), steps), {"train": stream(tok, 8, 2)}, cfg, out_dir,
                    make_accelerator(cfg), seed=0, stop_after=stop_after)



def test_loop_builds_sophiag_with_the_adamw_param_groups(tiny_llama):
    model = lora_model(tiny_llama)
    opt = build_optimizer(model, TrainConfig(optimizer="sophiag", weight_decay=0.1, lr=1e-3, hessian_interval=3))
    assert isinstance(opt, SophiaG)
    adamw = build_optimizer(model, TrainConfig(weight_decay=0.1, lr=1e-3))
    assert [len(g["params"]) for g in opt.param_groups] == [len(g["params"]) for g in adamw.param_groups]
    assert [g["weight_decay"] for g in opt.param_groups] == [g["weight_decay"] for g in adamw.param_groups]
    group = opt.param_groups[0]
    assert (group["betas"], group["rho"], group["hessian_interval"], group["bs"]) == ((0.9, 0.95), 0.04, 3, 5120)


def test_resume_with_sophiag_reproduces_an_uninterrupted_run(tiny_llama, tmp_path):
    # hessian_interval 2 and a stop after an odd step: the resumed run must pick up the per-parameter step count
    full = _sft_run(tiny_llama, tmp_path / "full", 8, hessian_interval=2)
    _sft_run(tiny_llama, tmp_path / "resumed", 8, stop_after=3, hessian_interval=2)
    saved = torch.load(latest_checkpoint(tmp_path / "resumed") / "optimizer.pt", weights_only=True)
    some = next(iter(saved["state"].values()))
    assert set(some) == {"step", "exp_avg", "hessian"} and float(some["step"]) == 3.0
    resumed = _sft_run(tiny_llama, tmp_path / "resumed", 8, hessian_interval=2)
    assert logged_losses(tmp_path / "resumed") == pytest.approx(logged_losses(tmp_path / "full"), rel=1e-5)
    a, b = trainable_parameters(full["model"]), trainable_parameters(resumed["model"])
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5)


def test_sophiag_lowers_the_sft_loss(tiny_llama, tmp_path):
    # a random 2-layer model with LoRA r=4 learns slowly with any optimizer (AdamW at this lr: 5.94 -> 5.72)
    _sft_run(tiny_llama, tmp_path, 20, lr=2e-2)
    losses = logged_losses(tmp_path)
    assert len(losses) == 20 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.1
    assert all(b < a for a, b in zip(losses, losses[1:]))


def test_unknown_optimizer_is_a_config_error():
    with pytest.raises(ConfigError, match=r"train\.optimizer: 'sgd' is not one of adamw, sophiag"):
        build(TrainConfig, {"optimizer": "sgd"}, "train")
    with pytest.raises(ConfigError, match="sophia_betas"):
        build(TrainConfig, {"optimizer": "sophiag", "sophia_betas": [0.9, 1.0]}, "train")
    assert build(TrainConfig, {"optimizer": "sophiag"}, "train").sophia_rho == 0.04
