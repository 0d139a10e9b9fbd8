"""The course sentences, the Rotten Tomatoes loader and encoding, with their clear errors."""
from pathlib import Path

import pytest

from lora_leak_lib import data, models

RT_POLARITY = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "rt-polarity"


@pytest.fixture(scope="module")
def tokenizer():
    return models.resolve("tiny-bert").tokenizer


def test_course_sentences_are_about_fifty_labelled_private_messages(tokenizer):
    sentences = data.course_sentences()
    assert 45 <= len(sentences) <= 60
    assert {e.label for e in sentences} == {0, 1}
    positives = sum(e.label for e in sentences)
    assert 0.3 < positives / len(sentences) < 0.7
    lengths = [data.n_tokens(tokenizer, e.text) for e in sentences]
    assert min(lengths) >= 6 and max(lengths) <= 40
    assert len({e.text for e in sentences}) == len(sentences)
    text = " ".join(e.text for e in sentences)
    assert all(word in text for word in ("password", "doctor", "bank", "street"))


def test_a_clone_reads_its_own_data_folder():
    """A wheel reads lora_leak_lib/_data instead (tests/test_packaging.py)."""
    assert data.DATA_DIR == Path(__file__).resolve().parent.parent / "data"


def test_missing_course_file_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(data, "COURSE_SENTENCES", tmp_path / "nothing.tsv")
    with pytest.raises(ValueError, match="is missing"):
        data.course_sentences()


@pytest.mark.skipif(not RT_POLARITY.exists(), reason="Rotten Tomatoes files not in ../shared/data/rt-polarity")
def test_rotten_tomatoes_reads_the_polarity_files():
    examples = data.rotten_tomatoes(RT_POLARITY)
    assert len(examples) == 10662
    assert sum(e.label for e in examples) == 5331
    assert all(e.text and e.text == e.text.strip() for e in examples)
    assert data.rotten_tomatoes(RT_POLARITY, limit=5, seed=1) == data.rotten_tomatoes(RT_POLARITY, limit=5, seed=1)
    assert data.rotten_tomatoes(RT_POLARITY, limit=5, seed=1) != data.rotten_tomatoes(RT_POLARITY, limit=5, seed=2)


def test_rotten_tomatoes_reads_a_small_folder_and_rejects_a_missing_file(tmp_path):
    (tmp_path / "rt-polarity.pos").write_text("a fine film .\n\nwarm and funny .\n", encoding="latin-1")
    with pytest.raises(ValueError, match="rt-polarity.neg"):
        data.rotten_tomatoes(tmp_path)
    (tmp_path / "rt-polarity.neg").write_text("dull .\n", encoding="latin-1")
    examples = data.rotten_tomatoes(tmp_path)
    assert sorted((e.text, e.label) for e in examples) == [("a fine film .", 1), ("dull .", 0), ("warm and funny .", 1)]


def test_encode_pads_a_batch_and_rejects_empty_or_too_long_text(tokenizer):
    encoded = data.encode(tokenizer, ["short one", "a somewhat longer second sentence"])
    assert encoded["input_ids"].shape == encoded["attention_mask"].shape
    assert encoded["attention_mask"][0].sum() < encoded["attention_mask"][1].sum()
    for empty in ("", "   "):
        with pytest.raises(ValueError, match="empty"):
            data.encode(tokenizer, ["fine", empty])
    with pytest.raises(ValueError, match="at most 8"):
        data.encode(tokenizer, ["one two three four five six seven"], max_length=8)


def test_truncate_to_tokens_cuts_to_exact_lengths(tokenizer):
    sentences = data.course_sentences()
    for length in (6, 12, 20):
        cut = data.truncate_to_tokens(tokenizer, sentences, length, count=4)
        assert [data.n_tokens(tokenizer, e.text) for e in cut] == [length] * 4
    with pytest.raises(ValueError, match="ask for fewer or shorter"):
        data.truncate_to_tokens(tokenizer, sentences, 39, count=10)


def test_rotten_tomatoes_decodes_utf8_and_the_original_windows_1252(tmp_path):
    sentence = "el ladrón de orquídeas es uno de esos filmes — que vale la pena"
    for encoding in ("utf-8", "cp1252"):
        folder = tmp_path / encoding
        folder.mkdir()
        (folder / "rt-polarity.pos").write_bytes((sentence + "\n").encode(encoding))
        (folder / "rt-polarity.neg").write_bytes("a plain one\n".encode(encoding))
        assert sentence in [e.text for e in data.rotten_tomatoes(folder)]


def test_the_shared_rotten_tomatoes_copy_has_no_garbled_sentence():
    folder = Path(__file__).resolve().parents[2] / "shared" / "data" / "rt-polarity"
    if not folder.is_dir():
        pytest.skip("no ../shared/data/rt-polarity beside the project")
    texts = [e.text for e in data.rotten_tomatoes(folder)]
    assert len(texts) == 10662 and not any("Ã" in t or "â\x80" in t for t in texts)
    assert any("ladrón de orquídeas" in t for t in texts)


def test_recorded_results_load_and_a_missing_one_is_one_line():
    rows = data.recorded("lora_leakage.json")["rows"]
    assert rows and {"token_accuracy", "model"} <= set(rows[0])
    with pytest.raises(ValueError, match="no recorded results 'nope.json'.*run the benchmark") as error:
        data.recorded("nope.json")
    assert "\n" not in str(error.value)
