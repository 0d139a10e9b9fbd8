"""Federated LoRA fine-tuning in one process: clients, a server, and what the curious server captures."""
from __future__ import annotations

from typing import Sequence

import torch
from peft import PeftModel

from . import config, data, gradients, lora, models
from .attacks.base import SharedUpdate


def train_adapter(model: PeftModel, examples: Sequence[data.Example], steps: int, lr: float = 1e-3,
                  batch_size: int = 8, seed: int = 0) -> list[float]:
    """Adam on the trainable parameters for ``steps`` batches drawn from ``examples``; returns the losses."""
    if steps <= 0:
        return []
    tokenizer = models.load_tokenizer("tiny-bert")  # every registered model shares BERT's uncased WordPiece
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        index = torch.randint(len(examples), (min(batch_size, len(examples)),), generator=generator)
        batch = [examples[i] for i in index.tolist()]
        encoded = data.encode(tokenizer, [e.text for e in batch], models.max_tokens(model))
        loss = gradients.classification_loss(
            model, encoded["input_ids"], encoded["attention_mask"], torch.tensor([e.label for e in batch])
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def capture_update(texts: Sequence[str], labels: Sequence[int], model_name: str = "tiny-bert", rank: int = 8,
                   alpha: float | None = None, targets: Sequence[str] = lora.DEFAULT_TARGETS,
                   train_head: bool = True, rounds: int = 0, seed: int = 0) -> SharedUpdate:
    """One client's FedSGD gradient on ``texts`` as the server captures it.

    ``rounds`` > 0 first trains the global adapter for that many steps on the course sentences (other
    clients' data, not ``texts``), so that ``B ≠ 0`` as after some federated rounds; ``rounds=0`` is the
    first round, where ``B = 0`` and every ``dL/dA`` is zero.
    """
    if len(texts) != len(labels) or not texts:
        raise ValueError("give one label per text and at least one text.")
    config.set_seed(seed)
    alpha = 2 * rank if alpha is None else alpha
    base = models.load_model(model_name, seed=seed)
    model = lora.apply_lora(base, rank, alpha, targets, train_head)
    public = [e for e in data.course_sentences() if e.text not in texts]
    train_adapter(model, public, rounds, seed=seed)
    model.eval()
    global_state = gradients.trainable_state(model)
    encoded = data.encode(models.load_tokenizer(model_name), list(texts), models.max_tokens(model))
    update = gradients.shared_gradients(model, encoded["input_ids"], encoded["attention_mask"],
                                        torch.tensor(list(labels)))
    return SharedUpdate(update=update, global_state=global_state, model_name=model_name, rank=rank, alpha=alpha,
                        targets=tuple(targets), train_head=train_head, model_seed=seed, batch_size=len(texts),
                        round=rounds)
