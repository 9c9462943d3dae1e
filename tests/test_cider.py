"""The Java-free CIDEr-D equals pycocoevalcap's scorer on the same tokens."""
from __future__ import annotations

import numpy as np
import pytest

from qvidcap.training.cider import ConsensusCider, ScoringError, quick_cider, sanitize_caption, simple_tokenize

from caption_sets import PREDICTIONS, REFERENCES


def test_sanitize_caption():
    assert sanitize_caption("  A café\r\nscene\twith “quotes”  ") == "A cafe scene with quotes"
    assert sanitize_caption("") == ""
    assert sanitize_caption("a ||| b") == "a b"
    with pytest.raises(ScoringError, match="must be a string"):
        sanitize_caption(None)


def test_quick_cider_matches_pycocoevalcap_cider_on_simple_tokens():
    from pycocoevalcap.cider.cider import Cider

    gts = {k: [simple_tokenize(c) for c in v] for k, v in REFERENCES.items()}
    res = {k: [simple_tokenize(PREDICTIONS[k])] for k in REFERENCES}
    expected, _ = Cider().compute_score(gts, res)
    assert quick_cider(PREDICTIONS, REFERENCES) == pytest.approx(100 * expected, abs=1e-9)
    assert simple_tokenize("A Man, plays; guitar!") == "a man plays guitar"


def test_quick_cider_skips_clips_without_prediction_and_needs_one():
    subset = {k: PREDICTIONS[k] for k in list(PREDICTIONS)[:3]}
    assert quick_cider(subset, REFERENCES) == pytest.approx(
        quick_cider(subset, {k: REFERENCES[k] for k in subset}))
    with pytest.raises(ScoringError, match="no clip"):
        quick_cider({}, REFERENCES)


def test_consensus_cider_equals_pycocoevalcap_over_the_pool():
    from pycocoevalcap.cider.cider_scorer import CiderScorer

    pool = {k: [simple_tokenize(c) for c in v] for k, v in REFERENCES.items()}
    pool["clip_e_000000_000010"] = ["a man"]  # a different number of references
    consensus = ConsensusCider(pool)
    for candidate in ["a man is playing a guitar", "a dog", "", "zebra zebra zebra", "a man is cooking food"]:
        scorer = CiderScorer(n=4, sigma=6.0)
        for refs in pool.values():
            scorer += (candidate, refs)
        _, expected = scorer.compute_score()
        np.testing.assert_allclose(consensus.score(candidate), expected, atol=1e-12)


def test_the_scst_reward_equals_pycocoevalcap_with_the_training_references_as_corpus():
    """Each sampled caption scored against its own clip, document frequencies from the whole training pool."""
    from pycocoevalcap.cider.cider_scorer import CiderScorer

    from qvidcap.config import DataConfig
    from qvidcap.data.minidata import generate_mini_dataset
    import json
    import tempfile
    from pathlib import Path

    root = Path(tempfile.mkdtemp())
    generate_mini_dataset(DataConfig(mini_train_clips=30, mini_validation_clips=2, mini_test_clips=2), root)
    rows = json.loads((root / "vatex_training_v1.0.json").read_text())
    pool = {r["videoID"]: [simple_tokenize(c) for c in r["enCap"]] for r in rows}
    ids = list(pool)
    rng = np.random.default_rng(0)
    # candidates: other clips' captions, truncations, repeats and an empty one
    candidates = [pool[ids[(i + 1) % len(ids)]][i % 10] for i in range(len(ids))]
    candidates[0], candidates[1] = "", " ".join(pool[ids[1]][0].split()[:3])
    candidates[2] = "a a a a a a"
    reward = ConsensusCider(pool).score_pairs(candidates, ids)
    scorer = CiderScorer(n=4, sigma=6.0)
    for video_id, candidate in zip(ids, candidates):
        scorer += (candidate, pool[video_id])
    _, expected = scorer.compute_score()
    np.testing.assert_allclose(reward, 100 * np.asarray(expected), atol=1e-6)
    assert reward[0] == 0.0 and reward.max() > 0
    shuffled = rng.permutation(len(ids))  # the order of a batch does not matter
    np.testing.assert_allclose(ConsensusCider(pool).score_pairs([candidates[i] for i in shuffled],
                                                                [ids[i] for i in shuffled]), reward[shuffled], atol=1e-9)
    with pytest.raises(ScoringError, match="not in the reference pool"):
        ConsensusCider(pool).score_pairs(["a"], ["unknown"])
