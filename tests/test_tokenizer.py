import pytest

from qvidcap.config import load_config
from qvidcap.model.tokenizer import (
    TokenizerError,
    build_tokenizer,
    build_word_tokenizer,
    caption_start_id,
    load_tokenizer,
    tokenize_captions,
)

CAPTIONS = ["A red circle moves left.", "a blue square grows, then shrinks", "The red square bounces!"]


def test_word_tokenizer_lowercases_splits_punctuation_and_has_the_specials():
    tok = build_word_tokenizer(CAPTIONS)
    assert tok.convert_ids_to_tokens([0, 1, 2, 3]) == ["<pad>", "<s>", "</s>", "<unk>"]
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert tok.tokenize("A Red circle.") == ["a", "red", "circle", "."]
    assert tok("a purple circle", add_special_tokens=False)["input_ids"][1] == tok.unk_token_id


def test_word_tokenizer_is_deterministic_and_decodes_to_clean_text():
    assert build_word_tokenizer(CAPTIONS).get_vocab() == build_word_tokenizer(list(CAPTIONS)).get_vocab()
    tok = build_word_tokenizer(CAPTIONS)
    ids = tok("a red circle moves left.", add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == "a red circle moves left."


def test_min_word_count_sends_rare_words_to_unk():
    tok = build_word_tokenizer(CAPTIONS, min_count=2)
    assert "red" in tok.get_vocab() and "circle" not in tok.get_vocab()


def test_tokenize_captions_appends_eos_and_truncates_with_eos_included():
    tok = build_word_tokenizer(CAPTIONS)
    ids = tokenize_captions(tok, ["a red circle moves left.", "a"], max_tokens=4)
    assert [len(i) for i in ids] == [4, 2]
    assert all(i[-1] == tok.eos_token_id for i in ids)
    assert tok.decode(ids[0], skip_special_tokens=True) == "a red circle"
    with pytest.raises(ValueError, match="max_tokens"):
        tokenize_captions(tok, ["a"], 0)


def test_save_and_load_round_trip(tmp_path):
    tok = build_word_tokenizer(CAPTIONS)
    tok.save_pretrained(tmp_path / "tok")
    loaded = load_tokenizer(tmp_path / "tok")
    assert loaded.get_vocab() == tok.get_vocab()
    assert tokenize_captions(loaded, CAPTIONS, 30) == tokenize_captions(tok, CAPTIONS, 30)
    assert caption_start_id(loaded) == loaded.bos_token_id


def test_build_tokenizer_picks_by_decoder_kind_and_explains_what_is_missing(tmp_path):
    assert len(build_tokenizer(load_config(), CAPTIONS)) > 4
    with pytest.raises(TokenizerError, match="train_captions"):
        build_tokenizer(load_config())
    with pytest.raises(TokenizerError, match="decoder.name"):
        build_tokenizer(load_config("smoke", "decoder.kind=hf"))
    with pytest.raises(TokenizerError, match="could not load a tokenizer"):
        load_tokenizer(tmp_path / "nothing-here")


def test_pad_token_ids_right_pads_with_a_mask():
    from qvidcap.model.tokenizer import pad_token_ids

    input_ids, attention_mask = pad_token_ids([[5, 6, 2], [7, 2]], pad_token_id=0)
    assert input_ids.tolist() == [[5, 6, 2], [7, 2, 0]]
    assert attention_mask.tolist() == [[1, 1, 1], [1, 1, 0]]
