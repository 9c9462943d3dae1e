"""Where a captioner wins and loses, clip by clip: tables that the error-analysis notebook plots.

A corpus CIDEr hides a lot. These functions take the per-clip scores of an evaluation
(`CaptionScores.per_clip`) and ask: which clips fail, does failure follow caption length, the number
of detected objects or the clip's length, which words the model never says, does it repeat itself or
fall back on one generic sentence, and which object and action words it gets right. On the mini
dataset the truth is known (`mini_meta.json`: count, colour, shape, size, motion of every clip), so each
caption is read back into those attributes (`parse_attributes`) and judged against chance
(`attribute_scores`, `attribute_confusion`, `attribute_verdict`), and the best-scored wrong captions show
what CIDEr does not see (`top_scored_wrong`, `cider_blind_spot`); on VATEX the object and action words are
the nouns and verbs most references of a clip agree on.
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
    """How much of the references' vocabulary the model uses: distinct words on each side and their overlap."""
    produced = {w for c in predictions.values() for w in simple_tokenize(c).split()}
    in_refs = {w for refs in references.values() for r in refs for w in simple_tokenize(r).split()}
    return {"distinct words in the references": len(in_refs), "distinct words the model says": len(produced),
            "reference words the model says": len(in_refs & produced),
            "share of the reference vocabulary said": round(len(in_refs & produced) / max(1, len(in_refs)), 3)}


# ---------------------------------------------------------------- object and action words


ATTRIBUTES = ("colour", "shape", "size", "count", "motion")  # the order of every attribute table and figure
NOT_NAMED = "not named"  # the column of a confusion table for captions that name no value


def attribute_values() -> dict[str, tuple]:
    """Every value each attribute of a mini clip can take, in the generator's order (see `minidata`)."""
    from qvidcap.data import minidata

    return {"colour": tuple(minidata.COLOURS), "shape": tuple(minidata.SHAPES), "size": tuple(minidata.SIZES),
            "count": tuple(minidata.COUNT_WORDS), "motion": tuple(minidata.MOTIONS)}


def _attribute_phrases() -> dict[str, dict[object, list[str]]]:
    """attribute -> value -> the phrases of the caption generator that name it, motion first (see `parse_attributes`)."""
    from qvidcap.data import minidata

    return {
        "motion": {m: [f for forms in minidata.MOTION_WORDS[m] for f in forms] for m in minidata.MOTION_WORDS},
        "count": {3: ["three", "a group of three"], 2: ["two", "a pair of"], 1: ["one", "a single"]},
        "size": {s: list(words) for s, words in minidata.SIZE_WORDS.items()},
        "shape": {s: [f for forms in minidata.SHAPE_WORDS[s] for f in forms] for s in minidata.SHAPE_WORDS},
        "colour": {c: list(words) for c, words in minidata.COLOUR_WORDS.items()},
    }


def parse_attributes(caption: str) -> dict[str, object]:
    """The count, colour, shape, size and motion a mini-dataset caption names ("" where it names none).

    The phrases are the caption generator's own (`minidata.*_WORDS`). Motions are matched first and
    removed, so "gets bigger" is a motion and not a size; background phrases ("on a dark gray
    background") are removed before colours; within an attribute the longest phrase wins. A caption that
    names a shape but no number speaks of one shape ("a red circle"), so its count is 1.
    """
    said = {a: value for a, (value, _) in _matched_phrases(caption).items()}
    if said["count"] == "" and said["shape"] != "":
        said["count"] = 1
    return {a: said[a] for a in ATTRIBUTES}


def _matched_phrases(caption: str) -> dict[str, tuple[object, str]]:
    """attribute -> (value, the phrase of the caption that names it), ("", "") where none (see `parse_attributes`)."""
    from qvidcap.data import minidata

    text = " " + " ".join(simple_tokenize(caption).split()) + " "
    for background in sorted((w for ws in minidata.BACKGROUND_WORDS.values() for w in ws), key=len, reverse=True):
        for noun in ("background", "backdrop"):
            text = text.replace(f" {background} {noun} ", " ")
    found = {}
    for attribute, values in _attribute_phrases().items():
        found[attribute], text = _find_phrase(text, values)
    return found


def corrected_caption(caption: str, truth: dict, attributes: tuple[str, ...] = ("motion", "colour", "shape")) -> str:
    """`caption` (tokenized) with each wrong value of `attributes` replaced by the true one in the same
    grammatical form ("moving to the left" -> "moving up", "squares" -> "circles"); counts are left alone,
    since changing them would break the agreement of noun and verb."""
    from qvidcap.data import minidata

    text = " " + " ".join(simple_tokenize(caption).split()) + " "
    forms = {"motion": minidata.MOTION_WORDS, "shape": minidata.SHAPE_WORDS}
    for attribute, (value, phrase) in _matched_phrases(caption).items():
        if attribute not in attributes or value in ("", truth[attribute]):
            continue
        if attribute == "colour":
            replacement = minidata.COLOUR_WORDS[truth[attribute]][0]
        else:
            form = next(variant.index(phrase) for variant in forms[attribute][value] if phrase in variant)
            replacement = forms[attribute][truth[attribute]][0][form]
        text = text.replace(f" {phrase} ", f" {replacement} ", 1)
    return text.strip()


def clip_cider(predictions: dict[str, str], references: dict[str, list[str]]) -> dict[str, float]:
    """Per-clip CIDEr-D ×100 by pycocoevalcap's scorer with the kit's Java-free tokenizer (as `quick_cider`):
    the document frequencies come from the references of all the clips given."""
    from pycocoevalcap.cider.cider_scorer import CiderScorer

    scorer = CiderScorer(n=4, sigma=6.0)
    ids = [v for v in references if v in predictions and references[v]]
    for video_id in ids:
        scorer += (simple_tokenize(predictions[video_id]), [simple_tokenize(r) for r in references[video_id]])
    _, per_clip = scorer.compute_score()
    return {v: float(c) * 100.0 for v, c in zip(ids, per_clip)}


def mini_attribute_hits(predictions: dict[str, str], meta: list[dict]) -> pd.DataFrame:
    """For each clip of the mini dataset and each true attribute, whether the caption says it.

    Rows: videoID, attribute (count, colour, shape, size: the object words; motion: the action),
    kind ("object" or "action"), truth, said (the value the caption names, "" when none, see
    `parse_attributes`), outcome ("hit", "wrong" or "missed"). Size is not judged for growing or
    shrinking clips (their references leave it out).
    """
    by_id = {m.get("videoID", m.get("video_id")): m for m in meta}
    rows = []
    for video_id, caption in predictions.items():
        truth = by_id.get(video_id)
        if truth is None:
            continue
        for attribute, said in parse_attributes(caption).items():
            if attribute == "size" and truth["motion"] in ("grow", "shrink"):
                continue
            outcome = "missed" if said == "" else ("hit" if said == truth[attribute] else "wrong")
            rows.append({"videoID": video_id, "attribute": attribute,
                         "kind": "action" if attribute == "motion" else "object",
                         "truth": truth[attribute], "said": said, "outcome": outcome})
    return pd.DataFrame(rows, columns=["videoID", "attribute", "kind", "truth", "said", "outcome"])


def _find_phrase(text: str, values: dict) -> tuple[tuple[object, str], str]:
    """(the value whose phrase occurs in `text`, longest phrases first, and that phrase) and `text` with it removed."""
    phrases = sorted(((p, v) for v, ps in values.items() for p in ps), key=lambda pv: -len(pv[0]))
    for phrase, value in phrases:
        pattern = f" {phrase} "
        if pattern in text:
            return (value, phrase), text.replace(pattern, " ", 1)
    return ("", ""), text


def parsed_examples(predictions: dict[str, str], meta: list[dict], k: int = 3) -> pd.DataFrame:
    """The first `k` clips: caption, then per attribute "named / true" as the parser reads it."""
    by_id = {m.get("videoID", m.get("video_id")): m for m in meta}
    rows = {}
    for video_id, caption in list((v, c) for v, c in predictions.items() if v in by_id)[:k]:
        said = parse_attributes(caption)
        rows[video_id] = {"caption": caption, **{a: f"{said[a] if said[a] != '' else '-'} / {by_id[video_id][a]}"
                                                 for a in ATTRIBUTES}}
    return pd.DataFrame.from_dict(rows, orient="index", columns=["caption", *ATTRIBUTES]).rename_axis("videoID")


# ---------------------------------------------------------------- what the model learned, against chance


CHANCE_MARGIN_SE = 2.0  # a hit rate is "above chance" when it beats chance by this many binomial standard errors


def chance_levels(truths: Iterable, num_values: int) -> dict:
    """Two chance levels for one attribute over the clips whose true values are `truths`.

    "majority": the hit rate of the best constant answer, the share of the most common true value (what
    a caption-blind model that learnt the data's most frequent value would score); the one the analysis
    uses, because it is the stronger bar where values are not equally likely (half the mini clips show one
    shape). "uniform": 1 / `num_values`, a guess drawn evenly over the values.
    """
    counts = Counter(truths)
    total = sum(counts.values())
    value, n = min(counts.items(), key=lambda vn: (-vn[1], str(vn[0]))) if counts else ("", 0)
    return {"majority": n / total if total else float("nan"), "majority_value": value,
            "uniform": 1 / num_values if num_values else float("nan")}


def attribute_scores(hits: pd.DataFrame, baseline_hits: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per attribute of `mini_attribute_hits`: how often the caption names the right value, against chance.

    Columns: clips (judged), right (share naming the true value), wrong (naming another), not named,
    chance (the majority-class rate, see `chance_levels`), most common value, even guess (1 / values),
    values (how many values the attribute has), named (how many of them the model ever names), never named
    (those it never names, in words), verdict ("above chance", "at chance" or "below chance": beyond
    CHANCE_MARGIN_SE binomial standard errors of chance, or not), and blind baseline right (the same share
    for `baseline_hits`, when given). Empty when `hits` has no attribute column (VATEX).
    """
    columns = ["clips", "right", "wrong", "not named", "chance", "most common value", "even guess", "values", "named",
               "never named", "verdict"] + (["blind baseline right"] if baseline_hits is not None else [])
    if "attribute" not in hits.columns or hits.empty:
        return pd.DataFrame(columns=columns).rename_axis("attribute")
    possible = attribute_values()
    rows = {}
    for attribute in (a for a in ATTRIBUTES if a in set(hits["attribute"])):
        rows_a = hits[hits["attribute"] == attribute]
        n = len(rows_a)
        outcome = rows_a["outcome"].value_counts()
        chance = chance_levels(rows_a["truth"], len(possible[attribute]))
        right = outcome.get("hit", 0) / n
        said = set(rows_a["said"]) - {""}
        margin = CHANCE_MARGIN_SE * np.sqrt(chance["majority"] * (1 - chance["majority"]) / n)
        verdict = ("above chance" if right > chance["majority"] + margin
                   else "below chance" if right < chance["majority"] - margin else "at chance")
        rows[attribute] = {
            "clips": n, "right": right, "wrong": outcome.get("wrong", 0) / n, "not named": outcome.get("missed", 0) / n,
            "chance": chance["majority"], "most common value": chance["majority_value"], "even guess": chance["uniform"],
            "values": len(possible[attribute]), "named": len(said & set(possible[attribute])),
            "never named": ", ".join(str(v) for v in possible[attribute] if v not in said), "verdict": verdict,
        }
        if baseline_hits is not None:
            base = baseline_hits[baseline_hits["attribute"] == attribute]
            rows[attribute]["blind baseline right"] = float((base["outcome"] == "hit").mean()) if len(base) else float("nan")
    table = pd.DataFrame.from_dict(rows, orient="index", columns=columns).rename_axis("attribute")
    return table.astype({"clips": int, "values": int, "named": int})


def attribute_confusion(hits: pd.DataFrame, attribute: str, normalize: bool = True) -> pd.DataFrame:
    """True value (rows, those that occur) against the value the caption names (columns: every possible
    value, then "not named"); each row divided by its clips when `normalize`, else counts."""
    rows = hits[hits["attribute"] == attribute]
    possible = attribute_values()[attribute]
    named = rows["said"].map(lambda v: NOT_NAMED if v == "" else v)
    table = pd.crosstab(rows["truth"], named)
    table = table.reindex(index=[v for v in possible if v in set(rows["truth"])], columns=[*possible, NOT_NAMED],
                          fill_value=0)
    table.index.name, table.columns.name = f"true {attribute}", f"{attribute} named in the caption"
    return table.div(table.sum(axis=1), axis=0) if normalize else table


def _percent(share: float) -> str:
    return f"{share:.0%}"


def _names(values: list) -> str:
    values = [str(v) for v in values]
    return values[0] if len(values) == 1 else ", ".join(values[:-1]) + " and " + values[-1] if values else ""


def attribute_verdict(scores: pd.DataFrame) -> str:
    """What the model learned, in words generated from `attribute_scores`: each hit rate against its
    chance level, which attributes beat chance, and how many of the possible values it ever names."""
    if scores.empty:
        return ("No attribute of these clips is known (only the mini dataset records the count, colour, shape, size "
                "and motion each clip was made from), so the analysis below uses the nouns and verbs the references "
                "agree on instead.")
    rates = "; ".join(f"{a} {_percent(r['right'])} (chance {_percent(r['chance'])}, an even guess "
                      f"{_percent(r['even guess'])})" for a, r in scores.iterrows())
    clips = scores["clips"]
    judged = f"these {clips.max()} clips" + "".join(f" ({n} for {a})" for a, n in clips.items() if n != clips.max())
    parts = [f"The trained model's caption names the right value this often: {rates}. Chance is the share of the most "
             f"common true value among {judged}, what the best constant answer would score; an even guess is 1 / the "
             "number of values."]
    groups = {v: list(scores.index[scores["verdict"] == v]) for v in ("above chance", "at chance", "below chance")}
    wording = {"above chance": "Read from the video better than chance", "at chance": "No better than one constant answer",
               "below chance": "Worse than always giving the most common value"}
    parts += [f"{wording[v]}: {_names(attrs)}." for v, attrs in groups.items() if attrs]
    parts[-1] = parts[-1][:-1] + f" (the margin is {CHANCE_MARGIN_SE:g} binomial standard errors of chance)."
    coverage = []
    for attribute, r in scores.iterrows():
        if r["named"] == r["values"]:
            coverage.append(f"all {r['values']} {_plural(attribute)}")
        else:
            coverage.append(f"only {r['named']} of {r['values']} {_plural(attribute)} (never {r['never named']})")
    parts.append("Across the clips the model ever names " + "; ".join(coverage) + ".")
    narrow = [a for a, r in scores.iterrows() if r["named"] < r["values"] and r["verdict"] == "above chance"]
    if narrow:
        parts.append(f"So for {_names(narrow)} it beats chance with a narrower vocabulary than the data has: "
                     "the values it never names are the clips it cannot get right.")
    return " ".join(parts)


def _plural(attribute: str) -> str:
    return {"colour": "colours", "shape": "shapes", "size": "sizes", "count": "counts", "motion": "motions"}.get(
        attribute, attribute + "s")


# ---------------------------------------------------------------- what CIDEr does not see


def top_scored_wrong(table: pd.DataFrame, hits: pd.DataFrame, attributes: tuple[str, ...] = ("motion", "count", "colour", "shape"),
                     k: int = 5, metric: str = "CIDEr") -> pd.DataFrame:
    """The `k` highest-scored clips whose caption names a wrong value of one of `attributes`.

    Columns: `metric`, rank (1 = the best-scored clip of the split), prediction, wrong (in words: "motion:
    says left, is up"), words in references (how many of the caption's words occur in some reference of the
    clip, "9 of 11") and one reference. Ties are broken by videoID, so the selection is stable.
    """
    columns = [metric, "rank", "prediction", "wrong", "words in references", "a reference"]
    if "attribute" not in hits.columns or hits.empty:
        return pd.DataFrame(columns=columns).rename_axis("videoID")
    wrong = hits[(hits["outcome"] == "wrong") & hits["attribute"].isin(attributes)]
    order = {a: i for i, a in enumerate(attributes)}
    said = {v: "; ".join(f"{r.attribute}: says {r.said}, is {r.truth}"
                         for r in sorted(rows.itertuples(), key=lambda r: order[r.attribute]))
            for v, rows in wrong.groupby("videoID")}
    ranked = table.assign(_id=table.index).sort_values([metric, "_id"], ascending=[False, True])
    ranked["rank"] = np.arange(1, len(ranked) + 1)
    chosen = ranked[ranked.index.isin(list(said))].head(k)
    rows = {}
    for video_id, row in chosen.iterrows():
        refs = list(row.get("references", []) or [])
        words = simple_tokenize(row["prediction"]).split()
        in_refs = {w for r in refs for w in simple_tokenize(r).split()}
        rows[video_id] = {metric: row[metric], "rank": int(row["rank"]), "prediction": row["prediction"],
                          "wrong": said[video_id], "words in references": f"{sum(w in in_refs for w in words)} of {len(words)}",
                          "a reference": refs[0] if refs else ""}
    out = pd.DataFrame.from_dict(rows, orient="index", columns=columns).rename_axis("videoID")
    return out.astype({"rank": int}) if len(out) else out


def _ngrams(words: list[str], n_max: int = 4) -> list[tuple[str, ...]]:
    return [tuple(words[i:i + n]) for n in range(1, n_max + 1) for i in range(len(words) - n + 1)]


def cider_blind_spot(wrong: pd.DataFrame, table: pd.DataFrame, hits: pd.DataFrame, meta: list[dict] | None = None,
                     attributes: tuple[str, ...] = ("motion", "count", "colour", "shape"), metric: str = "CIDEr") -> str:
    """A paragraph, generated from `top_scored_wrong`, the per-clip scores (`clip_table`, with references) and
    `hits`, on what CIDEr does not see: how the best-scored wrong caption earns its score, what correcting it
    would change (re-scored with `clip_cider` when `meta` gives the truth), how many wrong captions score
    above the median clip, and what a wrong motion costs on average."""
    if wrong.empty:
        return ("No caption names a wrong value of the attributes checked, so this split shows no well-scored wrong "
                "caption; CIDEr's blind spot (below) still holds.") + " " + _CIDER_LESSON
    n, median = len(table), float(table[metric].median())
    video_id, top = wrong.index[0], wrong.iloc[0]
    words = simple_tokenize(top["prediction"]).split()
    refs = [simple_tokenize(r).split() for r in table.loc[video_id, "references"]] if "references" in table else []
    ref_grams = {g for r in refs for g in _ngrams(r)}
    grams = _ngrams(words)
    own = hits[hits["videoID"] == video_id]
    text = [f"The best-scored wrong caption, \"{top['prediction']}\", gets {metric} {top[metric]:.1f}, rank {top['rank']} "
            f"of {n} clips (the median clip scores {median:.1f}), although it is wrong ({top['wrong']}). "
            f"It names {int((own['outcome'] == 'hit').sum())} of its {len(own)} judged attributes right, and "
            f"{sum(g in ref_grams for g in grams)} of its {len(grams)} n-grams of one to four words occur in the clip's "
            "references."]
    by_id = {m.get("videoID", m.get("video_id")): m for m in meta or []}
    if video_id in by_id and "references" in table:
        fixed = corrected_caption(top["prediction"], by_id[video_id])
        if fixed != " ".join(words):
            predictions = dict(table["prediction"])
            before = clip_cider(predictions, dict(table["references"]))[video_id]
            after = clip_cider({**predictions, video_id: fixed}, dict(table["references"]))[video_id]
            text.append(f"Corrected to \"{fixed}\", it would score {after:.1f} by the kit's Java-free CIDEr-D, "
                        f"against {before:.1f} as it stands by the same scorer: the error costs {after - before:.1f} points, "
                        f"and the wrong caption keeps {before / after:.0%} of the right one's score." if after > 0 else "")
    judged = hits[hits["attribute"].isin(attributes)]
    wrong_ids = set(judged.loc[judged["outcome"] == "wrong", "videoID"])
    above = int((table.loc[table.index.isin(wrong_ids), metric] > median).sum())
    text.append(f"Over the split, {len(wrong_ids)} of the {n} captions name a wrong {_names(list(attributes)).replace(' and ', ' or ')}, "
                f"and {above} of them score above the median clip.")
    outcome = hits[hits["attribute"] == "motion"].set_index("videoID")["outcome"]
    right = table.loc[table.index.isin(outcome.index[outcome == "hit"]), metric]
    bad = table.loc[table.index.isin(outcome.index[outcome == "wrong"]), metric]
    if len(right) and len(bad) and right.mean() > 0:
        text.append(f"Clips whose motion is right average {metric} {right.mean():.1f} ({len(right)} clips), those whose "
                    f"motion is wrong {bad.mean():.1f} ({len(bad)} clips): a wrong motion keeps "
                    f"{bad.mean() / right.mean():.0%} of the score.")
    return " ".join(t for t in text if t) + " " + _CIDER_LESSON


_CIDER_LESSON = (
    "CIDEr never looks at the video. It counts the n-grams a caption shares with the clip's references, each weighted "
    "by tf-idf: an n-gram that the references of nearly every clip use (template words such as \"the video shows\") "
    "counts little, one that singles the clip out counts most. A caption right on most attributes shares most of its "
    "n-grams, and a wrong word costs only the n-grams that contain it; nothing tells CIDEr that this word was the "
    "fact about the clip. A high CIDEr means a caption sounds like its references, not that it is "
    "true: read the attribute hit rates beside it.")


# ---------------------------------------------------------------- VATEX: the words the references agree on


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


# ---------------------------------------------------------------- sentences for the notebook


def score_spread(table: pd.DataFrame, metric: str = "CIDEr") -> pd.Series:
    """The spread of per-clip `metric`: clips (an integer), mean, standard deviation, quartiles, and the
    number of clips scoring under a tenth of the mean."""
    values = table[metric]
    return pd.Series({"clips": int(len(values)), "mean": round(values.mean(), 2), "std": round(values.std(), 2),
                      "min": round(values.min(), 2), "25%": round(values.quantile(0.25), 2),
                      "median": round(values.median(), 2), "75%": round(values.quantile(0.75), 2),
                      "max": round(values.max(), 2), "clips under a tenth of the mean": int((values < values.mean() / 10).sum())},
                     dtype=object, name=f"per-clip {metric}")


def constant_columns_note(table: pd.DataFrame, columns: tuple[str, ...] = ("num_objects", "clip_seconds"),
                          features=None) -> str:
    """A sentence for each of `columns` that has one value over the split, so its panel of
    `plot_score_against` shows no relation at all; with the reason when it is known (`features`: the
    FeatureConfig the store was made with)."""
    notes = []
    for column in (c for c in columns if c in table.columns):
        values = table[column].dropna().unique()
        if len(values) != 1:
            continue
        value = values[0]
        value = int(value) if float(value).is_integer() else value
        if column == "num_objects":
            why = ""
            if features is not None and features.detection_threshold <= 0:
                why = (f" `features.detection_threshold` is {features.detection_threshold:g}, so the detector keeps its "
                       f"{features.max_objects} best boxes on every keyframe whatever they show"
                       + (" (and the default profile's DETR is small and random)" if not features.detector_model else "")
                       + ".")
            notes.append(f"Every clip has {value} detected objects, so the object panel is one column and says nothing "
                         f"about objects.{why}")
        elif column == "clip_seconds":
            notes.append(f"Every clip is {value} s long, so the clip-length panel is one column too.")
        else:
            notes.append(f"Every clip has {column.replace('_', ' ')} {value}: that panel is one column.")
    return " ".join(notes) or "Each panel's property varies over the clips, so each can show a relation."


def chapter_summary(table: pd.DataFrame, predictions: dict[str, str], scores: pd.DataFrame, wrong: pd.DataFrame,
                    metric: str = "CIDEr") -> str:
    """The notebook's summary as Markdown bullets, from this run's own numbers."""
    values = table[metric]
    lines = [f"- Per-clip {metric} over {len(values)} clips: mean {values.mean():.1f} (the corpus score), median "
             f"{values.median():.1f}, from {values.min():.1f} to {values.max():.1f}.",
             f"- Caption habits: {collapse_verdict(predictions)}."]
    if not scores.empty:
        above = [a for a, r in scores.iterrows() if r["verdict"] == "above chance"]
        rest = [a for a in scores.index if a not in above]
        rates = ", ".join(f"{a} {_percent(r['right'])} (chance {_percent(r['chance'])})" for a, r in scores.iterrows())
        lines.append(f"- Attributes named right: {rates}; better than chance: {_names(above) or 'none'}"
                     + (f"; not: {_names(rest)}." if rest else "."))
        few = [f"{r['named']} of {r['values']} {_plural(a)}" for a, r in scores.iterrows() if r["named"] < r["values"]]
        if few:
            lines.append(f"- Values ever named: only {_names(few)}.")
    if not wrong.empty:
        top = wrong.iloc[0]
        lines.append(f"- The best-scored wrong caption ranks {top['rank']} of {len(values)} ({metric} {top[metric]:.1f}; "
                     f"{top['wrong']}): {metric} rewards shared wording, not truth.")
    return "\n".join(lines)
