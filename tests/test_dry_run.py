"""The GPU profile at real size on the CPU: the dry run end to end (slow), its builders and the budget (fast)."""
from __future__ import annotations

import math

import pytest
import torch

from qvidcap.planning import budget
from qvidcap.planning.dry_run import (DEEPSEEK_VL2_TINY, REAL_FEATURE_DIMS, SENTENCE_EMBED_DIM, real_size_config,
                             tiny_text_config)


def test_tiny_config_goes_through_the_loaders_reader():
    config = tiny_text_config()
    lang = DEEPSEEK_VL2_TINY["language_config"]
    assert (config.hidden_size, config.vocab_size, config.num_hidden_layers) == (1280, 129_280, 12)
    assert config.mlp_layer_types == ["dense"] + ["sparse"] * 11
    assert config.moe_intermediate_size == lang["moe_intermediate_size"]
    cut = tiny_text_config(3)
    assert cut.mlp_layer_types == ["dense", "sparse", "sparse"] and cut.hidden_size == 1280
    with pytest.raises(ValueError, match="num_layers"):
        tiny_text_config(0)


@pytest.mark.parametrize("profile", ["kaggle", "colab"])
def test_real_size_config_keeps_the_profile_but_names_no_weights(profile):
    config = real_size_config(profile)
    assert config.features.random_size == "base"
    assert (config.features.temporal_model, config.features.detector_model, config.features.clip_model) == ("", "", "")
    assert config.sampling.temporal_size == 224 and config.heads.hidden_size == 1024
    assert config.qformer.num_queries == 15 and config.heads.num_object_queries == 8


def test_budget_counts_flops_of_the_real_extractors_on_meta():
    config = real_size_config("kaggle")
    temporal, detector, crop = budget.measure_extraction(config)
    # FLOPs = 2 x multiply-adds. VideoMAE-base over 1568 tokens: 2 x 86M x 1568 = 270 G, plus attention
    assert 300e9 < temporal.flops < 420e9
    # CLIP ViT-B/32 at 224: 4.4 G multiply-adds; DETR-R50 on an 800x1422 keyframe: ~4.7x its 44 GFLOPs at 360x640
    assert config.sampling.keyframe_size == 800
    assert 7e9 < crop.flops < 11e9
    assert 150e9 < detector.flops < 300e9
    assert temporal.ops > 0 and detector.ops > 0


def test_sensitivity_of_the_plan_to_the_gpu_assumptions():
    configs = {key: real_size_config(key) for key in budget.PLATFORMS}
    m = budget.recorded_measurements(configs["kaggle"])
    sensitivity = budget.sensitivity_table(m, configs, fractions=(0.1, 0.5), overheads=(5e-6, 30e-6))
    kaggle, colab = (p.name for p in budget.PLATFORMS.values())
    assert set(sensitivity.columns) == {f"{name}, {us} µs/op" for name in (kaggle, colab) for us in (5, 30)}
    assert (sensitivity.iloc[0] >= sensitivity.iloc[1]).all()  # a busier GPU finishes sooner
    assert (sensitivity[f"{kaggle}, 30 µs/op"] > sensitivity[f"{kaggle}, 5 µs/op"]).all()


@pytest.mark.slow
def test_dry_run_of_the_gpu_profile_at_real_size():
    from qvidcap.planning.dry_run import run_dry_run

    result = run_dry_run("kaggle", decoder_layers=2)
    config = real_size_config("kaggle")
    frames, size, n = config.sampling.temporal_frames, config.sampling.temporal_size, config.sampling.num_keyframes
    assert result.shapes["sampled.temporal"] == (1, frames, size, size, 3)
    assert result.shapes["sampled.keyframes"][0] == n and min(result.shapes["sampled.keyframes"][1:3]) == config.sampling.keyframe_size
    assert result.shapes["batch.temporal"] == (2, frames // 2, REAL_FEATURE_DIMS["temporal"])
    assert result.shapes["batch.context"] == (2, n, REAL_FEATURE_DIMS["context"])
    assert result.shapes["batch.objects"][2] == REAL_FEATURE_DIMS["object"]
    assert result.shapes["batch.objects"][1] <= n * config.features.max_objects
    assert result.shapes["batch.object_targets"][2] == SENTENCE_EMBED_DIM
    assert result.shapes["prefix"] == (2, 15, 1280)
    length = result.shapes["batch.input_ids"][1]
    assert result.shapes["logits"] == (2, length, 129_280)
    assert result.shapes["object_embeds"] == (2, 8, SENTENCE_EMBED_DIM)
    assert result.shapes["global_embed"] == (2, SENTENCE_EMBED_DIM)
    assert all(math.isfinite(v) for v in result.losses.values())
    assert result.losses["caption"] == pytest.approx(math.log(129_280), rel=0.1)  # random weights: near uniform
    assert len(result.captions) == 2 and all(isinstance(c, str) for c in result.captions)
    assert result.trainable_parameters > 50_000_000 and result.frozen_parameters > 500_000_000
    assert result.peak_rss_gb < 8.0
    assert torch.get_default_dtype() == torch.float32
