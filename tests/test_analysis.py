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


# ---------------------------------------------------------------- what the model learned (notebook 07)


@pytest.mark.parametrize("caption, expected", [
    ("a small red ball moves to the left on a dark gray background",
     {"colour": "red", "shape": "circle", "size": "small", "count": 1, "motion": "left"}),
    ("two blue boxes get bigger", {"colour": "blue", "shape": "square", "size": "", "count": 2, "motion": "grow"}),
    ("against a light grey backdrop, a group of three violet rhombuses bounce up and down",
     {"colour": "purple", "shape": "diamond", "size": "", "count": 3, "motion": "bounce"}),
    ("the video shows one huge orange triangular shape rising",
     {"colour": "orange", "shape": "triangle", "size": "large", "count": 1, "motion": "up"}),
    ("there is a circle on a black background", {"colour": "", "shape": "circle", "size": "", "count": 1, "motion": ""}),
    ("", {"colour": "", "shape": "", "size": "", "count": "", "motion": ""}),
])
def test_parse_attributes_reads_known_captions(caption, expected):
    assert analysis.parse_attributes(caption) == expected


def test_parse_attributes_reads_back_every_caption_the_generator_writes():
    import numpy as np

    from qvidcap.data import minidata

    for i in range(40):
        scene = minidata.plan_scene(np.random.default_rng([7, i]), f"v{i}", "train")
        english, _ = minidata.caption_scene(scene, np.random.default_rng([7, i, 1]), with_chinese=False)
        for caption in english:
            said = analysis.parse_attributes(caption)
            truth = scene.attributes()
            assert {a: said[a] for a in ("colour", "shape", "count", "motion")} == \
                {a: truth[a] for a in ("colour", "shape", "count", "motion")}, caption
            assert said["size"] in ("", truth["size"]), caption  # some captions leave the size out


def test_chance_levels_are_the_majority_share_and_the_even_guess():
    chance = analysis.chance_levels(["left", "left", "up", "down"], 9)
    assert chance == {"majority": 0.5, "majority_value": "left", "uniform": pytest.approx(1 / 9)}
    assert analysis.chance_levels([1, 2, 2, 1], 3)["majority_value"] == 1  # a tie goes to the first value in order


META6 = [
    {"videoID": f"c{i}", "count": c, "colour": col, "shape": "circle", "size": "small", "motion": m}
    for i, (c, col, m) in enumerate([(1, "red", "left"), (1, "red", "left"), (1, "blue", "up"), (2, "blue", "up"),
                                     (2, "green", "down"), (3, "green", "bounce")])
]
PREDICTIONS6 = {  # colour always right; motion: left twice right, then "left" for up (x2), down; nothing for bounce
    "c0": "a small red circle moves to the left", "c1": "a small red circle moves to the left",
    "c2": "a small blue circle moves to the left", "c3": "two small blue circles move to the left",
    "c4": "two small green circles move to the left", "c5": "a small green circle",
}


def test_attribute_scores_on_a_hand_made_set():
    hits = analysis.mini_attribute_hits(PREDICTIONS6, META6)
    scores = analysis.attribute_scores(hits, baseline_hits=analysis.mini_attribute_hits(
        {v: "a small red circle moves to the left" for v in PREDICTIONS6}, META6))
    assert list(scores.index) == ["colour", "shape", "size", "count", "motion"]
    colour, motion, count = scores.loc["colour"], scores.loc["motion"], scores.loc["count"]
    assert (colour["clips"], colour["right"], colour["named"], colour["values"]) == (6, 1.0, 3, 6)
    assert colour["chance"] == pytest.approx(1 / 3) and colour["even guess"] == pytest.approx(1 / 6)
    assert colour["never named"] == "yellow, purple, orange"
    assert (motion["right"], motion["wrong"], motion["not named"]) == (pytest.approx(2 / 6), pytest.approx(3 / 6),
                                                                       pytest.approx(1 / 6))
    assert motion["named"] == 1 and motion["most common value"] == "left"
    assert count["right"] == pytest.approx(5 / 6) and count["chance"] == pytest.approx(3 / 6)  # c5 says one, is three
    assert scores.loc["motion", "blind baseline right"] == pytest.approx(2 / 6)
    assert scores["clips"].dtype.kind == "i" and scores["named"].dtype.kind == "i"
    assert analysis.attribute_scores(pd.DataFrame(columns=["videoID", "kind", "word", "outcome"])).empty  # VATEX


def test_verdicts_compare_with_chance_beyond_two_standard_errors():
    many = [{"videoID": f"m{i}", "count": 1, "colour": "red", "shape": "circle", "size": "small",
             "motion": analysis.attribute_values()["motion"][i % 9]} for i in range(90)]
    said = {m["videoID"]: f"a small red circle {'moves up' if m['motion'] == 'up' else 'moves to the left'}" for m in many}
    scores = analysis.attribute_scores(analysis.mini_attribute_hits(said, many))
    assert scores.loc["colour", "verdict"] == "at chance"  # every clip is red: the constant answer is right too
    assert scores.loc["motion", "right"] == pytest.approx(2 / 9) and scores.loc["motion", "chance"] == pytest.approx(1 / 9)
    assert scores.loc["motion", "verdict"] == "above chance"  # 2/9 > 1/9 + 2 * sqrt((1/9)(8/9)/90) = 0.177
    motions = analysis.attribute_values()["motion"]
    from qvidcap.data.minidata import MOTION_WORDS

    wrong = {m["videoID"]: "a small red circle " + MOTION_WORDS[motions[(i + 1) % 9]][0][0] for i, m in enumerate(many)}
    assert analysis.attribute_scores(analysis.mini_attribute_hits(wrong, many)).loc["motion", "verdict"] == "below chance"


def test_attribute_confusion_is_row_normalised_with_a_not_named_column():
    hits = analysis.mini_attribute_hits(PREDICTIONS6, META6)
    confusion = analysis.attribute_confusion(hits, "motion")
    assert list(confusion.index) == ["left", "up", "down", "bounce"]  # the true values that occur, in order
    assert list(confusion.columns) == [*analysis.attribute_values()["motion"], "not named"]
    assert confusion.loc["up", "left"] == 1.0 and confusion.loc["bounce", "not named"] == 1.0
    assert confusion.sum(axis=1).tolist() == [1.0, 1.0, 1.0, 1.0]
    counts = analysis.attribute_confusion(hits, "motion", normalize=False)
    assert counts.loc["left", "left"] == 2 and counts.loc["up", "left"] == 2 and counts.values.sum() == 6


def test_the_wording_follows_the_numbers():
    hits = analysis.mini_attribute_hits(PREDICTIONS6, META6)
    text = analysis.attribute_verdict(analysis.attribute_scores(hits))
    assert "colour 100% (chance 33%, an even guess 17%)" in text and "motion 33% (chance 33%, an even guess 11%)" in text
    assert "only 1 of 9 motions (never right, up, down, grow, shrink, bounce, appear, still)" in text
    assert "only 3 of 6 colours" in text and "No better than one constant answer:" in text
    perfect = {m["videoID"]: {"left": "a small {} circle moves to the left", "up": "{} small {} circles move up"}.get(
        m["motion"], "x").format(*([m["colour"]] if m["motion"] != "up" else [{1: "a", 2: "two"}[m["count"]], m["colour"]]))
        for m in META6}
    better = analysis.attribute_verdict(analysis.attribute_scores(analysis.mini_attribute_hits(perfect, META6)))
    assert better != text and "only 2 of 9 motions" in better
    assert "No attribute of these clips is known" in analysis.attribute_verdict(analysis.attribute_scores(pd.DataFrame()))


def _wrong_table():
    ids = ["c0", "c1", "c2", "c3", "c4", "c5"]
    cider = dict(zip(ids, [50.0, 40.0, 120.0, 90.0, 120.0, 10.0]))
    refs = {m["videoID"]: [f"a small {m['colour']} circle moves {m['motion']}", "a circle"] for m in META6}
    table = pd.DataFrame({"CIDEr": cider, "prediction": PREDICTIONS6, "references": refs})
    return table, analysis.mini_attribute_hits(PREDICTIONS6, META6)


def test_top_scored_wrong_picks_the_best_scored_wrong_captions():
    table, hits = _wrong_table()
    wrong = analysis.top_scored_wrong(table, hits, k=2)
    # c2 and c4 tie at 120 (c2 first by videoID); c3 has a wrong motion too but scores lower; c0/c1 are right
    assert list(wrong.index) == ["c2", "c4"] and list(wrong["rank"]) == [1, 2]
    assert wrong.loc["c4", "wrong"] == "motion: says left, is down"
    assert wrong.loc["c2", "words in references"] == "5 of 8"  # a small blue circle ... moves
    assert list(analysis.top_scored_wrong(table, hits, k=5).index) == ["c2", "c4", "c3", "c5"]
    assert analysis.top_scored_wrong(table, hits, attributes=("colour",)).empty


def test_cider_blind_spot_is_worded_from_the_table():
    table, hits = _wrong_table()
    wrong = analysis.top_scored_wrong(table, hits)
    text = analysis.cider_blind_spot(wrong, table, hits, META6)
    assert text.startswith('The best-scored wrong caption, "a small blue circle moves to the left", gets CIDEr 120.0, '
                           "rank 1 of 6 clips (the median clip scores 70.0)")
    assert 'Corrected to "a small blue circle moves up"' in text
    assert "4 of the 6 captions name a wrong motion, count, colour or shape, and 3 of them score above" in text
    assert "Clips whose motion is right average CIDEr 45.0 (2 clips)" in text
    empty = analysis.cider_blind_spot(wrong.iloc[:0], table, hits)
    assert empty.startswith("No caption names a wrong value") and "CIDEr never looks at the video" in empty


def test_corrected_caption_keeps_the_grammatical_form():
    truth = {"count": 2, "colour": "red", "shape": "circle", "size": "small", "motion": "up"}
    assert analysis.corrected_caption("two small blue boxes sliding left", truth) == "two small red circles moving up"
    assert analysis.corrected_caption("a red circle rises", truth) == "a red circle rises"  # only the count is wrong


def test_notebook_sentences_and_tables():
    table, hits = _wrong_table()
    table["num_objects"], table["clip_seconds"] = 12, 3.0
    spread = analysis.score_spread(table)
    assert spread["clips"] == 6 and isinstance(spread["clips"], int) and spread["median"] == 70.0
    assert spread["clips under a tenth of the mean"] == 0

    class Features:
        detection_threshold, max_objects, detector_model = 0.0, 3, ""

    note = analysis.constant_columns_note(table, features=Features())
    assert note.startswith("Every clip has 12 detected objects") and "keeps its 3 best boxes" in note
    assert "Every clip is 3 s long" in note
    table["num_objects"] = range(6)
    assert "detected objects" not in analysis.constant_columns_note(table)
    scores = analysis.attribute_scores(hits)
    summary = analysis.chapter_summary(table, PREDICTIONS6, scores, analysis.top_scored_wrong(table, hits))
    assert "- Per-clip CIDEr over 6 clips: mean 71.7" in summary and "only 3 of 6 colours, 1 of 4 shapes, 1 of 2 sizes, 2 of 3 counts and 1 of 9 motions" in summary
    assert "better than chance: colour; not: shape, size, count and motion." in summary and "ranks 1 of 6" in summary


def test_attribute_figures():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qvidcap.evaluation import analysis_plots

    hits = analysis.mini_attribute_hits(PREDICTIONS6, META6)
    fig = analysis_plots.plot_attribute_confusions(hits)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["colour: 6 clips", "shape: 6 clips", "size: 6 clips", "count: 6 clips", "motion: 6 clips"]
    assert fig.axes[-1].get_xlabel() == "named in the caption" and fig.axes[-1].get_ylabel() == "true value (clips)"
    assert [t.get_text() for t in fig.axes[-1].get_xticklabels()][-1] == "not named"
    scores = analysis.attribute_scores(hits)
    fig2 = analysis_plots.plot_attribute_hits(scores)
    chance_x = sorted(line.get_xdata()[0] for line in fig2.axes[0].lines)
    assert chance_x == pytest.approx(sorted(scores["chance"]))
    plt.close("all")


def test_the_vatex_path_has_no_attributes_and_says_so():
    predictions = {"a": "a man plays the guitar", "b": "a dog runs"}
    references = {"a": ["a man plays a guitar", "a man is playing the guitar"], "b": ["a dog runs in a park", "a dog runs"]}
    hits = analysis.word_hits(predictions, references, meta=None)
    scores = analysis.attribute_scores(hits)
    assert scores.empty and analysis.attribute_verdict(scores).startswith("No attribute of these clips is known")
    table = pd.DataFrame({"CIDEr": {"a": 80.0, "b": 20.0}, "prediction": predictions, "references": references})
    wrong = analysis.top_scored_wrong(table, hits)
    assert wrong.empty and analysis.cider_blind_spot(wrong, table, hits).startswith("No caption names a wrong value")
    summary = analysis.chapter_summary(table, predictions, scores, wrong)
    assert summary.count("\n- ") == 1 and "mean 50.0" in summary  # CIDEr and habits only
