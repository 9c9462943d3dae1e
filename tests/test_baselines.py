"""The caption-blind baseline picks the training caption the other training clips agree with most."""
from __future__ import annotations

import numpy as np
import pytest

from qvidcap.evaluation.baselines import blind_baseline
from qvidcap.training.cider import ScoringError, simple_tokenize

TRAIN = {
    "v1": ["a red ball rolls", "a red ball is rolling"],
    "v2": ["a red ball rolls left", "the red ball moves"],
    "v3": ["a blue box falls", "a red ball rolls away"],
    "v4": ["two dogs bark loudly", "dogs are barking"],
}


def _brute_force_consensus(caption: str, source: str) -> float:
    """Mean pycocoevalcap CIDEr-D (×100) of `caption` against every other clip, IDF from all clips."""
    from pycocoevalcap.cider.cider_scorer import CiderScorer

    scorer = CiderScorer(n=4, sigma=6.0)
    ids = sorted(TRAIN)
    for video_id in ids:
        scorer += (simple_tokenize(caption), [simple_tokenize(c) for c in TRAIN[video_id]])
    _, per_clip = scorer.compute_score()
    return 100 * float(np.mean([s for v, s in zip(ids, per_clip) if v != source]))


def test_blind_baseline_picks_the_consensus_caption():
    blind = blind_baseline(TRAIN)
    assert blind.caption == "a red ball rolls"
    assert blind.source_video_id == "v1"
    assert blind.consensus == pytest.approx(_brute_force_consensus("a red ball rolls", "v1"), abs=1e-9)
    assert len(blind.candidates) == 8
    for row in blind.candidates.itertuples():
        assert row.consensus == pytest.approx(_brute_force_consensus(row.caption, row.source_video_id), abs=1e-9)
    assert blind.candidates["consensus"].is_monotonic_decreasing
    assert blind.predictions(["t1", "t2"]) == {"t1": "a red ball rolls", "t2": "a red ball rolls"}


def test_blind_baseline_is_deterministic_on_samples():
    first = blind_baseline(TRAIN, num_candidates=3, pool_clips=3, seed=7)
    again = blind_baseline(TRAIN, num_candidates=3, pool_clips=3, seed=7)
    assert first.caption == again.caption and first.consensus == again.consensus
    assert len(first.candidates) == 3


def test_blind_baseline_needs_training_clips():
    with pytest.raises(ScoringError, match="at least 2 training clips"):
        blind_baseline({"v1": ["a caption"]})


def test_the_untrained_captioner_on_a_t4_has_a_float16_decoder_built_on_its_device(tmp_path, monkeypatch):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from fake_gpu import fake_gpu
    from qvidcap.evaluation.baselines import untrained_captioner
    from qvidcap.model import QVidCap, link_widths
    from qvidcap.model.tokenizer import build_word_tokenizer
    from synthetic_training import tiny_config

    tokenizer = build_word_tokenizer([c for captions in TRAIN.values() for c in captions])
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=16, n_layer=1, n_head=2,
                               n_positions=64)).save_pretrained(tmp_path / "gpt2")
    config = link_widths(tiny_config(tmp_path, **{"decoder.kind": "hf", "decoder.name": str(tmp_path / "gpt2"),
                                                   "decoder.train_mode": "frozen"}),
                         {"temporal": 16, "object": 16, "context": 16}, 24)
    assert {p.dtype for p in untrained_captioner(config, tokenizer).decoder.parameters()} == {torch.float32}
    fake_gpu(monkeypatch, (7, 5))
    moved = []
    monkeypatch.setattr(QVidCap, "to", lambda self, device: moved.append(device) or self)  # no CUDA here
    model = untrained_captioner(config, tokenizer, seed=0, device="cuda")
    assert moved == ["cuda"] and not model.training
    assert {p.dtype for p in model.decoder.parameters()} == {torch.float16}
