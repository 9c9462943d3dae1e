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


# --- a DeepSeek-VL2-style tokenizer: byte-level BPE labelled LlamaTokenizerFast, by hub name, offline ---------

VL2_SPECIALS = ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>"]
VL2_TOKENIZER_CONFIG = {  # the fields DeepSeek-VL2's tokenizer_config.json carries that matter for loading
    "tokenizer_class": "LlamaTokenizerFast", "bos_token": VL2_SPECIALS[0], "eos_token": VL2_SPECIALS[1],
    "pad_token": VL2_SPECIALS[2], "unk_token": None, "add_bos_token": False, "add_eos_token": False,
    "legacy": True, "clean_up_tokenization_spaces": False, "model_max_length": 16384,
}


def write_vl2_tokenizer(directory, decoder=None):
    from hub_layout import SENTENCES, byte_level_bpe

    directory.mkdir(parents=True, exist_ok=True)
    core = byte_level_bpe(SENTENCES * 3, VL2_SPECIALS)
    if decoder is not None:
        core.decoder = decoder
    core.save(str(directory / "tokenizer.json"))
    import json

    (directory / "tokenizer_config.json").write_text(json.dumps(VL2_TOKENIZER_CONFIG))
    return directory


def test_vl2_style_byte_level_tokenizer_keeps_spaces_and_punctuation(tmp_path):
    from qvidcap.model.tokenizer import ROUND_TRIP_SENTENCE

    tok = load_tokenizer(write_vl2_tokenizer(tmp_path / "tok"))
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (0, 1, 2)
    ids = tokenize_captions(tok, [ROUND_TRIP_SENTENCE], 64)[0]
    assert ids[-1] == 1 and tok.decode(ids, skip_special_tokens=True) == ROUND_TRIP_SENTENCE


@pytest.mark.parametrize("broken", ["drops spaces", "keeps byte marks"])
def test_a_tokenizer_that_garbles_text_fails_loudly_at_load(tmp_path, broken):
    import transformers
    from tokenizers import decoders

    from qvidcap.model.tokenizer import TokenizerRoundTripError

    decoder = (decoders.Sequence([decoders.ByteLevel(), decoders.Replace(" ", "")]) if broken == "drops spaces"
               else decoders.Fuse())
    directory = write_vl2_tokenizer(tmp_path / "tok", decoder)
    with pytest.raises(TokenizerRoundTripError, match="does not round-trip") as e:
        load_tokenizer(directory)
    assert transformers.__version__ in str(e.value) and "pip install -U" in str(e.value)


def test_vl2_tokenizer_by_hub_name_offline(tmp_path, monkeypatch):
    from hub_layout import offline_hub

    hub = offline_hub(monkeypatch, tmp_path)
    snapshot = hub.snapshot("deepseek-ai/deepseek-vl2-tiny", {"config.json": {"model_type": "deepseek_vl_v2"}})
    write_vl2_tokenizer(snapshot)
    tok = build_tokenizer(load_config("smoke", {"decoder.kind": "deepseek_vl2", "decoder.name": ""}))
    assert tok.decode(tok("a dog, in the park.", add_special_tokens=False)["input_ids"]) == "a dog, in the park."
    assert hub.attempts == []


def test_the_transformers_5_llama_tokenizer_bug_is_caught_at_load(tmp_path, monkeypatch):
    """transformers 5.x before the fix loaded a byte-level tokenizer.json labelled LlamaTokenizerFast with
    `LlamaTokenizer`'s own SentencePiece pipeline (spaces dropped). That class still does so when asked for
    directly: have AutoTokenizer pick it, as those versions did, and the load must fail, not train on garble."""
    import transformers

    import qvidcap.model.tokenizer as module
    from qvidcap.model.tokenizer import TokenizerRoundTripError

    directory = write_vl2_tokenizer(tmp_path / "tok")
    monkeypatch.setattr(module.AutoTokenizer, "from_pretrained", transformers.LlamaTokenizer.from_pretrained)
    with pytest.raises(TokenizerRoundTripError, match=r"came back as 'Aman,inaredcoat,walkshisdog\.'"):
        load_tokenizer(directory)
