"""What a client shares: gradients or weight deltas of the trainable parameters only, with a size report."""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from . import families

Update = "OrderedDict[str, torch.Tensor]"

def trainable_names(model: nn.Module) -> list[str]:
    """Names of the parameters that train (LoRA A/B, and the head when it is trained), in model order."""
    return [name for name, p in model.named_parameters() if p.requires_grad]

def trainable_state(model: nn.Module) -> OrderedDict[str, torch.Tensor]:
    """A detached copy of every trainable parameter: the adapter state a server sends or receives."""
    return OrderedDict((n, p.detach().clone()) for n, p in model.named_parameters() if p.requires_grad)

def load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy ``state`` into the model's trainable parameters (names must match exactly)."""
    params = dict(model.named_parameters())
    unknown = [n for n in state if n not in params or not params[n].requires_grad]
    if unknown:
        raise ValueError(f"{len(unknown)} tensor names do not match trainable parameters, e.g. {unknown[0]!r}.")
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)

def client_loss(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                labels: torch.Tensor | None = None) -> torch.Tensor:
    """The loss a client trains on, for one batch: the mean cross-entropy of its labels for a sequence
    classifier, of every next token of its texts for a decoder (``labels`` are then not used)."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    kind = families.family_of(model)
    return kind.loss(logits, input_ids if kind.is_decoder else labels, attention_mask)

def shared_gradients(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     labels: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
    """One FedSGD message: ``dL/dθ`` of one batch for every trainable ``θ``; frozen weights never appear."""
    names = trainable_names(model)
    params = [p for p in model.parameters() if p.requires_grad]
    loss = client_loss(model, input_ids, attention_mask, labels)
    grads = torch.autograd.grad(loss, params)
    return OrderedDict((n, g.detach().clone()) for n, g in zip(names, grads))

def weight_delta(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    """One FedAvg message: ``θ_after − θ_before`` for every shared tensor."""
    if before.keys() != after.keys():
        raise ValueError("the two states hold different tensor names: pass states of the same adapter.")
    return OrderedDict((n, after[n] - before[n]) for n in before)

@dataclass(frozen=True)
class TensorInfo:
    """One row of what crosses the wire."""

    name: str
    shape: tuple[int, ...]
    numel: int
    bytes: int

def describe_update(update: dict[str, torch.Tensor]) -> list[TensorInfo]:
    """Name, shape, element count and bytes of every tensor in an update."""
    return [TensorInfo(n, tuple(t.shape), t.numel(), t.numel() * t.element_size()) for n, t in update.items()]

def update_bytes(update: dict[str, torch.Tensor]) -> int:
    """Total bytes of an update's tensors."""
    return sum(info.bytes for info in describe_update(update))

def short_name(name: str) -> str:
    """A readable tensor name: ``layer.0.attention.self.query.lora_A`` instead of peft's long path."""
    bases = [f"{family.base}." for family in families.FAMILIES.values()]
    for prefix in ["base_model.model.", *(f"{base}encoder." for base in bases), *bases]:
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name.replace(".modules_to_save.default", "").replace(".default.weight", "")


def relative_error(estimate: torch.Tensor, reference: torch.Tensor) -> float:
    """``‖estimate − reference‖ / ‖reference‖`` (Frobenius); 0 when both are zero."""
    if estimate.shape != reference.shape:
        raise ValueError(f"cannot compare shapes {tuple(estimate.shape)} and {tuple(reference.shape)}.")
    estimate, reference = estimate.detach().double(), reference.detach().double()
    diff = float(torch.linalg.norm(estimate - reference))
    scale = float(torch.linalg.norm(reference))
    return diff / scale if scale > 0 else diff


def matrix_rank(M: torch.Tensor, rtol: float | None = None) -> int:
    """Numerical rank of a 2-D tensor: singular values above ``rtol`` × the largest one.

    ``rtol`` defaults to 1000 × the dtype's machine epsilon (2e-13 in float64, 1e-4 in float32), far
    above rounding noise of a gradient and far below its real singular values.
    """
    if M.dim() != 2:
        raise ValueError(f"matrix_rank needs a 2-D tensor, got shape {tuple(M.shape)}.")
    rtol = 1000 * torch.finfo(M.dtype).eps if rtol is None else rtol
    return int(torch.linalg.matrix_rank(M, rtol=rtol))


def captured_fraction(X: torch.Tensor, M: torch.Tensor, rtol: float | None = None) -> float:
    """Share ``‖X P‖²/‖X‖²`` of the rows of ``X`` (tokens × d) that lie in the row space ``P`` of ``M`` (k × d).

    1.0 means every token input is a combination of the rows of ``M``: a gradient ``M`` carries the whole
    span of the inputs; smaller values mean part of the input was squeezed out.
    """
    if X.dim() != 2 or M.dim() != 2 or X.shape[1] != M.shape[1]:
        raise ValueError(f"need X (tokens, d) and M (k, d) with the same d, got {tuple(X.shape)} and {tuple(M.shape)}.")
    rank = matrix_rank(M, rtol)
    if rank == 0:
        return 0.0
    _, _, Vh = torch.linalg.svd(M, full_matrices=False)
    basis = Vh[:rank]  # orthonormal rows spanning the row space of M
    return float((X @ basis.T).pow(2).sum() / X.pow(2).sum())


@dataclass(frozen=True)
class LayerGradients:
    """One LoRA layer after one backward pass: its tensors, ``G = dL/dW`` and the adapter gradients.

    Shapes: ``X`` (tokens, d_in) the layer's inputs, ``W`` and ``G`` (d_out, d_in), ``A`` and ``dA``
    (r, d_in), ``B`` and ``dB`` (d_out, r); ``scaling`` is ``alpha / r``.
    """

    X: torch.Tensor
    W: torch.Tensor
    A: torch.Tensor
    B: torch.Tensor
    G: torch.Tensor
    dA: torch.Tensor
    dB: torch.Tensor
    scaling: float


def find_lora_layer(model: nn.Module, layer: str) -> nn.Module:
    """The one peft LoRA layer whose name ends with ``layer`` (e.g. ``"layer.0.attention.self.query"``)."""
    found = [(n, m) for n, m in model.named_modules()
             if hasattr(m, "lora_A") and hasattr(m, "base_layer") and n.endswith(layer)]
    if len(found) != 1:
        names = [n for n, m in model.named_modules() if hasattr(m, "lora_A") and hasattr(m, "base_layer")]
        raise ValueError(f"{len(found)} LoRA layers match {layer!r}: name exactly one, e.g. "
                         f"{names[0] if names else 'none exist: apply LoRA first'!r}.")
    return found[0][1]


def layer_gradients(model: nn.Module, layer: str, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    labels: torch.Tensor, adapter: str = "default") -> LayerGradients:
    """Autograd's ``dL/dA``, ``dL/dB`` of one peft LoRA layer, and ``G = dL/dW`` of its frozen weight."""
    module = find_lora_layer(model, layer)
    W = module.base_layer.weight
    A, B = module.lora_A[adapter].weight, module.lora_B[adapter].weight
    inputs: list[torch.Tensor] = []
    hook = module.register_forward_hook(lambda _m, args, _out: inputs.append(args[0].detach()))
    W.requires_grad_(True)
    try:
        loss = client_loss(model, input_ids, attention_mask, labels)
        G, dA, dB = torch.autograd.grad(loss, [W, A, B])
    finally:
        W.requires_grad_(False)
        hook.remove()
    X = inputs[0].reshape(-1, W.shape[1])
    return LayerGradients(X, W.detach().clone(), A.detach().clone(), B.detach().clone(), G, dA, dB,
                          float(module.scaling[adapter]))
