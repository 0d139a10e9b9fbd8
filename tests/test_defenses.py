"""Tests of lora_leak_lib.defenses: transformations, DP-SGD clipping, the accountant, secure aggregation."""
from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch

import lora_leak_lib as ll
from lora_leak_lib import defenses
from lora_leak_lib.experiments import sweep
from lora_leak_lib.models import resolve


def random_update(seed: int = 0, scale: float = 0.1) -> OrderedDict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    shapes = {"layer.0.query.lora_A": (8, 16), "layer.0.query.lora_B": (16, 8), "classifier.modules_to_save.default.bias": (2,)}
    return OrderedDict((n, scale * torch.randn(s, generator=generator)) for n, s in shapes.items())


@pytest.fixture(scope="module")
def tiny_batch():
    ll.set_seed(0)
    model = ll.lora.apply_lora(ll.models.resolve("tiny-bert").load(seed=0), rank=4)
    ll.training.train_adapter(model, resolve("tiny-bert").tokenizer, ll.data.course_sentences()[20:], steps=3)  # B != 0, so every tensor has a gradient
    model.eval()
    examples = ll.data.course_sentences()[:6]
    encoded = ll.data.encode(ll.models.resolve("tiny-bert").tokenizer, [e.text for e in examples])
    return model, encoded["input_ids"], encoded["attention_mask"], torch.tensor([e.label for e in examples])


# --- update transformations -------------------------------------------------------------------------

def test_clip_update_bounds_norm_and_keeps_direction():
    update = random_update(scale=10.0)
    clipped = defenses.clip_update(update, 1.0)
    assert defenses.update_norm(clipped) == pytest.approx(1.0, rel=1e-5)
    ratio = clipped["layer.0.query.lora_A"] / update["layer.0.query.lora_A"]
    assert torch.allclose(ratio, ratio.flatten()[0].expand_as(ratio))
    small = random_update(scale=1e-4)
    assert torch.equal(defenses.clip_update(small, 1.0)["layer.0.query.lora_B"], small["layer.0.query.lora_B"])


def test_noise_is_seeded_and_has_the_asked_std():
    update = OrderedDict(x=torch.zeros(200, 200))
    a, b = defenses.add_noise(update, 0.5, seed=3), defenses.add_noise(update, 0.5, seed=3)
    assert torch.equal(a["x"], b["x"])
    assert float(a["x"].std()) == pytest.approx(0.5, rel=0.02)


def test_top_k_keeps_the_largest_entries():
    update = OrderedDict(x=torch.tensor([0.1, -5.0, 0.3, 2.0, -0.2, 0.0, 1.0, -0.05, 0.4, 0.6]))
    sparse = defenses.top_k(update, 0.3)["x"]
    assert torch.equal(sparse, torch.tensor([0.0, -5.0, 0.0, 2.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]))


@pytest.mark.parametrize("bits", [8, 4])
def test_quantisation_round_trips_within_half_a_step(bits):
    update = random_update(seed=1)
    restored = defenses.quantise(update, bits)
    for name, t in update.items():
        step = defenses.quantisation_step(t, bits)
        assert float((restored[name] - t).abs().max()) <= step / 2 + 1e-7
        assert len(torch.unique(restored[name])) <= 2**bits - 1


@pytest.mark.parametrize("call, message", [
    (lambda u: defenses.clip_update(u, 0.0), "max_norm must be positive"),
    (lambda u: defenses.add_noise(u, -1.0), "noise std"),
    (lambda u: defenses.top_k(u, 1.5), "top-k fraction"),
    (lambda u: defenses.quantise(u, 1), "bits must be an integer"),
    (lambda u: defenses.quantise(u, 8.0), "bits must be an integer"),
    (lambda u: defenses.clip_update({}, 1.0), "non-empty dict"),
    (lambda u: defenses.epsilon(1.0, 1.5, 10), "sample_rate"),
    (lambda u: defenses.epsilon(1.0, 0.1, 10, delta=0.0), "delta"),
    (lambda u: defenses.epsilon(-1.0, 0.1, 10), "noise_multiplier"),
    (lambda u: defenses.mask_update(u, 0, [0]), "at least 2 distinct"),
    (lambda u: defenses.mask_update(u, 5, [0, 1]), "not among"),
])
def test_bad_knobs_raise_one_clear_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call(random_update())


# --- DP-SGD ---------------------------------------------------------------------------------------

def test_per_sample_gradients_match_one_backward_per_sentence(tiny_batch):
    model, ids, mask, labels = tiny_batch
    per_sample = defenses.per_sample_gradients(model, ids, mask, labels)
    for i in (0, 4):
        one = ll.gradients.shared_gradients(model, ids[i:i + 1], mask[i:i + 1], labels[i:i + 1])
        for name, g in one.items():
            assert torch.allclose(per_sample[name][i], g, atol=1e-6)


def test_clipping_bounds_every_per_sample_norm(tiny_batch):
    model, ids, mask, labels = tiny_batch
    per_sample = defenses.per_sample_gradients(model, ids, mask, labels)
    norms = defenses.per_sample_norms(per_sample)
    bound = float(norms.median())  # half the sentences are above it, so clipping must act
    clipped_norms = defenses.per_sample_norms(defenses.clip_per_sample(per_sample, bound))
    assert bool((norms > bound).any())
    assert bool((clipped_norms <= bound * (1 + 1e-5)).all())
    below = norms <= bound
    assert torch.allclose(clipped_norms[below], norms[below])


def test_dp_gradient_without_noise_is_the_mean_of_clipped_gradients(tiny_batch):
    model, ids, mask, labels = tiny_batch
    huge = 1e6  # no clipping: the DP gradient is then the ordinary batch gradient
    private = defenses.dp_gradient(model, ids, mask, labels, max_norm=huge, noise_multiplier=0.0)
    plain = ll.gradients.shared_gradients(model, ids, mask, labels)
    for name in plain:
        assert torch.allclose(private[name], plain[name], atol=1e-6)


def test_dp_sgd_still_trains_the_model_and_changes_lora_b():
    ll.set_seed(0)
    model = ll.lora.apply_lora(ll.models.resolve("tiny-bert").load(seed=0), rank=4)
    examples = ll.data.course_sentences()  # 56 sentences: the noise std per sentence is σC/56
    tokenizer = ll.models.resolve("tiny-bert").tokenizer
    encoded = ll.data.encode(tokenizer, [e.text for e in examples])
    labels = torch.tensor([e.label for e in examples])
    model.eval()
    loss = lambda: float(ll.gradients.client_loss(model, encoded["input_ids"], encoded["attention_mask"], labels).detach())
    before_loss = loss()
    before = ll.gradients.trainable_state(model)
    defenses.dp_sgd_train(model, resolve("tiny-bert").tokenizer, examples, steps=30, max_norm=1.0, noise_multiplier=0.01, lr=1e-2, seed=0)
    after_loss = loss()
    after = ll.gradients.trainable_state(model)
    b_names = [n for n in before if "lora_B" in n]
    assert all(not torch.equal(before[n], after[n]) for n in b_names)
    assert after_loss < before_loss - 0.05


def test_defended_updates_still_train_the_model():
    """Clipped, noised, sparsified and quantised FedSGD steps all lower the training loss."""
    examples = ll.data.course_sentences()[:8]
    tokenizer = ll.models.resolve("tiny-bert").tokenizer
    encoded = ll.data.encode(tokenizer, [e.text for e in examples])
    labels = torch.tensor([e.label for e in examples])
    defences = {
        "clip": lambda u: defenses.clip_update(u, 0.5),
        "noise": lambda u: defenses.add_noise(u, 1e-4, seed=1),
        "top-k": lambda u: defenses.top_k(u, 0.1),
        "quantise-4": lambda u: defenses.quantise(u, 4),
    }
    for name, defend in defences.items():
        ll.set_seed(0)
        model = ll.lora.apply_lora(ll.models.resolve("tiny-bert").load(seed=0), rank=4).eval()
        loss = lambda: float(ll.gradients.client_loss(model, encoded["input_ids"], encoded["attention_mask"],
                                                               labels).detach())
        start = loss()
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        params = dict(model.named_parameters())
        for _ in range(20):
            update = defend(ll.gradients.shared_gradients(model, encoded["input_ids"], encoded["attention_mask"], labels))
            for n, g in update.items():
                params[n].grad = g
            optimizer.step()
        assert loss() < start - 0.1, name


# --- the accountant ---------------------------------------------------------------------------------

# Reference values computed with Opacus 1.6.0 (opacus.accountants.analysis.rdp: compute_rdp +
# get_privacy_spent over RDPAccountant.DEFAULT_ALPHAS). The first row is the MNIST setting of Abadi et
# al. (2016): q = 256/60000, σ = 1.1, 60 epochs = 14063 steps, δ = 1e-5.
OPACUS_REFERENCE = [
    (256 / 60000, 1.1, 14063, 1e-5, 2.5966555286883684),
    (0.01, 1.0, 1000, 1e-5, 2.1013652716430564),
    (0.1, 2.0, 100, 1e-6, 2.9141734583973755),
    (0.5, 5.0, 20, 1e-5, 2.020655322026503),
    (1.0, 1.0, 10, 1e-5, 19.05359753163139),
]


@pytest.mark.parametrize("q, sigma, steps, delta, reference", OPACUS_REFERENCE)
def test_accountant_matches_opacus(q, sigma, steps, delta, reference):
    eps, _ = defenses.epsilon(sigma, q, steps, delta)
    assert eps == pytest.approx(reference, rel=1e-9)


def test_full_batch_gaussian_matches_its_closed_form():
    """q = 1: RDP is exactly Tα/(2σ²); over a fine grid of α the conversion's minimum is found numerically."""
    sigma, steps, delta = 4.0, 25, 1e-5
    orders = [1 + i / 1000 for i in range(1, 20000)]
    eps, alpha = defenses.epsilon(sigma, 1.0, steps, delta, orders=orders)
    rho = steps / (2 * sigma**2)
    closed = min(rho * a + math.log((a - 1) / a) - (math.log(delta) + math.log(a)) / (a - 1) for a in orders)
    assert eps == pytest.approx(closed, rel=1e-12)
    # The classic bound ε ≤ ρ + 2·sqrt(ρ log(1/δ)) (zCDP) is never beaten by more than the improved conversion gains.
    assert eps <= rho + 2 * math.sqrt(rho * math.log(1 / delta))


def test_epsilon_grows_with_steps_and_shrinks_with_noise():
    assert defenses.epsilon(1.0, 0.1, 100)[0] < defenses.epsilon(1.0, 0.1, 400)[0]
    assert defenses.epsilon(2.0, 0.1, 100)[0] < defenses.epsilon(1.0, 0.1, 100)[0]
    assert defenses.epsilon(1.0, 0.1, 0)[0] == 0.0
    assert math.isinf(defenses.epsilon(0.0, 0.1, 10)[0])


# --- secure aggregation -----------------------------------------------------------------------------

def test_masks_cancel_exactly_in_the_sum():
    updates = [random_update(seed=s) for s in range(5)]
    ids = list(range(5))
    masked = [defenses.mask_update(u, i, ids, seed=7) for i, u in zip(ids, updates)]
    unmasked = [defenses.secure_aggregation.encode_fixed_point(u) for u in updates]
    masked_total = defenses.secure_aggregation.secure_sum_encoded(masked)
    plain_total = defenses.secure_aggregation.secure_sum_encoded(unmasked)
    for name in updates[0]:
        assert not torch.equal(masked[0][name], unmasked[0][name])
        assert torch.equal(masked_total[name], plain_total[name])  # exact, integer for integer
        assert torch.allclose(defenses.secure_sum(masked)[name], sum(u[name] for u in updates), atol=1e-6)


def test_a_masked_message_alone_says_nothing():
    update = random_update(seed=1)
    masked = defenses.mask_update(update, 0, [0, 1, 2], seed=7)
    decoded = defenses.secure_aggregation.decode_fixed_point(masked)["layer.0.query.lora_A"]
    assert float(decoded.abs().mean()) > 1e5  # uniform over ±2^21, not a gradient of size 0.1
    correlation = torch.corrcoef(torch.stack([decoded.flatten(), update["layer.0.query.lora_A"].flatten()]))[0, 1]
    assert abs(float(correlation)) < 0.3


def test_with_two_clients_one_recovers_the_other():
    mine, theirs = random_update(seed=1), random_update(seed=2)
    masked = [defenses.mask_update(u, i, [0, 1], seed=3) for i, u in enumerate([mine, theirs])]
    recovered = defenses.subtract_own(defenses.secure_aggregation.secure_sum_encoded(masked), mine)
    for name in theirs:
        assert float((recovered[name] - theirs[name]).abs().max()) <= 2.0**-40 + 1e-7 * float(theirs[name].abs().max())


def test_secure_aggregate_is_the_mean():
    updates = [random_update(seed=s) for s in range(3)]
    mean = defenses.secure_aggregate(updates, seed=0)
    for name in updates[0]:
        assert torch.allclose(mean[name], sum(u[name] for u in updates) / 3, atol=1e-6)


# --- defended federated parties and the sweep ---------------------------------------------------------

def test_secure_aggregation_trains_like_the_plain_server():
    """The server that sees only masked messages reaches the same global adapter as one that sees them all."""
    from functools import partial
    common = dict(model=resolve("tiny-bert"), n_clients=3, rounds=2, protocol="fedsgd", held_out=0.5, batch_size=16,
                  lr=1e-2, progress=False)
    plain = ll.fl.run_federated(**common, make_server=partial(defenses.DefendedServer, adam_lr=1e-2))
    secure = ll.fl.run_federated(
        **common, make_client=partial(defenses.SecureAggregationClient, client_ids=[0, 1, 2]),
        make_server=partial(defenses.DefendedServer, secure=True, adam_lr=1e-2))
    assert all(e.dtypes[0] == "int64" for e in secure.log)  # what crossed the wire: masked integers only
    for name, t in plain.server.global_state.items():
        assert torch.allclose(secure.server.global_state[name], t, atol=1e-5)


def test_defended_client_sends_the_transformed_update():
    from functools import partial
    history = ll.fl.run_federated(resolve("tiny-bert"), 2, 1, "fedsgd", held_out=0.5, progress=False,
                                  make_client=partial(defenses.DefendedClient, defend=lambda u, s: defenses.quantise(u, 4)))
    update = history.server.captured(0, 0).update
    assert all(len(torch.unique(t)) <= 15 for t in update.values())


def test_dp_client_reports_the_accountants_epsilon():
    from functools import partial
    history = ll.fl.run_federated(resolve("tiny-bert"), 2, 2, "fedsgd", held_out=0.5, batch_size=64, progress=False,
                                  make_client=partial(defenses.DPClient, max_norm=1.0, noise_multiplier=2.0))
    client = history.clients[0]
    assert client.sample_rate == 1.0
    assert client.epsilon(2) == pytest.approx(defenses.epsilon(2.0, 1.0, 2)[0])


@pytest.mark.parametrize("name, value, message", [
    ("foo", 1, "unknown defence"), ("rank", 0, "positive integer"), ("noise", None, "needs a value"),
    ("secure-agg", 1, "at least 2"), ("top-k", 2.0, "top-k fraction"), ("dp-sgd", -1.0, "noise multiplier"),
])
def test_bad_defence_settings_raise_one_clear_error(name, value, message):
    with pytest.raises(ValueError, match=message):
        sweep.Defence(name, value)


def fake_result(name, value, accuracy, rouge1):
    return sweep.SettingResult(name, value, sweep.Defence(name, value).label, accuracy, 0.5, [0.5, accuracy],
                                  rouge1, rouge1, 2)


def test_recommendations_pick_the_most_accurate_private_setting():
    results = [fake_result("none", None, 0.70, 0.9), fake_result("top-k", 0.5, 0.70, 0.5),
               fake_result("top-k", 0.1, 0.65, 0.15), fake_result("top-k", 0.01, 0.55, 0.0),
               fake_result("rank", 4, 0.70, 0.8)]
    rows = {r["defence"]: r for r in sweep.recommendations(results, threshold=0.2)}
    assert rows["top-k"]["setting"] == "top-k 0.1"
    assert rows["top-k"]["cost_points"] == pytest.approx(5.0)
    assert rows["rank"]["setting"] is None and "no setting" in rows["rank"]["verdict"]
    front = sweep.pareto_front(results)
    assert [r.label for r in front] == ["top-k 0.01", "top-k 0.1", "top-k 0.5"]
