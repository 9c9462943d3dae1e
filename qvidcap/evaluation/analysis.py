"""Where a captioner wins and loses, clip by clip: tables that the error-analysis notebook plots.

A corpus CIDEr hides a lot. These functions take the per-clip scores of an evaluation
(`CaptionScores.per_clip`) and ask: which clips fail, does failure follow caption length, the number
of detected objects or the clip's length, which words the model never says, does it repeat itself or
fall back on one generic sentence, and which object and action words it gets right. On the mini
dataset the truth is known (`mini_meta.json`: count, colour, shape, size, motion of every clip); on
VATEX the object and action words are the nouns and verbs most references of a clip agree on.
"""
from __future__ import annotations

import logging
from collections import Counter
from typing import Iterable

import numpy as np
import pandas as pd

from qvidcap.evaluation.metrics import CaptionScores
from qvidcap.training.cider import simple_tokenize

logger = logging.getLogger(__name__)

COLLAPSE_DISTINCT_SHARE = 0.2  # below this share of distinct captions over a split, the model has collapsed
GENERIC_MIN_SHARE = 0.05  # a caption given to at least this share of clips (and 3 clips) counts as generic
STOPWORDS = frozenset(
    "a an the is are of in on at to and with its it this that there be being been into onto from by for as "
    "while then some one which who can we see shows show video clip".split()
)


# ---------------------------------------------------------------- the per-clip table


def clip_table(scores: CaptionScores, references: dict[str, list[str]], store=None, records: Iterable | None = None,
               probe_videos: bool = True) -> pd.DataFrame:
    """One row per scored clip: its scores, prediction, references, caption length in words, and (when
    given) the number of detected objects from the feature store and the clip length in seconds."""
    table = scores.per_clip.copy()
    table["prediction"] = table["prediction"].fillna("").astype(str)
    table["caption_length"] = [len(p.split()) for p in table["prediction"]]
    table["references"] = [list(references.get(v, [])) for v in table.index]
    if store is not None:
        table["num_objects"] = [store.get(v).num_objects for v in table.index]
    if records is not None:
        by_id = {r.video_id: r for r in records}
        table["clip_seconds"] = [_clip_seconds(by_id.get(v), probe_videos) for v in table.index]
        table["video_path"] = [str(by_id[v].video_path) if v in by_id and by_id[v].video_path else "" for v in table.index]
    return table


def _clip_seconds(record, probe_videos: bool) -> float:
    """Length of the clip's video file when it can be probed, else what its videoID says."""
    if record is None:
        return float("nan")
    if probe_videos and record.has_video:
        try:
            from qvidcap.video import probe

            return round(probe(record.video_path).seconds, 2)
        except Exception as e:  # an unreadable file is analysed by its ID instead
            logger.debug("could not probe %s: %s", record.video_path, e)
    try:
        return float(record.end_seconds - record.start_seconds)
    except ValueError:
        return float("nan")


def best_and_worst(table: pd.DataFrame, k: int = 3, metric: str = "CIDEr") -> tuple[pd.DataFrame, pd.DataFrame]:
    """The `k` clips with the highest and the lowest `metric` (ties broken by videoID, so stable)."""
    ordered = table.assign(_id=table.index).sort_values([metric, "_id"], ascending=[False, True]).drop(columns="_id")
    return ordered.head(k), ordered.tail(k).iloc[::-1]


def score_by(table: pd.DataFrame, column: str, metric: str = "CIDEr", bins: int = 5) -> pd.DataFrame:
    """Mean, median and count of `metric` per value of `column` (binned into quantiles when it has many values)."""
    values = table[column]
    if values.nunique() > 12:
        values = pd.qcut(values, q=bins, duplicates="drop")
    grouped = table.groupby(values, observed=True)[metric]
    return grouped.agg(["count", "mean", "median"]).round(2)


# ---------------------------------------------------------------- what the model says


def diversity(predictions: dict[str, str]) -> dict:
    """Distinct-caption share over the split and the collapse verdict (threshold COLLAPSE_DISTINCT_SHARE)."""
    captions = [simple_tokenize(c) for c in predictions.values()]
    counts = Counter(captions)
    most_common, most_count = min(counts.items(), key=lambda cn: (-cn[1], cn[0])) if counts else ("", 0)
    share = len(counts) / max(1, len(captions))
    return {
        "clips": len(captions),
        "distinct_captions": len(counts),
        "distinct_share": round(share, 3),
        "most_common_caption": most_common,
        "most_common_share": round(most_count / max(1, len(captions)), 3),
        "collapse_threshold": COLLAPSE_DISTINCT_SHARE,
        "collapsed": share < COLLAPSE_DISTINCT_SHARE,
    }


def collapse_verdict(predictions: dict[str, str]) -> str:
    """One sentence: the share of distinct captions and whether that means the model has collapsed."""
    d = diversity(predictions)
    verdict = ("COLLAPSED: the model says nearly the same sentence for every clip"
               if d["collapsed"] else "not collapsed")
    return (f"{d['distinct_captions']} distinct captions over {d['clips']} clips ({d['distinct_share']:.0%}): "
            f"{verdict} (threshold: fewer than {COLLAPSE_DISTINCT_SHARE:.0%} distinct)")


def repetition_rate(predictions: dict[str, str]) -> float:
    """Share of captions in which a content word (not a stopword) occurs more than once ("a red red ball")."""
    repeated = 0
    for caption in predictions.values():
        words = [w for w in simple_tokenize(caption).split() if w not in STOPWORDS]
        repeated += any(n > 1 for n in Counter(words).values())
    return repeated / max(1, len(predictions))


def generic_captions(predictions: dict[str, str]) -> pd.DataFrame:
    """Captions given to at least GENERIC_MIN_SHARE of the clips (and at least 3): sentences that fit
    many clips and so describe none; with the number and share of clips each covers."""
    counts = Counter(simple_tokenize(c) for c in predictions.values())
    floor = max(3, int(np.ceil(GENERIC_MIN_SHARE * len(predictions))))
    rows = [{"caption": c, "clips": n, "share": n / len(predictions)}
            for c, n in sorted(counts.items(), key=lambda cn: (-cn[1], cn[0])) if n >= floor]
    return pd.DataFrame(rows, columns=["caption", "clips", "share"])


def generic_rate(predictions: dict[str, str]) -> float:
    """Share of clips whose caption is a generic one (see `generic_captions`)."""
    generic = generic_captions(predictions)
    return float(generic["clips"].sum()) / max(1, len(predictions))


def unused_vocabulary(predictions: dict[str, str], references: dict[str, list[str]], top: int = 20) -> pd.DataFrame:
    """Content words of the references that the model never produces, most widespread first: word,
    the number of clips whose references use it, and the share of the split."""
    produced = {w for c in predictions.values() for w in simple_tokenize(c).split()}
    clips_using: Counter = Counter()
    for refs in references.values():
        clips_using.update({w for r in refs for w in simple_tokenize(r).split() if w not in STOPWORDS})
    rows = [{"word": w, "clips": n, "share": round(n / max(1, len(references)), 3)}
            for w, n in sorted(clips_using.items(), key=lambda wn: (-wn[1], wn[0])) if w not in produced]
    return pd.DataFrame(rows[:top], columns=["word", "clips", "share"])


def vocabulary_summary(predictions: dict[str, str], references: dict[str, list[str]]) -> dict:
    produced = {w for c in predictions.values() for w in simple_tokenize(c).split()}
    in_refs = {w for refs in references.values() for r in refs for w in simple_tokenize(r).split()}
    return {"words_in_references": len(in_refs), "words_produced": len(produced),
            "reference_words_produced": len(in_refs & produced),
            "share_of_reference_vocabulary": round(len(in_refs & produced) / max(1, len(in_refs)), 3)}


# ---------------------------------------------------------------- object and action words


def mini_attribute_hits(predictions: dict[str, str], meta: list[dict]) -> pd.DataFrame:
    """For each clip of the mini dataset and each true attribute, whether the caption says it.

    Rows: videoID, attribute (count, colour, shape, size: the object words; motion: the action),
    kind ("object" or "action"), truth, said (the value the caption names, "" when none), outcome
    ("hit", "wrong" or "missed"). Size is not judged for growing or shrinking clips (their
    references leave it out). Multi-word phrases are matched before single words, so "gets bigger"
    counts as a motion and not as a size.
    """
    from qvidcap.data import minidata

    vocab = {  # attribute -> value -> phrases, in the order they are matched and removed from the caption
        "motion": {m: [f for forms in minidata.MOTION_WORDS[m] for f in forms] for m in minidata.MOTION_WORDS},
        "count": {3: ["three", "a group of three"], 2: ["two", "a pair of"]},
        "size": {s: list(words) for s, words in minidata.SIZE_WORDS.items()},
        "shape": {s: [f for forms in minidata.SHAPE_WORDS[s] for f in forms] for s in minidata.SHAPE_WORDS},
        "colour": {c: list(words) for c, words in minidata.COLOUR_WORDS.items()},
    }
    by_id = {m.get("videoID", m.get("video_id")): m for m in meta}
    rows = []
    for video_id, caption in predictions.items():
        truth = by_id.get(video_id)
        if truth is None:
            continue
        text = " " + " ".join(simple_tokenize(caption).split()) + " "
        for background in (w for words in minidata.BACKGROUND_WORDS.values() for w in words):
            text = text.replace(f" {background} background ", " ").replace(f" {background} backdrop ", " ")
        for attribute, values in vocab.items():
            said, text = _find_value(text, values)
            if attribute == "count" and said == "":
                said = 1  # no number word: the caption speaks of one shape ("a red circle")
            if attribute == "size" and truth["motion"] in ("grow", "shrink"):
                continue
            outcome = "missed" if said == "" else ("hit" if said == truth[attribute] else "wrong")
            rows.append({"videoID": video_id, "attribute": attribute,
                         "kind": "action" if attribute == "motion" else "object",
                         "truth": truth[attribute], "said": said, "outcome": outcome})
    return pd.DataFrame(rows, columns=["videoID", "attribute", "kind", "truth", "said", "outcome"])


def _find_value(text: str, values: dict) -> tuple[object, str]:
    """The value whose phrase occurs in `text` (longest phrases first) and `text` with it removed."""
    phrases = sorted(((p, v) for v, ps in values.items() for p in ps), key=lambda pv: -len(pv[0]))
    for phrase, value in phrases:
        pattern = f" {phrase} "
        if pattern in text:
            return value, text.replace(pattern, " ", 1)
    return "", text


def reference_word_hits(predictions: dict[str, str], references: dict[str, list[str]], min_refs: int = 2,
                        pos_model: str = "rules") -> pd.DataFrame:
    """Object and action words of each clip (noun heads and verb lemmas found in at least `min_refs`
    of its references) and whether the caption has them. Rows: videoID, kind, word, outcome
    ("hit" or "missed"). For VATEX, where no attributes are known."""
    from qvidcap.training.phrases import PhraseSplitter, lemmatize_verb

    splitter = PhraseSplitter(pos_model)
    rows = []
    for video_id, caption in predictions.items():
        refs = references.get(video_id, [])
        found = splitter(refs)
        nouns = Counter(w for p in found for w in {n.split()[-1] for n in p.nouns if n != "object"})
        verbs = Counter(w for p in found for w in {v for v in p.verbs if v != "action"})
        words = simple_tokenize(caption).split()
        said = set(words) | {lemmatize_verb(w) for w in words}
        for kind, counts in (("object", nouns), ("action", verbs)):
            for word, n in counts.items():
                if n >= min_refs and word not in STOPWORDS:
                    rows.append({"videoID": video_id, "kind": kind, "word": word,
                                 "outcome": "hit" if word in said else "missed"})
    return pd.DataFrame(rows, columns=["videoID", "kind", "word", "outcome"])


def word_hits(predictions: dict[str, str], references: dict[str, list[str]], meta: list[dict] | None = None) -> pd.DataFrame:
    """Object and action words hit or missed: the true attributes when `meta` (mini_meta.json) is given,
    else the nouns and verbs the references agree on."""
    if meta is not None:
        return mini_attribute_hits(predictions, meta)
    return reference_word_hits(predictions, references)


def hit_summary(hits: pd.DataFrame, by: str = "attribute") -> pd.DataFrame:
    """Share of hit / wrong / missed outcomes per `by` (attribute for the mini dataset, kind for VATEX)."""
    if hits.empty:
        return pd.DataFrame(columns=["hit", "wrong", "missed"])
    table = pd.crosstab(hits[by], hits["outcome"], normalize="index").round(3)
    return table.reindex(columns=[c for c in ("hit", "wrong", "missed") if c in table.columns])


def most_missed(hits: pd.DataFrame, top: int = 15) -> pd.DataFrame:
    """The reference words most often missed (VATEX): word, kind, clips missed, clips hit."""
    if hits.empty:
        return pd.DataFrame(columns=["word", "kind", "missed", "hit"])
    table = hits.groupby(["word", "kind", "outcome"]).size().unstack("outcome", fill_value=0)
    table = table.reindex(columns=["missed", "hit"], fill_value=0).reset_index()
    return table.sort_values(["missed", "word"], ascending=[False, True]).head(top).reset_index(drop=True)


def where_wrong(hits: pd.DataFrame, attribute: str = "motion") -> pd.DataFrame:
    """What the model says instead: for `mini_attribute_hits`, the true `attribute` against the value the
    caption names ("" = none), a confusion table; for `reference_word_hits`, the most often missed words."""
    if "attribute" not in hits.columns:
        return most_missed(hits)
    rows = hits[hits["attribute"] == attribute]
    return pd.crosstab(rows["truth"].rename(f"true {attribute}"), rows["said"].replace("", "(none)").rename("said"))


def caption_habits(predictions: dict[str, str], references: dict[str, list[str]]) -> pd.Series:
    """The one-glance summary: distinct share and collapse, repeated-word and generic-caption rates,
    mean caption length against the references' mean length."""
    d = diversity(predictions)
    ref_lengths = [len(simple_tokenize(r).split()) for refs in references.values() for r in refs]
    return pd.Series({
        "clips": d["clips"],
        "distinct captions": d["distinct_captions"],
        "distinct share": d["distinct_share"],
        f"collapsed (distinct share < {COLLAPSE_DISTINCT_SHARE})": d["collapsed"],
        "most common caption": d["most_common_caption"],
        "most common caption share": d["most_common_share"],
        "repeated-word rate": round(repetition_rate(predictions), 3),
        "generic-caption rate": round(generic_rate(predictions), 3),
        "mean caption length (words)": round(float(np.mean([len(simple_tokenize(c).split()) for c in predictions.values()])), 2),
        "mean reference length (words)": round(float(np.mean(ref_lengths)), 2) if ref_lengths else float("nan"),
    })

