"""Error-analysis tables on tiny hand-made predictions whose answers are known."""
from __future__ import annotations

import pandas as pd
import pytest

from qvidcap.evaluation import analysis
from qvidcap.evaluation.metrics import CaptionScores, ScoredSet


def test_collapse_is_called_below_the_threshold():
    collapsed = {f"v{i}": "a red circle moves to the left" for i in range(10)}
    collapsed["v0"] = "a blue square"
    d = analysis.diversity(collapsed)
    assert (d["distinct_captions"], d["distinct_share"], d["collapsed"]) == (2, 0.2, False)  # 20% is the threshold itself
    collapsed["v1"] = "a red circle moves to the left"
    collapsed.pop("v0")
    d = analysis.diversity(collapsed)
    assert d["collapsed"] and d["most_common_share"] == 1.0
    assert analysis.collapse_verdict(collapsed).startswith("1 distinct captions over 9 clips (11%): COLLAPSED")
    varied = {f"v{i}": f"caption {i}" for i in range(5)}
    assert "not collapsed" in analysis.collapse_verdict(varied)


def test_repetition_and_generic_rates():
    predictions = {"a": "a red red ball", "b": "a ball on the ball", "c": "the the ball", "d": "a blue box"}
    assert analysis.repetition_rate(predictions) == 0.5  # "red red" and "ball ... ball"; "the the" is a stopword
    predictions = {f"v{i}": "a shape moves" if i < 4 else f"caption {i}" for i in range(10)}
    generic = analysis.generic_captions(predictions)
    assert generic.to_dict("records") == [{"caption": "a shape moves", "clips": 4, "share": 0.4}]
    assert analysis.generic_rate(predictions) == 0.4
    assert analysis.generic_rate({f"v{i}": f"caption {i}" for i in range(10)}) == 0.0


def test_unused_vocabulary_lists_reference_words_never_said():
    predictions = {"a": "a red ball", "b": "a red box"}
    references = {"a": ["a red ball rolls", "the ball rolls"], "b": ["a green box falls", "a box rolls"]}
    unused = analysis.unused_vocabulary(predictions, references)
    assert unused.to_dict("records") == [{"word": "rolls", "clips": 2, "share": 1.0},
                                         {"word": "falls", "clips": 1, "share": 0.5},
                                         {"word": "green", "clips": 1, "share": 0.5}]


META = [
    {"videoID": "v1", "count": 1, "colour": "red", "shape": "circle", "size": "small", "motion": "left"},
    {"videoID": "v2", "count": 2, "colour": "blue", "shape": "square", "size": "large", "motion": "grow"},
    {"videoID": "v3", "count": 3, "colour": "green", "shape": "triangle", "size": "large", "motion": "bounce"},
]


def test_mini_attribute_hits_judge_each_attribute():
    predictions = {
        "v1": "a small red ball moves to the left on a dark gray background",
        "v2": "two blue boxes get bigger",  # "bigger" is the motion, not a size; size is not judged for grow
        "v3": "a purple triangle",  # count and colour wrong, motion and size missed
    }
    hits = analysis.mini_attribute_hits(predictions, META).set_index(["videoID", "attribute"])["outcome"]
    assert hits.loc["v1"].to_dict() == {"motion": "hit", "count": "hit", "size": "hit", "shape": "hit", "colour": "hit"}
    assert hits.loc["v2"].to_dict() == {"motion": "hit", "count": "hit", "shape": "hit", "colour": "hit"}
    assert hits.loc["v3"].to_dict() == {"motion": "missed", "count": "wrong", "size": "missed", "shape": "hit",
                                        "colour": "wrong"}
    summary = analysis.hit_summary(analysis.word_hits(predictions, {}, META))
    assert summary.loc["shape", "hit"] == 1.0 and summary.loc["colour", "wrong"] == pytest.approx(1 / 3, abs=1e-3)


def test_reference_word_hits_use_words_most_references_share():
    predictions = {"a": "a man plays the guitar"}
    references = {"a": ["a man plays a guitar", "a man is playing the guitar", "a woman sings a song"]}
    hits = analysis.reference_word_hits(predictions, references, min_refs=2)
    found = {(row.kind, row.word): row.outcome for row in hits.itertuples()}
    assert found[("object", "guitar")] == "hit" and found[("object", "man")] == "hit"
    assert found[("action", "play")] == "hit"
    assert ("object", "song") not in found  # only one reference says it


def _scores(values: dict[str, float]) -> CaptionScores:
    per_clip = pd.DataFrame({"CIDEr": values, "BLEU-4": values, "prediction": {v: f"caption {v}" for v in values}})
    per_clip.index.name = "videoID"
    ids = list(values)
    return CaptionScores({"CIDEr": sum(values.values()) / len(values)}, per_clip, ScoredSet("mini", "public_test", len(ids), 1, 1, 1.0, ids))


class _Store:
    class _Clip:
        def __init__(self, n):
            self.num_objects = n

    def get(self, video_id):
        return self._Clip(int(video_id[1:]))


def test_clip_table_and_best_and_worst():
    scores = _scores({"v1": 10.0, "v2": 80.0, "v3": 10.0, "v4": 40.0})
    table = analysis.clip_table(scores, {v: [f"ref of {v}"] for v in scores.per_clip.index}, store=_Store())
    assert table.loc["v2", "caption_length"] == 2 and table.loc["v4", "num_objects"] == 4
    assert table.loc["v1", "references"] == ["ref of v1"]
    best, worst = analysis.best_and_worst(table, k=2)
    assert list(best.index) == ["v2", "v4"] and list(worst.index) == ["v3", "v1"]
    by_objects = analysis.score_by(table, "num_objects")
    assert by_objects.loc[2, "mean"] == 80.0


def test_where_wrong_is_a_confusion_table_for_the_mini_dataset():
    predictions = {"v1": "a red circle moves to the right", "v2": "two blue squares grow", "v3": "three green triangles"}
    confusion = analysis.where_wrong(analysis.mini_attribute_hits(predictions, META))
    assert confusion.loc["left", "right"] == 1 and confusion.loc["grow", "grow"] == 1
    assert confusion.loc["bounce", "(none)"] == 1
