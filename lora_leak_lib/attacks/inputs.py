"""What the first layer of a LoRA update reveals: the span of its inputs, and those inputs for any token.

For a LoRA module ``y = W x + s·B A x`` the gradient is ``dL/dA = s·Bᵀ G`` with ``G = Σ_t δ_t x_tᵀ``, so
every row of ``dL/dA`` is a combination of the inputs ``x_t``. In the first layer those inputs are
``x = LN(E[v] + P[p])`` (BERT adds the type-0 embedding to ``P``; GPT-2's LayerNorm is its first block's
``ln_1``), one per (token ``v``, position ``p``), which the server can compute for the whole vocabulary
(``EmbeddingInputs``). The model family says where each table is (``families.input_tables``).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from .. import config, families, models

def first_layer_names(update: dict[str, torch.Tensor], layer: int = 0) -> list[str]:
    """The names of the ``lora_A`` tensors of every module that reads ``layer``'s input (the attention projections:
    BERT's query/key/value, MPNet's q/k/v, GPT-2's c_attn), in the update's order."""
    patterns = [family.layer_rows_pattern(layer) for family in families.FAMILIES.values()]
    return [name for name in update if any(p.search(name) for p in patterns)]


def first_layer_adapted(update: dict[str, torch.Tensor], layer: int = 0) -> bool:
    """True when ``layer``'s input-reading modules carry LoRA in the update: their ``lora_A`` gradients, or only their
    ``lora_B`` ones (FFA-LoRA's frozen ``A``)."""
    return bool(first_layer_names({name.replace(".lora_B", ".lora_A"): None for name in update}, layer))


def first_layer_rows(update: dict[str, torch.Tensor], layer: int = 0) -> torch.Tensor:
    """The ``lora_A`` gradient rows of every module that reads ``layer``'s input (``first_layer_names``), stacked
    (``m × d``, float64)."""
    rows = [update[name] for name in first_layer_names(update, layer)]
    if not rows:
        raise ValueError(f"the update holds no lora_A of layer {layer}'s attention projections: the span attack "
                         "needs LoRA on an attention projection of that layer.")
    return torch.cat([r.detach().double() for r in rows])


SPAN_TOL = 5e-8
"""Relative singular value below which a direction of the stacked (normalised) rows counts as rounding.

float32 gradients leave a floor of pure-noise directions a little below this cut (where the rows outnumber the
inputs); everything above it is signal. An adapter trained from ``B = 0`` has a nearly low-rank ``B``, so much of
the input span sits in small singular values, and a higher cut drops real directions (notebook 05 compares two
cuts). The price: rounding corrupts the weakest kept directions, so even the true sentence of such a model can
leave a residual above ``CERTIFIED``; the search then runs to its end instead of stopping early, and the result
is the sentence with the least residual, not a certified one.
"""


def input_span(rows: torch.Tensor, tol: float = SPAN_TOL) -> torch.Tensor:
    """Orthonormal basis ``Q`` (``k × d``) of the row span, ``k`` its numerical rank (relative ``tol``).

    Rows are normalised first, so a module with a small gradient counts as much as a large one.
    """
    norms = rows.norm(dim=1, keepdim=True)
    rows = rows[norms.squeeze(1) > 0] / norms[norms.squeeze(1) > 0]
    if rows.numel() == 0:
        raise ValueError("every first-layer lora_A gradient is zero (round 0: B = 0, so dL/dA = 0): use the "
                         "attack 'lora-best', which falls back to DLG in round 0, or capture a later round.")
    _, sigma, vh = torch.linalg.svd(rows, full_matrices=False)
    rank = int((sigma > tol * sigma[0]).sum())
    return vh[:rank]


def noisy_span(rows: torch.Tensor, noise: float) -> torch.Tensor:
    """Orthonormal basis of the directions of ``rows`` (``m × d``, not normalised) that stand above noise of std
    ``noise`` per entry: singular values over the noise matrix's largest, about ``noise·(√m + √d)``. What an
    attacker who knows the defence's noise keeps; one clear error when nothing stands above it."""
    m, d = rows.shape
    _, sigma, vh = torch.linalg.svd(rows, full_matrices=False)
    rank = int((sigma > noise * (m ** 0.5 + d ** 0.5)).sum())
    if rank == 0:
        raise ValueError(f"no direction of the first-layer rows stands above the known noise ({noise:.2g} per "
                         "entry): the defence hides the span from this attack.")
    return vh[:rank]


def allowed_tokens(tokenizer) -> torch.Tensor:
    """Ids the span test may place inside a sentence: the vocabulary less special and ``[unused]`` tokens."""
    special = set(tokenizer.all_special_ids)
    vocab = tokenizer.convert_ids_to_tokens(list(range(tokenizer.vocab_size)))
    keep = [i for i, tok in enumerate(vocab) if i not in special and not tok.startswith("[unused")]
    return torch.tensor(keep, device=config.device())


@dataclass
class EmbeddingInputs:
    """The first layer's input for any (token, position): ``x = γ ⊙ (ē_v + c̄_p)/σ_vp + β`` in closed form.

    ``ē_v`` and ``c̄_p`` are the centred token and position(+type) embeddings; keeping them apart lets the
    span test score the whole vocabulary at every position without building ``V × positions`` vectors.
    """

    tokens: torch.Tensor   # (V, d) centred word embeddings ē_v
    positions: torch.Tensor  # (P, d) centred position + type-0 embeddings c̄_p
    gamma: torch.Tensor    # (d,)
    beta: torch.Tensor     # (d,)
    eps: float

    @classmethod
    def from_tables(cls, tables: families.InputTables) -> "EmbeddingInputs":
        """Centre the word and position tables of a model of any family (``families.input_tables``)."""
        words, positions, norm = tables.words.double(), tables.positions.double(), tables.norm
        return cls(words - words.mean(1, keepdim=True), positions - positions.mean(1, keepdim=True),
                   norm.weight.detach().double(), norm.bias.detach().double(), float(norm.eps))

    def vectors(self, token_ids, positions) -> torch.Tensor:
        """``x`` for paired token ids and positions (``n × d``; tensors, lists, or one position for all): what
        the first layer reads. Indices go to the tables' device."""
        device = self.tokens.device
        token_ids, positions = torch.as_tensor(token_ids, device=device), torch.as_tensor(positions, device=device)
        u = self.tokens[token_ids] + self.positions[positions]
        sigma = torch.sqrt(u.pow(2).mean(-1, keepdim=True) + self.eps)  # over the width, for index batches too
        return self.gamma * u / sigma + self.beta

    def span_distances(self, basis: torch.Tensor, length: int, token_ids: torch.Tensor) -> torch.Tensor:
        """Relative distance ``‖x − QᵀQx‖/‖x‖`` of every candidate, for positions ``0..length-1`` (``length × V``).

        With ``x = (γ⊙ē + γ⊙c̄)/σ + β`` every term is a ``V × P`` matrix of inner products, so no
        ``V × P × d`` tensor is built.
        """
        d = self.tokens.shape[1]
        e, c = self.tokens[token_ids], self.positions[:length]
        g2, gb = self.gamma ** 2, self.gamma * self.beta
        sigma2 = (e.pow(2).sum(1, keepdim=True) + 2 * e @ c.T + c.pow(2).sum(1)) / d + self.eps   # (V, P)
        a, b, q0 = e @ (basis * self.gamma).T, c @ (basis * self.gamma).T, basis @ self.beta   # (V,k) (P,k) (k,)
        lin_q = (a @ q0)[:, None] + (b @ q0)[None]
        proj2 = ((a.pow(2).sum(1, keepdim=True) + 2 * a @ b.T + b.pow(2).sum(1)) / sigma2
                 + 2 * lin_q / sigma2.sqrt() + q0.pow(2).sum())
        sq = ((e.pow(2) @ g2)[:, None] + 2 * (e * g2) @ c.T + (c.pow(2) @ g2)[None]) / sigma2
        lin = ((e @ gb)[:, None] + (c @ gb)[None]) / sigma2.sqrt()
        norm2 = sq + 2 * lin + self.beta.pow(2).sum()
        return torch.sqrt(torch.clamp(norm2 - proj2, min=0.0) / norm2).T


def public_inputs(model: models.PublicModel, model_seed: int = 0) -> EmbeddingInputs:
    """The first-layer inputs of the public model, on ``config.device()``: frozen, so the same in every round and
    for every message of a run (kept per model, seed and device). The classification head is built after the
    embeddings, so the tables do not depend on the number of labels."""
    return _public_inputs(model, model_seed, str(config.device()))


@lru_cache(maxsize=4)
def _public_inputs(model: models.PublicModel, model_seed: int, device: str) -> EmbeddingInputs:
    return EmbeddingInputs.from_tables(model.input_tables(seed=model_seed))


def lora_a_is_zero(update: dict[str, torch.Tensor]) -> bool:
    """True at round 0, where ``B = 0`` makes every ``dL/dA`` zero."""
    return all(float(t.abs().max()) == 0.0 for n, t in update.items() if "lora_A" in n)
