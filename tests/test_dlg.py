"""DLG: the generic loop on a small network, the text attack's interface, labels and input checks."""
import dataclasses

import pytest
import torch
from torch import nn

import lora_leak_lib as ll
from lora_leak_lib import config
from lora_leak_lib.attacks import DLG, Knowledge, Reconstruction, deep_leakage, infer_labels, matching_losses
from lora_leak_lib.attacks.search import cover_assignment
from lora_leak_lib.models import resolve

TEXT = "my pin is 4821"


@pytest.fixture(scope="module")
def full_update():
    return ll.fl.capture_full_update([TEXT], [0])


def _small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.Sigmoid(), nn.Linear(16, 3))


def _gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    loss = nn.functional.cross_entropy(model(x), y)
    names = [n for n, _ in model.named_parameters()]
    return dict(zip(names, torch.autograd.grad(loss, list(model.parameters()))))


def test_deep_leakage_recovers_input_and_label_jointly():
    model = _small_net()
    x, y = torch.rand(1, 8), torch.tensor([2])
    leak = deep_leakage(model, _gradients(model, x, y), (1, 8), 3, steps=30, progress=False)
    assert leak.labels == [2]
    assert torch.allclose(leak.inputs, x, atol=1e-2)
    assert leak.loss_history[-1] < 1e-3 * leak.loss_history[0]
    assert [step for step, _ in leak.snapshots] == [5, 10, 15, 20, 25, 30]


def test_deep_leakage_with_known_labels_runs_on_the_models_device(device):
    model = _small_net().to(device)  # iDLG: the label is read first, then fixed
    x, y = torch.rand(1, 8, device=device), torch.tensor([2], device=device)
    leak = deep_leakage(model, _gradients(model, x, y), (1, 8), 3, steps=30, labels=[2], progress=False)
    assert leak.labels == [2] and leak.inputs.device == device
    assert leak.loss_history[-1] < 1e-3 * leak.loss_history[0]


def test_deep_leakage_checks_tensor_names():
    model = _small_net()
    shared = _gradients(model, torch.rand(1, 8), torch.tensor([0]))
    shared["extra"] = shared.pop("2.bias")
    with pytest.raises(ValueError, match="does not match"):
        deep_leakage(model, shared, (1, 8), 3, steps=1, progress=False)


def test_full_update_shares_every_parameter(full_update):
    model = ll.models.resolve("tiny-bert").load(seed=0)
    assert list(full_update.update) == [n for n, _ in model.named_parameters()]
    assert full_update.setup.full_finetune
    public = full_update.public_model()
    assert sum(p.numel() for p in public.parameters()) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("label", [0, 1])
def test_label_inference_batch_one(label):
    update = ll.fl.capture_full_update([TEXT], [label]).update
    assert infer_labels(update) == [label]


def test_dlg_interface_and_callback(full_update):
    seen = []
    attack = DLG(steps=20, snapshot_every=10, progress=False)
    rec = attack.reconstruct(full_update, callback=lambda step, loss, texts: seen.append((step, loss, texts)))
    assert isinstance(rec, Reconstruction)
    length = ll.data.n_tokens(ll.models.TINY_BERT.tokenizer, TEXT)
    assert len(rec.token_ids) == 1 and len(rec.token_ids[0]) == length  # length read from the positions
    assert rec.labels == [0] and rec.attack == attack.name == "dlg"
    assert attack.variant == "dlg-relaxed+tokenset-cosine-adam"
    assert len(rec.loss_history) == 20 and [s for s, _ in rec.snapshots] == [10, 20]
    assert [s for s, _, _ in seen] == [10, 20] and isinstance(seen[0][2][0], str)
    assert all(loss == rec.loss_history[step - 1] for step, loss, _ in seen)  # one meaning for the callback


def test_dlg_token_set_restricts_the_vocabulary(full_update):
    tokenizer = ll.models.TINY_BERT.tokenizer
    rec = DLG(steps=5, progress=False).reconstruct(full_update)
    assert set(rec.token_ids[0]) == set(tokenizer(TEXT)["input_ids"][1:-1])  # every leaked token is used


def test_dlg_recovers_a_short_sentence(full_update):
    tokenizer = ll.models.TINY_BERT.tokenizer
    rec = DLG(steps=100, refine_sweeps=10, progress=False).reconstruct(full_update)
    reference = tokenizer(TEXT)["input_ids"][1:-1]
    assert ll.metrics.token_accuracy(reference, rec.token_ids[0]) == 1.0
    assert rec.texts[0] == TEXT


def test_dlg_free_embeddings_and_learned_label_run(full_update):
    rec = DLG(parametrisation="embeddings", steps=5, learn_label=True, optimizer="lbfgs", lr=0.1,
              progress=False).reconstruct(full_update)
    length = ll.data.n_tokens(ll.models.TINY_BERT.tokenizer, TEXT)
    assert len(rec.token_ids[0]) == length and len(rec.loss_history) == 5
    assert rec.labels[0] in (0, 1)


def test_dlg_on_a_lora_update_needs_a_length():
    shared = ll.fl.capture_update([TEXT], [1], rank=2)
    with pytest.raises(ValueError, match="length is unknown"):
        DLG(steps=1, progress=False).reconstruct(shared)
    rec = DLG(steps=2, progress=False).reconstruct(shared, Knowledge(length=3))
    assert len(rec.token_ids[0]) == 3 and rec.labels == [1]


def test_dlg_rejects_mismatched_updates(full_update):
    renamed = dataclasses.replace(full_update, update=dict(full_update.update))
    renamed.update["classifier.bias_typo"] = renamed.update.pop("classifier.bias")
    with pytest.raises(ValueError, match="does not fit the public model"):
        DLG(steps=1, progress=False).reconstruct(renamed)
    reshaped = dataclasses.replace(full_update, update=dict(full_update.update))
    reshaped.update["classifier.bias"] = torch.zeros(3)
    with pytest.raises(ValueError, match=r"'classifier.bias' is \(3,\) in the update but \(2,\) in the model"):
        DLG(steps=1, progress=False).reconstruct(reshaped)
    for bad, message in [(dict(distance="l3"), "unknown distance"), (dict(optimizer="sgd"), "unknown optimizer"),
                         (dict(parametrisation="onehot"), "unknown parametrisation")]:
        with pytest.raises(ValueError, match=message):
            DLG(steps=1, progress=False, **bad).reconstruct(full_update)


def test_cover_assignment_uses_every_token():
    score = torch.tensor([[5.0, 0.0, 0.0], [4.0, 0.0, 1.0], [0.0, 0.1, 0.0], [3.0, 0.0, 0.0]])
    order = [token for _, token in cover_assignment(score)]
    assert set(order) == {0, 1, 2} and order[0] == 0 and order[3] == 0  # argmax would never pick token 1
    fewer_rows = cover_assignment(torch.tensor([[1.0, 2.0, 0.0], [0.0, 3.0, 1.0]]))  # columns left unused
    assert fewer_rows == [(0, 0), (1, 1)]


def test_matching_losses_are_zero_only_for_the_private_sentence(full_update):
    reference = ll.models.TINY_BERT.tokenizer(TEXT)["input_ids"][1:-1]
    swapped = [reference[1], reference[0]] + reference[2:]
    losses = matching_losses(full_update, [reference, swapped])
    assert abs(losses[0]) < 1e-4 and losses[1] > 1e-2
    with pytest.raises(ValueError, match="same non-zero length"):
        matching_losses(full_update, [reference, reference[:2]])


def test_dlg_recovers_repeated_tokens():
    text = "my pin is my pin"
    shared = ll.fl.capture_full_update([text], [1])
    rec = DLG(steps=100, refine_sweeps=10, progress=False).reconstruct(shared)
    reference = ll.models.TINY_BERT.tokenizer(text)["input_ids"][1:-1]
    assert len(rec.token_ids[0]) == 5 and rec.labels == [1]
    assert ll.metrics.token_accuracy(reference, rec.token_ids[0]) >= 0.8  # measured: 'my pin pin my pin'



@pytest.fixture(scope="module")
def round0_problem():
    """A round-0 LoRA update (B = 0: only lora_B and head gradients carry anything) and its DLG problem."""
    shared = ll.fl.capture_update([TEXT], [1], resolve("tiny-bert"), rank=4, trained_steps=0)
    reference = ll.models.TINY_BERT.tokenizer(TEXT)["input_ids"][1:-1]
    return ll.attacks.TextProblem.build(shared, Knowledge(length=len(reference))), reference


def test_batch_distances_equal_the_one_by_one_matching_loss(round0_problem):
    problem, reference = round0_problem
    candidates = [reference, reference[::-1], [reference[0]] * len(reference), [2000] + reference[1:]]
    for distance in ("cosine", "l2", "tag"):
        batched = problem.batch_distances(torch.tensor(candidates, device=config.device()), distance=distance,
                                          chunk=3)
        single = [problem.discrete_distance([c], None, distance, 0.01) for c in candidates]
        assert torch.allclose(batched, torch.tensor(single, dtype=torch.double, device=batched.device), rtol=1e-4,
                              atol=1e-6)
    assert float(problem.batch_distances(torch.tensor([reference], device=config.device()))[0]) < 1e-6
    assert float(problem.batch_distances(torch.tensor([reference[::-1]], device=config.device()))[0]) > 1e-2


def test_search_substitutes_and_swaps_back_to_the_private_sentence(round0_problem):
    problem, reference = round0_problem
    wrong = [2000, 3000, 4000]
    start = [wrong[0]] + reference[1:]
    start[1], start[2] = start[2], start[1]                    # one wrong token and one swapped pair
    shortlist = torch.tensor([[t, *wrong] for t in reference], device=config.device())  # the true token is in each row
    attack = DLG(search_steps=5, gradient_candidates=0, progress=False)
    assert attack.search(problem, [start], shortlist, []) == [reference]
    assert dataclasses.replace(attack, search_steps=1).search(problem, [start], shortlist, []) != [reference]


def test_scale_weighs_the_shared_tensors_without_moving_the_minimum(round0_problem):
    problem, reference = round0_problem
    raw = [t.clone() for t in problem.target]
    candidates = torch.tensor([reference, reference[::-1]], device=config.device())
    try:
        problem.rescale("global")
        assert abs(sum(float(t.pow(2).sum()) for t in problem.target) - 1) < 1e-4
        glob = problem.batch_distances(candidates, distance="l2")
        assert torch.allclose(glob, torch.tensor([problem.discrete_distance([c.tolist()], None, "l2", 0.01)
                                                  for c in candidates], dtype=torch.double, device=glob.device),
                              rtol=1e-4, atol=1e-7)
        assert float(glob[0]) < 1e-6 < float(glob[1])  # the client's sentence is still the minimum
        problem.rescale("tensor")
        assert all(abs(float(t.norm()) - 1) < 1e-4 for t, r in zip(problem.target, raw) if r.abs().sum() > 0)
        assert problem.discrete_distance([reference], None, "l2", 0.01) < 1e-6
        problem.rescale("none")
        assert problem.scales is None and all(torch.allclose(t, r) for t, r in zip(problem.target, raw))
    finally:
        problem.rescale("none")
    with pytest.raises(ValueError, match="unknown scale"):
        problem.rescale("unit")
    with pytest.raises(ValueError, match="unknown scale"):
        DLG(steps=1, scale="unit", progress=False).reconstruct(ll.fl.capture_update([TEXT], [1], rank=2),
                                                              Knowledge(length=3))


def test_dlg_lbfgs_tolerances_are_a_knob():
    shared = ll.fl.capture_update([TEXT], [1], rank=2, trained_steps=2)
    attack = ll.get_attack("dlg", parametrisation="embeddings", distance="l2", optimizer="lbfgs", lr=1.0,
                           learn_label=True, steps=3, lbfgs_tolerances=(0.0, 0.0), scale="global")
    rec = attack.reconstruct(shared, Knowledge(length=4))
    assert len(rec.token_ids[0]) == 4 and len(rec.loss_history) == 3 and attack.variant.endswith("l2/global-lbfgs")


def test_kicks_restart_the_search_and_never_end_worse_than_one_descent():
    # round 0 (B = 0): the greedy search stops in a local minimum; kicks restart it from perturbations of the best
    text = "the nurse said my results were fine"
    shared = ll.fl.capture_update([text], [1], resolve("tiny-bert"), rank=8, trained_steps=0)
    knowledge = Knowledge(length=7)
    plain = DLG(distance="cosine", lr=0.3, steps=20, search_steps=10, progress=False)
    kicked = dataclasses.replace(plain, kicks=3, kick_size=3)
    once, first, again = plain.reconstruct(shared, knowledge), kicked.reconstruct(shared, knowledge), \
        kicked.reconstruct(shared, knowledge)
    assert first.loss < once.loss  # the first descent is the plain one; a kick is kept only if it does better
    assert first.token_ids == again.token_ids  # the kicks' draws are seeded


@pytest.mark.parametrize("knob, value", [("kicks", -1), ("kick_size", 0), ("kicks", 1.5)])
def test_kick_knobs_are_counts(knob, value):
    shared = ll.fl.capture_update([TEXT], [0], resolve("tiny-bert"), rank=4, trained_steps=0)
    with pytest.raises(ValueError, match=f"{knob} must be .*it counts the discrete search's steps"):
        dataclasses.replace(DLG(progress=False), **{knob: value}).reconstruct(shared, Knowledge(length=4))


def test_a_tensor_zero_up_to_rounding_has_no_direction_for_the_cosine_distance():
    """An attention key bias's gradient is exactly zero (softmax ignores a shift) and comes out of float32 as
    noise of about 1e-11: its direction must not count, or the cosine loss moves with the library version."""
    from lora_leak_lib.attacks.distances import directionless, gradient_distance

    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(8, 8, generator=generator)
    noise = [1e-11 * torch.randn(8, generator=generator) for _ in range(2)]
    assert directionless([weight, noise[0], torch.zeros(3)]) == [False, True, True]
    flipped = [gradient_distance([weight, n], [weight, noise[0]], "cosine") for n in (noise[0], -noise[0], noise[1])]
    assert max(float(d) for d in flipped) < 1e-6  # the key-bias noise's direction, right or reversed, adds nothing
    assert not directionless([1e-4 * weight, weight])[0]  # small is not rounding
