"""Split a caption into the noun phrases (ObjectHead's targets) and verb lemmas (ActionHead's targets).

Two backends give the same kind of answer:

- `spacy`: a spaCy pipeline (`en_core_web_sm` on the GPU profiles), as the original did: noun chunks,
  skipping "someone / something / anyone", plus nouns that are direct or prepositional objects or
  attributes; verbs as lemmas.
- `rules`: a small closed-class grammar for offline CPU runs with no spaCy model installed. A noun
  phrase is a run of open-class words started by a determiner, a number, a preposition or a verb and
  ended by a closed-class word; when such a run ends in a word that looks like an inflected verb
  ("moves", "is rolling", "jumped"), that word is taken as the verb. Verbs are lemmatised by suffix
  rules with a short list of irregular forms. It is right on the plain "a <adjectives> <noun> <verb>s
  <preposition> the <noun>" sentences of video captions and wrong on harder syntax; the notebook states
  which backend ran.

Both return at most `max_phrases` of each, in order of appearance, with the fallbacks "object" and
"action" for a caption that has none.
"""
from __future__ import annotations

import importlib.util
import logging
import re
from dataclasses import dataclass
from typing import Iterable

logger = logging.getLogger(__name__)

RULES_VERSION = 2  # bump when the rules change, so cached text targets made by older rules are not reused
OBJECT_FALLBACK = "object"
ACTION_FALLBACK = "action"
SKIPPED_CHUNKS = {"someone", "something", "anyone"}


class PosModelError(RuntimeError):
    """The part-of-speech backend that was asked for cannot be loaded."""


@dataclass(frozen=True)
class Phrases:
    nouns: list[str]  # noun phrases, lower case, in order of appearance
    verbs: list[str]  # verb lemmas, lower case, in order of appearance


def resolve_pos_backend(pos_model: str) -> str:
    """`"auto"` -> `"en_core_web_sm"` when spaCy and that model are installed, else `"rules"`; other names pass through."""
    if pos_model != "auto":
        return pos_model
    if importlib.util.find_spec("spacy") is not None and importlib.util.find_spec("en_core_web_sm") is not None:
        return "en_core_web_sm"
    return "rules"


class PhraseSplitter:
    """Callable over many captions at once: `splitter(captions) -> list[Phrases]`."""

    def __init__(self, pos_model: str = "auto", max_phrases: int = 8, nlp=None):
        """`nlp`: an already loaded spaCy pipeline (e.g. `spacy.load("/path/to/en_core_web_sm")`), used as given."""
        self.backend = resolve_pos_backend(pos_model) if nlp is None else pos_model
        self.max_phrases = max_phrases
        if nlp is not None:
            self._nlp = nlp
        else:
            self._nlp = None if self.backend == "rules" else _load_spacy(self.backend)

    def __call__(self, captions: Iterable[str]) -> list[Phrases]:
        captions = list(captions)
        if self._nlp is None:
            found = [_rule_phrases(c) for c in captions]
        else:
            found = [_spacy_phrases(doc) for doc in self._nlp.pipe(captions, batch_size=256)]
        return [Phrases(_first_unique(n, self.max_phrases) or [OBJECT_FALLBACK],
                        _first_unique(v, self.max_phrases) or [ACTION_FALLBACK]) for n, v in found]


def _load_spacy(name: str):
    try:
        import spacy

        return spacy.load(name, disable=["ner"])
    except (ImportError, OSError) as e:
        raise PosModelError(
            f"text.pos_model={name!r} could not be loaded ({e}); install spaCy and the model "
            f"(pip install spacy && python -m spacy download {name}) or set text.pos_model=rules"
        ) from e


def _spacy_phrases(doc) -> tuple[list[str], list[str]]:
    nouns = [chunk.text.lower() for chunk in doc.noun_chunks if chunk.text.lower() not in SKIPPED_CHUNKS]
    nouns += [t.text.lower() for t in doc if t.pos_ == "NOUN" and t.dep_ in {"dobj", "pobj", "attr"}]
    verbs = [t.lemma_.lower() for t in doc if t.pos_ == "VERB"]
    return nouns, verbs


def _first_unique(items: list[str], limit: int) -> list[str]:
    return list(dict.fromkeys(i for i in items if i))[:limit]


# --- the rule-based backend -------------------------------------------------------------------------

DETERMINERS = set("a an the this these those some another each every his her their its my your our "
                  "one two three four five six seven eight nine ten several many few".split())
PREPOSITIONS = set("in on at to from into onto over under across through around toward towards with of by "
                   "near along behind above below between beside inside outside up down off out about "
                   "against past around within without for like".split())
CONJUNCTIONS = set("and or but while as then before after when until so because".split())
AUXILIARIES = set("is are was were be been being has have had do does did can could will would may might "
                  "keeps keep starts start begins begin continues continue".split())
PRONOUNS = set("he she it they we i you him them us someone something anyone somebody anybody everyone "
               "everything nothing who which what that there here".split())
ADVERBS = set("slowly quickly fast rapidly quietly gently steadily again away back together apart "
              "very just also still then now not upward upwards downward downwards leftward leftwards rightward "
              "rightwards".split())
DIRECTIONS = set("left right top bottom middle centre center".split())  # nouns after "the", adverbs alone
QUANTITY_NOUNS = set("pair group couple set bunch lot number row".split())  # "a pair of" reads as a determiner
ADJECTIVES = set("red blue green yellow purple violet orange pink black white gray grey brown cyan magenta pale charcoal "
                 "small big large tiny huge little medium tall short long round bright dark light "
                 "first second other same single triangular circular round".split())
PLAIN_AUXILIARIES = set("is are was were be been being has have had do does did can could will would may might".split())
# common video verbs, for base forms that carry no suffix ("two squares move")
VERB_LEMMAS = set("move bounce roll spin rotate grow shrink appear disappear jump slide fall rise fly run walk "
                  "play dance swim ride drive throw catch kick hit pass turn fade flash blink shake wave stop "
                  "sit stand cut cook pour mix talk sing eat drink hold push pull climb chase follow enter "
                  "leave cross travel drift float hop swing glide expand shift wander speed change shrink become rise go "
                  "drop sink stay remain contract see pop come appear get show do".split())
CLOSED = DETERMINERS | PREPOSITIONS | CONJUNCTIONS | AUXILIARIES | PRONOUNS
IRREGULAR_VERBS = {
    "is": "be", "are": "be", "was": "be", "were": "be", "goes": "go", "went": "go", "ran": "run",
    "runs": "run", "running": "run", "sat": "sit", "stood": "stand", "swam": "swim", "rode": "ride",
    "drove": "drive", "threw": "throw", "flew": "fly", "flies": "fly", "grew": "grow", "fell": "fall",
    "made": "make", "took": "take", "gave": "give", "held": "hold", "came": "come", "spun": "spin",
    "spinning": "spin", "sliding": "slide", "slid": "slide", "began": "begin", "appears": "appear",
    "seen": "see", "saw": "see", "going": "go", "doing": "do", "does": "do", "got": "get", "sank": "sink", "rose": "rise", "became": "become", "becomes": "become",
}
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


def _looks_like_verb(word: str) -> bool:
    return word in IRREGULAR_VERBS or (len(word) > 4 and word.endswith(("ing", "ed"))) or (
        len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")))


# lemmas whose "-ing" / "-ed" forms drop a final "e" that the suffix rules cannot see
E_LEMMAS = set("move bounce slide rotate glide dance ride drive wave shake smile race chase dive skate "
               "change fade grace pace place raise rise squeeze take make come arrive leave circle "
               "juggle wiggle wobble tumble shuffle bubble dribble pose use close pause erase trace create "
               "skate shine become".split())


def lemmatize_verb(word: str) -> str:
    """`"moves"` -> `"move"`, `"bouncing"` -> `"bounce"`, `"running"` -> `"run"` (suffix rules, irregular list)."""
    word = word.lower()
    if word in IRREGULAR_VERBS:
        return IRREGULAR_VERBS[word]
    for suffix in ("ing", "ed"):
        if word.endswith(suffix) and len(word) > len(suffix) + 2:
            stem = word[: -len(suffix)]
            if stem + "e" in E_LEMMAS or stem.endswith(("c", "v", "z")):
                return stem + "e"  # moving -> move, bouncing -> bounce, rotated -> rotate
            if stem[-1] == stem[-2] and stem[-1] not in "lsz":
                return stem[:-1]  # running -> run, stopped -> stop
            return stem
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "sses", "xes", "zes", "oes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def _is_base_verb(word: str) -> bool:
    """A known verb, whatever its suffix ("shrink", "moves"): splits a phrase even after an adjective."""
    return word in VERB_LEMMAS or lemmatize_verb(word) in VERB_LEMMAS


def _is_verb(word: str) -> bool:
    return _looks_like_verb(word) or lemmatize_verb(word) in VERB_LEMMAS or word in VERB_LEMMAS


def _rule_phrases(caption: str) -> tuple[list[str], list[str]]:
    words = _WORD.findall(caption.lower())
    nouns: list[str] = []
    verbs: list[str] = []
    run: list[str] = []  # the noun phrase being read
    previous_was_verb = False  # the last word read (conjunctions and adverbs aside) was a verb

    def close_run() -> None:
        if any(w not in DETERMINERS and w not in ADJECTIVES and w not in QUANTITY_NOUNS and w != "of" for w in run):
            nouns.append(" ".join(run))
        run.clear()

    previous = ""
    for word in words:
        content = [w for w in run if w not in DETERMINERS and w not in QUANTITY_NOUNS and w != "of"]
        verb_slot = (previous in AUXILIARIES or previous in PRONOUNS or previous == "not"
                     or (previous in CONJUNCTIONS and previous_was_verb))
        if word in AUXILIARIES:
            close_run()
            if word not in PLAIN_AUXILIARIES:
                verbs.append(lemmatize_verb(word))  # "keeps", "starts"
        elif not run and ((verb_slot and _is_verb(word)) or (word.endswith("ing") and len(word) > 4 and word not in CLOSED)):
            verbs.append(lemmatize_verb(word))  # "is rolling", "someone rolls", "shrinks and disappears", "seen sitting"
        elif content and (_is_base_verb(word) or (content[-1] not in ADJECTIVES and _is_verb(word))):
            close_run()
            verbs.append(lemmatize_verb(word))  # "a red circle moves", "triangles bounce"
        elif word == "of" and len(run) == 2 and run[1] in QUANTITY_NOUNS:
            run.append(word)  # "a pair of triangles" stays one phrase
        elif word in DIRECTIONS and run:
            run.append(word)  # "to the left"
        elif word in PREPOSITIONS or word in CONJUNCTIONS or word in PRONOUNS or word in ADVERBS or word in DIRECTIONS:
            close_run()
        elif word in DETERMINERS and content:
            close_run()
            run.append(word)
        else:
            run.append(word)
        if word not in CONJUNCTIONS and word not in ADVERBS:
            previous_was_verb = bool(verbs) and not run and word not in PREPOSITIONS and word not in PRONOUNS
        previous = word
    close_run()
    return [n for n in nouns if n not in SKIPPED_CHUNKS], verbs
