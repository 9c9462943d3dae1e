"""The scorer wrapper gives pycocoevalcap's own numbers, and applies its stated rules to awkward input."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from caption_sets import PREDICTIONS, REFERENCES
from qvidcap.evaluation import metrics
from qvidcap.evaluation.metrics import (
    CaptionScores,
    JavaNotFoundError,
    MissingPredictionError,
    ScoringError,
    score_captions,
)

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="pycocoevalcap needs Java")

@pytest.fixture(scope="module")
def scores() -> CaptionScores:
    if shutil.which("java") is None:
        pytest.skip("pycocoevalcap needs Java")
    return score_captions(PREDICTIONS, REFERENCES, dataset="mini", split="public_test")


def _direct_pycocoevalcap(predictions, references):
    """What pycocoevalcap gives when called by hand, the way its COCOEvalCap does."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({k: [{"caption": c} for c in v] for k, v in references.items()})
    res = tokenizer.tokenize({k: [{"caption": predictions[k]}] for k in references})
    bleu, bleu_clip = Bleu(4).compute_score(gts, res, verbose=0)
    meteor, meteor_clip = Meteor().compute_score(gts, res)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, cider_clip = Cider().compute_score(gts, res)
    corpus = {"BLEU-1": bleu[0], "BLEU-2": bleu[1], "BLEU-3": bleu[2], "BLEU-4": bleu[3],
              "METEOR": meteor, "ROUGE-L": rouge, "CIDEr": cider}
    return {k: 100 * float(v) for k, v in corpus.items()}, 100 * np.asarray(cider_clip), 100 * np.asarray(meteor_clip), 100 * np.asarray(bleu_clip[3])


@needs_java
def test_scores_equal_pycocoevalcap_called_directly(scores):
    corpus, cider_clip, meteor_clip, bleu4_clip = _direct_pycocoevalcap(PREDICTIONS, REFERENCES)
    for name, value in corpus.items():
        assert scores.corpus[name] == pytest.approx(value, abs=1e-9), name
    np.testing.assert_allclose(scores.per_clip["CIDEr"].to_numpy(), cider_clip, atol=1e-9)
    np.testing.assert_allclose(scores.per_clip["METEOR"].to_numpy(), meteor_clip, atol=1e-9)
    np.testing.assert_allclose(scores.per_clip["BLEU-4"].to_numpy(), bleu4_clip, atol=1e-9)
    assert scores.corpus["CIDEr"] == pytest.approx(scores.per_clip["CIDEr"].mean())


@needs_java
def test_scored_set_is_stated_and_clip_ids_saved(scores, tmp_path):
    assert scores.scored_set.describe() == "mini public_test: 4 clips, 3 references per clip"
    scores.save(tmp_path)
    assert (tmp_path / "clip_ids.txt").read_text().split() == list(REFERENCES)
    saved = json.loads((tmp_path / "scores.json").read_text())
    assert saved["scored_set"]["num_clips"] == 4 and saved["clip_ids_file"] == "clip_ids.txt"
    again = CaptionScores.load(tmp_path)
    assert again.corpus == scores.corpus and again.scored_set.video_ids == list(REFERENCES)


@needs_java
def test_perfect_prediction_scores_full_marks():
    references = {f"v{i}": [f"caption number {i} about a {w} thing", f"another {w} sentence"]
                  for i, w in enumerate(["red", "blue", "green", "small", "big", "round"])}
    perfect = {k: v[0] for k, v in references.items()}
    result = score_captions(perfect, references)
    assert result.corpus["BLEU-1"] == pytest.approx(100.0)
    assert result.corpus["BLEU-4"] == pytest.approx(100.0)
    assert result.corpus["ROUGE-L"] == pytest.approx(100.0)


def test_missing_prediction_is_an_error_naming_the_clip():
    predictions = {k: v for k, v in PREDICTIONS.items() if k != "clip_c_000000_000010"}
    with pytest.raises(MissingPredictionError, match="1 of 4 clips.*clip_c_000000_000010.*missing='empty'"):
        score_captions(predictions, REFERENCES)


@needs_java
def test_missing_prediction_scored_as_empty_when_asked():
    predictions = {k: v for k, v in PREDICTIONS.items() if k != "clip_c_000000_000010"}
    result = score_captions(predictions, REFERENCES, missing="empty")
    assert result.scored_set.missing_scored_as_empty == ["clip_c_000000_000010"]
    row = result.per_clip.loc["clip_c_000000_000010"]
    assert row["CIDEr"] == 0 and row["METEOR"] == 0 and row["BLEU-4"] == 0 and row["ROUGE-L"] == 0
    assert any("scored as empty" in note for note in result.notes)


@needs_java
def test_empty_and_non_ascii_predictions_are_scored_not_crashed():
    predictions = dict(PREDICTIONS)
    predictions["clip_a_000000_000010"] = ""
    predictions["clip_b_000000_000010"] = "a dog\r\nis running in the\tpark — café"
    result = score_captions(predictions, REFERENCES)
    assert result.per_clip.loc["clip_a_000000_000010", "CIDEr"] == 0
    assert result.per_clip.loc["clip_b_000000_000010", "prediction_tokens"] == "a dog is running in the park cafe"
    assert result.per_clip.loc["clip_b_000000_000010", "METEOR"] > 0


@needs_java
def test_references_may_differ_in_number_per_clip():
    references = dict(REFERENCES)
    references["clip_d_000000_000010"] = ["kids playing soccer outside", ""]  # the empty one is dropped
    result = score_captions(PREDICTIONS, references)
    assert (result.scored_set.refs_per_clip_min, result.scored_set.refs_per_clip_max) == (1, 3)


def test_clip_without_any_reference_is_an_error():
    references = {**REFERENCES, "clip_d_000000_000010": ["", "  "]}
    with pytest.raises(ScoringError, match="clip_d_000000_000010"):
        score_captions(PREDICTIONS, references)


def test_missing_java_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no java anywhere
    with pytest.raises(JavaNotFoundError, match="Java was not found on PATH.*install a Java runtime"):
        score_captions(PREDICTIONS, REFERENCES)


@needs_java
def test_spice_offline_is_skipped_with_a_reason(monkeypatch):
    from pycocoevalcap.spice import get_stanford_models

    def offline(*args, **kwargs):
        raise OSError("network unreachable (simulated)")

    monkeypatch.setattr(get_stanford_models, "JAR", "corenlp-not-downloaded")
    monkeypatch.setattr(metrics.socket, "create_connection", offline)
    result = score_captions(PREDICTIONS, REFERENCES, spice=True)
    assert "SPICE" not in result.corpus
    assert "cannot be reached" in result.skipped["SPICE"] and "simulated" in result.skipped["SPICE"]




@needs_java
def test_the_tokenizer_speed_line_stays_out_of_the_output(capfd):
    capfd.readouterr()
    score_captions(PREDICTIONS, REFERENCES)
    err = capfd.readouterr().err
    assert "tokens per second" not in err and "PTBTokenizer tokenized" not in err


def test_the_cider_d_example_takes_the_score_apart_and_agrees_with_pycocoevalcap():
    from pycocoevalcap.cider.cider_scorer import CiderScorer

    from qvidcap.evaluation.metrics import cider_d_example
    from qvidcap.training.cider import simple_tokenize

    clip = "clip_b_000000_000010"
    table = cider_d_example({"good": PREDICTIONS[clip], "wrong clip": REFERENCES["clip_a_000000_000010"][0]}, clip, REFERENCES)
    assert list(table.index) == ["good", "wrong clip"] and table.loc["good", "caption"] == "a dog is running in the park"
    orders = table[["n=1", "n=2", "n=3", "n=4"]]
    assert table["CIDEr-D ×100"].tolist() == pytest.approx((10 * orders.mean(axis=1) * 100).tolist(), abs=0.02)
    assert table["CIDEr-D ×100"].tolist() == pytest.approx(table["ConsensusCider ×100"].tolist(), abs=0.01)
    scorer = CiderScorer(n=4, sigma=6.0)  # pycocoevalcap over the same pool: one candidate per clip
    for video_id, refs in REFERENCES.items():
        scorer += (simple_tokenize(PREDICTIONS[video_id]), [simple_tokenize(r) for r in refs])
    _, per_clip = scorer.compute_score()
    assert table.loc["good", "CIDEr-D ×100"] == pytest.approx(100 * per_clip[list(REFERENCES).index(clip)], abs=0.01)
    assert table.loc["good", "CIDEr-D ×100"] > table.loc["wrong clip", "CIDEr-D ×100"]
    with pytest.raises(metrics.ScoringError, match="not among"):
        cider_d_example({"x": "a dog"}, "no_such_clip", REFERENCES)
