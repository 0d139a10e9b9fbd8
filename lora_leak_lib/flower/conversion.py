"""The adapter as it travels on Flower: peft's keys and arrays there, the course's names and tensors here."""
from __future__ import annotations

from collections import OrderedDict
from typing import Mapping, Sequence

import numpy as np
import torch
from peft import PeftModel, get_peft_model_state_dict, set_peft_model_state_dict

from .. import gradients
from ..arrays import from_numpy, to_numpy


def peft_names(model: PeftModel) -> OrderedDict[str, str]:
    """Map the trainable parameter names of the course to the keys of ``get_peft_model_state_dict``."""
    params = {p.data_ptr(): name for name, p in model.named_parameters() if p.requires_grad}
    mapping = OrderedDict((params[t.data_ptr()], key) for key, t in get_peft_model_state_dict(model).items()
                          if t.data_ptr() in params)
    if len(mapping) != len(params):
        raise ValueError("the peft adapter state does not cover every trainable parameter: check the LoRA set-up.")
    return mapping


def to_arrays(model: PeftModel):
    """The adapter state as it travels on Flower: an ``ArrayRecord`` of peft's keys, float32 arrays."""
    from flwr.app import ArrayRecord

    return ArrayRecord(OrderedDict((k, v.detach().cpu().float().clone())
                                   for k, v in get_peft_model_state_dict(model).items()))


def peft_state(model: PeftModel) -> list[np.ndarray]:
    """The adapter state as the legacy (``NumPyClient``) API sends it: float32 arrays in peft's key order."""
    return [to_numpy(v.float()).copy() for v in get_peft_model_state_dict(model).values()]


def from_arrays(model: PeftModel, arrays) -> OrderedDict[str, torch.Tensor]:
    """Load a travelling ``ArrayRecord`` (or a list of arrays in peft's key order) into ``model``; return it
    under the course's parameter names."""
    if not isinstance(arrays, Mapping):
        keys = list(get_peft_model_state_dict(model))
        if len(keys) != len(arrays):
            raise ValueError(f"got {len(arrays)} arrays for an adapter of {len(keys)} tensors: a different set-up?")
        arrays = dict(zip(keys, arrays))
    state = get_peft_model_state_dict(model)
    set_peft_model_state_dict(model, {k: from_numpy(to_numpy(v), like=state[k]) for k, v in arrays.items()})
    return gradients.trainable_state(model)


def delta_arrays(update: Mapping[str, torch.Tensor], names: Sequence[str]) -> list[np.ndarray]:
    """An update as SecAgg+ carries it: float64 arrays in ``names``' order. The mod scales and quantises in the
    arrays' dtype, and float32 would round (Δ + clipping_range) to 2^-24, far coarser than the 2^30 levels
    SecAgg+ can carry."""
    return [to_numpy(update[n].double()) for n in names]


def update_from_arrays(arrays: Sequence, like: Mapping[str, torch.Tensor],
                       dtype: torch.dtype | None = None) -> OrderedDict[str, torch.Tensor]:
    """Arrays in ``like``'s key order back as an update on ``like``'s device (in ``dtype``, default ``like``'s)."""
    return OrderedDict((n, from_numpy(a, like=t, dtype=dtype)) for (n, t), a in zip(like.items(), arrays))
