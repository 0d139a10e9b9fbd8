"""A fake accelerator for a machine without one: CUDA's device rules, enforced on the CPU.

CI has no GPU, so a tensor the library forgets to move still meets the model on the CPU and nothing fails. Inside
``FakeAccelerator()`` the chosen device is ``FAKE`` (``cpu:1``): tensors that go there (a factory with
``device=FAKE``, ``.to(FAKE)``, a module moved there, or any op on such tensors) are *tagged*, everything else
stays on the plain CPU, and the mode raises as CUDA does when

- an op mixes a tagged tensor with an untagged one of one or more dimensions (CUDA accepts a CPU 0-d tensor
  beside GPU tensors, nothing more), or
- a tagged tensor goes to numpy (``.numpy()``, ``np.asarray``), or
- a draw is asked for on the device from a (CPU) generator.

Tagged tensors report ``FAKE`` as their ``.device``, so code that follows its inputs (``device=x.device``) lands
on the fake accelerator, and code that names the CPU, or no device at all, does not.
"""
from __future__ import annotations

import torch
import torch._functorch.eager_transforms
import torch._functorch.vmap
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_map

FAKE = torch.device("cpu", 1)
"""The fake accelerator: computes on the CPU, but is not the CPU as far as the rules go."""
_TAG = "_on_fake_accelerator"
_BASE = torch._C.TensorBase
_DEVICE, _DATA = _BASE.__dict__["device"], _BASE.__dict__["data"]
# Ops that may legitimately take tensors from both sides on CUDA: copies between devices and indexing.
_CROSSING = {"to", "cpu", "cuda", "copy_", "__getitem__", "__setitem__", "__repr__", "__format__", "__str__",
             "__reduce_ex__", "__deepcopy__", "tolist", "item", "size", "dim", "numel", "swap_tensors",
             "_has_compatible_shallow_copy_type", "is_floating_point", "is_complex", "is_same_size"}


_UNWRAPS = [(torch._functorch.vmap, "_remove_batch_dim"), (torch._functorch.eager_transforms, "_unwrap_for_grad")]


def _keeping_place(unwrap):
    def unwrapped(wrapper, *args, **kwargs):
        result = unwrap(wrapper, *args, **kwargs)
        return _tag(result, on_fake(wrapper)) if result is not wrapper else result
    return unwrapped


class DeviceBug(RuntimeError):
    """What CUDA would have raised."""


def on_fake(t: torch.Tensor) -> bool:
    """True when ``t`` lives on the fake accelerator (a vmap/grad wrapper lives where the tensor it wraps does)."""
    if _TAG in t.__dict__:
        return t.__dict__[_TAG]
    functorch = torch._C._functorch
    return functorch.is_functorch_wrapped_tensor(t) and on_fake(functorch.get_unwrapped(t))


def _is_fake(device) -> bool:
    if isinstance(device, str) and device.startswith("cpu"):
        device = torch.device(device)
    return isinstance(device, torch.device) and device.type == "cpu" and device.index == 1


def _to_cpu(value):
    """``FAKE`` as the plain CPU, for the real call."""
    return torch.device("cpu") if _is_fake(value) else value


def _tensors(args, kwargs) -> list[torch.Tensor]:
    """The tensors a call takes, directly or in a list (as torch.cat and the optimisers' foreach ops do)."""
    found = []
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            found.append(value)
        elif isinstance(value, (list, tuple)):
            found.extend(v for v in value if isinstance(v, torch.Tensor))
    return found


def _target_device(name, args, kwargs):
    """Where a call asks its result to go: the device it names, or ``None`` when it names none."""
    if name == "cuda":
        return FAKE
    if name == "cpu":
        return torch.device("cpu")
    if name == "to":
        device = torch._C._nn._parse_to(*args[1:], **kwargs)[0]
        return device
    return kwargs.get("device")


def _tag(value, fake: bool):
    if isinstance(value, torch.Tensor):
        value.__dict__[_TAG] = fake
    return value


class FakeAccelerator(TorchFunctionMode):
    """Enforce CUDA's device rules on tensors placed on ``FAKE``; use as ``with FakeAccelerator(): ...``."""

    def __enter__(self):
        # nn.Parameter(data) (also how a parameter is deep-copied) bypasses torch functions: it stays with its data.
        self._new = new = torch.nn.Parameter.__new__

        def parameter(cls, data=None, requires_grad=True):
            return _tag(new(cls, data, requires_grad), data is not None and on_fake(data))

        torch.nn.Parameter.__new__ = parameter
        # torch.load(..., map_location=FAKE) rebuilds its tensors outside torch functions: they land on FAKE.
        self._load = load = torch.load

        def load_to(*args, map_location=None, **kwargs):
            if not _is_fake(map_location):
                return load(*args, map_location=map_location, **kwargs)
            rebuild = torch._utils._rebuild_tensor_v2
            torch._utils._rebuild_tensor_v2 = lambda *a, **k: _tag(rebuild(*a, **k), True)
            try:
                return load(*args, map_location="cpu", **kwargs)
            finally:
                torch._utils._rebuild_tensor_v2 = rebuild

        torch.load = load_to
        # vmap and grad unwrap their results outside torch functions: each result stays where its wrapper was.
        self._unwrap = {(module, name): getattr(module, name) for module, name in _UNWRAPS}
        for (module, name), unwrap in self._unwrap.items():
            setattr(module, name, _keeping_place(unwrap))
        return super().__enter__()

    def __exit__(self, *exc):
        torch.nn.Parameter.__new__, torch.load = self._new, self._load
        for (module, name), unwrap in self._unwrap.items():
            setattr(module, name, unwrap)
        return super().__exit__(*exc)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        owner = getattr(func, "__self__", None)
        if owner is _DEVICE:  # t.device
            return FAKE if on_fake(args[0]) else func(*args, **kwargs)
        if name == "__deepcopy__":  # a copy stays on its original's device
            return _tag(func(*args, **kwargs), on_fake(args[0]))
        if owner is _DATA and name == "__set__":  # param.data = moved: the parameter moves with it
            func(*args, **kwargs)
            return _tag(args[0], on_fake(args[1]))
        tensors = _tensors(args, kwargs)
        fake = [t for t in tensors if on_fake(t)]
        if fake and name in ("numpy", "__array__"):
            raise DeviceBug("can't convert cuda:0 device type tensor to numpy (fake accelerator): use "
                            "lora_leak_lib's numpy boundary, which moves it to the CPU first.")
        if fake and len(fake) < len(tensors) and name not in _CROSSING:
            cpu = [t for t in tensors if t.dim() > 0 and not on_fake(t)]
            if cpu:
                raise DeviceBug(f"{name or func}: expected all tensors to be on the same device, but found at "
                                f"least two devices, cuda:0 and cpu (fake accelerator; shapes "
                                f"{tuple(fake[0].shape)} and {tuple(cpu[0].shape)}).")
        target = _target_device(name, args, kwargs)
        if _is_fake(target) and kwargs.get("generator") is not None:
            raise DeviceBug(f"{name}: expected a 'cuda' device type for generator but found 'cpu' (fake accelerator): "
                            "draw on the CPU and move the result (lora_leak_lib.arrays).")
        if target is not None:
            args, kwargs = tree_map(_to_cpu, args), tree_map(_to_cpu, kwargs)
        result = func(*args, **kwargs)
        now_fake = _is_fake(target) if target is not None else bool(fake)
        if target is not None and args and result is args[0] and on_fake(result) != now_fake:
            result = result.clone()  # a real move copies; the source stays where it was
        if isinstance(result, torch.Tensor):
            if not any(result is t for t in tensors):  # in place (or a no-op move): it stays where it is
                result.__dict__[_TAG] = now_fake
        elif isinstance(result, (tuple, list)):
            for item in result:
                if isinstance(item, torch.Tensor) and not any(item is t for t in tensors):
                    item.__dict__[_TAG] = now_fake
        return result
