"""The later-layer certificate's building block: how much of each layer's ``lora_A`` span a candidate sentence's
hidden states leave unexplained (used by the later-layer search and by batch threading). In the first round, where
every ``dL/dA`` is zero, a layer is tested by its ``dL/dB`` row spaces instead (``first_round``): the hidden
states projected by each module's public ``A`` must explain them."""
from __future__ import annotations

import re
from typing import Sequence

import torch

from .. import families
from .base import SharedUpdate
from .first_round import RowSpace, certificates, readable, row_spaces
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
        self.bases: dict[int, torch.Tensor] = {}
        self.row_spaces: dict[int, list[RowSpace]] = {}
        for layer in layers:
            try:
                self.bases[layer] = input_span(first_layer_rows(shared.update, layer))
            except ValueError:  # no attention lora_A gradient there: the first round's dL/dB, if it says anything
                try:
                    spaces = row_spaces(shared, layer)
                except ValueError:  # no attention LoRA there: that layer says nothing
                    continue
                if readable(spaces):
                    self.row_spaces[layer] = spaces
        if not self.bases and not self.row_spaces:
            raise ValueError(f"no layer of {tuple(layers)} has an attention lora_A gradient or a dL/dB row space "
                             "short of its rank to test.")
        self.readers = {layer: _reader(self.model, layer) for layer in self.layers}
        self.device = next(iter(self.bases.values())).device if self.bases else \
            next(iter(self.row_spaces.values()))[0].a.device

    @property
    def layers(self) -> list[int]:
        """The layers this object tests, in order."""
        return sorted({*self.bases, *self.row_spaces})

    def residuals(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        """One layer's residual of a batch of input sets (``N × n × d``, float64): the ``lora_A`` span they leave
        out, or in the first round the ``dL/dB`` row spaces their projections leave out."""
        if layer in self.bases:
            return gram_residuals(self.bases[layer], hidden)
        return certificates(self.row_spaces[layer], hidden)

    @torch.no_grad()
    def __call__(self, candidates: Sequence[Sequence[int]], layers: Sequence[int] | None = None,
                 chunk: int = 128) -> torch.Tensor:
        """The summed residual of every candidate (token ids with their first and last special token, all of
        one length), over ``layers`` (default: all this object tests; ``(0,)`` runs no transformer block)."""
        ids = torch.as_tensor(candidates, device=self.device)
        tested = tuple(l for l in self.layers if layers is None or l in layers)
        values = []
        for part in ids.split(chunk):
            total = torch.zeros(len(part), dtype=torch.float64, device=self.device)
            for layer, hidden in self.layer_inputs(part, tested).items():
                total += self.residuals(layer, hidden.double())  # one batched pass per layer
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
            self.model(input_ids=torch.as_tensor(ids, device=self.device))
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
