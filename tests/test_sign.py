"""The sign attack on Adam deltas: what of the input span survives ``sign``, and the 1-bit certificate."""
import importlib.util
from pathlib import Path

import pytest
import torch

import lora_leak_lib as ll
from lora_leak_lib.attacks.search import input_basis
from lora_leak_lib.experiments.multi_round import Watch, watched_messages

def _research(name: str):
    """A research module of ``benchmarks/`` (not in the library), loaded from its file."""
    path = Path(__file__).resolve().parent.parent / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sign = _research("sign_attack")
TEXT = "my password is blue horse battery"


@pytest.fixture(scope="module")
def tiny():
    model = ll.models.TINY_BERT
    return model, ll.attacks.public_inputs(model, 0), model.tokenizer(TEXT)["input_ids"]


def planted_signs(x, rows, seed=0):
    """Signs of random combinations of the inputs ``x``: what an Adam step makes of ``dL/dA = s·Bᵀ·Σ δ_t x_tᵀ``."""
    weights = torch.randn(rows, x.shape[0], generator=torch.Generator().manual_seed(seed), dtype=torch.double)
    return torch.sign(weights.to(x.device) @ x)


def with_token(inputs, ids, p, token):
    wrong = list(ids)
    wrong[p] = token
    return inputs.vectors(wrong, list(range(len(ids))))


def test_one_adam_step_sends_the_gradient_signs():
    """E = 1: the delta is −lr·g/(|g| + ε), so every first-layer element has the opposite sign of the gradient."""
    model = ll.models.TINY_BERT
    grad, _ = watched_messages([TEXT], [0], model, rank=8, trained_steps=20, watch=Watch(protocol="fedsgd"), seed=0)
    adam, _ = watched_messages([TEXT], [0], model, rank=8, trained_steps=20, watch=Watch(protocol="fedavg", optimizer="adam", lr=1e-3), seed=0)
    g, delta = ll.attacks.first_layer_rows(grad[0].update), ll.attacks.first_layer_rows(adam[0].update)
    assert torch.equal(sign.sign_rows(adam[0]), -torch.sign(g))
    assert float((delta.abs() / 1e-3 - 1).abs().median()) < 0.01  # saturated: the magnitudes are gone,
    assert float(g.abs().max() / g.abs().median()) > 100            # where the gradient's span orders of magnitude


def test_sign_rows_still_lean_towards_the_input_span(tiny):
    """Bussgang: sign(y) = α·y + e, about 2/π of a sign row's energy stays in the inputs' span; random rows keep n/d."""
    _, inputs, ids = tiny
    x = inputs.vectors(ids, list(range(len(ids))))
    span = input_basis(x).T
    signs = planted_signs(x, 16)
    kept = float(((signs / signs.norm(dim=1, keepdim=True)) @ span.T).pow(2).sum(1).mean())
    noise = torch.randn(16, x.shape[1], generator=torch.Generator().manual_seed(1), dtype=torch.double).to(x.device)
    random = float(((noise / noise.norm(dim=1, keepdim=True)) @ span.T).pow(2).sum(1).mean())
    assert kept > 0.5 > 2 * random


def test_certificate_is_zero_for_the_true_inputs_only(tiny):
    """Every sign row of the true inputs is linearly separable (loss ~0); one wrong token leaves some rows that
    no combination of the candidate's inputs separates."""
    _, inputs, ids = tiny
    x = inputs.vectors(ids, list(range(len(ids))))
    signs = planted_signs(x, 16)
    truth = float(sign.certificate(x, signs))
    assert truth < 1e-6
    for p, token in [(1, 1996), (4, 3899), (6, 2417)]:
        assert float(sign.certificate(with_token(inputs, ids, p, token), signs)) > 1e-3


def test_batched_certificate_matches_one_at_a_time(tiny):
    _, inputs, ids = tiny
    x = inputs.vectors(ids, list(range(len(ids))))
    signs = planted_signs(x, 8, seed=3)
    batch = torch.stack([x, with_token(inputs, ids, 2, 1996)])
    values = sign.certificate(batch, signs)
    assert values.shape == (2,)
    assert torch.allclose(values, torch.stack([sign.certificate(b, signs) for b in batch]))
    assert float(values[0]) < float(values[1])


def test_working_residual_points_at_the_missing_input(tiny):
    """With one true input left out, the score test ranks that (token, position) first among the vocabulary."""
    _, inputs, ids = tiny
    x = inputs.vectors(ids, list(range(len(ids))))
    signs = planted_signs(x, 16)
    others = [q for q in range(len(ids)) if q != 3]
    chosen = x[others]
    vocab = ll.attacks.allowed_tokens(ll.models.TINY_BERT.tokenizer).to(x.device)
    scores = sign.addition_scores(inputs, sign.working_residual(chosen, signs), chosen, [3], vocab)[0]
    assert int(vocab[torch.argmax(scores)]) == ids[3]


def test_bad_inputs_raise_clear_errors(tiny):
    model, inputs, ids = tiny
    x = inputs.vectors(ids, list(range(len(ids))))
    with pytest.raises(ValueError, match="coordinates"):
        sign.separability(x, torch.ones(4, x.shape[1] + 1))
    adam, _ = watched_messages([TEXT], [0], model, rank=8, trained_steps=20, watch=Watch(protocol="fedavg", optimizer="adam", lr=1e-3), seed=0)
    with pytest.raises(ValueError, match="length"):
        sign.sign_span_attack(adam[0])
    with pytest.raises(ValueError, match="without \\[CLS\\]"):
        sign.sign_span_attack(adam[0], ll.Knowledge(length=10_000))
    zero, _ = watched_messages([TEXT], [0], model, rank=8, trained_steps=0, watch=Watch(protocol="fedavg", optimizer="adam", lr=1e-3), seed=0)
    with pytest.raises(ValueError, match="round 0"):
        sign.sign_rows(zero[0])


def test_refine_repairs_one_wrong_token_of_planted_sign_rows(tiny):
    """From the truth with one token changed, the score-test shortlist holds the true token and the exact
    certificate takes it back (the batched certificates build each candidate's inputs correctly)."""
    model, inputs, ids = tiny
    x = inputs.vectors(ids, list(range(len(ids))))
    signs = planted_signs(x, 16)
    vocab = ll.attacks.allowed_tokens(model.tokenizer).to(x.device)
    start = list(ids)
    start[3] = 1996
    found, value = sign.refine_signs(inputs, signs, vocab, start, sweeps=1)
    assert found == ids and value < 1e-6
