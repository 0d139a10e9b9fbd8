"""DLG (Zhu et al., 2019) and its text variants: optimise dummy inputs until their gradient matches the shared one."""
from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import nn
from scipy.optimize import linear_sum_assignment
from tqdm.auto import tqdm

from .. import config, data, gradients, models
from .base import Callback, Reconstruction, SharedUpdate
from .distances import check_distance, check_update, gradient_distance
from .labels import infer_labels
from .token_set import WORD_EMBEDDINGS, sequence_length, token_set

OPTIMIZERS = ("adam", "lbfgs")
REFINE_TOL = 1e-4
"""A discrete matching loss this small means the decoded text already reproduces the shared gradient."""
PARAMETRISATIONS = ("relaxed", "embeddings")
"""``relaxed``: logits ``z`` over the vocabulary, input ``softmax(z) @ E``, decoded by argmax.
``embeddings``: free input embeddings, decoded by the nearest token embedding."""


@dataclass
class MatchResult:
    """The outcome of gradient matching: the final dummy variables, the loss per step and the snapshots."""

    variables: list[torch.Tensor]
    loss_history: list[float] = field(default_factory=list)
    snapshots: list[tuple[int, Any]] = field(default_factory=list)


def _check_choice(value: str, choices: Sequence[str], what: str) -> None:
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}: choose one of {', '.join(choices)}.")


def match_gradients(gradient_fn: Callable[[], list[torch.Tensor]], target: list[torch.Tensor],
                    variables: list[torch.Tensor], steps: int, optimizer: str = "adam", lr: float = 0.1,
                    distance: str = "l2", alpha: float = 0.01, snapshot_every: int = 0,
                    snapshot_fn: Callable[[], Any] | None = None,
                    callback: Callable[[int, float, Any], None] | None = None,
                    progress: bool = True, desc: str = "gradient matching") -> MatchResult:
    """The DLG loop: change ``variables`` so that ``gradient_fn()`` (built with ``create_graph=True``) nears ``target``.

    Every ``snapshot_every`` steps (and at the end) ``snapshot_fn()`` is stored and passed to
    ``callback(step, loss, snapshot)``. L-BFGS runs up to 20 inner evaluations per step, as in the paper.
    """
    _check_choice(optimizer, OPTIMIZERS, "optimizer")
    check_distance(distance)
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}.")
    if optimizer == "adam":
        opt = torch.optim.Adam(variables, lr=lr)
    else:
        opt = torch.optim.LBFGS(variables, lr=lr, max_iter=1, history_size=100)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = gradient_distance(gradient_fn(), target, distance, alpha)
        loss.backward()
        return loss

    result = MatchResult(variables)
    for step in tqdm(range(1, steps + 1), desc=desc, disable=not progress, leave=False):
        loss = float(opt.step(closure).detach())
        result.loss_history.append(loss)
        if snapshot_fn is not None and (step == steps or (snapshot_every and step % snapshot_every == 0)):
            snapshot = snapshot_fn()
            result.snapshots.append((step, snapshot))
            if callback is not None:
                callback(step, loss, snapshot)
    return result


def soft_label_loss(logits: torch.Tensor, label_logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against a soft label ``softmax(label_logits)``: DLG's differentiable stand-in for a class."""
    return -(label_logits.softmax(-1) * logits.log_softmax(-1)).sum(-1).mean()


def classifier_gradients(model: nn.Module, inputs: torch.Tensor, labels: Sequence[int]) -> OrderedDict[str, torch.Tensor]:
    """The shared gradient of a classifier on continuous inputs: ``dL/dθ`` of the cross-entropy, by name."""
    params = OrderedDict((n, p) for n, p in model.named_parameters() if p.requires_grad)
    loss = nn.functional.cross_entropy(model(inputs), torch.as_tensor(list(labels)))
    grads = torch.autograd.grad(loss, list(params.values()))
    return OrderedDict((n, g.detach()) for n, g in zip(params, grads))


@dataclass
class InputLeak:
    """What ``deep_leakage`` recovered for a model on continuous inputs (images, feature vectors)."""

    inputs: torch.Tensor
    labels: list[int]
    loss_history: list[float]
    snapshots: list[tuple[int, torch.Tensor]]


def deep_leakage(model: nn.Module, shared: dict[str, torch.Tensor], input_shape: Sequence[int],
                 num_classes: int, steps: int = 50, optimizer: str = "lbfgs", lr: float = 1.0,
                 distance: str = "l2", labels: Sequence[int] | None = None, snapshot_every: int = 5,
                 seed: int = 0, progress: bool = True) -> InputLeak:
    """DLG as in the paper: jointly optimise a dummy input batch and soft labels to match ``shared``.

    ``shared`` maps the model's parameter names to one batch's gradients; ``input_shape`` includes the
    batch dimension. With ``labels`` given the labels are fixed (as after iDLG label inference).
    """
    params = OrderedDict((n, p) for n, p in model.named_parameters() if p.requires_grad)
    check_update(shared, {n: p.shape for n, p in params.items()})
    config.set_seed(seed)
    dummy = torch.randn(*input_shape, requires_grad=True)
    label_logits = torch.randn(input_shape[0], num_classes, requires_grad=labels is None)
    target = [shared[n].detach() for n in params]

    def gradient_fn() -> list[torch.Tensor]:
        logits = model(dummy)
        if labels is None:
            loss = soft_label_loss(logits, label_logits)
        else:
            loss = nn.functional.cross_entropy(logits, torch.as_tensor(list(labels)))
        return list(torch.autograd.grad(loss, list(params.values()), create_graph=True))

    variables = [dummy, label_logits] if labels is None else [dummy]
    result = match_gradients(gradient_fn, target, variables, steps, optimizer, lr, distance,
                             snapshot_every=snapshot_every, snapshot_fn=lambda: dummy.detach().clone(),
                             progress=progress, desc="DLG")
    found = list(labels) if labels is not None else label_logits.argmax(-1).tolist()
    return InputLeak(dummy.detach(), found, result.loss_history, result.snapshots)


def capture_full_update(texts: Sequence[str], labels: Sequence[int], model_name: str = "tiny-bert",
                        seed: int = 0) -> SharedUpdate:
    """One client's FedSGD gradient under FULL fine-tuning (no LoRA): every parameter trains and is shared."""
    if len(texts) != len(labels) or not texts:
        raise ValueError("give one label per text and at least one text.")
    config.set_seed(seed)
    model = models.load_model(model_name, seed=seed).eval()
    encoded = data.encode(models.load_tokenizer(model_name), list(texts), models.max_tokens(model))
    update = gradients.shared_gradients(model, encoded["input_ids"], encoded["attention_mask"],
                                        torch.tensor(list(labels)))
    return SharedUpdate(update=update, global_state=gradients.trainable_state(model), model_name=model_name,
                        rank=0, alpha=0.0, train_head=True, model_seed=seed, batch_size=len(texts),
                        full_finetune=True)


@dataclass
class DLG:
    """DLG against a text classifier's shared gradient, with the text variants of the course.

    ``parametrisation`` is ``relaxed`` (optimise logits ``z``, feed ``softmax(z) @ E``, decode by argmax)
    or ``embeddings`` (free input embeddings, decoded by the nearest token). ``length`` is the number of
    tokens without [CLS]/[SEP]; by default it comes from ``shared.max_tokens`` or, in full fine-tuning, from
    the position-embedding gradient. With ``use_token_set`` and a full fine-tuning update the vocabulary is
    cut to the non-zero rows of the word-embedding gradient. Labels come from the head bias (iDLG) unless
    ``learn_label``, which optimises a soft label jointly as the DLG paper does. The best of ``restarts``
    random starts (lowest final matching loss) is kept. ``refine_sweeps`` > 0 then swaps pairs of decoded
    tokens while the matching loss of the real token sequence falls (one sentence per batch only).
    ``threads`` CPU threads run the attack (``None`` keeps torch's setting): its tensors are so small that
    one thread is fastest, and several slow it down many times on a busy machine.

    ``search_steps`` > 0 (one sentence per batch only) turns the relaxation into a shortlist: each restart
    keeps its ``shortlist`` most likely tokens per position, the start is the restart whose decoded text has
    the lowest *discrete* matching loss, and then each step applies the best single-token substitution (from
    the shortlists and the ``gradient_candidates`` tokens a first-order expansion of the loss prefers) or pair
    swap, scored exactly in batches (``TextProblem.batch_distances``), until none lowers the loss.
    """

    parametrisation: str = "relaxed"
    distance: str = "cosine"
    optimizer: str = "adam"
    steps: int = 200
    lr: float = 0.03
    alpha: float = 0.01
    length: int | None = None
    use_token_set: bool = True
    learn_label: bool = False
    restarts: int = 1
    refine_sweeps: int = 0
    snapshot_every: int = 25
    seed: int = 0
    progress: bool = True
    threads: int | None = 1
    shortlist: int = 16
    search_steps: int = 0
    gradient_candidates: int = 16

    @property
    def name(self) -> str:
        vocab = "+tokenset" if self.use_token_set else ""
        refine = "+swaps" if self.refine_sweeps else ""
        search = "+search" if self.search_steps else ""
        return f"dlg-{self.parametrisation}{vocab}-{self.distance}-{self.optimizer}{refine}{search}"

    def reconstruct(self, shared: SharedUpdate, callback: Callback | None = None) -> Reconstruction:
        """Rebuild the client's sentences from ``shared``; ``callback(step, loss, texts)`` sees the progress."""
        _check_choice(self.parametrisation, PARAMETRISATIONS, "parametrisation")
        _check_choice(self.optimizer, OPTIMIZERS, "optimizer")
        check_distance(self.distance)
        previous = torch.get_num_threads()
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        try:
            return self._reconstruct(shared, callback)
        finally:
            torch.set_num_threads(previous)

    def _reconstruct(self, shared: SharedUpdate, callback: Callback | None) -> Reconstruction:
        start = time.perf_counter()
        problem = TextProblem.build(shared, self)
        search = self.search_steps > 0 and problem.batch_size == 1 and self.parametrisation == "relaxed"
        best: tuple[float, MatchResult] | None = None
        shortlists: list[torch.Tensor] = []
        for restart in range(self.restarts):
            config.set_seed(self.seed + restart)
            result = problem.run(self, callback)
            loss = result.loss_history[-1]
            if search:  # rank the restarts by the loss of the text they decode to, and keep their top tokens
                label = result.variables[1].detach() if problem.fixed_labels is None else None
                loss = problem.discrete_distance(problem.decode(result.variables, self.parametrisation), label,
                                                 self.distance, self.alpha)
                logits = result.variables[0].detach()[0]
                shortlists.append(problem.vocab[logits.topk(min(self.shortlist, logits.shape[-1]), dim=-1).indices])
            if best is None or loss < best[0]:
                best = (loss, result)
        result = best[1]
        ids = problem.decode(result.variables, self.parametrisation)
        if search:
            ids = problem.search(ids, torch.cat(shortlists, dim=1), result.variables, self)
        if self.refine_sweeps:
            ids = problem.refine(ids, result.variables, self)
        return Reconstruction(
            token_ids=ids, texts=problem.texts(ids), labels=problem.labels(result.variables), attack=self.name,
            seconds=time.perf_counter() - start, loss_history=result.loss_history,
            snapshots=result.snapshots,
        )


def matching_losses(shared: SharedUpdate, candidates: Sequence[Sequence[int]], distance: str = "cosine",
                    alpha: float = 0.01) -> list[float]:
    """The matching loss of real sentences (token ids without [CLS]/[SEP]) against one client's gradient.

    Zero for the client's own sentence: this is how far DLG's objective says a candidate is from the truth.
    """
    if shared.batch_size != 1:
        raise ValueError("matching_losses scores one sentence at a time: pass an update of batch size 1.")
    check_distance(distance)
    lengths = {len(c) for c in candidates}
    if not candidates or len(lengths) != 1 or 0 in lengths:
        raise ValueError("give at least one candidate, all of the same non-zero length.")
    problem = TextProblem.build(shared, DLG(length=lengths.pop(), use_token_set=False, progress=False))
    return [problem.discrete_distance([list(c)], None, distance, alpha) for c in candidates]


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

    @classmethod
    def build(cls, shared: SharedUpdate, attack: DLG) -> "TextProblem":
        """Check the update against the public model and decide vocabulary, length and labels."""
        if shared.kind != "gradient":
            raise ValueError("DLG matches one FedSGD gradient (kind='gradient'); this update is a weight delta.")
        model = shared.public_model().eval()
        trainable = OrderedDict((n, p) for n, p in model.named_parameters() if p.requires_grad)
        check_update(shared.update, {n: p.shape for n, p in trainable.items()})
        tokenizer = models.load_tokenizer(shared.model_name)
        word_name = next((n for n in trainable if n.endswith(WORD_EMBEDDINGS)), None)
        specials = torch.tensor(sorted(set(tokenizer.all_special_ids)))
        cls_sep = torch.tensor([tokenizer.cls_token_id, tokenizer.sep_token_id])
        if word_name is not None and attack.use_token_set:
            row_ids = torch.tensor(sorted(set(token_set(shared.update)) | set(cls_sep.tolist())))
        else:
            row_ids = torch.arange(tokenizer.vocab_size)
        vocab = row_ids[~torch.isin(row_ids, specials)]
        if vocab.numel() == 0:
            raise ValueError("the token set holds only special tokens: there is no text to rebuild.")
        match_words = word_name is not None and attack.parametrisation == "relaxed"
        params = OrderedDict((n, p) for n, p in trainable.items() if n != word_name)
        target = [shared.update[n].detach() for n in params]
        if match_words:
            target.insert(0, shared.update[word_name].detach()[row_ids])
        labels = None if attack.learn_label else infer_labels(shared.update, shared.batch_size, shared.kind)
        use_token_set = word_name is not None and attack.use_token_set
        return cls(model, tokenizer, params, target, row_ids, vocab, match_words, use_token_set, shared.batch_size,
                   _attack_length(shared, attack, word_name is not None), labels, shared.num_labels)

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

    def start(self, attack: DLG) -> list[torch.Tensor]:
        """Random dummy variables: logits over the vocabulary, or embeddings; a soft label when learned."""
        if attack.parametrisation == "relaxed":
            words = torch.randn(self.batch_size, self.length, self.vocab.numel())
        else:
            scale = self.model.get_input_embeddings().weight.detach().std()
            words = torch.randn(self.batch_size, self.length, self.model.config.hidden_size) * scale
        variables = [words.requires_grad_()]
        if self.fixed_labels is None:
            variables.append(torch.randn(self.batch_size, self.num_labels).requires_grad_())
        return variables

    def gradient(self, variables: list[torch.Tensor], parametrisation: str) -> list[torch.Tensor]:
        """The dummy gradient of the same tensors as ``target``, differentiable in ``variables``."""
        rows = self._embedding_rows()
        words = variables[0]
        if parametrisation == "relaxed":
            words = words.softmax(-1) @ self._vocab_rows(rows)
        label = variables[1] if self.fixed_labels is None else None
        return self._gradient(rows, words, label, create_graph=True)

    def _gradient(self, rows: torch.Tensor, words: torch.Tensor, label_logits: torch.Tensor | None,
                  create_graph: bool) -> list[torch.Tensor]:
        embeds = self._inputs_embeds(rows, words)
        logits = self.model(inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2])).logits
        if label_logits is not None:
            loss = soft_label_loss(logits, label_logits)
        else:
            loss = nn.functional.cross_entropy(logits, torch.tensor(self.fixed_labels))
        inputs = ([rows] if self.match_words else []) + list(self.params.values())
        return list(torch.autograd.grad(loss, inputs, create_graph=create_graph))

    def discrete_distance(self, ids: list[list[int]], label_logits: torch.Tensor | None, distance: str,
                          alpha: float) -> float:
        """The matching loss of real token sequences (no relaxation): zero for the client's own text."""
        rows = self._embedding_rows()
        index = torch.searchsorted(self.vocab, torch.tensor(ids))
        words = self._vocab_rows(rows)[index]
        grads = self._gradient(rows, words, label_logits, create_graph=False)
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
        candidates = torch.as_tensor(candidates, dtype=torch.long).reshape(-1, self.length)
        sites = self._linear_sites()
        if sites is None or label_logits is not None or self.fixed_labels is None or self.match_words \
                or self.batch_size != 1:
            return torch.tensor([self.discrete_distance([c.tolist()], label_logits, distance, alpha)
                                 for c in candidates], dtype=torch.double)
        return torch.cat([self._batch_distances(part, sites, distance, alpha)
                          for part in candidates.split(chunk)])

    def _batch_distances(self, ids: torch.Tensor, sites: list[tuple[nn.Linear, str]], distance: str,
                         alpha: float) -> torch.Tensor:
        n = ids.shape[0]
        table = self.model.get_input_embeddings().weight.detach()
        full = torch.cat([torch.full((n, 1), self.tokenizer.cls_token_id), ids,
                          torch.full((n, 1), self.tokenizer.sep_token_id)], dim=1)
        modules = list({id(m): m for m, _ in sites}.values())
        seen: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

        def keep(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            seen[id(module)] = (inputs[0].detach(), output)

        hooks = [m.register_forward_hook(keep) for m in modules]
        try:
            with torch.enable_grad():
                embeds = table[full]
                logits = self.model(inputs_embeds=embeds, attention_mask=torch.ones(full.shape)).logits
                loss = nn.functional.cross_entropy(logits, torch.tensor(self.fixed_labels * n), reduction="sum")
                outputs = [seen[id(m)][1] for m in modules]
                deltas = torch.autograd.grad(loss, outputs, allow_unused=True)
        finally:
            for hook in hooks:
                hook.remove()
        delta = {id(m): (d if d is not None else torch.zeros_like(o)) for m, d, o in zip(modules, deltas, outputs)}
        total = torch.zeros(n, dtype=torch.double)
        for (module, attr), target in zip(sites, self.target):
            x, d = seen[id(module)][0], delta[id(module)]
            if x.dim() == 2:
                x, d = x[:, None], d[:, None]
            grad = torch.einsum("nto,nti->noi", d, x) if attr == "weight" else d.sum(1)
            grad, target = grad.reshape(n, -1).double(), target.reshape(-1).double()
            diff = grad - target
            if distance == "l2":
                total += diff.pow(2).sum(1)
            elif distance == "tag":
                total += diff.pow(2).sum(1) + alpha * diff.abs().sum(1)
            elif target.abs().sum() == 0:
                total += grad.pow(2).sum(1)
            else:
                total += 1 - (grad @ target) / (grad.norm(dim=1) * target.norm()).clamp_min(1e-12)
        return total

    def _first_order_candidates(self, sentence: list[int], label: torch.Tensor | None, attack: DLG) -> torch.Tensor:
        """Per position the ``gradient_candidates`` tokens whose embedding the loss's gradient points to."""
        table = self.model.get_input_embeddings().weight.detach()
        words = table[torch.tensor([sentence])].requires_grad_(True)
        variables = [words] if label is None else [words, label]
        loss = gradient_distance(self.gradient(variables, "embeddings"), self.target, attack.distance,
                                 attack.alpha)
        (grad,) = torch.autograd.grad(loss, [words])
        k = min(attack.gradient_candidates, self.vocab.numel())
        return self.vocab[(-(grad[0] @ table[self.vocab].T)).topk(k, dim=-1).indices]

    def search(self, ids: list[list[int]], shortlist: torch.Tensor, variables: list[torch.Tensor],
               attack: DLG) -> list[list[int]]:
        """Greedy discrete search for one sentence: best single-token substitution or pair swap, each step.

        ``shortlist`` holds candidate tokens per position (``length × k``); the first-order candidates at
        the current text join them at every step. Stops after ``attack.search_steps`` steps, when nothing
        lowers the exact matching loss, or when the loss is zero up to rounding.
        """
        if self.batch_size != 1:
            return ids
        label = variables[1].detach() if self.fixed_labels is None else None
        sentence = list(ids[0])
        best = float(self.batch_distances(torch.tensor([sentence]), label, attack.distance, attack.alpha)[0])
        for _ in range(attack.search_steps):
            if best <= REFINE_TOL:
                break
            tokens = shortlist
            if attack.gradient_candidates:
                tokens = torch.cat([tokens, self._first_order_candidates(sentence, label, attack)], dim=1)
            candidates = [sentence[:i] + [t] + sentence[i + 1:] for i in range(len(sentence))
                          for t in tokens[i].unique().tolist() if t != sentence[i]]
            candidates += [_swapped(sentence, i, j) for i in range(len(sentence))
                           for j in range(i + 1, len(sentence)) if sentence[i] != sentence[j]]
            if not candidates:
                break
            values = self.batch_distances(torch.tensor(candidates), label, attack.distance, attack.alpha)
            value = float(values.min())
            if value >= best:
                break
            best, sentence = value, candidates[int(values.argmin())]
        return [sentence]

    def refine(self, ids: list[list[int]], variables: list[torch.Tensor], attack: DLG) -> list[list[int]]:
        """Greedy swaps of two positions while they lower the discrete matching loss (one sentence only).

        Each sweep tries every swap (and, when some token must repeat, every change of one position to
        another leaked token) and keeps the best; ``attack.refine_sweeps`` bounds the sweeps.
        """
        if self.batch_size != 1:
            return ids
        label = variables[1].detach() if self.fixed_labels is None else None
        best = self.discrete_distance(ids, label, attack.distance, attack.alpha)
        sentence = list(ids[0])
        for _ in range(attack.refine_sweeps):
            if best <= REFINE_TOL:  # already the client's text up to rounding: no swap can do better
                break
            candidates = [_swapped(sentence, i, j) for i in range(len(sentence))
                          for j in range(i + 1, len(sentence)) if sentence[i] != sentence[j]]
            if self.vocab.numel() < len(sentence):  # a token repeats: which one is unknown, so try others
                candidates += [sentence[:i] + [t] + sentence[i + 1:] for i in range(len(sentence))
                               for t in self.vocab.tolist() if t != sentence[i]]
            if not candidates:
                break
            values = [self.discrete_distance([c], label, attack.distance, attack.alpha) for c in candidates]
            value = min(values)
            if value >= best:
                break
            best, sentence = value, candidates[values.index(value)]
        return [sentence]

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
            return [self.vocab[cover_assignment(score[0])].tolist()]
        return self.vocab[score.argmax(-1)].tolist()

    def texts(self, ids: list[list[int]]) -> list[str]:
        """The decoded sentences."""
        return [self.tokenizer.decode(sentence) for sentence in ids]

    def labels(self, variables: list[torch.Tensor]) -> list[int]:
        """The labels used: inferred from the head, or the argmax of the learned soft label."""
        if self.fixed_labels is not None:
            return list(self.fixed_labels)
        return variables[1].detach().argmax(-1).tolist()

    def run(self, attack: DLG, callback: Callback | None) -> MatchResult:
        """One random start of gradient matching."""
        variables = self.start(attack)
        return match_gradients(
            lambda: self.gradient(variables, attack.parametrisation), self.target, variables, attack.steps,
            attack.optimizer, attack.lr, attack.distance, attack.alpha, attack.snapshot_every,
            lambda: self.texts(self.decode(variables, attack.parametrisation)), callback, attack.progress, attack.name,
        )


def _swapped(sentence: list[int], i: int, j: int) -> list[int]:
    candidate = list(sentence)
    candidate[i], candidate[j] = candidate[j], candidate[i]
    return candidate


def cover_assignment(score: torch.Tensor) -> list[int]:
    """For each position (row of ``score``, shape (length, n_tokens)) a token, using every token at least once.

    Maximises the total score by the Hungarian method: each token has one mandatory column with a large
    bonus and ``length − n_tokens`` optional copies for repeated tokens. Needs ``n_tokens ≤ length``.
    """
    length, n_tokens = score.shape
    if n_tokens > length:
        raise ValueError(f"{n_tokens} tokens cannot all fit in {length} positions.")
    spare = length - n_tokens
    bonus = 1e6
    columns = torch.cat([score + bonus] + [score] * spare, dim=1) if spare else score + bonus
    rows, cols = linear_sum_assignment(columns.double().numpy(), maximize=True)
    order = [0] * length
    for row, col in zip(rows, cols):
        order[int(row)] = int(col) % n_tokens
    return order


def _attack_length(shared: SharedUpdate, attack: DLG, full: bool) -> int:
    """Tokens per sentence without [CLS]/[SEP]: given, bounded by the set-up, or read from the positions."""
    length = attack.length or shared.max_tokens
    if length is None and full:
        length = sequence_length(shared.update) - 2
    if length is None:
        raise ValueError("the sentence length is unknown: pass DLG(length=...) or set shared.max_tokens.")
    if length < 1:
        raise ValueError(f"the sentence length must be at least 1 token, got {length}.")
    return int(length)
