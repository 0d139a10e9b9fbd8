"""DP-SGD for LoRA clients: per-sample gradients with ``torch.func``, per-sample clipping, Gaussian noise."""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase
from torch.func import functional_call, grad, vmap

from .. import config, data, families, training
from ..arrays import randn

Update = OrderedDict[str, torch.Tensor]


def check_dp_knobs(max_norm: float, noise_multiplier: float) -> None:
    """Raise one clear error for a clipping bound or noise multiplier that makes no sense."""
    if not max_norm > 0:
        raise ValueError(f"max_norm (the per-sample clipping bound C) must be positive, got {max_norm!r}: try 1.0.")
    if not noise_multiplier >= 0:
        raise ValueError(f"noise_multiplier (σ, noise std / C) must be zero or positive, got {noise_multiplier!r}.")


def _additive_mask(mask: torch.Tensor) -> torch.Tensor:
    """One sentence's padding mask (L,) as the 4-D additive mask (1, 1, L, L) BERT's eager attention adds.

    Passing the 4-D form skips transformers' mask builder, whose data-dependent checks ``vmap`` cannot trace.
    """
    length = mask.shape[0]
    blocked = (1.0 - mask.float()) * torch.finfo(torch.float32).min
    return blocked[None, None, None, :].expand(1, 1, length, length)


def per_sample_gradients(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                         labels: torch.Tensor) -> Update:
    """``dL_i/dθ`` for every sentence ``i`` of the batch separately: each tensor gains a leading batch axis."""
    if not (len(input_ids) == len(attention_mask) == len(labels)) or len(labels) == 0:
        raise ValueError("input_ids, attention_mask and labels must hold the same, non-zero number of sentences.")
    device = next(model.parameters()).device  # ids and labels made on the CPU follow the model
    input_ids, attention_mask, labels = (torch.as_tensor(t, device=device) for t in (input_ids, attention_mask, labels))
    trainable = OrderedDict((n, p.detach()) for n, p in model.named_parameters() if p.requires_grad)
    frozen = {n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}
    kind = families.family_of(model)

    def loss_one(params, ids, mask, label):
        out = functional_call(model, {**frozen, **params}, args=(),
                              kwargs=dict(input_ids=ids[None], attention_mask=_additive_mask(mask)))
        return kind.loss(out.logits, ids[None] if kind.is_decoder else label[None], mask[None])

    per_sample = vmap(grad(loss_one), in_dims=(None, 0, 0, 0))(trainable, input_ids, attention_mask, labels)
    return OrderedDict((n, per_sample[n]) for n in trainable)


def per_sample_norms(per_sample: dict[str, torch.Tensor]) -> torch.Tensor:
    """The L2 norm of each sentence's whole gradient (all tensors together), shape (batch,)."""
    squares = [g.flatten(1).pow(2).sum(1) for g in per_sample.values()]
    return torch.stack(squares).sum(0).sqrt()


def clip_per_sample(per_sample: dict[str, torch.Tensor], max_norm: float) -> Update:
    """Scale each sentence's gradient so that its norm is at most ``max_norm`` (DP-SGD's clipping)."""
    check_dp_knobs(max_norm, 0.0)
    factors = (max_norm / (per_sample_norms(per_sample) + 1e-12)).clamp(max=1.0)
    return OrderedDict((n, g * factors.view(-1, *[1] * (g.dim() - 1))) for n, g in per_sample.items())


def dp_gradient(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                max_norm: float, noise_multiplier: float, expected_batch_size: float | None = None,
                seed: int = 0) -> Update:
    """One DP-SGD gradient: clip every sentence's gradient to ``C``, sum, add ``N(0, (σC)²)``, divide.

    The divisor is ``expected_batch_size`` (Poisson sampling, as the accountant assumes) or the batch size.
    """
    check_dp_knobs(max_norm, noise_multiplier)
    clipped = clip_per_sample(per_sample_gradients(model, input_ids, attention_mask, labels), max_norm)
    generator = torch.Generator().manual_seed(seed)
    divisor = float(expected_batch_size or len(labels))
    noise = {n: randn(g.shape[1:], like=g, generator=generator, dtype=torch.float32) for n, g in clipped.items()}
    return OrderedDict((n, (g.sum(0) + noise_multiplier * max_norm * noise[n]) / divisor) for n, g in clipped.items())


def dp_noise_only(shape_like: dict[str, torch.Tensor], max_norm: float, noise_multiplier: float,
                  divisor: float, seed: int) -> Update:
    """The message of a step whose Poisson sample came out empty: noise alone, ``N(0, (σC)²) / divisor``."""
    generator = torch.Generator().manual_seed(seed)
    return OrderedDict((n, noise_multiplier * max_norm * randn(t.shape, like=t, generator=generator, dtype=torch.float32) / divisor)
                       for n, t in shape_like.items())


def poisson_batch(n_examples: int, sample_rate: float, generator: torch.Generator) -> list[int]:
    """Indices of one Poisson-sampled batch: each example joins independently with ``sample_rate``."""
    if sample_rate >= 1:
        return list(range(n_examples))
    return torch.nonzero(torch.rand(n_examples, generator=generator, device="cpu") < sample_rate).flatten().tolist()


def dp_sgd_train(model: nn.Module, tokenizer: PreTrainedTokenizerBase, examples: Sequence[data.Example], steps: int, max_norm: float,
                 noise_multiplier: float, sample_rate: float = 1.0, lr: float = 1e-2, optimizer: str = "adam",
                 seed: int = 0) -> int:
    """Train ``model``'s trainable tensors with ``steps`` DP-SGD steps (SGD, or Adam, on the private gradients).

    Each step draws a Poisson batch with ``sample_rate`` (1 = every example, the non-sampled Gaussian
    mechanism). Returns the number of steps, which the accountant needs. The optimiser is post-processing:
    it only sees privatised gradients, so it does not change ε. Adam trains the course's LoRA adapters
    where plain SGD barely moves them, but it rescales every coordinate to unit size, noise included.
    """
    check_dp_knobs(max_norm, noise_multiplier)
    if not examples:
        raise ValueError("dp_sgd_train needs at least one private example to train on.")
    if not 0 < sample_rate <= 1:
        raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate!r}: batch size / dataset size.")
    params = OrderedDict((n, p) for n, p in model.named_parameters() if p.requires_grad)
    generator = torch.Generator().manual_seed(seed)
    expected = sample_rate * len(examples)

    def gradient_fn(step: int) -> tuple[Update, float]:
        batch = [examples[i] for i in poisson_batch(len(examples), sample_rate, generator)]
        noise_seed = config.derive_seed(seed, step)
        if not batch:
            return dp_noise_only(params, max_norm, noise_multiplier, expected, noise_seed), float("nan")
        encoded = data.encode(tokenizer, [e.text for e in batch], families.max_tokens(model))
        return dp_gradient(model, encoded["input_ids"], encoded["attention_mask"],
                           torch.tensor([e.label for e in batch], device=encoded["input_ids"].device), max_norm,
                           noise_multiplier, expected,
                           noise_seed), float("nan")

    training.local_training(model, steps, gradient_fn, optimizer, lr)
    return steps
