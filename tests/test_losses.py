import math
import os

import pytest
import torch

from safealign.losses.regularizers import proximal, squared_distance
from safealign.losses.sft import IGNORE_INDEX, batch_token_mean, sequence_nll, token_log_probs
from safealign.measure import StageMeter


def test_sequence_nll_matches_hand_computation():
    # One sequence of 3 tokens over a vocabulary of 2; only the last position is labelled.
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0], [0.0, 0.0]]])  # (1, 3, 2)
    labels = torch.tensor([[-100, -100, 0]])  # token 3 is predicted from position 2: p(0) = 3/4
    nll_sum, n = sequence_nll(logits, labels)
    assert n.tolist() == [1]
    assert nll_sum.item() == pytest.approx(-math.log(0.75), abs=1e-6)


def test_sequence_nll_ignores_padding_and_prompt():
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[-100, -100, 1, 2, -100], [-100, 3, 4, 5, 6]])
    nll_sum, n = sequence_nll(logits, labels)
    assert n.tolist() == [2, 4]
    logp = torch.log_softmax(logits, -1)
    expected0 = -(logp[0, 1, 1] + logp[0, 2, 2])
    assert nll_sum[0].item() == pytest.approx(expected0.item(), abs=1e-5)


def _plain_token_log_probs(logits, labels):  # the computation before issue #21: one fp32 pass over everything
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].float().transpose(1, 2), labels[:, 1:],
                                            ignore_index=IGNORE_INDEX, reduction="none")
    return -nll


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunked_token_log_probs_equal_the_plain_ones_with_their_gradients(dtype):
    torch.manual_seed(0)
    logits = torch.randn(3, 37, 101).to(dtype).requires_grad_()
    labels = torch.randint(0, 101, (3, 37))
    labels[0, :5] = IGNORE_INDEX
    ours, mask = token_log_probs(logits, labels, slices=5)
    plain = _plain_token_log_probs(logits, labels)
    assert ours.dtype == torch.float32 and torch.equal(mask, labels[:, 1:] != IGNORE_INDEX)
    assert torch.allclose(ours, plain, atol=1e-6, rtol=0)
    (grad_ours,) = torch.autograd.grad((ours * mask).sum(), logits)
    (grad_plain,) = torch.autograd.grad((plain * mask).sum(), logits)
    # bf16: both are float32 work rounded once to bf16, so at most one bf16 step apart
    assert torch.allclose(grad_ours.float(), grad_plain.float(), atol=1e-6, rtol=0 if dtype == torch.float32 else 2**-7)
    with torch.no_grad():
        assert torch.allclose(token_log_probs(logits, labels)[0], ours.detach(), atol=1e-6, rtol=0)


def _peak_rise_mb(fn) -> float:
    import gc

    gc.collect()
    before = int(next(line for line in open("/proc/self/status") if line.startswith("VmRSS:")).split()[1]) / 1024
    with StageMeter() as meter:
        fn()
    return meter.result()["peak_mem_mb"] - before


def test_log_probs_at_qwens_vocabulary_cost_no_more_memory_than_the_gradient_of_the_logits():
    # forward and backward at V = 152,064: the logits' gradient (one logits-sized tensor) is unavoidable; the
    # float32 copy and the saved log-softmax (two more, in the plain computation) must not exist.
    import ctypes

    # Peak RSS sees what the allocator holds, not what is live: glibc keeps freed blocks under its (growing) mmap
    # threshold. A fixed 1 MiB threshold returns every large tensor's memory when it is freed.
    if ctypes.CDLL(None).mallopt(-3, 2**20) != 1:  # M_MMAP_THRESHOLD
        pytest.skip("not glibc: cannot fix the allocator's mmap threshold")
    torch.manual_seed(0)
    vocab, logits = 152_064, torch.randn(2, 128, 152_064).requires_grad_()
    labels = torch.randint(0, vocab, (2, 128))
    logits_mb = logits.numel() * 4 / 2**20

    def forward_backward(compute):
        def run():
            logps = compute(logits, labels)
            logps = logps[0] if isinstance(logps, tuple) else logps
            logps.sum().backward()
            logits.grad = None
        return run

    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("peak RSS cannot be reset here (no /proc/self/clear_refs)")
    forward_backward(token_log_probs)()  # warm the allocator on both sides alike
    forward_backward(_plain_token_log_probs)()
    ours = _peak_rise_mb(forward_backward(token_log_probs))
    plain = _peak_rise_mb(forward_backward(_plain_token_log_probs))
    assert ours <= 1.1 * logits_mb, (ours, plain, logits_mb)
    assert plain > 1.5 * logits_mb, (ours, plain, logits_mb)  # the measurement sees the copies it should


def test_batch_token_mean_weighs_tokens_not_samples():
    assert batch_token_mean(torch.tensor([1.0, 9.0]), torch.tensor([1, 3])).item() == pytest.approx(2.5)


def test_proximal_is_rho_half_squared_distance():
    params = {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([[3.0]])}
    anchors = {"a": torch.tensor([0.0, 0.0]), "b": torch.tensor([[1.0]])}
    # ||Δ||² = 1 + 4 + 4 = 9 ; rho/2 · 9 with rho = 3 -> 13.5
    assert proximal(params, anchors, 3.0).item() == pytest.approx(13.5)
    assert squared_distance(params, anchors) == pytest.approx(9.0)
    assert proximal(params, params, 3.0).item() == 0.0
