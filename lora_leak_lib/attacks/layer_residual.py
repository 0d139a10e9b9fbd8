"""The later-layer certificate's building block: how much of each layer's ``lora_A`` span a candidate sentence's
hidden states leave unexplained (used by the later-layer search and by batch threading)."""
from __future__ import annotations

import re
from typing import Sequence

import torch

from .. import families
from .base import SharedUpdate
from .inputs import first_layer_rows, input_span
from .search import gram_residuals

DEFAULT_LAYERS = (0, 1)
"""Layers whose spans the certificate sums: layer 1 adds most of the order information for little cost."""


class _Enough(Exception):
    """Raised by the last hook a residual needs: the layers above it need not run."""


class LayerResidual:
    """``Σ_l ‖Q_l − Q_l·P_{H_l}‖²`` for candidate sentences: how much of each layer's span they leave out.

    ``Q_l`` is the orthonormal basis of layer ``l``'s stacked attention ``lora_A`` rows, ``H_l`` the
    candidate's inputs to those projections (its hidden states, after ``ln_1`` in GPT-2), read by hooks while
    the public model with this round's adapter runs on the candidate: the same code for every family.
    """

    def __init__(self, shared: SharedUpdate, layers: Sequence[int] = DEFAULT_LAYERS) -> None:
        self.model = shared.public_model()
        self.bases = {}
        for layer in layers:
            try:
                self.bases[layer] = input_span(first_layer_rows(shared.update, layer))
            except ValueError:  # no attention LoRA there, or a zero gradient: that layer says nothing
                continue
        if not self.bases:
            raise ValueError(f"no layer of {tuple(layers)} has a non-zero attention lora_A gradient to test.")
        self.readers = {layer: _reader(self.model, layer) for layer in self.bases}

    @torch.no_grad()
    def __call__(self, candidates: Sequence[Sequence[int]], layers: Sequence[int] | None = None,
                 chunk: int = 128) -> torch.Tensor:
        """The summed residual of every candidate (token ids with their first and last special token, all of
        one length), over ``layers`` (default: all this object tests; ``(0,)`` runs no transformer block)."""
        device = next(iter(self.bases.values())).device
        ids = torch.as_tensor(candidates, device=device)
        bases = {l: b for l, b in self.bases.items() if layers is None or l in layers}
        values = []
        for part in ids.split(chunk):
            total = torch.zeros(len(part), dtype=torch.float64, device=device)
            for layer, hidden in self.layer_inputs(part, tuple(bases)).items():
                total += gram_residuals(bases[layer], hidden.double())  # one batched pass per layer
            values.append(total.clamp(min=0.0))
        return torch.cat(values)

    @torch.no_grad()
    def layer_inputs(self, ids: torch.Tensor, layers: Sequence[int]) -> dict[int, torch.Tensor]:
        """What the attention projections of each of ``layers`` read for a batch of token ids (``N × n × d``),
        from one forward pass of the public model that stops after the deepest of them."""
        seen, last = {}, max(layers)

        def read(layer: int):
            def hook(_module, args):
                seen[layer] = args[0]
                if layer == last:
                    raise _Enough
            return hook

        hooks = [self.readers[layer].register_forward_pre_hook(read(layer)) for layer in layers]
        try:
            self.model(input_ids=torch.as_tensor(ids, device=next(iter(self.bases.values())).device))
        except _Enough:
            pass
        finally:
            for hook in hooks:
                hook.remove()
        return seen


def _reader(model: torch.nn.Module, layer: int) -> torch.nn.Module:
    """The first module of ``layer`` that reads the layer's input (BERT's query, MPNet's q, GPT-2's c_attn)."""
    kind = families.family_of(model)
    pattern = re.compile(rf"^{re.escape(kind.layer_prefix.format(layer))}(.*\.)?({'|'.join(kind.layer_inputs)})$")
    for name, module in families.base_of(model).named_modules():
        if pattern.match(name):
            return module
    raise ValueError(f"layer {layer} of this {kind.name} model has no attention projection to read.")
