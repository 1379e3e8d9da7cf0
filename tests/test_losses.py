import math

import pytest
import torch

from safealign.losses.regularizers import proximal, squared_distance
from safealign.losses.sft import batch_token_mean, sequence_nll


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


def test_batch_token_mean_weighs_tokens_not_samples():
    assert batch_token_mean(torch.tensor([1.0, 9.0]), torch.tensor([1, 3])).item() == pytest.approx(2.5)


def test_proximal_is_rho_half_squared_distance():
    params = {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([[3.0]])}
    anchors = {"a": torch.tensor([0.0, 0.0]), "b": torch.tensor([[1.0]])}
    # ||Δ||² = 1 + 4 + 4 = 9 ; rho/2 · 9 with rho = 3 -> 13.5
    assert proximal(params, anchors, 3.0).item() == pytest.approx(13.5)
    assert squared_distance(params, anchors) == pytest.approx(9.0)
    assert proximal(params, params, 3.0).item() == 0.0
