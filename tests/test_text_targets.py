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


def test_centred_targets_take_away_the_reward_of_one_constant_output(tmp_path):
    """Bag-of-words embeddings of captions that share words all lean one way; after centring, the mean training
    direction scores about 0 and every row is the unit vector of (row - its kind's training mean)."""
    captions = ["a red circle moves to the left", "a blue circle moves to the right", "a red square moves up",
                "two green circles move down", "a red circle moves to the left slowly"]
    train = captions[:4]
    targets = build_text_targets(captions, tiny_config(tmp_path), build_word_tokenizer(captions), None,
                                 sentence_model=BagOfWordsEncoder(dim=16))
    before = targets.embeddings.clone()
    centred = targets.centred(train)

    def global_rows(t, which):
        return torch.nn.functional.normalize(torch.stack([t.get(c).global_embed for c in which]), dim=-1)

    def reward_of_constant(t):  # mean cosine of the best constant guess (the mean training direction)
        rows = global_rows(t, train)
        return (rows @ torch.nn.functional.normalize(rows.mean(0), dim=0)).mean().item()

    assert reward_of_constant(targets) > 0.5
    assert reward_of_constant(centred) < 0.5 * reward_of_constant(targets)
    original = torch.stack([targets.get(c).global_embed for c in train])
    expected = torch.nn.functional.normalize(targets.get(captions[4]).global_embed - original.mean(0), dim=0)
    assert torch.allclose(centred.get(captions[4]).global_embed, expected, atol=2e-3)  # a caption outside `train` moves too
    phrases = torch.cat([centred.get(c).object_embeds for c in captions])
    assert torch.allclose(phrases.norm(dim=-1), torch.ones(len(phrases)), atol=2e-3)
    assert torch.equal(targets.embeddings, before)  # a new object; the cached targets stay as built
    assert centred.meta["centred_on_captions"] == 4
    with pytest.raises(ValueError, match="at least one caption"):
        targets.centred(["not a caption here"])


def test_the_constant_guess_table_compares_built_and_centred_targets(tmp_path):
    captions = ["a red circle moves to the left", "a blue circle moves to the right", "two green circles move down"]
    targets = build_text_targets(captions, tiny_config(tmp_path), build_word_tokenizer(captions), None,
                                 sentence_model=BagOfWordsEncoder(dim=16))
    from qvidcap.training.text_targets import constant_guess_cosine

    assert list(constant_guess_cosine(targets, captions).columns) == ["distinct strings", "cosine of one constant guess, as built"]
    table = constant_guess_cosine(targets.centred(captions), captions)
    assert table.loc["caption (GlobalHead)", "distinct strings"] == 3
    built, centred = table["cosine of one constant guess, as built"], table["cosine of one constant guess, centred"]
    assert (centred < built).all() and (built > 0.3).all()


def test_a_save_leaves_another_process_copy_in_progress_alone(tmp_path):
    captions = ["a red circle moves to the left", "two blue squares bounce"]
    targets = build_text_targets(captions, tiny_config(tmp_path), build_word_tokenizer(captions), None,
                                 sentence_model=BagOfWordsEncoder(dim=8))
    cache = tmp_path / "text_targets" / "key"
    other = cache.with_name("key.tmp999999")  # another process, half way through writing the same key
    other.mkdir(parents=True)
    (other / "targets.safetensors").write_bytes(b"half")
    targets.save(cache)
    targets.save(cache)  # a second save replaces a complete copy
    assert (other / "targets.safetensors").read_bytes() == b"half"
    again = TextTargets.load(cache)
    assert again.captions == targets.captions and torch.equal(again.embeddings, targets.embeddings)
    assert sorted(p.name for p in cache.parent.iterdir()) == ["key", "key.tmp999999"]
