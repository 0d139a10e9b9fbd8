"""DLG (Zhu et al., 2019) and its text variants: optimise dummy inputs until their gradient matches the shared one."""
from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from .. import config
from ..arrays import randn
from ..checks import check_int
from .base import Callback, Knowledge, Reconstruction, SharedUpdate
from .distances import check_distance, check_update_shapes, gradient_distance
from .registry import register
from .search import kicked, random_substitutions, substituted, swaps
from .text_problem import TextProblem, check_scale, soft_label_loss

DLG_OPTIMIZERS = ("adam", "lbfgs")
LBFGS_TOLERANCES = (1e-7, 1e-9)
"""torch's L-BFGS stops a step when the gradient's largest entry or the change of loss falls below these: on a
matching loss of raw gradients of size ~1e-6 that is at once (``DLG.lbfgs_tolerances`` or ``scale`` fixes it)."""
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
                    progress: bool = True, desc: str = "gradient matching",
                    lbfgs_tolerances: tuple[float, float] = LBFGS_TOLERANCES) -> MatchResult:
    """The DLG loop: change ``variables`` so that ``gradient_fn()`` (built with ``create_graph=True``) nears ``target``.

    Every ``snapshot_every`` steps (and at the end) ``snapshot_fn()`` is stored and passed to
    ``callback(step, loss, snapshot)``. L-BFGS runs up to 20 inner evaluations per step, as in the paper;
    ``lbfgs_tolerances`` are its ``(tolerance_grad, tolerance_change)``.
    """
    _check_choice(optimizer, DLG_OPTIMIZERS, "optimizer")
    check_distance(distance)
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}.")
    if optimizer == "adam":
        opt = torch.optim.Adam(variables, lr=lr)
    else:
        opt = torch.optim.LBFGS(variables, lr=lr, max_iter=1, history_size=100,
                                tolerance_grad=lbfgs_tolerances[0], tolerance_change=lbfgs_tolerances[1])

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


def classifier_gradients(model: nn.Module, inputs: torch.Tensor, labels: Sequence[int]) -> OrderedDict[str, torch.Tensor]:
    """The shared gradient of a classifier on continuous inputs: ``dL/dθ`` of the cross-entropy, by name."""
    params = OrderedDict((n, p) for n, p in model.named_parameters() if p.requires_grad)
    device = next(iter(params.values())).device  # inputs and labels follow the model
    loss = nn.functional.cross_entropy(model(inputs.to(device)), torch.as_tensor(list(labels), device=device))
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
    check_update_shapes(shared, {n: p.shape for n, p in params.items()})
    config.set_seed(seed)
    like = next(iter(params.values())).detach()  # drawn on the CPU, so a seed gives the same start anywhere
    dummy = randn(input_shape, like=like, dtype=torch.float32).requires_grad_(True)
    label_logits = randn((input_shape[0], num_classes), like=like, dtype=torch.float32).requires_grad_(labels is None)
    target = [shared[n].detach() for n in params]

    def gradient_fn() -> list[torch.Tensor]:
        logits = model(dummy)
        if labels is None:
            loss = soft_label_loss(logits, label_logits)
        else:
            loss = nn.functional.cross_entropy(logits, torch.as_tensor(list(labels), device=like.device))
        return list(torch.autograd.grad(loss, list(params.values()), create_graph=True))

    variables = [dummy, label_logits] if labels is None else [dummy]
    result = match_gradients(gradient_fn, target, variables, steps, optimizer, lr, distance,
                             snapshot_every=snapshot_every, snapshot_fn=lambda: dummy.detach().clone(),
                             progress=progress, desc="DLG")
    found = list(labels) if labels is not None else label_logits.argmax(-1).tolist()
    return InputLeak(dummy.detach(), found, result.loss_history, result.snapshots)


@register("dlg", "relaxed-vocabulary DLG with a cosine distance, live step by step",
          "matching loss between the dummy and the shared gradient", distance="cosine", progress=False)
@dataclass
class DLG:
    """DLG against a text classifier's shared gradient, with the text variants of the course.

    ``parametrisation`` is ``relaxed`` (optimise logits ``z``, feed ``softmax(z) @ E``, decode by argmax)
    or ``embeddings`` (free input embeddings, decoded by the nearest token). The sentence length comes from
    ``Knowledge.length`` or, in full fine-tuning, from the position-embedding gradient. With
    ``use_token_set`` and a full fine-tuning update the vocabulary is cut to the non-zero rows of the
    word-embedding gradient. Labels are the known ones, else read from the head bias (iDLG), unless
    ``learn_label``, which optimises a soft label jointly as the DLG paper does. The best of ``restarts``
    random starts (lowest final matching loss) is kept. ``refine_sweeps`` > 0 then swaps pairs of decoded
    tokens while the matching loss of the real token sequence falls (one sentence per batch only).
    ``threads`` CPU threads run the attack (``None`` keeps torch's setting): its tensors are so small that
    one thread is fastest, and several slow it down many times on a busy machine. ``scale`` weighs the
    shared tensors in the matching loss (``TextProblem.rescale``: ``none`` as in the paper, ``global`` the
    same objective at order 1, ``tensor`` every tensor alike); ``lbfgs_tolerances`` are L-BFGS's stopping
    thresholds ``(tolerance_grad, tolerance_change)``.

    ``search_steps`` > 0 (one sentence per batch only) turns the relaxation into a shortlist: each restart
    keeps its ``shortlist`` most likely tokens per position, the start is the restart whose decoded text has
    the lowest *discrete* matching loss, and then each step applies the best single-token substitution (from
    the shortlists and the ``gradient_candidates`` tokens a first-order expansion of the loss prefers) or pair
    swap, scored exactly in batches (``TextProblem.batch_distances``), until none lowers the loss. ``kicks`` > 0
    makes it an iterated local search: from the best sentence so far, ``kick_size`` random positions take a
    random shortlisted token and the descent runs again, ``kicks`` times, keeping whatever scores best (the
    draws come from a generator seeded by ``seed``, so the same seed gives the same sentence anywhere).
    """

    parametrisation: str = "relaxed"
    distance: str = "cosine"
    optimizer: str = "adam"
    steps: int = 200
    lr: float = 0.03
    alpha: float = 0.01
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
    kicks: int = 0
    kick_size: int = 3
    scale: str = "none"
    lbfgs_tolerances: tuple[float, float] = LBFGS_TOLERANCES

    name = "dlg"

    @property
    def variant(self) -> str:
        """The variant in words, e.g. ``dlg-relaxed+tokenset-cosine-adam``: the progress bar's label."""
        vocab = "+tokenset" if self.use_token_set else ""
        refine = "+swaps" if self.refine_sweeps else ""
        search = "+search" if self.search_steps else ""
        scale = "" if self.scale == "none" else f"/{self.scale}"
        return f"dlg-{self.parametrisation}{vocab}-{self.distance}{scale}-{self.optimizer}{refine}{search}"

    def reconstruct(self, shared: SharedUpdate, knowledge: Knowledge = Knowledge(),
                    callback: Callback | None = None) -> Reconstruction:
        """Rebuild the client's sentences from ``shared``; ``callback(step, loss, texts)`` sees the progress.

        Steps are counted across restarts (restart 2 continues where restart 1 ended), so ``loss_history``
        holds every restart's matching loss in turn; the kept restart's texts are returned.
        """
        _check_choice(self.parametrisation, PARAMETRISATIONS, "parametrisation")
        _check_choice(self.optimizer, DLG_OPTIMIZERS, "optimizer")
        check_distance(self.distance)
        check_scale(self.scale)
        for knob, least in (("kicks", 0), ("kick_size", 1)):
            check_int(getattr(self, knob), knob, least, hint="it counts the discrete search's steps")
        previous = torch.get_num_threads()
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        try:
            return self._reconstruct(shared, knowledge, callback)
        finally:
            torch.set_num_threads(previous)

    def _reconstruct(self, shared: SharedUpdate, knowledge: Knowledge, callback: Callback | None) -> Reconstruction:
        start = time.perf_counter()
        problem = TextProblem.build(shared, knowledge, self.parametrisation, self.use_token_set, self.learn_label,
                                    self.scale)
        search = self.search_steps > 0 and problem.batch_size == 1 and self.parametrisation == "relaxed"
        best: tuple[float, MatchResult] | None = None
        shortlists: list[torch.Tensor] = []
        history: list[float] = []
        snapshots: list[tuple[int, list[str]]] = []
        for restart in range(self.restarts):
            config.set_seed(self.seed + restart)
            offset = len(history)
            result = self.run(problem, None if callback is None else
                              lambda step, loss, texts: callback(offset + step, loss, texts))
            history += result.loss_history
            snapshots += [(offset + step, texts) for step, texts in result.snapshots]
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
            ids = self.search(problem, ids, torch.cat(shortlists, dim=1), result.variables)
        if self.refine_sweeps:
            ids = self.refine(problem, ids, result.variables)
        label = result.variables[1].detach() if problem.fixed_labels is None else None
        return Reconstruction(
            token_ids=ids, texts=problem.texts(ids), labels=problem.labels(result.variables), attack=self.name,
            seconds=time.perf_counter() - start,
            loss=problem.discrete_distance(ids, label, self.distance, self.alpha),
            loss_history=history, snapshots=snapshots,
        )

    def run(self, problem: TextProblem, callback: Callback | None) -> MatchResult:
        """One random start of gradient matching."""
        variables = problem.start(self.parametrisation)
        return match_gradients(
            lambda: problem.gradient(variables, self.parametrisation), problem.target, variables, self.steps,
            self.optimizer, self.lr, self.distance, self.alpha, self.snapshot_every,
            lambda: problem.texts(problem.decode(variables, self.parametrisation)), callback, self.progress,
            self.variant, tuple(self.lbfgs_tolerances),
        )

    def _first_order_candidates(self, problem: TextProblem, sentence: list[int], label: torch.Tensor | None) -> torch.Tensor:
        """Per position the ``gradient_candidates`` tokens whose embedding the loss's gradient points to."""
        table = problem.model.get_input_embeddings().weight.detach()
        words = table[torch.tensor([sentence], device=table.device)].requires_grad_(True)
        variables = [words] if label is None else [words, label]
        loss = gradient_distance(problem.gradient(variables, "embeddings"), problem.target, self.distance,
                                 self.alpha)
        (grad,) = torch.autograd.grad(loss, [words])
        k = min(self.gradient_candidates, problem.vocab.numel())
        return problem.vocab[(-(grad[0] @ table[problem.vocab].T)).topk(k, dim=-1).indices]

    def search(self, problem: TextProblem, ids: list[list[int]], shortlist: torch.Tensor,
               variables: list[torch.Tensor]) -> list[list[int]]:
        """Greedy discrete search for one sentence, then ``kicks`` restarts of it from random perturbations
        of the best sentence so far (iterated local search); returns the best sentence found."""
        if problem.batch_size != 1:
            return ids
        label = variables[1].detach() if problem.fixed_labels is None else None
        best_sentence, best = self.descend(problem, list(ids[0]), shortlist, label)
        generator = torch.Generator().manual_seed(self.seed)
        for _ in range(self.kicks):
            if best <= REFINE_TOL:
                break
            sentence = kicked(best_sentence, random_substitutions(best_sentence, shortlist, self.kick_size, generator))
            sentence, value = self.descend(problem, sentence, shortlist, label)
            if value < best:
                best_sentence, best = sentence, value
        return [best_sentence]

    def descend(self, problem: TextProblem, sentence: list[int], shortlist: torch.Tensor,
                label: torch.Tensor | None) -> tuple[list[int], float]:
        """Greedy descent from ``sentence``: the best single-token substitution or pair swap, each step.

        ``shortlist`` holds candidate tokens per position (``length × k``); the first-order candidates at
        the current text join them at every step. Stops after ``search_steps`` steps, when nothing
        lowers the exact matching loss, or when the loss is zero up to rounding; returns the sentence and its loss.
        """
        best = float(problem.batch_distances([sentence], label, self.distance, self.alpha)[0])
        for _ in range(self.search_steps):
            if best <= REFINE_TOL:
                break
            tokens = shortlist
            if self.gradient_candidates:
                tokens = torch.cat([tokens, self._first_order_candidates(problem, sentence, label)], dim=1)
            candidates = [substituted(sentence, i, t) for i in range(len(sentence))
                          for t in tokens[i].unique().tolist() if t != sentence[i]]
            candidates += swaps(sentence)
            if not candidates:
                break
            values = problem.batch_distances(candidates, label, self.distance, self.alpha)
            value = float(values.min())
            if value >= best:
                break
            best, sentence = value, candidates[int(values.argmin())]
        return sentence, best

    def refine(self, problem: TextProblem, ids: list[list[int]], variables: list[torch.Tensor]) -> list[list[int]]:
        """Greedy swaps of two positions while they lower the discrete matching loss (one sentence only).

        Each sweep tries every swap (and, when some token must repeat, every change of one position to
        another leaked token) and keeps the best; ``refine_sweeps`` bounds the sweeps.
        """
        if problem.batch_size != 1:
            return ids
        label = variables[1].detach() if problem.fixed_labels is None else None
        best = problem.discrete_distance(ids, label, self.distance, self.alpha)
        sentence = list(ids[0])
        for _ in range(self.refine_sweeps):
            if best <= REFINE_TOL:  # already the client's text up to rounding: no swap can do better
                break
            candidates = swaps(sentence)
            if problem.vocab.numel() < len(sentence):  # a token repeats: which one is unknown, so try others
                candidates += [substituted(sentence, i, t) for i in range(len(sentence))
                               for t in problem.vocab.tolist() if t != sentence[i]]
            if not candidates:
                break
            values = [problem.discrete_distance([c], label, self.distance, self.alpha) for c in candidates]
            value = min(values)
            if value >= best:
                break
            best, sentence = value, candidates[values.index(value)]
        return [sentence]


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
    problem = TextProblem.build(shared, Knowledge(length=lengths.pop()), use_token_set=False)
    return [problem.discrete_distance([list(c)], None, distance, alpha) for c in candidates]
