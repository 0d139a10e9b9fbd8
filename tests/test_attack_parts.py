"""Gradient distances, the embedding-gradient token set and the exact leak of a linear layer."""
import pytest
import torch
from torch import nn

from lora_leak_lib.attacks import distances, linear
from lora_leak_lib.attacks.embedding_leak import sequence_length, token_set


def test_distances_are_zero_on_equal_gradients_and_positive_otherwise():
    g = [torch.tensor([1.0, -2.0]), torch.tensor([[0.5]])]
    for name in distances.DISTANCES:
        assert float(distances.gradient_distance(g, g, name)) == pytest.approx(0.0, abs=1e-6)
    other = [torch.tensor([2.0, -2.0]), torch.tensor([[0.5]])]
    assert float(distances.gradient_distance(other, g, "l2")) == pytest.approx(1.0)
    assert float(distances.gradient_distance(other, g, "tag", alpha=0.5)) == pytest.approx(1.5)


def test_cosine_ignores_scale_but_not_direction():
    g = [torch.tensor([1.0, 2.0])]
    assert float(distances.gradient_distance([3 * g[0]], g, "cosine")) == pytest.approx(0.0, abs=1e-6)
    assert float(distances.gradient_distance([-g[0]], g, "cosine")) == pytest.approx(2.0)
    zero = [torch.zeros(2)]  # a zero shared tensor has no direction: its dummy should vanish
    assert float(distances.gradient_distance(g, zero, "cosine")) == pytest.approx(5.0)


def test_distance_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown distance"):
        distances.gradient_distance([torch.ones(1)], [torch.ones(1)], "l3")
    with pytest.raises(ValueError, match="shape"):
        distances.gradient_distance([torch.ones(2)], [torch.ones(3)])
    with pytest.raises(ValueError, match="dummy gradients"):
        distances.gradient_distance([torch.ones(1)], [])


def test_check_update_reports_names_and_shapes():
    expected = {"a": (2,), "b": (1, 3)}
    distances.check_update_shapes({"a": torch.ones(2), "b": torch.ones(1, 3)}, expected)
    with pytest.raises(ValueError, match="1 missing"):
        distances.check_update_shapes({"a": torch.ones(2)}, expected)
    with pytest.raises(ValueError, match="unexpected 'c'"):
        distances.check_update_shapes({"a": torch.ones(2), "b": torch.ones(1, 3), "c": torch.ones(1)}, expected)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        distances.check_update_shapes({"a": torch.ones(3), "b": torch.ones(1, 3)}, expected)


def test_token_set_and_length_from_embedding_gradients():
    embedding = nn.Embedding(10, 4)
    positions = nn.Embedding(8, 4)
    ids = torch.tensor([[1, 7, 3, 7, 2]])
    out = embedding(ids) + positions(torch.arange(5))
    out.pow(2).sum().backward()
    update = {"bert.embeddings.word_embeddings.weight": embedding.weight.grad,
              "bert.embeddings.position_embeddings.weight": positions.weight.grad}
    assert token_set(update) == [1, 2, 3, 7]
    assert sequence_length(update) == 5
    with pytest.raises(ValueError, match="full fine-tuning"):
        token_set({"classifier.bias": torch.ones(2)})


def test_linear_leak_recovers_the_input_exactly():
    torch.manual_seed(0)
    layer = nn.Linear(6, 3)
    x = torch.randn(6)
    nn.functional.cross_entropy(layer(x)[None], torch.tensor([1])).backward()
    recovered = linear.linear_leak(layer.weight.grad, layer.bias.grad)
    assert torch.allclose(recovered, x, atol=1e-5)
    row = layer.weight.grad[0] / layer.bias.grad[0]  # any one row works too
    assert torch.allclose(row, x, atol=1e-5)


def test_linear_leak_errors():
    with pytest.raises(ValueError, match="same layer"):
        linear.linear_leak(torch.ones(3, 2), torch.ones(4))
    with pytest.raises(ValueError, match="zero"):
        linear.linear_leak(torch.ones(3, 2), torch.zeros(3))
    with pytest.raises(ValueError, match="matrix"):
        linear.linear_leak(torch.ones(3), torch.ones(3))
