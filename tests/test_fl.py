"""Tests of lora_leak_lib.fl: clients, aggregation, the message log, the attacker hook and the delta identity."""
from __future__ import annotations

from collections import OrderedDict

import pytest
import torch

import lora_leak_lib as ll
from lora_leak_lib import fl, gradients
from lora_leak_lib.message import SharedUpdate
from lora_leak_lib.models import resolve


@pytest.fixture(scope="module")
def sentences() -> list[ll.data.Example]:
    return ll.data.course_sentences()


def _setup(**changes) -> fl.FederatedSetup:
    return fl.FederatedSetup(**{"model": resolve("tiny-bert"), "lr": 0.1, "batch_size": 3, **changes})


def _state_with_nonzero_B(model, seed: int = 1) -> OrderedDict:
    """A global state as after some rounds: every lora_B filled with small random numbers."""
    generator = torch.Generator().manual_seed(seed)
    state = gradients.trainable_state(model)
    for name, tensor in state.items():
        if "lora_B" in name:
            tensor.copy_(0.05 * torch.randn(tensor.shape, generator=generator))
    return state


def _max_diff(a: dict, b: dict) -> float:
    return max(float((a[n] - b[n]).abs().max()) for n in a)


def test_weighted_mean_is_the_weighted_average_of_every_tensor():
    g = torch.Generator().manual_seed(0)
    updates = [OrderedDict(A=torch.randn(2, 3, generator=g), B=torch.randn(3, 2, generator=g)) for _ in range(3)]
    weights = [1, 3, 2]
    mean = fl.weighted_mean(updates, weights)
    for name in ("A", "B"):
        expected = (1 * updates[0][name] + 3 * updates[1][name] + 2 * updates[2][name]) / 6
        assert torch.allclose(mean[name], expected, atol=1e-7)
    assert not torch.allclose(mean["A"], sum(u["A"] for u in updates) / 3)  # the weights matter


def test_weighted_mean_rejects_mismatched_updates():
    with pytest.raises(ValueError, match="one weight per update"):
        fl.weighted_mean([OrderedDict(A=torch.zeros(1))], [1, 2])
    with pytest.raises(ValueError, match="different tensor names"):
        fl.weighted_mean([OrderedDict(A=torch.zeros(1)), OrderedDict(B=torch.zeros(1))], [1, 1])


def test_server_averages_A_and_B_separately_with_example_weights(sentences):
    setup = _setup(protocol="fedavg")
    state = OrderedDict(A=torch.zeros(2, 4), B=torch.ones(4, 2))
    server = fl.Server(setup, state)
    server.broadcast(0)
    deltas = [OrderedDict(A=torch.full((2, 4), float(i)), B=torch.full((4, 2), -float(i))) for i in (1, 4)]
    for i, (delta, n) in enumerate(zip(deltas, (3, 1))):
        server.receive(SharedUpdate(delta, state, setup, i, 0, n_examples=n, batch_size=n))
    new = server.aggregate(0)
    assert torch.allclose(new["A"], torch.full((2, 4), (3 * 1 + 1 * 4) / 4))
    assert torch.allclose(new["B"], torch.full((4, 2), 1 - (3 * 1 + 1 * 4) / 4))
    assert torch.equal(server.sent[0]["B"], torch.ones(4, 2))  # what was sent that round is kept unchanged


def test_message_log_records_only_trainable_tensors(sentences):
    history = fl.run_federated(resolve("tiny-bert"), n_clients=2, rounds=2, protocol="fedsgd", source=sentences[:12],
                               held_out=0.25, progress=False)
    trainable = gradients.trainable_names(history.model)
    assert len(history.log) == 2 * 2
    assert {(e.client_id, e.round) for e in history.log} == {(0, 0), (1, 0), (0, 1), (1, 1)}
    n_numbers = sum(p.numel() for p in history.model.parameters() if p.requires_grad)
    for entry in history.log:
        assert list(entry.names) == trainable
        assert all("lora_" in n or "classifier" in n for n in entry.names)
        assert not any("embeddings" in n or "base_layer" in n for n in entry.names)
        assert set(entry.dtypes) == {"float32"}
        assert entry.bytes == 4 * n_numbers == sum(4 * torch.Size(s).numel() for s in entry.shapes)
    assert history.bytes_per_round() == [2 * 4 * n_numbers] * 2
    assert len(history.accuracy) == len(history.loss) == 3


def test_fedsgd_with_one_client_equals_centralised_sgd(sentences):
    setup = _setup(protocol="fedsgd", lr=0.3, batch_size=3)
    ll.set_seed(0)
    model = setup.build_model()
    server = fl.Server(setup, _state_with_nonzero_B(model))
    client = fl.Client(0, sentences[:7], model, setup, seed=5)
    server.receive(client.client_update(server.broadcast(0), 0))
    federated = server.aggregate(0)
    batch = client.last_batches[0]
    assert len(batch) == 3

    central = setup.build_model()
    gradients.load_trainable_state(central, server.sent[0])
    optimizer = torch.optim.SGD([p for p in central.parameters() if p.requires_grad], lr=0.3)
    tokenizer = ll.models.resolve("tiny-bert").tokenizer
    encoded = ll.data.encode(tokenizer, [e.text for e in batch])
    loss = gradients.client_loss(central, encoded["input_ids"], encoded["attention_mask"],
                                         torch.tensor([e.label for e in batch]))
    loss.backward()
    optimizer.step()
    assert _max_diff(federated, gradients.trainable_state(central)) < 1e-6
    assert _max_diff(federated, server.sent[0]) > 1e-4  # the step did move the adapter


def test_delta_after_one_sgd_step_is_minus_lr_times_gradient(sentences):
    ll.set_seed(0)
    model = _setup().build_model()
    state = _state_with_nonzero_B(model)
    lr = 0.1
    gradient = fl.Client(0, sentences[:6], model, _setup(protocol="fedsgd")).client_update(state, 2).update
    one_step = fl.Client(0, sentences[:6], model, _setup(protocol="fedavg", lr=lr, local_steps=1))
    delta = one_step.client_update(state, 2).update
    assert all(float(g.abs().max()) > 0 for g in gradient.values())
    assert _max_diff(delta, OrderedDict((n, -lr * g) for n, g in gradient.items())) < 1e-6

    five_steps = fl.Client(0, sentences[:6], model, _setup(protocol="fedavg", lr=lr, local_steps=5))
    drifted = five_steps.client_update(state, 2).update
    assert _max_diff(drifted, OrderedDict((n, -5 * lr * g) for n, g in gradient.items())) > 1e-4


def test_lora_A_gradient_is_zero_in_round_0_and_not_after(sentences):
    history = fl.run_federated(resolve("tiny-bert"), n_clients=2, rounds=2, protocol="fedsgd", source=sentences[:12],
                               lr=0.5, progress=False)
    first, later = history.server.captured(0, 0), history.server.captured(0, 1)
    a_names = [n for n in first.update if "lora_A" in n]
    assert a_names
    assert all(float(first.update[n].abs().max()) == 0.0 for n in a_names)
    assert all(float(later.update[n].abs().max()) > 0.0 for n in a_names)
    assert all(float(first.update[n].abs().max()) > 0.0 for n in first.update if "lora_B" in n)


def test_captured_is_the_shared_update_attacks_consume(sentences):
    history = fl.run_federated(resolve("tiny-bert"), n_clients=3, rounds=2, protocol="fedavg", source=sentences[:16],
                               lr=0.05, local_steps=2, optimizer="adam", progress=False)
    shared = history.server.captured(1, 1)
    assert isinstance(shared, SharedUpdate)
    assert (shared.kind, shared.client_id, shared.round, shared.setup.local_steps) == ("delta", 1, 1, 2)
    assert (shared.setup.optimizer, shared.setup.lr, shared.batch_size) == ("adam", 0.05,
                                                                            len(history.clients[1].examples))
    message = history.server.received[(1, 1)]
    assert _max_diff(shared.update, message.update) == 0.0
    assert _max_diff(shared.global_state, history.server.sent[1]) == 0.0
    public = gradients.trainable_state(shared.public_model())
    assert _max_diff(public, history.server.sent[1]) == 0.0
    with pytest.raises(ValueError, match="no message from client 7"):
        history.server.captured(7, 0)


def test_split_among_clients_is_disjoint_and_balanced(sentences):
    shards, held_out = fl.split_among_clients(sentences, 5, held_out=0.25, seed=3)
    texts = [e.text for shard in shards for e in shard] + [e.text for e in held_out]
    assert sorted(texts) == sorted(e.text for e in sentences)
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    labels = [e.label for e in held_out]
    assert abs(labels.count(0) - labels.count(1)) <= 1


def test_wire_cost_matches_a_real_model():
    cost = ll.message.wire_cost(resolve("tiny-bert"), rank=8)
    assert cost.lora_parameters == 2 * 2 * 2 * 8 * 128 + (128 * 2 + 2)
    model = ll.models.resolve("tiny-bert").load(seed=0)
    assert cost.full_parameters == ll.lora.count_parameters(model)
    adapted = ll.lora.apply_lora(model, 8)
    assert cost.lora_parameters == ll.lora.count_parameters(adapted, trainable_only=True)
    assert cost.lora_bytes == 4 * cost.lora_parameters
    base = ll.message.wire_cost(resolve("bert-base-uncased"))
    assert 109_000_000 < base.full_parameters < 110_000_000 and base.share < 0.003


@pytest.mark.parametrize("kwargs, message", [
    (dict(n_clients=0), "n_clients must be a positive integer"),
    (dict(n_clients=100), "100 clients but only 42 training sentences"),
    (dict(protocol="fedprox"), "unknown protocol 'fedprox'"),
    (dict(optimizer="rmsprop"), "unknown optimizer 'rmsprop'"),
    (dict(rounds=-1), "rounds must be a non-negative integer"),
    (dict(local_steps=0), "local_steps must be a positive integer"),
    (dict(model="tiny-bert"), "the set-up's model must be resolved.*models.resolve"),
])
def test_bad_inputs_raise_one_clear_error(kwargs, message):
    arguments = dict(model=resolve("tiny-bert"), n_clients=2, rounds=1, progress=False) | kwargs
    with pytest.raises(ValueError, match=message) as error:
        fl.run_federated(**arguments)
    assert "\n" not in str(error.value)


def test_capture_update_is_a_first_round_fedsgd_message(sentences):
    shared = fl.capture_update([sentences[6].text], [sentences[6].label], rank=4)
    assert shared.kind == "gradient" and shared.round == 0 and shared.batch_size == 1
    assert all(float(t.abs().max()) == 0.0 for n, t in shared.update.items() if "lora_A" in n)


def test_flatten_and_cosine_similarity():
    a = OrderedDict(A=torch.tensor([[1.0, 0.0]]), B=torch.tensor([0.0]))
    b = OrderedDict(A=torch.tensor([[0.0, 2.0]]), B=torch.tensor([0.0]))
    assert fl.flatten(a).tolist() == [1.0, 0.0, 0.0]
    assert fl.cosine_similarity(a, a) == pytest.approx(1.0)
    assert fl.cosine_similarity(a, b) == pytest.approx(0.0)
    assert fl.cosine_similarity(a, OrderedDict((n, -3 * t) for n, t in a.items())) == pytest.approx(-1.0)


def test_history_client_update_reruns_a_client_without_touching_the_run(sentences):
    history = fl.run_federated(resolve("tiny-bert"), n_clients=2, rounds=2, protocol="fedsgd", source=sentences[:12],
                               lr=0.5, progress=False)
    log_length, final = len(history.log), gradients.trainable_state(history.model)
    again = history.client_update(1, 1)
    assert _max_diff(again.update, history.server.received[(1, 1)].update) == 0.0  # deterministic batches
    delta = history.client_update(1, 1, protocol="fedavg", optimizer="sgd", lr=0.2, local_steps=1)
    assert delta.kind == "delta"
    assert _max_diff(delta.update, OrderedDict((n, -0.2 * g) for n, g in again.update.items())) < 1e-6
    assert len(history.log) == log_length
    assert _max_diff(gradients.trainable_state(history.model), final) == 0.0
    with pytest.raises(ValueError, match="no client 5 in round 0"):
        history.client_update(5, 0)


def test_run_federated_reads_a_rotten_tomatoes_folder(tmp_path):
    (tmp_path / "rt-polarity.pos").write_text("\n".join(f"a fine and lovely film number {i}" for i in range(6)))
    (tmp_path / "rt-polarity.neg").write_text("\n".join(f"a dull and tedious film number {i}" for i in range(6)))
    history = fl.run_federated(resolve("tiny-bert"), n_clients=3, rounds=1, protocol="fedsgd", source=tmp_path, limit=10,
                               held_out=0.2, lr=0.5, progress=False)
    assert sum(len(c.examples) for c in history.clients) + len(history.held_out) == 10
    assert {e.label for e in history.held_out} == {0, 1}
    assert all("film number" in e.text for c in history.clients for e in c.examples)


def test_a_cached_global_adapter_gives_exactly_the_update_a_fresh_training_gives(monkeypatch):
    monkeypatch.setattr(ll.fl, "_TRAINED", {})
    fresh = ll.fl.capture_update(["a quiet film"], [1], resolve("tiny-bert"), rank=2, trained_steps=3)
    assert len(ll.fl._TRAINED) == 1
    cached = ll.fl.capture_update(["a quiet film"], [1], resolve("tiny-bert"), rank=2, trained_steps=3)
    for name in fresh.update:
        assert torch.equal(fresh.update[name], cached.update[name]), name
        assert torch.equal(fresh.global_state[name], cached.global_state[name]), name


def test_the_set_up_takes_keywords_only():
    """Twelve knobs read by position were a bare ``2`` for ``num_labels``: every field is named at the call."""
    import dataclasses

    assert all(field.kw_only for field in dataclasses.fields(fl.FederatedSetup))
    with pytest.raises(TypeError):
        fl.FederatedSetup(resolve("tiny-bert"), 8)
