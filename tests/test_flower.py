"""The Flower run sends only adapter tensors and captures the same updates as the in-process simulation."""
import contextlib
import logging
import os
import re
import warnings
from pathlib import Path

import pytest
import torch

import lora_leak_lib as ll
from lora_leak_lib import flower
from lora_leak_lib.attacks import SpanAttack
from lora_leak_lib.models import resolve

pytestmark = pytest.mark.slow  # Flower's SuperLink, SuperExec and Ray processes

if not flower.flower_available():
    if os.environ.get("CI"):
        pytest.fail(flower.INSTALL_HINT, pytrace=False)
    pytest.skip(flower.INSTALL_HINT, allow_module_level=True)

SETTINGS = dict(n_clients=3, rounds=2, lr=0.5, local_steps=1, optimizer="sgd", batch_size=1, seed=0)
SEEN: dict[str, tuple[list[logging.LogRecord], list[warnings.WarningMessage]]] = {}


@contextlib.contextmanager
def watching(name):
    """Keep what this process hears while a run goes: Flower's log records (Flower warns of a deprecated call
    through its logger ``flwr``, ``flwr.supercore.logger.warn_deprecated_feature``) and every warning."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append
    logging.getLogger("flwr").addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        logging.getLogger("flwr").removeHandler(handler)
    SEEN[name] = records, caught


@pytest.fixture(scope="module")
def runs():
    ll.setup()
    with watching("plain"):
        on_flower = flower.run_flower(resolve("minilm"), **SETTINGS)
    in_process = ll.fl.run_federated(resolve("minilm"), protocol="fedavg", progress=False, **SETTINGS)
    return on_flower, in_process


def test_captured_updates_hold_only_adapter_tensors(runs):
    on_flower, _ = runs
    model = on_flower.setup.build_model()
    trainable = ll.gradients.trainable_names(model)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert len(on_flower.log) == SETTINGS["n_clients"] * SETTINGS["rounds"]
    for entry in on_flower.log:
        assert list(entry.names) == trainable and not frozen & set(entry.names)
        assert all(name.endswith(("lora_A.default.weight", "lora_B.default.weight")) or ".classifier." in name
                   for name in entry.names)


def test_same_updates_as_in_process(runs):
    on_flower, in_process = runs
    for round in range(SETTINGS["rounds"]):
        for client in range(SETTINGS["n_clients"]):
            a, b = on_flower.captured(client, round).update, in_process.server.captured(client, round).update
            for name in a:
                # Both runs compute the same float32 sums, but a Ray worker (one thread) and this process (the
                # machine's BLAS threads) add their terms in different orders: a sum of K terms then moves by up
                # to K·ε·Σ|terms| (ε = 2^-23), with K up to ~10^3 here 1e-4 of a tensor's largest entry. A later
                # round starts from averages that already differ so, and dL/dA = s·Bᵀ·G inherits B's relative
                # error, large where B is still near 0: there 1% of the largest entry.
                scale = float(b[name].abs().max())
                assert torch.allclose(a[name], b[name], rtol=1e-4, atol=(1e-2 if round else 1e-4) * scale), name


def test_attack_gives_the_same_reconstruction(runs):
    on_flower, in_process = runs
    attack = SpanAttack()
    from_flower = attack.reconstruct(on_flower.captured(0, 1))
    from_process = attack.reconstruct(in_process.server.captured(0, 1))
    assert from_flower.token_ids == from_process.token_ids
    truth = in_process.clients[0].last_batches[0][0].text
    assert ll.metrics.rouge(truth, from_flower.texts[0])["rouge1"] > 0.9


def deprecations(history, name):
    """Every deprecation a run reported: in Flower's processes (their logs) and in this one."""
    records, caught = SEEN[name]
    found = [line for line in history.flower_log.splitlines() if re.search("deprecat", line, re.IGNORECASE)]
    found += [r.getMessage() for r in records if "deprecat" in r.getMessage().lower()]
    return found + [str(w.message) for w in caught if "flwr" in w.filename + str(w.message)
                    and issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning))]


@pytest.mark.parametrize("name", ["plain", "secure"])
def test_flower_runs_without_deprecated_calls(runs, secure, name):
    history = runs[0] if name == "plain" else secure
    rounds = SETTINGS["rounds"]
    # the log is the server's and the SuperLink's: it holds the last round ("[ROUND 2/2]", legacy "[ROUND 2]")
    # and the SuperLink's start
    assert f"[ROUND {rounds}" in history.flower_log and "Starting Flower SuperLink" in history.flower_log
    assert not deprecations(history, name)


def test_the_watch_hears_what_run_simulation_said():
    from flwr.supercore.logger import warn_deprecated_feature

    with watching("demo"):  # what the deprecated `run_simulation` logs in the calling process at each run
        warn_deprecated_feature("The `run_simulation` function is deprecated")
    found = deprecations(flower.FlowerHistory(None, flower_log="WARNING: DEPRECATED FEATURE: in a subprocess"), "demo")
    assert len(found) == 2 and "subprocess" in found[0] and "run_simulation" in found[1]


def test_the_app_says_where_flower_may_write_and_that_it_reports_nothing(tmp_path):
    env = flower.flower_env(tmp_path)
    assert env["FLWR_TELEMETRY_ENABLED"] == "0" and env["FLWR_DISABLE_UPDATE_CHECK"] == "1"
    assert env["RAY_USAGE_STATS_ENABLED"] == "0"
    assert Path(env["FLWR_HOME"]).parent == tmp_path  # the app, the connection and Flower's id file: all temporary
    from flwr.cli.config_utils import load_and_validate

    config, problems = load_and_validate(flower.APP / "pyproject.toml")  # what `flwr run` checks first
    assert not problems
    assert config["tool"]["flwr"]["app"]["components"] == {"serverapp": "lora_leak_lib.flower_app:server_app",
                                                           "clientapp": "lora_leak_lib.flower_app:client_app"}


def test_missing_flower_gives_one_line(monkeypatch):
    monkeypatch.setattr(flower.gate, "flower_available", lambda: False)  # what require_flower asks
    with pytest.raises(ValueError, match=r"pip install -e \"\.\[flower\]\""):
        flower.run_flower()


# --- SecAgg+: the same clients under Flower's secure aggregation protocol --------------------------------


@pytest.fixture(scope="module")
def secure():
    ll.setup()
    with watching("secure"):
        return flower.run_flower(resolve("minilm"), secure_aggregation=True, **SETTINGS)


def plain_mean(history, round):
    """The weighted mean of the round's client deltas, in float64, from a run whose server saw every delta."""
    replies = [history.received[(c, round)] for c in range(SETTINGS["n_clients"])]
    total = sum(m.n_examples for m in replies)
    return {n: sum(m.n_examples * m.update[n].double() for m in replies) / total for n in replies[0].update}


def test_secagg_server_sees_only_the_aggregate(secure):
    n, rounds = SETTINGS["n_clients"], SETTINGS["rounds"]
    assert secure.secure and not secure.received and not secure.log
    # the strategy was handed one payload per round, identical for every client: the aggregate
    assert secure.distinct_payloads == {r: 1 for r in range(rounds)}
    assert sorted(secure.aggregates) == list(range(rounds))
    assert sorted(secure.replies) == sorted((c, r) for c in range(n) for r in range(rounds))
    assert all(reply.clipped == 0 for reply in secure.replies.values())
    with pytest.raises(ValueError, match="captured_aggregate"):
        secure.captured(0, 0)
    shared = secure.captured_aggregate(rounds - 1)
    assert shared.kind == "delta" and shared.batch_size == n and shared.client_id == -1
    assert list(shared.update) == list(secure.sent[0]) and all(t.dtype == torch.float32 for t in shared.update.values())


def test_secagg_aggregate_is_the_plain_mean_within_the_step(runs, secure):
    on_flower, _ = runs
    assert secure.error_bound == pytest.approx(2 * 1.0 / 2**30)  # equal shards: one step of 2c/L
    # Round 0 starts from the same adapter in both runs: the clients' deltas are identical.
    plain, seen = plain_mean(on_flower, 0), secure.aggregates[0]
    gap = max(float((seen[n] - plain[n]).abs().max()) for n in plain)
    assert 0 < gap <= secure.error_bound, gap
    # Round 1 starts from a global adapter off by that much (then rounded to float32): still close.
    plain, seen = plain_mean(on_flower, 1), secure.aggregates[1]
    assert ll.gradients.relative_error(ll.fl.flatten(seen), ll.fl.flatten(plain)) < 1e-6
    assert max(abs(a - b) for a, b in zip(secure.loss, on_flower.loss)) < 1e-5


def test_attack_on_secagg_aggregate_recovers_much_less(runs, secure):
    on_flower, _ = runs
    last = SETTINGS["rounds"] - 1
    single = flower.attack_scores(on_flower, last, 0)[0]["rouge1"]
    # control: client 0's update quantised as a SecAgg+ client quantises it, without aggregation
    quantised = flower.attack_scores(on_flower, last, 0, transform=lambda u: flower.secagg_quantized(
        u, secure.clipping_range, secure.quantization_range))[0]["rouge1"]
    rows = flower.attack_scores(secure, last)
    assert sorted(r["original"] for r in rows) == sorted(secure.private_texts(last))
    aggregate = sum(r["rouge1"] for r in rows) / len(rows)
    assert single > 0.9 and quantised > 0.9, (single, quantised)
    assert aggregate < single - 0.3, [r["rouge1"] for r in rows]


def test_secagg_needs_two_clients_and_no_overflow():
    with pytest.raises(ValueError, match="at least 2 clients"):
        flower.run_flower(n_clients=1, secure_aggregation=True)
    with pytest.raises(ValueError, match="quantization_range"):
        flower.run_flower(n_clients=3, secure_aggregation=True, quantization_range=2**31)
    assert flower.default_quantization_range(3) == 2**30 and flower.default_quantization_range(4) == 2**29
    assert all(n * flower.default_quantization_range(n) < 2**32 for n in range(2, 100))
