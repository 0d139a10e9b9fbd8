"""The text DLG problem: the public model, the shared tensors to match, the vocabulary, length and labels.

``TextProblem`` turns dummy inputs (vocabulary logits or free embeddings) into a dummy gradient of exactly
the shared tensors, and scores real token sequences against the shared gradient, one by one or batched.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .. import config, families
from ..arrays import randn
from .base import Knowledge, SharedUpdate
from .distances import check_update_shapes, directionless, gradient_distance
from .embedding_leak import embedding_name, sequence_length, token_set
from .labels import infer_labels
from .search import cover_assignment


SCALES = ("none", "global", "tensor")
"""How the matching loss weighs the shared tensors: raw, the whole update to unit norm, or each tensor to unit norm."""


def check_scale(scale: str) -> str:
    """Return ``scale`` or raise one clear error listing ``SCALES``."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}: choose one of {', '.join(SCALES)}.")
    return scale


def soft_label_loss(logits: torch.Tensor, label_logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against a soft label ``softmax(label_logits)``: DLG's differentiable stand-in for a class."""
    return -(label_logits.softmax(-1) * logits.log_softmax(-1)).sum(-1).mean()


@dataclass
class TextProblem:
    """Everything one text DLG run needs: the public model, the shared tensors to match, vocabulary, length."""

    model: nn.Module
    tokenizer: Any
    params: OrderedDict[str, torch.Tensor]
    target: list[torch.Tensor]
    row_ids: torch.Tensor
    vocab: torch.Tensor
    match_words: bool
    use_token_set: bool
    batch_size: int
    length: int
    fixed_labels: list[int] | None
    num_labels: int
    family: families.Family
    scales: list[float] | None = None

    @classmethod
    def build(cls, shared: SharedUpdate, knowledge: Knowledge = Knowledge(), parametrisation: str = "relaxed",
              use_token_set: bool = True, learn_label: bool = False, scale: str = "none") -> "TextProblem":
        """Check the update against the public model and decide vocabulary, length and labels.

        Labels: the known ones (``knowledge.labels``), else read from the head bias (iDLG), unless
        ``learn_label`` (DLG's joint soft label). With ``use_token_set`` and a full fine-tuning update the
        vocabulary is cut to the non-zero rows of the word-embedding gradient. A decoder's client has no label:
        its loss is next-token prediction on the text itself, so the dummy text is its own target. ``scale``
        weights the shared tensors in every matching loss (``SCALES``, see ``rescale``).
        """
        check_scale(scale)
        if shared.kind != "gradient":
            raise ValueError("DLG matches one FedSGD gradient (kind='gradient'); this update is a weight delta.")
        model = shared.public_model().eval()
        trainable = OrderedDict((n, p) for n, p in model.named_parameters() if p.requires_grad)
        check_update_shapes(shared.update, {n: p.shape for n, p in trainable.items()})
        tokenizer = shared.setup.model.tokenizer
        word_name = next((n for n in trainable if n.endswith(embedding_name(shared.setup.model.family))), None)
        device = config.device()
        specials = torch.tensor(sorted(set(tokenizer.all_special_ids)), device=device)
        cls_sep = [tokenizer.cls_token_id, tokenizer.sep_token_id]
        if word_name is not None and use_token_set:
            row_ids = torch.tensor(sorted(set(token_set(shared.update)) | set(cls_sep)), device=device)
        else:
            row_ids = torch.arange(len(tokenizer), device=device)
        vocab = row_ids[~torch.isin(row_ids, specials)]
        if vocab.numel() == 0:
            raise ValueError("the token set holds only special tokens: there is no text to rebuild.")
        match_words = word_name is not None and parametrisation == "relaxed"
        params = OrderedDict((n, p) for n, p in trainable.items() if n != word_name)
        target = [shared.update[n].detach() for n in params]
        if match_words:
            target.insert(0, shared.update[word_name].detach()[row_ids])
        size = knowledge.sentences(shared)
        family = shared.setup.model.family
        if family.is_decoder:
            labels = []
        elif learn_label:
            labels = None
        elif knowledge.labels is not None:
            labels = list(knowledge.labels)
            if len(labels) != size or not all(0 <= y < shared.setup.num_labels for y in labels):
                raise ValueError(f"the known labels must be {size} classes in 0..{shared.setup.num_labels - 1}, "
                                 f"got {labels}.")
        else:
            labels = infer_labels(shared.update, size, shared.kind)
        use_token_set = word_name is not None and use_token_set
        problem = cls(model, tokenizer, params, target, row_ids, vocab, match_words, use_token_set, size,
                      _attack_length(shared, knowledge, word_name is not None), labels, shared.setup.num_labels,
                      family)
        problem.rescale(scale)
        return problem

    def rescale(self, scale: str) -> None:
        """Multiply each shared tensor, and from now on each dummy gradient, by a constant (``SCALES``).

        ``none``: the raw gradients (DLG). ``global``: all divided by the update's norm, so the matching loss
        is of order 1 whatever the gradients' size (the same minimiser: a fix for the optimiser's tolerances
        and epsilons). ``tensor``: each tensor divided by its own norm, so every tensor weighs the same
        (another objective: the head's gradient no longer outweighs the adapter's); a tensor that is zero up to
        rounding (``distances.directionless``) keeps its size.
        """
        check_scale(scale)
        if self.scales is not None:  # back to the raw gradients first, so that rescaling twice is harmless
            self.target = [t / s for t, s in zip(self.target, self.scales)]
        norms = [float(t.double().norm()) for t in self.target]
        if scale == "none" or not any(norms):
            self.scales = None
            return
        total = sum(n * n for n in norms) ** 0.5
        flat = directionless(self.target)  # rounding stays rounding: it is not blown up to a unit tensor
        self.scales = [1.0 / total if scale == "global" else (1.0 if no_direction else 1.0 / n)
                       for n, no_direction in zip(norms, flat)]
        self.target = [t * s for t, s in zip(self.target, self.scales)]

    def _embedding_rows(self) -> torch.Tensor:
        return self.model.get_input_embeddings().weight[self.row_ids]

    def _inputs_embeds(self, rows: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
        special = self.model.get_input_embeddings().weight
        cls_row = special[self.tokenizer.cls_token_id].expand(self.batch_size, 1, -1)
        sep_row = special[self.tokenizer.sep_token_id].expand(self.batch_size, 1, -1)
        if self.match_words:  # take [CLS]/[SEP] from the matched rows so that their gradient counts too
            index = {int(t): i for i, t in enumerate(self.row_ids)}
            cls_row = rows[index[self.tokenizer.cls_token_id]].expand(self.batch_size, 1, -1)
            sep_row = rows[index[self.tokenizer.sep_token_id]].expand(self.batch_size, 1, -1)
        return torch.cat([cls_row, words, sep_row], dim=1)

    def _vocab_rows(self, rows: torch.Tensor) -> torch.Tensor:
        return rows[torch.searchsorted(self.row_ids, self.vocab)]

    def start(self, parametrisation: str) -> list[torch.Tensor]:
        """Random dummy variables: logits over the vocabulary, or embeddings; a soft label when learned (drawn on
        the CPU, so a seed gives the same start on any device)."""
        embeddings = self.model.get_input_embeddings().weight.detach()
        if parametrisation == "relaxed":
            words = randn((self.batch_size, self.length, self.vocab.numel()), like=embeddings)
        else:
            words = randn((self.batch_size, self.length, self.model.config.hidden_size), like=embeddings) * embeddings.std()
        variables = [words.requires_grad_()]
        if self.fixed_labels is None:
            variables.append(randn((self.batch_size, self.num_labels), like=embeddings).requires_grad_())
        return variables

    def gradient(self, variables: list[torch.Tensor], parametrisation: str) -> list[torch.Tensor]:
        """The dummy gradient of the same tensors as ``target``, differentiable in ``variables``."""
        rows = self._embedding_rows()
        words, tokens = variables[0], None
        if parametrisation == "relaxed":
            if self.family.is_decoder:  # the soft text is its own next-token target
                tokens = self._framed(torch.zeros(*words.shape[:2], len(self.tokenizer), device=words.device)
                                      .index_copy(2, self.vocab, words.softmax(-1)))
            words = words.softmax(-1) @ self._vocab_rows(rows)
        elif self.family.is_decoder:  # free embeddings: the nearest tokens are the target of this step
            tokens = self._framed(torch.as_tensor(self.decode(variables, parametrisation), device=words.device))
        label = variables[1] if self.fixed_labels is None else None
        return self._gradient(rows, words, label, create_graph=True, tokens=tokens)

    def _framed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Inner token ids ``(N, n)`` or distributions ``(N, n, V)`` with the first and last special token added."""
        edges = torch.tensor([[self.tokenizer.cls_token_id], [self.tokenizer.sep_token_id]], device=tokens.device)
        if tokens.dim() == 2:
            first, last = (edges[i].expand(len(tokens), 1) for i in (0, 1))
        else:
            one_hot = nn.functional.one_hot(edges[:, 0], tokens.shape[-1]).to(tokens.dtype)
            first, last = (one_hot[i].expand(len(tokens), 1, -1) for i in (0, 1))
        return torch.cat([first, tokens, last], dim=1)

    def _loss(self, logits: torch.Tensor, label_logits: torch.Tensor | None, tokens: torch.Tensor | None
              ) -> torch.Tensor:
        """The client's loss on the dummy input: its next tokens for a decoder, else the (soft) label."""
        if self.family.is_decoder:
            return self.family.loss(logits, tokens)
        if label_logits is not None:
            return soft_label_loss(logits, label_logits)
        return nn.functional.cross_entropy(logits, torch.tensor(self.fixed_labels, device=logits.device))

    def _gradient(self, rows: torch.Tensor, words: torch.Tensor, label_logits: torch.Tensor | None,
                  create_graph: bool, tokens: torch.Tensor | None = None) -> list[torch.Tensor]:
        embeds = self._inputs_embeds(rows, words)
        mask = torch.ones(embeds.shape[:2], device=embeds.device)
        loss = self._loss(self.model(inputs_embeds=embeds, attention_mask=mask).logits, label_logits, tokens)
        inputs = ([rows] if self.match_words else []) + list(self.params.values())
        grads = list(torch.autograd.grad(loss, inputs, create_graph=create_graph))
        if self.scales is not None:
            grads = [g * s for g, s in zip(grads, self.scales)]
        return grads

    def discrete_distance(self, ids: list[list[int]], label_logits: torch.Tensor | None, distance: str,
                          alpha: float) -> float:
        """The matching loss of real token sequences (no relaxation): zero for the client's own text."""
        rows = self._embedding_rows()
        ids = torch.tensor(ids, device=self.vocab.device)
        words = self._vocab_rows(rows)[torch.searchsorted(self.vocab, ids)]
        grads = self._gradient(rows, words, label_logits, create_graph=False, tokens=self._framed(ids))
        return float(gradient_distance(grads, self.target, distance, alpha))

    def _linear_sites(self) -> list[tuple[nn.Linear, str]] | None:
        """For each shared tensor its ``nn.Linear`` and ``weight``/``bias``; ``None`` if one is elsewhere."""
        modules = dict(self.model.named_modules())
        sites = []
        for name in self.params:
            owner, attr = name.rsplit(".", 1)
            module = modules.get(owner)
            if not isinstance(module, nn.Linear) or attr not in ("weight", "bias"):
                return None
            sites.append((module, attr))
        return sites

    def batch_distances(self, candidates: torch.Tensor, label_logits: torch.Tensor | None = None,
                        distance: str = "cosine", alpha: float = 0.01, chunk: int = 512) -> torch.Tensor:
        """``discrete_distance`` of many one-sentence candidates (rows of token ids) at once, as a tensor.

        One batched forward and backward gives each candidate's own gradient: for a linear layer
        ``y = x Wᵀ + b`` it is ``Σ_t δ_t x_tᵀ`` (and ``Σ_t δ_t``), with ``δ`` the gradient at ``y``, which the
        summed loss keeps per sentence. Needs a known label and no word-embedding matching; otherwise (or
        for tensors outside linear layers) it scores the candidates one by one.
        """
        candidates = torch.as_tensor(candidates, dtype=torch.long, device=self.vocab.device).reshape(-1, self.length)
        sites = self._linear_sites()
        if sites is None or label_logits is not None or self.fixed_labels is None or self.match_words \
                or self.batch_size != 1:
            return torch.tensor([self.discrete_distance([c.tolist()], label_logits, distance, alpha)
                                 for c in candidates], dtype=torch.double, device=self.vocab.device)
        return torch.cat([self._batch_distances(part, sites, distance, alpha)
                          for part in candidates.split(chunk)])

    def _batch_distances(self, ids: torch.Tensor, sites: list[tuple[nn.Linear, str]], distance: str,
                         alpha: float) -> torch.Tensor:
        n = ids.shape[0]
        table = self.model.get_input_embeddings().weight.detach()
        full = self._framed(ids)
        modules = list({id(m): m for m, _ in sites}.values())
        seen: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

        def keep(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            seen[id(module)] = (inputs[0].detach(), output)

        hooks = [m.register_forward_hook(keep) for m in modules]
        try:
            with torch.enable_grad():
                embeds = table[full]
                logits = self.model(inputs_embeds=embeds, attention_mask=torch.ones(full.shape, device=ids.device)).logits
                loss = n * self._loss(logits, None, full) if self.family.is_decoder else nn.functional.cross_entropy(
                    logits, torch.tensor(self.fixed_labels * n, device=ids.device), reduction="sum")
                outputs = [seen[id(m)][1] for m in modules]
                deltas = torch.autograd.grad(loss, outputs, allow_unused=True)
        finally:
            for hook in hooks:
                hook.remove()
        delta = {id(m): (d if d is not None else torch.zeros_like(o)) for m, d, o in zip(modules, deltas, outputs)}
        total = torch.zeros(n, dtype=torch.double, device=ids.device)
        scales = self.scales or [1.0] * len(sites)
        flat = directionless(self.target)
        for (module, attr), target, scale, no_direction in zip(sites, self.target, scales, flat):
            x, d = seen[id(module)][0], delta[id(module)]
            if x.dim() == 2:
                x, d = x[:, None], d[:, None]
            grad = torch.einsum("nto,nti->noi", d, x) if attr == "weight" else d.sum(1)
            grad, target = grad.reshape(n, -1).double() * scale, target.reshape(-1).double()
            diff = grad - target
            if distance == "l2":
                total += diff.pow(2).sum(1)
            elif distance == "tag":
                total += diff.pow(2).sum(1) + alpha * diff.abs().sum(1)
            elif no_direction:
                total += grad.pow(2).sum(1)
            else:
                total += 1 - (grad @ target) / (grad.norm(dim=1) * target.norm()).clamp_min(1e-12)
        return total

    def decode(self, variables: list[torch.Tensor], parametrisation: str) -> list[list[int]]:
        """Token ids per sentence: from the logits, or the nearest token embedding (L2).

        With a token set (one sentence, at most ``length`` tokens) every leaked token must appear, so
        positions get tokens by an assignment that uses each one at least once; otherwise by argmax.
        """
        words = variables[0].detach()
        if parametrisation == "relaxed":
            score = words.log_softmax(-1)
        else:
            table = self.model.get_input_embeddings().weight.detach()[self.vocab]
            score = -torch.cdist(words, table.expand(words.shape[0], -1, -1))
        if self.use_token_set and self.batch_size == 1 and self.vocab.numel() <= self.length:
            order = [0] * self.length
            for position, token in cover_assignment(score[0]):
                order[position] = token
            return [self.vocab[order].tolist()]
        return self.vocab[score.argmax(-1)].tolist()

    def texts(self, ids: list[list[int]]) -> list[str]:
        """The decoded sentences."""
        return [self.tokenizer.decode(sentence) for sentence in ids]

    def labels(self, variables: list[torch.Tensor]) -> list[int]:
        """The labels used: inferred from the head, or the argmax of the learned soft label."""
        if self.fixed_labels is not None:
            return list(self.fixed_labels)
        return variables[1].detach().argmax(-1).tolist()


def _attack_length(shared: SharedUpdate, knowledge: Knowledge, full: bool) -> int:
    """Tokens per sentence without [CLS]/[SEP]: known, or (full fine-tuning) read from the positions."""
    length = knowledge.length
    if length is None and full:
        length = sequence_length(shared.update) - 2
    if length is None:
        raise ValueError("the sentence length is unknown and a LoRA update does not show it: tell the attack, "
                         "e.g. reconstruct(shared, Knowledge(length=16)), or use the span attack, which finds it.")
    if length < 1:
        raise ValueError(f"the sentence length must be at least 1 token, got {length}.")
    return int(length)
