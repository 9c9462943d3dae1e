"""The GPU plan is computed from the config, and the default Kaggle plan fits one session with margin."""
from __future__ import annotations

import pytest

from qvidcap.config import apply_overrides
from qvidcap.planning import budget
from qvidcap.planning.dry_run import real_size_config

STAGES = ("extraction: decoding", "extraction: models", "text targets: spaCy", "text targets: sentence model",
          "training:", "validation loss", "quick CIDEr", "evaluation:", "scoring")


def plan(profile: str = "kaggle", overrides: dict | None = None, platform: str | None = None):
    config = apply_overrides(real_size_config(profile), overrides or {})
    platform = budget.PLATFORMS[platform or profile]
    rates = budget.estimate_rates(budget.recorded_measurements(config), config, platform)
    return {s.name: s.hours for s in budget.plan_stages(config, rates, platform)}, config, rates


def hours(stages: dict, prefix: str) -> float:
    return sum(h for name, h in stages.items() if name.startswith(prefix))


@pytest.mark.parametrize("profile", ["kaggle", "colab"])
def test_the_default_plan_fits_one_session_with_the_stated_margin(profile):
    stages, config, rates = plan(profile)
    limit = budget.SESSION_HOURS * (1 - budget.Assumptions().margin)
    for stage in STAGES:
        assert any(stage in name for name in stages), stage
    total = budget.total_hours(budget.plan_stages(config, rates, budget.PLATFORMS[profile]))
    assert total == pytest.approx(sum(h for n, h in stages.items() if not n.startswith(("extraction:", budget.SCST_PREFIX))))
    assert 0 < total <= limit
    assert budget.fits(config, rates, budget.PLATFORMS[profile])


def test_the_original_schedule_does_not_fit():
    """20 epochs over every (clip, caption) pair: the plan the issue started from."""
    stages, config, rates = plan("kaggle", {"train.epochs": 20, "train.captions_per_epoch": 0})
    assert not budget.fits(config, rates, budget.PLATFORMS["kaggle"])
    assert hours(stages, "training: 20 epochs × 10") > budget.SESSION_HOURS


def test_training_hours_follow_epochs_captions_and_gpus():
    base, _, _ = plan("kaggle", {"train.epochs": 4, "train.captions_per_epoch": 2})
    more_epochs, _, _ = plan("kaggle", {"train.epochs": 8, "train.captions_per_epoch": 2})
    more_captions, _, _ = plan("kaggle", {"train.epochs": 4, "train.captions_per_epoch": 4})
    one_gpu, _, _ = plan("kaggle", {"train.epochs": 4, "train.captions_per_epoch": 2}, platform="colab")
    train = lambda s: hours(s, "training: ") - hours(s, "training: validation") - hours(s, "training: quick")  # noqa: E731
    assert train(more_epochs) == pytest.approx(2 * train(base), rel=1e-3)
    assert train(more_captions) == pytest.approx(2 * train(base), rel=1e-3)
    assert train(one_gpu) > 1.5 * train(base)  # twice the steps per GPU, no all-reduce
    assert hours(more_epochs, "training: validation") == pytest.approx(2 * hours(base, "training: validation"), rel=1e-3)


def test_validation_and_evaluation_follow_their_bounds():
    full, _, _ = plan("kaggle", {"train.val_clips": 0})
    bounded, _, _ = plan("kaggle", {"train.val_clips": 300})
    assert hours(full, "training: validation") == pytest.approx(10 * hours(bounded, "training: validation"), rel=2e-2)
    all_clips, _, _ = plan("kaggle")
    few, _, _ = plan("kaggle", {"eval.max_clips": 600})
    greedy, _, _ = plan("kaggle", {"generation.num_beams": 1})
    assert hours(few, "evaluation: 5-beam") == pytest.approx(hours(all_clips, "evaluation: 5-beam") / 10, rel=1e-3)
    assert hours(greedy, "evaluation: 1-beam") < hours(all_clips, "evaluation: 5-beam")


def test_grouped_mm_is_cheaper_than_the_expert_loop_by_the_stated_factor():
    grouped, _, rates = plan("kaggle")
    loop, _, loop_rates = plan("kaggle", {"decoder.experts_implementation": "eager"})
    assert loop_rates.train_step_s > rates.train_step_s
    assert "grouped_mm" in rates.how["train_step_s"] and "grouped_mm" not in loop_rates.how["train_step_s"]
    m = budget.recorded_measurements(real_size_config("kaggle"))
    saved_ops = m.train_step.moe_layer.ops * 10 * (1 - budget.Assumptions().grouped_mm_op_factor)
    assert loop_rates.train_step_s - rates.train_step_s == pytest.approx(saved_ops * budget.Assumptions().op_overhead_s)


def test_captions_per_epoch_draws_from_the_kept_captions():
    c = lambda **kw: apply_overrides(real_size_config("kaggle"), {f"train.{k}": v for k, v in kw.items()})  # noqa: E731
    assert budget.captions_per_epoch(c(captions_per_epoch=0, captions_per_clip=0)) == 10
    assert budget.captions_per_epoch(c(captions_per_epoch=0, captions_per_clip=5)) == 5
    assert budget.captions_per_epoch(c(captions_per_epoch=3, captions_per_clip=0)) == 3
    assert budget.captions_per_epoch(c(captions_per_epoch=8, captions_per_clip=5)) == 5


def test_the_colab_subset_shrinks_extraction_and_training():
    kaggle, _, _ = plan("kaggle", platform="colab")
    colab, config, _ = plan("colab")
    assert config.data.max_clips_per_split == 6000 and config.features.delete_videos
    assert hours(colab, "extraction: decoding") < hours(kaggle, "extraction: decoding")
    assert budget.split_clips(config, "train") == 6000 and budget.split_clips(config, "public_test") == 6000


def test_markdown_plan_lists_every_stage_and_the_total():
    config = real_size_config("kaggle")
    rates = budget.estimate_rates(budget.recorded_measurements(config), config, budget.PLATFORMS["kaggle"])
    text = budget.markdown_plan(config, rates, budget.PLATFORMS["kaggle"])
    for stage in STAGES:
        assert stage in text
    assert "**total**" in text and "estimated" in text and "measured:" not in text


def test_unrecorded_sampling_is_a_clear_error():
    config = apply_overrides(real_size_config("kaggle"), {"sampling.keyframe_size": 512})
    with pytest.raises(ValueError, match="keyframe_size=512.*without --recorded"):
        budget.recorded_measurements(config)


def test_self_critical_training_is_listed_but_left_out_of_the_default_total():
    stages, config, rates = plan("kaggle")
    assert not config.scst.enabled
    scst = {name: h for name, h in stages.items() if name.startswith(budget.SCST_PREFIX)}
    assert len(scst) == 3 and all(h > 0 for h in scst.values())
    listed = budget.plan_stages(config, rates, budget.PLATFORMS["kaggle"])
    assert all(s.optional for s in listed if s.name.startswith(budget.SCST_PREFIX))
    total = budget.total_hours(listed)
    assert total == pytest.approx(sum(h for n, h in stages.items()
                                      if not n.startswith(("extraction:", budget.SCST_PREFIX))))
    on, on_config, on_rates = plan("kaggle", {"scst.enabled": True})
    on_total = budget.total_hours(budget.plan_stages(on_config, on_rates, budget.PLATFORMS["kaggle"]))
    assert on_total == pytest.approx(total + budget.scst_hours(config, rates, budget.PLATFORMS["kaggle"]))
    assert budget.scst_fits(config, rates, budget.PLATFORMS["kaggle"]) == (on_total <= 9.0)


def test_self_critical_hours_follow_epochs_samples_and_gpus():
    steps = lambda s: hours(s, f"{budget.SCST_PREFIX}: ") - hours(s, f"{budget.SCST_PREFIX}: quick") - hours(  # noqa: E731
        s, f"{budget.SCST_PREFIX}: evaluation")
    base, _, rates = plan("kaggle", {"scst.epochs": 2})
    more_epochs, _, _ = plan("kaggle", {"scst.epochs": 4})
    more_samples, _, more_rates = plan("kaggle", {"scst.epochs": 2, "scst.num_samples": 10})
    one_gpu, _, _ = plan("kaggle", {"scst.epochs": 2}, platform="colab")
    assert steps(more_epochs) == pytest.approx(2 * steps(base), rel=1e-3)
    assert more_rates.scst_step_s > rates.scst_step_s and steps(more_samples) > steps(base)
    assert steps(one_gpu) > 1.5 * steps(base)
    assert rates.scst_step_s > rates.train_step_s  # 40 sampled captions, drawn token by token, then a backward


def test_markdown_plan_shows_self_critical_training_as_optional():
    config = real_size_config("kaggle")
    rates = budget.estimate_rates(budget.recorded_measurements(config), config, budget.PLATFORMS["kaggle"])
    text = budget.markdown_plan(config, rates, budget.PLATFORMS["kaggle"])
    assert text.index("**total**") < text.index("*optional:* self-critical training")
    assert "*total with the optional stage*" in text and "not in the total" in text
