"""The article's experiment replicated: the published DLG recipe as a named configuration, and one row on tiny-bert."""
import pytest

import lora_leak_lib as ll
from lora_leak_lib.experiments import replication
from lora_leak_lib.models import resolve

SENTENCES = [ll.data.Example("the film is a charming and often affecting journey", 1),
             ll.data.Example("a dull , lifeless movie that never finds its footing", 0)]


def test_the_published_recipe_is_dlg_with_joint_labels_and_l2():
    recipe = replication.ARTICLE_ATTACKS["dlg-published"]
    attack = recipe.build(steps=5)
    assert recipe.knobs is replication.PUBLISHED_RECIPE
    assert (attack.distance, attack.learn_label, attack.scale, attack.parametrisation, attack.optimizer) == \
        ("l2", True, "none", "embeddings", "lbfgs")
    assert list(replication.ARTICLE_ATTACKS)[0] == "dlg-published" and list(replication.ARTICLE_ATTACKS)[-1] == "lora-best"
    assert all(a.knobs.get("learn_label", True) for a in replication.ARTICLE_ATTACKS.values())  # every DLG row learns its label
    with pytest.raises(ValueError, match="unknown replication attack"):
        replication.check_article_attack("dlg-unpublished")


def test_published_figure_follows_the_model_size():
    assert replication.published_figure(resolve("tiny-bert")) == replication.PUBLISHED["small"]
    assert replication.published_figure(resolve("bert-base-uncased")) == replication.PUBLISHED["bert"]


@pytest.fixture(scope="module")
def updates():
    tokenizer = ll.models.resolve("tiny-bert").tokenizer
    sentences = ll.data.truncate_to_tokens(tokenizer, SENTENCES, 8, 2)
    return sentences, replication.article_updates(resolve("tiny-bert"), sentences, rank=4, trained_steps=2)


@pytest.mark.parametrize("attack", ["dlg-published", "lora-best"])
def test_run_article_row_scores_every_sentence(updates, attack):
    sentences, shared = updates
    row = replication.run_article_row(resolve("tiny-bert"), attack, sentences, shared, steps=3)
    assert row["sentences"] == 2 and len(row["rows"]) == 2 and row["attack"] == attack and row["rank"] == 4
    assert 0 <= row["token_accuracy"] <= 1 and row["seconds"] > 0 and row["parameters"] > row["shared_parameters"]
    assert (row["published_token_accuracy"] is None) == (attack != "dlg-published")
    assert 0.5 < row["head_share"] < 1  # the head's gradient outweighs the adapter's in the raw L2
    if attack == "lora-best":
        assert row["token_accuracy"] == 1.0  # the exact attack on a trained adapter (B != 0)
    with pytest.raises(ValueError, match="one update per sentence"):
        replication.run_article_row(resolve("tiny-bert"), attack, sentences, shared[:1])


def test_the_benchmark_offers_the_replication_attacks_and_registered_models():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "article_replication.py"
    spec = importlib.util.spec_from_file_location(path.stem, path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    parser = script.build_parser()
    action = next(a for a in parser._actions if "--attacks" in a.option_strings)
    assert tuple(action.choices) == tuple(replication.ARTICLE_ATTACKS)
    assert all(a.attack in ll.attacks.ATTACKS for a in replication.ARTICLE_ATTACKS.values())
    args = parser.parse_args(["--models", "tiny-bert", "--count", "2", "--steps", "3", "--out", "x.json"])
    assert (args.models, args.count, args.steps, args.out) == (["tiny-bert"], 2, 3, "x.json")
    assert script.available("no-such-model") is not None and script.available("tiny-bert") is None
