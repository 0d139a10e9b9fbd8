"""Every path runs on an accelerator: the fake accelerator's rules, and the whole library run under them.

On a CPU machine every unit test already runs on the fake accelerator (``conftest.py``); this file checks the
fake itself, runs every part of the library on it, and puts back, one at a time, the device bugs that a real GPU
found: each must fail here.
"""
import ast
import copy
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_accelerator import FAKE, DeviceBug, FakeAccelerator, on_fake

import lora_leak_lib as ll
from lora_leak_lib import config, experiments, families, fl, flower, lora, models
from lora_leak_lib.attacks import Knowledge, get_attack, search
from lora_leak_lib.defenses import secure_aggregation
from lora_leak_lib.experiments.multi_round import Watch, attack_watched, watched_messages
from lora_leak_lib.experiments.sweep import Defence, Recipe
from lora_leak_lib.models import resolve

LIBRARY = Path(ll.__file__).parent
BOUNDARY = LIBRARY / "arrays.py"
on_the_fake = pytest.mark.skipif(config.device() != FAKE and config.device().type != "cpu",
                                 reason="checks the fake accelerator; on a real GPU the card itself checks")


def tensors_in(value):
    """Every tensor inside nested dicts, lists, tuples and dataclass-like objects."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from tensors_in(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from tensors_in(item)
    elif hasattr(value, "__dataclass_fields__"):
        for name in value.__dataclass_fields__:
            yield from tensors_in(getattr(value, name))


# --- the fake accelerator keeps CUDA's rules -------------------------------------------------------------------

@on_the_fake
def test_the_fake_raises_where_cuda_would():
    on_device, on_cpu = torch.ones(3, device=FAKE), torch.ones(3)
    assert on_fake(on_device) and not on_fake(on_cpu) and on_device.device == FAKE and on_cpu.device.type == "cpu"
    with pytest.raises(DeviceBug, match="same device"):
        on_device + on_cpu
    with pytest.raises(DeviceBug, match="numpy"):
        on_device.numpy()
    with pytest.raises(DeviceBug, match="numpy"):
        np.asarray(on_device * 2)
    assert on_fake(on_device * torch.tensor(2.0))  # a CPU 0-d tensor is allowed beside device tensors
    assert on_device.cpu().numpy().sum() == 3 and not on_fake(on_device.cpu())
    with pytest.raises(DeviceBug, match="generator"):
        torch.randn(2, device=FAKE, generator=torch.Generator().manual_seed(0))


@on_the_fake
def test_moves_copy_and_everything_follows_its_inputs():
    cpu = torch.zeros(2)
    moved = cpu.to(FAKE)
    assert on_fake(moved) and not on_fake(cpu)  # a move copies; the source stays on the CPU
    assert on_fake(torch.zeros(2, device=moved.device)) and on_fake(torch.zeros_like(moved))
    layer = torch.nn.Linear(3, 2).to(FAKE)
    copied = copy.deepcopy(layer)
    assert all(on_fake(p) for m in (layer, copied) for p in m.parameters())
    layer(torch.ones(1, 3, device=FAKE)).sum().backward()
    assert on_fake(layer.weight.grad)
    per_sample = torch.func.vmap(torch.func.grad(lambda w, x: (w * x).sum()), in_dims=(None, 0))(
        torch.ones(3, device=FAKE), torch.ones(4, 3, device=FAKE))
    assert on_fake(per_sample)
    with pytest.raises(DeviceBug):
        layer(torch.ones(1, 3))


def test_the_session_runs_on_the_library_device(device):
    assert config.device() == device
    assert next(models.resolve("tiny-bert").load(seed=0).parameters()).device == device
    encoded = ll.data.encode(models.resolve("tiny-bert").tokenizer, ["a quiet film"])
    assert {t.device for t in encoded.values()} == {device}


# --- the whole library on the device ---------------------------------------------------------------------------

def test_every_attack_defence_and_party_runs_on_the_device(device):
    """Capture, every registered attack, DLG with a token set, every defence in the registry (secure aggregation
    and DP-SGD included), watched rounds, the malicious server, Flower's array conversion and ``LoRALinear``."""
    text = "the movie was a quiet and lovely surprise"
    shared = fl.capture_update([text], [1], resolve("tiny-bert"), trained_steps=2)
    zero = fl.capture_update(["a quiet film"], [1], resolve("tiny-bert"), trained_steps=0)
    full = fl.capture_full_update(["a quiet film"], [1], resolve("tiny-bert"))
    returned = [shared, zero, full]
    quick = dict(dlg=dict(steps=3, restarts=1), **{"lora-best": dict(steps=3, restarts=1, later_iterations=2)})
    for name in ll.attacks.attack_names():
        ran = []
        for update, words in ((shared, text), (zero, "a quiet film"), (full, "a quiet film")):
            knowledge = Knowledge(length=len(models.resolve("tiny-bert").tokenizer(words)["input_ids"]))
            try:
                ran.append(get_attack(name, **quick.get(name, {})).reconstruct(update, knowledge))
            except ValueError:  # one clear line: this attack does not apply to that message (a DeviceBug is not)
                continue
        assert ran, f"attack {name} ran on none of the messages"
        returned += ran
    token_set = get_attack("dlg", steps=3, restarts=1, use_token_set=True).reconstruct(full, Knowledge(length=5))
    assert token_set.token_ids
    batch = experiments.attack_texts(["a quiet film", "loud and long"], [1, 0], resolve("tiny-bert"), trained_steps=2, attack="span")
    decoder = experiments.attack_texts(["a gentle film"], None, resolve("tiny-gpt2"), trained_steps=2, attack="span")
    watched = attack_watched(["a quiet film"], [1], resolve("tiny-bert"), trained_steps=2, attack="span")
    crafted, _ = watched_messages(["a quiet film"], [1], resolve("tiny-bert"), rank=8, trained_steps=0, watch=Watch(server="malicious"))
    assert ll.malicious.check_global_adapter(crafted[0].global_state, crafted[0].setup, 0)
    assert batch and decoder and watched
    recipe = Recipe(n_clients=2, rounds=1, batch_size=2, n_victims=1, limit=12, seed=0)
    for name, spec in ll.defenses.registry.DEFENCES.items():
        value = spec.sweep_values(quick=True)[0]  # a value every defence takes (None without a knob)
        if spec.transform is not None:
            returned.append(ll.defenses.defend_message(shared.update, name, value, seed=0))
        assert experiments.sweep.run_setting(Defence(name, value), recipe).accuracy_curve
    history = fl.run_federated(resolve("tiny-bert"), 2, 1, progress=False, limit=None)
    returned += [history.server.captured(0, 0), secure_aggregation.secure_aggregate([shared.update] * 2)]
    private = shared.public_model()
    ll.defenses.dp_sgd_train(private, resolve("tiny-bert").tokenizer, ll.data.course_sentences()[:4], 1, 1.0, 0.5, seed=0)
    layer = lora.LoRALinear(torch.nn.Linear(4, 3).to(device), rank=2, alpha=4)
    assert layer(torch.ones(2, 4, device=device)).shape == (2, 3)
    devices = {t.device for value in returned for t in tensors_in(value)}
    assert devices == {device}
    assert all(p.device == device for m in (history.model, private, layer) for p in m.parameters())


@pytest.mark.skipif(not flower.flower_available(), reason=flower.INSTALL_HINT)
def test_flowers_array_conversion_comes_back_to_the_device(device):
    shared = fl.capture_update(["a quiet film"], [1], resolve("tiny-bert"), trained_steps=1)
    model = shared.public_model()
    arrays = flower.peft_state(model)
    assert all(isinstance(a, np.ndarray) for a in arrays)
    assert all(t.device == device for t in flower.from_arrays(model, arrays).values())
    names = list(shared.update)
    back = flower.update_from_arrays(flower.delta_arrays(shared.update, names), shared.update)
    quantised = flower.secagg_quantized(shared.update, 1.0, 2**20)
    assert {t.device for u in (back, quantised) for t in u.values()} == {device}
    assert get_attack("span").reconstruct(replace(shared, update=quantised), Knowledge(length=5)).token_ids


# --- each device bug a real GPU found, put back: the fake accelerator must catch it ----------------------------

def _numpy_without_a_move(value):
    return value.detach().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def _masks_on_the_cpu(rng, low, high, like):
    return torch.from_numpy(rng.integers(low, high, size=tuple(like.shape), dtype=np.int64))


def _arrays_left_on_the_cpu(array, like, dtype=None):
    return torch.from_numpy(np.array(array)).to(like.dtype if dtype is None else dtype)


def _dlg_with_a_token_set():
    full = fl.capture_full_update(["a quiet film"], [1], resolve("tiny-bert"))
    get_attack("dlg", steps=2, restarts=1, use_token_set=True).reconstruct(full, Knowledge(length=5))


def _secure_aggregation():
    update = fl.capture_update(["a quiet film"], [1], resolve("tiny-bert"), trained_steps=1).update
    secure_aggregation.secure_aggregate([update, update])


def _secagg_client_delta():
    update = fl.capture_update(["a quiet film"], [1], resolve("tiny-bert"), trained_steps=1).update
    flower.delta_arrays(update, list(update))


def _attack_on_a_quantised_update():
    shared = fl.capture_update(["a quiet film"], [1], resolve("tiny-bert"), trained_steps=1)
    quantised = flower.secagg_quantized(shared.update, 1.0, 2**20)
    get_attack("span").reconstruct(replace(shared, update=quantised), Knowledge(length=5))


PUT_BACK = {
    "search.py: .numpy() of a device score in cover_assignment": (search, "to_numpy", _numpy_without_a_move,
                                                                  _dlg_with_a_token_set),
    "secure_aggregation.py: CPU masks added to a device update": (secure_aggregation, "integers", _masks_on_the_cpu,
                                                                  _secure_aggregation),
    "flower/conversion.py: .numpy() of a device delta in the SecAgg+ client": (
        flower.conversion, "to_numpy", _numpy_without_a_move, _secagg_client_delta),
    "flower/conversion.py: from_numpy results left on the CPU": (
        flower.conversion, "from_numpy", _arrays_left_on_the_cpu, _attack_on_a_quantised_update),
}


@on_the_fake
@pytest.mark.parametrize("bug", list(PUT_BACK))
def test_a_device_bug_put_back_fails_on_the_fake_accelerator(bug, monkeypatch):
    module, name, buggy, path = PUT_BACK[bug]
    if module is flower.conversion and not flower.flower_available():
        pytest.skip(flower.INSTALL_HINT)
    path()  # the fixed library passes
    monkeypatch.setattr(module, name, buggy)
    with pytest.raises(DeviceBug):
        path()


def test_a_hand_written_lora_layer_follows_its_base_layer(device):
    layer = lora.LoRALinear(torch.nn.Linear(4, 3).to(device), rank=2, alpha=4)
    assert {p.device for p in layer.parameters()} == {device}
    layer(torch.ones(2, 4, device=device)).sum().backward()
    assert layer.A.grad.device == device


def test_label_counts_take_mean_probabilities_as_a_list(device):
    head = "classifier.modules_to_save.default.bias"
    # dL/db = p̄ − k/n: a batch of one of each class, with the model's mean prediction (0.7, 0.3)
    update = OrderedDict({head: torch.tensor([0.2, -0.2], device=device)})
    assert ll.attacks.labels.infer_labels(update, 2, mean_probs=[0.7, 0.3]) == [0, 1]


# --- one module owns the numpy boundary ------------------------------------------------------------------------

def crossings(path: Path) -> list[int]:
    """The lines of a source file that call ``.numpy()`` or use ``from_numpy`` (other than importing the
    boundary's own ``from_numpy``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "numpy":
            found.add(node.lineno)
        elif isinstance(node, ast.Attribute) and node.attr == "from_numpy":  # torch.from_numpy, np-free
            found.add(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module != "arrays" and any(
                a.name == "from_numpy" for a in node.names):
            found.add(node.lineno)
    return sorted(found)


def test_only_the_boundary_module_crosses_to_numpy():
    outside = [f"{p.relative_to(LIBRARY.parent)}:{line}" for p in sorted(LIBRARY.rglob("*.py")) if p != BOUNDARY
               for line in crossings(p)]
    assert not outside, "call lora_leak_lib.arrays (to_numpy, from_numpy) instead:\n" + "\n".join(outside)


def test_the_boundary_check_sees_each_crossing(tmp_path):
    module = tmp_path / "fake.py"
    module.write_text("import torch\nfrom torch import from_numpy\nfrom .arrays import from_numpy, to_numpy\n"
                      "x = torch.zeros(2).numpy()\ny = torch.from_numpy(x)\nz = from_numpy(x, like=y)\n")
    assert crossings(module) == [2, 4, 5]
    assert crossings(BOUNDARY)  # the boundary itself crosses


# --- the choice of device ----------------------------------------------------------------------------------------

def test_a_device_this_machine_lacks_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA GPU: use 'cpu'"):
        config.check_device("cuda")
    with pytest.raises(ValueError, match="not a device"):
        config.check_device("gpu-please")
    monkeypatch.setattr(config, "_chosen", None)
    monkeypatch.setenv(config.DEVICE_VARIABLE, "cpu")
    assert config.device() == torch.device("cpu")


def test_the_mode_follows_where_the_work_runs(monkeypatch):
    monkeypatch.delenv(config.MODE_VARIABLE, raising=False)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(config, "_chosen", torch.device("cpu"))  # a GPU machine told to work on the CPU
    assert config.mode() == "quick"
    monkeypatch.setattr(config, "_chosen", None)
    monkeypatch.setenv(config.DEVICE_VARIABLE, "")
    assert config.mode() == "full"


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_targets_made_on_the_cpu_follow_the_logits(family, device):
    # A notebook writes torch.tensor([label]) on the CPU while the model runs on the device; the loss must not mind.
    logits = torch.randn(2, 5, 7, device=device) if family == "gpt2" else torch.randn(2, 2, device=device)
    targets = torch.randint(0, 7, (2, 5)) if family == "gpt2" else torch.tensor([0, 1])
    assert families.FAMILIES[family].loss(logits, targets).device == device
