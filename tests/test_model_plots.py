"""The architecture figure is drawn from the config it is given; attention maps mark the uniform level."""
import matplotlib

matplotlib.use("Agg")

import pandas as pd
import pytest
import torch

from qvidcap.config import load_config
from qvidcap.model.plots import (architecture_widths, plot_architecture, plot_attention, plot_learning_curves,
                                 plot_step_losses, sentence_embed_dim)


def _texts(ax) -> str:
    return "\n".join(t.get_text() for t in ax.texts)


def test_the_gpu_profile_figure_shows_the_real_widths():
    config = load_config("kaggle")
    widths = architecture_widths(config)
    assert (widths["Dt"], widths["Do"], widths["Dc"], widths["D"], widths["H"], widths["E"]) == (768, 512, 512, 1024, 1280, 1024)
    text = _texts(plot_architecture(config))
    for label in ("motion (B, 8, 768)", "objects (B, 80, 512)", "context (B, 8, 512)", "Linear 768 → 1024",
                  "ξ (B, 8, 1024)", "(B, 15, 1024)", "prefix (B, 15, 1280)", "Linear 1024 → 1280", "E = 1024",
                  "deepseek-vl2-tiny", "frozen"):
        assert label in text, label


def test_the_default_profile_figure_shows_its_small_widths_and_follows_overrides():
    text = _texts(plot_architecture(load_config("smoke")))
    for label in ("motion (B, 8, 64)", "objects (B, 12, 64)", "prefix (B, 8, 96)", "E = 384", "small, random"):
        assert label in text, label
    assert "1280" not in text and "1024" not in text
    changed = _texts(plot_architecture(load_config("smoke", "heads.hidden_size=128 qformer.num_queries=3")))
    assert "Linear 64 → 128" in changed and "prefix (B, 3, 96)" in changed


def test_linked_widths_win_over_the_named_models():
    config = load_config("kaggle", "heads.temporal_dim=1024 heads.text_embed_dim=768")
    assert architecture_widths(config)["Dt"] == 1024 and sentence_embed_dim(config) == 768
    assert sentence_embed_dim(load_config("smoke")) == 384  # all-MiniLM-L6-v2


def test_attention_map_labels_its_axes_and_marks_the_uniform_level():
    weights = torch.tensor([[0.3, 0.3, 0.0, 0.2, 0.2], [0.25, 0.25, 0.0, 0.25, 0.25], [0.4, 0.2, 0.0, 0.2, 0.2]])
    ax = plot_attention(weights, ["m0", "o0", "pad", "c0", "c1"], rows=["m0", "m1", "m2"], xlabel="object query",
                        ylabel="motion step")
    assert ax.get_xlabel() == "object query" and ax.get_ylabel() == "motion step"
    colorbar = ax.collections[0].colorbar
    assert colorbar.ax.get_ylabel().endswith("(white line: uniform, 0.250)")  # 1 / the four real columns
    assert [line.get_ydata()[0] for line in colorbar.ax.get_lines()] == [0.25]
    low, high = colorbar.mappable.get_clim()  # this map's own range over its real columns, with the uniform level
    real = weights[:, [0, 1, 3, 4]]
    assert low <= min(float(real.min()), 0.25) and high >= max(float(weights.max()), 0.25)
    assert 0.1 < low < 0.2  # not 0: the padding column does not stretch the scale
    with pytest.raises(ValueError, match="one clip"):
        plot_attention(torch.zeros(2, 3, 4), ["a", "b", "c", "d"])


def test_learning_curves_have_integer_epochs_and_the_best_epoch_marked():
    history = pd.DataFrame({"epoch": [0, 1, 2], "train_caption": [3.0, 2.0, 1.5], "val_caption": [2.5, 1.8, 1.4],
                            "quick_cider": [10.0, 30.0, 20.0], "distinct_captions": [1, 5, 9]})
    fig = plot_learning_curves(history, best_epoch=1)
    left, right = fig.axes[0], fig.axes[1]
    assert left.get_xlabel() == "epoch" and all(float(t).is_integer() for t in left.get_xticks())
    assert any(line.get_label() == "best/ (epoch 1)" for line in right.get_lines())
    steps = pd.DataFrame({"epoch": [0] * 4 + [1] * 4, "step": range(1, 9), "loss": 1.0, "caption": 2.0, "object": 0.5,
                          "action": 0.5, "global": 0.5})
    panels = plot_step_losses(steps).axes
    assert [a.get_title() for a in panels][1] == "caption cross-entropy (nats/token)"
    assert max(panels[0].get_lines()[0].get_xdata()) == pytest.approx(2.0)  # step 8 of 4 per epoch


# ---------------------------------------------------------------- notebook 03's sizes and sentences (features/plots)

from qvidcap.features.plots import (clip_payload_bytes, feature_widths, objects_verdict, stream_lengths,
                                    window_cost_verdict)


def test_feature_widths_and_the_vatex_projection_use_the_gpu_profiles_real_sizes():
    gpu = load_config("kaggle")
    assert feature_widths(gpu) == {"temporal": 768, "object": 512, "context": 512}
    assert feature_widths(load_config("smoke")) == {"temporal": 64, "object": 64, "context": 64}
    assert stream_lengths(gpu.sampling, gpu.features) == {"T": 8, "N": 8, "P": 80}
    # 8 x 768 + 8 x 512 fp16 values, and 32 boxes of a 512-wide fp16 embedding plus 24 bytes each
    assert clip_payload_bytes(gpu, 32) == 2 * 8 * 768 + 2 * 8 * 512 + 32 * (2 * 512 + 24) + 8


def test_the_objects_sentence_says_when_the_histogram_is_a_single_bar():
    smoke = load_config("smoke")  # 3 boxes x 4 keyframes at most
    capped = objects_verdict(pd.DataFrame({"objects": [12] * 10}), smoke)
    assert capped.startswith("10 of 10 clips (100%) keep the most boxes") and "single bar" in capped
    assert "random DETR" in capped
    varied = objects_verdict(pd.DataFrame({"objects": [12, 3, 5, 0]}), smoke)
    assert varied.startswith("1 of 4 clips (25%)") and "single bar" not in varied


def test_the_window_cost_sentence_reports_the_measured_ratio():
    assert "**4.0x**" in window_cost_verdict(0.01, 0.04, 4) and "about the 4x" in window_cost_verdict(0.01, 0.04, 4)
    assert "less than the 4x" in window_cost_verdict(0.01, 0.015, 4)
    assert "**7.0x**" in window_cost_verdict(0.001, 0.007, 4) and "noisy" in window_cost_verdict(0.001, 0.007, 4)


def test_a_head_switched_off_by_an_ablation_is_drawn_as_off():
    text = _texts(plot_architecture(load_config("smoke", "heads.action_head=false qformer.kind=cross_attention")))
    assert "ActionHead\nswitched off" in text and "ObjectHead\n4 queries" in text and "one cross-attention" in text
