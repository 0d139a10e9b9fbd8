"""Same seed, same reconstruction, whatever the BLAS thread count (and whatever ran before in the process).

Notebook 06's cut at 1e-5 on tiny-bert gave 75% or 100% token accuracy from run to run: the token set's least
squares (``span_tokens.coefficients``) went through LAPACK's gelsy, whose pivot array torch leaves uninitialised,
on a rank-deficient matrix (a freshly initialised LayerNorm has β = 0), so the coefficients, and with them the
order of the tokens, depended on stale memory: on the thread count, and on the calls before.
"""
from contextlib import contextmanager

import torch

import lora_leak_lib as ll
from lora_leak_lib import config
from lora_leak_lib.attacks import span_tokens
from lora_leak_lib.models import resolve

CUT = 1e-5  # notebook 06's cell 'cut at 1e-05': 7 of 16 directions for 14 inputs, the token set certifies
THREADS = (1, 2)


@contextmanager
def threads(count: int):
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def notebook_sentence() -> tuple[str, list[int]]:
    """Notebook 06's 12-token course sentence (MiniLM's tokenizer, as there) and its ids without [CLS]/[SEP]."""
    tokenizer = resolve("minilm").tokenizer
    text = ll.data.truncate_to_tokens(tokenizer, ll.data.course_sentences(), 12, 1)[0].text
    return text, tokenizer(text)["input_ids"][1:-1]


def cut_and_attack(update, length: int, tol: float) -> tuple[int, list[int]]:
    """The cell's two discrete results at one cut: the directions kept and the token ids recovered."""
    kept = ll.attacks.input_span(ll.attacks.first_layer_rows(update.update), tol).shape[0]
    result = ll.attacks.span_attack(update, ll.Knowledge(length=length), tol=tol)
    return kept, result.token_ids[0]


def test_notebook_cut_gives_the_same_directions_and_tokens_with_one_and_two_threads():
    text, reference = notebook_sentence()
    outcomes = {}
    for count in THREADS:
        with threads(count):
            update = ll.fl.capture_update([text], [1], resolve("tiny-bert"), rank=8,
                                          trained_steps=ll.experiments.DEFAULT_TRAINED_STEPS)
            outcomes[count] = [cut_and_attack(update, len(reference), CUT) for _ in range(2)]  # twice: memory state
    runs = [run for count in THREADS for run in outcomes[count]]
    assert all(run == runs[0] for run in runs), outcomes
    assert runs[0] == (7, reference)   # 7 directions for 14 inputs, and the token set certifies the whole sentence


def test_attack_on_one_update_is_independent_of_the_thread_count_at_both_cuts():
    # The update itself is float32 training and its gradient: its last bits may move with the thread count (a
    # singular value next to SPAN_TOL can then cross it); the attack on a given update must not move.
    text, reference = notebook_sentence()
    update = ll.fl.capture_update([text], [1], resolve("tiny-bert"), rank=8, trained_steps=ll.experiments.DEFAULT_TRAINED_STEPS)
    outcomes = {}
    for count in THREADS:
        with threads(count):
            outcomes[count] = [cut_and_attack(update, len(reference), tol) for tol in (CUT, ll.attacks.SPAN_TOL)]
    assert outcomes[1] == outcomes[2], outcomes


def test_token_coefficients_are_exact_when_layer_norm_bias_is_zero():
    # tiny-bert's public model is freshly initialised: β = 0, so the least squares of span_tokens is rank-deficient
    model = resolve("tiny-bert")
    tokenizer = model.tokenizer
    inputs = ll.attacks.public_inputs(model, 0)
    assert float(inputs.beta.abs().max()) == 0.0
    ids = tokenizer("please send the money to my old bank account today")["input_ids"]        # 13 inputs
    x = inputs.vectors(torch.tensor(ids), torch.arange(len(ids)))
    weights = torch.randn(6, len(ids), generator=torch.Generator().manual_seed(0), dtype=torch.double)
    basis = ll.attacks.input_span(weights.to(config.device()) @ x)                           # 6 rows < 13 inputs
    tokens = list(dict.fromkeys(ids))
    token_parts = inputs.tokens[torch.tensor(tokens, device=config.device())] * inputs.gamma
    position_parts = inputs.positions[:len(ids)] * inputs.gamma
    for count in THREADS:
        with threads(count):
            for _ in range(3):
                w, u = span_tokens.coefficients(basis, inputs, tokens, len(ids))
                rebuilt = w.T @ token_parts + u.T @ position_parts
                assert torch.allclose(rebuilt, basis, atol=1e-9)
                # and the truth's identity: a token's coefficients are the sum of its positions'
                for i, token in enumerate(tokens):
                    places = [p for p, v in enumerate(ids) if v == token]
                    assert torch.allclose(w[i], u[places].sum(0), atol=1e-8)
