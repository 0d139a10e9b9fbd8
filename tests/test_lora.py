"""The hand-written LoRA layer, its gradient identities, its agreement with peft, and parameter budgets."""
import copy

import pytest
import torch
from torch import nn

from lora_leak_lib import gradients, lora, models
from lora_leak_lib.models import resolve

TOLERANCE = 1e-5


def _layer(rank=4, alpha=8.0, d_in=12, d_out=10, random_B=True, seed=0) -> lora.LoRALinear:
    torch.manual_seed(seed)
    layer = lora.LoRALinear(nn.Linear(d_in, d_out).double(), rank, alpha).double()
    if random_B:
        nn.init.normal_(layer.B, std=0.5)
    return layer


def _loss(y: torch.Tensor) -> torch.Tensor:
    return (y.tanh() * torch.linspace(-1, 1, y.shape[-1], dtype=y.dtype, device=y.device)).sum()


def test_layer_starts_equal_to_the_frozen_layer():
    layer = _layer(random_B=False)
    x = torch.randn(3, 12, dtype=torch.float64)
    assert torch.equal(layer(x), layer.base(x))
    assert layer.A.shape == (4, 12) and layer.B.shape == (10, 4) and float(layer.B.detach().abs().max()) == 0.0
    assert float(layer.A.detach().abs().max()) > 0
    assert [n for n, p in layer.named_parameters() if p.requires_grad] == ["A", "B"]
    assert layer.scaling == 2.0


def test_forward_is_the_merged_weight():
    layer = _layer()
    x = torch.randn(2, 5, 12, dtype=torch.float64)
    merged = x @ layer.merged_weight().T + layer.base.bias
    assert gradients.relative_error(layer(x), merged) < 1e-12


def _G_from_plain_linear(layer: lora.LoRALinear, x: torch.Tensor) -> torch.Tensor:
    """``G = dL/dW`` of a plain Linear that holds the merged weight, on the same input."""
    plain = nn.Linear(layer.base.in_features, layer.base.out_features).double()
    with torch.no_grad():
        plain.weight.copy_(layer.merged_weight())
        plain.bias.copy_(layer.base.bias)
    (G,) = torch.autograd.grad(_loss(plain(x)), plain.weight)
    return G


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradient_identities_hold_to_1e_5(seed):
    layer = _layer(rank=3 + seed, seed=seed)
    x = torch.randn(2, 7, 12, dtype=torch.float64)
    dA, dB = torch.autograd.grad(_loss(layer(x)), [layer.A, layer.B])
    G = _G_from_plain_linear(layer, x)
    predicted_dA, predicted_dB = lora.lora_gradients(G, layer.A.detach(), layer.B.detach(), layer.scaling)
    assert torch.allclose(predicted_dB, layer.scaling * G @ layer.A.detach().T)  # dL/dB = (alpha/r)·G·Aᵀ
    assert torch.allclose(predicted_dA, layer.scaling * layer.B.detach().T @ G)  # dL/dA = (alpha/r)·Bᵀ·G
    assert gradients.relative_error(predicted_dA, dA) < TOLERANCE
    assert gradients.relative_error(predicted_dB, dB) < TOLERANCE
    assert float(dA.abs().max()) > 1e-3 and float(dB.abs().max()) > 1e-3  # the check is not vacuous


def test_first_step_has_zero_dA_but_not_zero_dB():
    layer = _layer(random_B=False)
    x = torch.randn(4, 12, dtype=torch.float64)
    dA, dB = torch.autograd.grad(_loss(layer(x)), [layer.A, layer.B])
    assert float(dA.abs().max()) == 0.0
    assert float(dB.abs().max()) > 1e-3


def test_lora_gradients_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shapes do not fit"):
        lora.lora_gradients(torch.zeros(10, 12), torch.zeros(4, 12), torch.zeros(10, 3), 2.0)


@pytest.mark.parametrize("rank", [0, -1, 2.5, True])
def test_bad_rank_is_one_clear_error(rank):
    with pytest.raises(ValueError, match="positive integer"):
        lora.LoRALinear(nn.Linear(4, 4), rank, 8)
    with pytest.raises(ValueError, match="positive integer"):
        lora.lora_config(rank)


def test_hand_written_layer_matches_peft_outputs_and_gradients():
    """Copy A and B of a real tiny-bert query projection under peft into LoRALinear: same y, same grads."""
    torch.manual_seed(0)
    model = lora.apply_lora(models.resolve("tiny-bert").load(seed=0), rank=8).double()
    peft_layer = gradients.find_lora_layer(model, "layer.0.attention.self.query")
    nn.init.normal_(peft_layer.lora_B["default"].weight, std=0.1)
    mine = lora.LoRALinear(copy.deepcopy(peft_layer.base_layer), 8, 16.0).double()
    with torch.no_grad():
        mine.A.copy_(peft_layer.lora_A["default"].weight)
        mine.B.copy_(peft_layer.lora_B["default"].weight)
    assert mine.scaling == peft_layer.scaling["default"]
    x = torch.randn(1, 9, 128, dtype=torch.float64, device=mine.A.device)
    y_peft, y_mine = peft_layer(x), mine(x)
    assert gradients.relative_error(y_mine, y_peft) < 1e-12
    peft_grads = torch.autograd.grad(_loss(y_peft), [peft_layer.lora_A["default"].weight,
                                                      peft_layer.lora_B["default"].weight])
    my_grads = torch.autograd.grad(_loss(y_mine), [mine.A, mine.B])
    for theirs, ours in zip(peft_grads, my_grads):
        assert gradients.relative_error(ours, theirs) < 1e-12


def test_apply_lora_trains_only_adapters_and_head():
    model = lora.apply_lora(models.resolve("tiny-bert").load(seed=0), rank=4)
    names = gradients.trainable_names(model)
    assert len(names) == 2 * 2 * 2 + 2  # 2 layers × (query, value) × (A, B) + head weight and bias
    assert all("lora_" in n or "classifier" in n for n in names)
    query = gradients.find_lora_layer(model, "layer.1.attention.self.query")
    assert query.scaling["default"] == 2.0  # alpha defaults to 2·rank
    assert isinstance(query.lora_dropout["default"], nn.Identity)  # dropout 0 by default
    frozen_head = lora.apply_lora(models.resolve("tiny-bert").load(seed=0), rank=4, train_head=False)
    assert not any("classifier" in n for n in gradients.trainable_names(frozen_head))


def test_parameter_budget_matches_a_real_peft_model():
    budget = lora.parameter_budget(resolve("tiny-bert"), rank=8)
    model = models.resolve("tiny-bert").load(seed=0)
    assert budget.total == lora.count_parameters(model)
    assert budget.trainable == lora.count_parameters(lora.apply_lora(model, rank=8), trainable_only=True)
    head = 128 * 2 + 2
    assert budget.trainable - head == lora.lora_parameter_count(128, 2, rank=8)


def test_parameter_budget_grows_linearly_with_rank_and_is_small_for_bert_base():
    head = 768 * 2 + 2
    r8, r16 = (lora.parameter_budget(resolve("bert-base-uncased"), rank=r) for r in (8, 16))
    assert r8.total == r16.total == 109_483_778
    assert r16.trainable - head == 2 * (r8.trainable - head) == lora.lora_parameter_count(768, 12, 16)
    assert r8.percent < 0.3
    without_head = lora.parameter_budget(resolve("bert-base-uncased"), rank=8, train_head=False)
    assert without_head.trainable == r8.trainable - head
