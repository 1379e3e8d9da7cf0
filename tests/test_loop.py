import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from safealign.checkpoints import latest_checkpoint
from safealign.loop import TrainConfig, build_scheduler, make_accelerator, train
from safealign.methods.base import trainable_parameters
from safealign.methods.lisa import Lisa, LisaConfig
from safealign.methods.sft import SFT, SFTConfig
from safealign.models import load_tokenizer
from tests.helpers import logged_losses, lora_model, stream


def _weights(model):
    return {k: v.detach().clone() for k, v in trainable_parameters(model).items()}


def test_sft_changes_trainable_and_not_frozen_weights(tiny_llama, tmp_path):
    tok = load_tokenizer(str(tiny_llama))
    model = lora_model(tiny_llama)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    before = _weights(model)
    cfg = TrainConfig(lr=1e-2, max_steps=5, batch_size=2, log_every=1)
    result = train(model, SFT(SFTConfig(), 5), {"train": stream(tok, 8, 2)}, cfg, tmp_path, make_accelerator(cfg), seed=0)
    assert all(math.isfinite(x) for x in logged_losses(tmp_path))
    after = _weights(result["model"])
    assert any(not torch.equal(before[k], after[k]) for k in before if "lora_B" in k)
    for n, p in result["model"].named_parameters():
        if not p.requires_grad:
            assert torch.equal(frozen[n], p.detach())


def test_until_stops_training_at_the_first_check_that_says_so(tiny_llama, tmp_path):
    tok = load_tokenizer(str(tiny_llama))
    asked = []

    def until(step, model):
        asked.append((step, model.training))
        model.eval()  # a check evaluates; training must carry on in train mode
        return step >= 4

    cfg = TrainConfig(lr=1e-2, max_steps=10, batch_size=2, log_every=2)
    result = train(lora_model(tiny_llama), SFT(SFTConfig(), 10), {"train": stream(tok, 8, 2)}, cfg, tmp_path,
                   make_accelerator(cfg), seed=0, until=until)
    assert asked == [(2, True), (4, True)]
    assert result["steps"] == 4 and len(logged_losses(tmp_path)) == 2


def test_grad_accumulation_matches_one_big_batch(tiny_llama, tmp_path):
    tok = load_tokenizer(str(tiny_llama))
    finals = []
    for batch, accum in ((4, 1), (2, 2)):
        model = lora_model(tiny_llama, dropout=0.0)
        cfg = TrainConfig(lr=1e-2, max_steps=4, batch_size=batch, grad_accum=accum, log_every=1, shuffle=False)
        # equal-length examples: the mean of two half-batch token means equals the full batch's token mean
        s = stream(tok, 16, batch)
        s.batch_size = batch
        result = train(model, SFT(SFTConfig(), 4), {"train": s}, cfg, tmp_path / f"b{batch}", make_accelerator(cfg), seed=0)
        finals.append(_weights(result["model"]))
    for k in finals[0]:
        torch.testing.assert_close(finals[0][k], finals[1][k], atol=1e-5, rtol=1e-4)


def test_schedules_warm_up_then_decay():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    cfg = TrainConfig(warmup_ratio=0.2, scheduler="cosine")
    sched = build_scheduler(opt, cfg, 10)
    lrs = []
    for _ in range(10):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[0] == 0.0 and lrs[1] == pytest.approx(0.5) and lrs[2] == pytest.approx(1.0)
    assert lrs[6] == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 8)))
    const = build_scheduler(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0), TrainConfig(), 10)
    assert const.get_last_lr()[0] == 1.0


def _lisa_run(tiny_llama, out_dir, stop_after=None):
    tok = load_tokenizer(str(tiny_llama))
    model = lora_model(tiny_llama)  # LoRA dropout on: resume must restore the RNG too
    cfg = TrainConfig(lr=5e-3, max_steps=10, batch_size=2, log_every=1)
    streams = {"train": stream(tok, 6, 2, output="positive"), "guide": stream(tok, 6, 2, seed=1, output="sorry")}
    method = Lisa(LisaConfig(rho=1.0, alignment_step=2, finetune_step=3, proximal_warmup=0.1), 10)
    result = train(model, method, streams, cfg, out_dir, make_accelerator(cfg), seed=0, stop_after=stop_after)
    return result, method


def test_resume_reproduces_an_uninterrupted_run_and_keeps_lisa_anchors(tiny_llama, tmp_path):
    full, _ = _lisa_run(tiny_llama, tmp_path / "full")
    _, stopped_method = _lisa_run(tiny_llama, tmp_path / "resumed", stop_after=6)
    ckpt = latest_checkpoint(tmp_path / "resumed")
    assert ckpt.name == "step-5"
    saved = torch.load(ckpt / "method.pt", weights_only=True)
    for state in ("alignment", "finetune"):
        for k, v in stopped_method.anchors[state].items():
            assert torch.equal(saved["anchors"][state][k], v)
    resumed, _ = _lisa_run(tiny_llama, tmp_path / "resumed")
    assert logged_losses(tmp_path / "resumed") == pytest.approx(logged_losses(tmp_path / "full"), rel=1e-5)
    a, b = _weights(full["model"]), _weights(resumed["model"])
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5)


TWO_PROC = r'''
import sys, json, torch
from pathlib import Path
from safealign.loop import TrainConfig, make_accelerator, train
from safealign.methods.base import trainable_parameters
from safealign.methods.sft import SFT, SFTConfig
from safealign.models import LoraConfig, add_lora, load_causal_lm, load_tokenizer
from tests.helpers import features
from safealign.data.streams import BatchStream
model_dir, out, batch = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
tok = load_tokenizer(model_dir)
torch.manual_seed(0)
model = add_lora(load_causal_lm(model_dir), LoraConfig(r=4, alpha=8, dropout=0.0))
cfg = TrainConfig(lr=1e-2, max_steps=4, batch_size=batch, log_every=1)
acc = make_accelerator(cfg)
s = BatchStream(features(tok, 16), batch, tok.pad_token_id, 0, rank=acc.process_index, world_size=acc.num_processes)
result = train(model, SFT(SFTConfig(), 4), {"train": s}, cfg, out, acc, seed=0)
if acc.is_main_process:
    torch.save({k: v.detach().cpu() for k, v in trainable_parameters(result["model"]).items()}, out / "final.pt")
'''


def test_two_processes_match_one_process(tiny_llama, tmp_path):
    script = tmp_path / "two_proc.py"
    script.write_text(TWO_PROC)
    env_root = str(Path(__file__).resolve().parents[1])
    # accelerate treats a torchrun CPU job as multi-process only with ACCELERATE_USE_CPU (`accelerate launch --cpu` sets it)
    # the caller's PYTHONPATH kept after the root: a checkout's src/ stays what the subprocesses import
    pythonpath = os.pathsep.join(p for p in (env_root, os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": pythonpath, "ACCELERATE_USE_CPU": "1"}
    one = subprocess.run([sys.executable, str(script), str(tiny_llama), str(tmp_path / "one"), "4"],
                         cwd=env_root, env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
                          str(script), str(tiny_llama), str(tmp_path / "two"), "2"],
                         cwd=env_root, env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    a = torch.load(tmp_path / "one" / "final.pt", weights_only=True)
    b = torch.load(tmp_path / "two" / "final.pt", weights_only=True)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)
