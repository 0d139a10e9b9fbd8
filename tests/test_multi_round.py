"""A server that watches a client over several rounds, and one that chooses the adapter it sends."""
import json

import pytest
import torch

import lora_leak_lib as ll
from lora_leak_lib import cli
from lora_leak_lib.attacks import inputs as span_inputs
from lora_leak_lib.experiments.multi_round import Watch, attack_watched, watched_messages
from lora_leak_lib.models import resolve

TEXT = "please send the money to my old bank account today"


def outside_inputs(update, texts, model=resolve("tiny-bert")):
    """The largest relative distance of a first-layer lora_A row from the span of the batch's true inputs."""
    tokenizer = model.tokenizer
    inputs = ll.attacks.public_inputs(model, 0)
    x = torch.cat([inputs.vectors(torch.tensor(ids), torch.arange(len(ids)))
                   for ids in (tokenizer(t)["input_ids"] for t in texts)])
    u, _ = torch.linalg.qr(x.T)
    rows = span_inputs.first_layer_rows(update)
    return float(((rows - rows @ u @ u.T).norm(dim=1) / rows.norm(dim=1)).max())


def test_one_training_run_gives_the_rounds_capture_update_gives():
    messages, seen = watched_messages([TEXT], [1], resolve("tiny-bert"), rank=8, trained_steps=20, watch=Watch(observed_rounds=2))
    assert seen == [[TEXT], [TEXT]]
    for r, message in zip((20, 21), messages):
        reference = ll.fl.capture_update([TEXT], [1], resolve("tiny-bert"), rank=8, trained_steps=r)
        assert all(torch.equal(reference.update[n], message.update[n]) for n in reference.update)
        assert all(torch.equal(reference.global_state[n], message.global_state[n]) for n in reference.update)


def test_fedavg_sgd_delta_stays_in_the_span_of_the_inputs_and_adam_leaves_it():
    """A FedAvg delta of A after E SGD steps is a sum of E gradients of the same inputs; Adam divides entry by entry.

    The delta is a difference of float32 weights, so its rows leave the span by the rounding of A (about
    6e-8·|A|/|ΔA|, here ~5e-3): less exact than a gradient, far inside what Adam's delta leaves."""
    sgd, _ = watched_messages([TEXT], [1], resolve("tiny-bert"), rank=8, trained_steps=20, watch=Watch(protocol="fedavg", local_steps=3))
    adam, _ = watched_messages([TEXT], [1], resolve("tiny-bert"), rank=8, trained_steps=20, watch=Watch(protocol="fedavg", local_steps=3,
                                                                     optimizer="adam", lr=1e-3))
    assert sgd[0].kind == "delta"
    inside, outside = outside_inputs(sgd[0].update, [TEXT]), outside_inputs(adam[0].update, [TEXT])
    assert inside < 0.02 and outside > 10 * inside


def test_a_batch_drawn_afresh_each_round_mixes_sentences():
    texts = ["a b c", "d e f", "g h i", "j k l"]
    _, seen = watched_messages(texts, [0, 1, 0, 1], resolve("tiny-bert"), rank=2, trained_steps=5, watch=Watch(observed_rounds=3, batch_size=1))
    assert all(len(s) == 1 for s in seen) and len({s[0] for s in seen}) > 1


def test_a_batch_beyond_the_rank_of_one_round_comes_back_exactly_from_enough_rounds():
    """r = 2 on query and value: 4 rows a round for a batch of 4 sentences with 14 distinct inputs. Four rounds
    stack 16 rows: the first layer gives every position's tokens exactly and layer 1 threads them."""
    texts = ["cold soup today", "blue horse runs", "my pin code", "send more cash"]
    one = attack_watched(texts, [0, 1, 0, 1], resolve("tiny-bert"), rank=2, trained_steps=20, watch=Watch(observed_rounds=1))
    four = attack_watched(texts, [0, 1, 0, 1], resolve("tiny-bert"), rank=2, trained_steps=20, watch=Watch(observed_rounds=4))
    assert sum(r["exact_match"] for r in one) < 4
    assert [r["reconstruction"] for r in four] == texts


def test_watch_rejects_bad_settings_in_one_line():
    with pytest.raises(ValueError, match="observed_rounds"):
        Watch(observed_rounds=0)
    with pytest.raises(ValueError, match="unknown server"):
        Watch(server="evil")


def test_malicious_round_zero_leaks_and_the_client_can_tell():
    honest, _ = watched_messages([TEXT], [1], resolve("tiny-bert"), rank=8, trained_steps=0, watch=Watch())
    crafted, _ = watched_messages([TEXT], [1], resolve("tiny-bert"), rank=8, trained_steps=0, watch=Watch(server="malicious"))
    assert ll.attacks.lora_a_is_zero(honest[0].update) and not ll.attacks.lora_a_is_zero(crafted[0].update)
    assert ll.malicious.check_global_adapter(honest[0].global_state, honest[0].setup, 0) == []
    problems = ll.malicious.check_global_adapter(crafted[0].global_state, crafted[0].setup, 0)
    assert problems and all("not zero in round 0" in p for p in problems)
    result = ll.attacks.span_attack(crafted[0], ll.Knowledge(length=10))
    assert result.texts == [TEXT]


def test_malicious_server_sends_and_keeps_the_crafted_adapter():
    setup = ll.FederatedSetup(model=resolve("tiny-bert"), rank=2, protocol="fedsgd")
    model = setup.build_model()
    server = ll.malicious.MaliciousServer(setup, ll.gradients.trainable_state(model))
    sent = server.broadcast(0)
    assert all(float(t.abs().max()) > 0 for n, t in sent.items() if "lora_B" in n)
    assert all(torch.equal(sent[n], server.sent[0][n]) for n in sent)
    assert ll.malicious.check_global_adapter(sent, setup, 0)
    assert ll.malicious.check_global_adapter(sent, setup, 1) == []  # past round 0 a client cannot tell
    with pytest.raises(ValueError, match="scale"):
        ll.malicious.craft_adapter(sent, scale=0)
    wrong = dict(list(sent.items())[1:])
    assert "not the set-up's" in ll.malicious.check_global_adapter(wrong, setup, 0)[0]


def test_cli_attacks_round_zero_through_a_malicious_server(capsys):
    assert cli.main(["attack", "--text", "my pin is four four two", "--rounds", "0", "--server", "malicious",
                     "--attack", "span", "--rank", "4"]) == 0
    out = capsys.readouterr().out
    assert "reconstruction : my pin is four four two" in out and "malicious server" in out


def test_the_cli_rebuilds_a_batch_beyond_one_rounds_span_from_four_watched_rounds(tmp_path, capsys):
    path = tmp_path / "batch.txt"
    texts = ["cold soup today", "blue horse runs", "my pin code", "send more cash"]
    path.write_text("\n".join(texts) + "\n")
    assert cli.main(["attack", "--batch", "4", "--observed-rounds", "4", "--rank", "2", "--file", str(path),
                        "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(r["reconstruction"] for r in rows) == sorted(texts)
    assert all(r["batch_size"] == 4 and r["observed_rounds"] == 4 for r in rows)
