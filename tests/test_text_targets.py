import pytest
import torch

from qvidcap.model.tokenizer import build_word_tokenizer
from qvidcap.training.text_targets import TextTargets, build_text_targets, resolve_sentence_model, text_target_key
from synthetic_training import BagOfWordsEncoder, tiny_config

CAPTIONS = ["a red circle moves to the left", "two blue squares bounce", "something spins", "a red circle moves to the left"]


class CountingEncoder(BagOfWordsEncoder):
    def __init__(self):
        super().__init__(dim=8)
        self.calls = 0

    def encode(self, sentences, **kwargs):
        self.calls += 1
        return super().encode(sentences, **kwargs)


def test_targets_hold_tokens_and_phrase_embeddings(tmp_path):
    config = tiny_config(tmp_path)
    tokenizer = build_word_tokenizer(CAPTIONS)
    encoder = CountingEncoder()
    targets = build_text_targets(CAPTIONS, config, tokenizer, None, sentence_model=encoder)
    assert len(targets) == 3 and encoder.calls == 1  # one batched pass over unique strings
    t = targets.get("a red circle moves to the left")
    assert t.token_ids[-1] == tokenizer.eos_token_id and len(t.token_ids) == 8
    assert t.global_embed.shape == (8,) and t.object_embeds.shape == (2, 8) and t.action_embeds.shape == (1, 8)
    assert torch.allclose(t.action_embeds[0], encoder.encode(["move"])[0], atol=1e-3)
    assert targets.phrases("two blue squares bounce") == (["two blue squares"], ["bounce"])
    assert targets.phrases("something spins") == (["object"], ["spin"])
    assert targets.meta["pos_backend"] == "rules"
    with pytest.raises(KeyError, match="no text targets"):
        targets.get("an unseen caption")


def test_cache_is_reused_and_keyed(tmp_path):
    config = tiny_config(tmp_path)
    tokenizer = build_word_tokenizer(CAPTIONS)
    first = build_text_targets(CAPTIONS, config, tokenizer, tmp_path / "cache", sentence_model=CountingEncoder())
    again = CountingEncoder()
    second = build_text_targets(list(reversed(CAPTIONS)), config, tokenizer, tmp_path / "cache", sentence_model=again)
    assert again.calls == 0  # read from disk
    assert torch.equal(first.embeddings, second.embeddings) and first.captions == second.captions
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [first.meta["key"]]  # no temporary left behind
    other = tiny_config(tmp_path, **{"text.max_phrases": 3})
    assert text_target_key(CAPTIONS, other, "rules", tokenizer) != first.meta["key"]
    assert text_target_key(CAPTIONS[:2], config, "rules", tokenizer) != first.meta["key"]
    loaded = TextTargets.load(tmp_path / "cache" / first.meta["key"])
    assert loaded.get("something spins").token_ids == first.get("something spins").token_ids


def test_bundled_sentence_model_path():
    path = resolve_sentence_model("all-MiniLM-L6-v2")
    assert path.endswith("model") or "minilm" in path.lower()
    assert resolve_sentence_model("/some/local/dir") == "/some/local/dir"
