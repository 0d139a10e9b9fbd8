"""Threading a batch by layer 1: the right threading explains layer 1's span; batches are scored together."""
import torch

from lora_leak_lib.attacks import batch_threads, span
from lora_leak_lib.experiments.multi_round import Watch, watched_messages
from lora_leak_lib.models import resolve

TEXTS = ["cold soup today", "blue horse runs fast"]
MODEL = resolve("minilm")  # a trained-looking span: tiny-bert's random model never certifies its own sentence


def test_batched_threading_scores_equal_one_batch_at_a_time_and_single_out_the_right_threading():
    messages, _ = watched_messages(TEXTS, [0, 1], MODEL, rank=8, trained_steps=20, watch=Watch())
    tokenizer = MODEL.tokenizer
    right = [tuple(tokenizer(t)["input_ids"]) for t in TEXTS]
    a, b = right
    crossed = [a[:2] + b[2:3] + a[3:], b[:2] + a[2:3] + b[3:]]     # the sentences exchange their second word
    twice = [a, a]              # fewer inputs (scored in another group), and a sentence twice: dependent inputs
    candidates = [right, crossed, twice, right[::-1]]
    score = batch_threads.BatchResidual(messages)
    together = score(candidates)
    alone = torch.cat([batch_threads.BatchResidual(messages)([c]) for c in candidates])
    assert torch.allclose(together, alone, rtol=1e-5, atol=1e-7)   # float32 hidden states, float64 residuals
    assert max(float(together[0]), float(together[3])) < span.CERTIFIED  # the order of the sentences is no threading
    assert float(together[1]) > 100 * span.CERTIFIED and float(together[2]) > 100 * span.CERTIFIED
