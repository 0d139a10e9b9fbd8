"""One device for everything: every tensor the library makes goes to ``config.device()``.

A CPU machine cannot move anything to a GPU, so these tests prove it another way: while the pipeline runs on
an explicitly chosen device, a torch function mode records every tensor factory (``torch.zeros``,
``torch.tensor``, ``torch.randperm``, ...) that library code calls without saying where the tensor goes, the
calls that would land on the CPU on a GPU machine. There must be none, and everything returned must sit on
the chosen device.
"""
import sys
from collections import Counter

import pytest
import torch
from torch.overrides import TorchFunctionMode

import lora_leak_lib as ll
from lora_leak_lib import config, experiments, fl, models

FACTORIES = {torch.tensor, torch.zeros, torch.ones, torch.empty, torch.full, torch.arange, torch.randn,
             torch.rand, torch.randint, torch.randperm, torch.eye, torch.linspace, torch.as_tensor}


class DeviceAudit(TorchFunctionMode):
    """Counts the library's tensor factories called without ``device=``, by file and line."""

    def __init__(self) -> None:
        super().__init__()
        self.misses: Counter = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        keeps_device = func is torch.as_tensor and args and isinstance(args[0], torch.Tensor)
        if func in FACTORIES and "device" not in kwargs and not keeps_device:
            frame = sys._getframe(1)
            while frame is not None and "/torch/" in frame.f_code.co_filename:
                frame = frame.f_back
            if frame is not None and "lora_leak_lib" in frame.f_code.co_filename:
                where = frame.f_code.co_filename.split("lora_leak_lib")[1]
                self.misses[f"lora_leak_lib{where}:{frame.f_lineno} {func.__name__}"] += 1
        return func(*args, **kwargs)


@pytest.fixture
def chosen_device():
    device = config.use_device("cpu")
    yield device
    config.use_device(None)


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


def test_the_audit_sees_a_factory_without_a_device(chosen_device):
    with DeviceAudit() as audit:
        ll.attacks.inputs.lora_a_is_zero({"x.lora_A": torch.zeros(2, 2, device=chosen_device)})
        exec(compile("import torch\ntorch.zeros(3)", "lora_leak_lib/fake.py", "exec"))
    assert list(audit.misses) == ["lora_leak_lib/fake.py:2 zeros"]


def test_no_code_path_leaves_the_chosen_device(chosen_device):
    with DeviceAudit() as audit:
        shared = fl.capture_update(["the movie was a quiet and lovely surprise"], [1], "tiny-bert", rounds=2)
        best = ll.attacks.get_attack("lora-best", later_rounds=2).reconstruct(shared, ll.attacks.Knowledge(length=8))
        zero = fl.capture_update(["a quiet film"], [1], "tiny-bert", rounds=0)
        dlg = ll.attacks.get_attack("lora-best", dlg_steps=3, restarts=1).reconstruct(zero, ll.attacks.Knowledge(length=3))
        batch = experiments.attack_texts(["a quiet film", "loud and long"], [1, 0], "tiny-bert", rounds=2,
                                         attack="span")
        decoder = experiments.attack_texts(["a gentle film"], None, "tiny-gpt2", rounds=2, attack="span")
        history = fl.run_federated("tiny-bert", 2, 1, progress=False, limit=None)
        defended = ll.defenses.defend_message(shared.update, "noise", 1e-4, seed=0)
        full = fl.capture_full_update(["a quiet film"], [1], "tiny-bert")
        token_set = ll.attacks.get_attack("token-set").reconstruct(full)
        private = shared.public_model()
        ll.defenses.dp_sgd_train(private, "tiny-bert", ll.data.course_sentences()[:4], 1, 1.0, 0.5, seed=0)
    assert not audit.misses, "tensors made without a device:\n" + "\n".join(f"{n}× {k}" for k, n in audit.misses.items())
    assert best.token_ids and dlg.token_ids and batch and decoder and token_set.token_ids
    returned = [shared, best, zero, dlg, defended, full, history.server.captured(0, 0)]
    devices = {t.device for value in returned for t in tensors_in(value)}
    assert devices == {chosen_device}
    assert all(p.device == chosen_device for m in (history.model, private) for p in m.parameters())


def test_models_and_encoded_batches_go_to_the_chosen_device(chosen_device):
    assert next(models.load_model("tiny-bert", seed=0).parameters()).device == chosen_device
    encoded = ll.data.encode(models.load_tokenizer("tiny-bert"), ["a quiet film"])
    assert {t.device for t in encoded.values()} == {chosen_device}


def test_a_device_this_machine_lacks_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA GPU: use 'cpu'"):
        config.use_device("cuda")
    with pytest.raises(ValueError, match="not a device"):
        config.check_device("gpu-please")
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
def test_targets_made_on_the_cpu_follow_the_logits(family):
    # A notebook writes torch.tensor([label]) on the CPU while the model runs on the GPU; the loss must not mind.
    # The meta device stands in for a GPU: a CPU tensor beside a meta one is the same mismatch.
    logits = torch.randn(2, 5, 7, device="meta") if family == "gpt2" else torch.randn(2, 2, device="meta")
    targets = torch.randint(0, 7, (2, 5)) if family == "gpt2" else torch.tensor([0, 1])
    assert models.FAMILIES[family].loss(logits, targets).device.type == "meta"
