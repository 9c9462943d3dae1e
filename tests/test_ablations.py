"""Ablations (notebook 09): variants as config overrides, the verdicts from per-clip scores, resume and the deadline."""
from __future__ import annotations

import json
import shutil
from functools import partial

import numpy as np
import pandas as pd
import pytest
import torch

from qvidcap.config import load_config
from qvidcap.evaluation import ablations
from qvidcap.evaluation.ablations import (VARIANTS, PlannedRun, compare_variants, effect_sentence, planned_runs,
                                          seed_summary, variant_config)
from qvidcap.evaluation.metrics import CaptionScores, ScoredSet
from qvidcap.runtime.env import Environment

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="pycocoevalcap needs Java")


# ------------------------------------------------------------ variants and the plan


def test_each_variant_is_the_full_model_with_its_overrides_and_the_ablation_schedule():
    config = load_config("smoke", "ablation.epochs=2 ablation.captions_per_epoch=1 ablation.lr=3e-3")
    full = variant_config(config, "full", 7)
    assert (full.train.epochs, full.train.captions_per_epoch, full.train.lr, full.train.seed) == (2, 1, 3e-3, 7)
    assert full.train.run_name == "qvidcap-ablation-full-seed7" and full.heads == config.heads
    no_object = variant_config(config, "no_object_head", 7)
    assert not no_object.heads.object_head and no_object.train.object_weight == 0.0
    assert no_object.train.action_weight == config.train.action_weight
    no_aux = variant_config(config, "no_aux_losses", 7).train
    assert (no_aux.object_weight, no_aux.action_weight, no_aux.global_weight) == (0.0, 0.0, 0.0)
    assert variant_config(config, "cross_attention", 7).qformer.kind == "cross_attention"
    assert variant_config(config, "fewer_queries", 7).qformer.num_queries == config.ablation.fewer_queries
    assert load_config("smoke").train.epochs == variant_config(load_config("smoke", "ablation.epochs=0"), "full", 0).train.epochs


def test_the_plan_is_the_full_model_over_the_seeds_then_each_variant_once():
    config = load_config("smoke", "ablation.seeds=3,4 ablation.variants=no_action_head,full,cross_attention")
    assert planned_runs(config) == [PlannedRun("full", 3), PlannedRun("full", 4), PlannedRun("no_action_head", 3),
                                    PlannedRun("cross_attention", 3)]
    assert planned_runs(config, ["full"], []) == [PlannedRun("full", config.train.seed)]
    with pytest.raises(ValueError, match="no_objects_head.*no_object_head"):
        planned_runs(config, ["no_objects_head"])


def test_a_variant_that_changes_nothing_on_a_profile_is_not_run_twice():
    kaggle = load_config("kaggle", "ablation.variants=full,frozen_decoder,lora_decoder")  # the GPU decoder is frozen already
    assert [r.variant for r in planned_runs(kaggle)] == ["full", "lora_decoder"]
    assert "frozen_decoder" in [r.variant for r in planned_runs(load_config("smoke", "ablation.variants=frozen_decoder"))]
    assert all(name in VARIANTS for name in load_config("kaggle").ablation.variants)


def test_choose_runs_takes_the_notebook_parameters():
    config = ablations.choose_runs(load_config("smoke"), "full,no_global_head", "5")
    assert config.ablation.variants == ("full", "no_global_head") and config.ablation.seeds == (5,)
    assert ablations.choose_runs(config).ablation == config.ablation
    with pytest.raises(ValueError, match="unknown ablation variant"):
        ablations.choose_runs(config, "full,everything")


# ------------------------------------------------------------ what the numbers say


def _per_clip(values, n=60) -> pd.Series:
    return pd.Series(values, index=[f"clip{i:03d}" for i in range(n)], dtype=float)


def test_a_known_effect_is_detected_and_a_zero_effect_reads_no_detectable_effect():
    rng = np.random.default_rng(0)
    full = rng.gamma(2.0, 30.0, size=60)
    noise = rng.normal(0.0, 8.0, size=30)
    scores = {"full": _per_clip(full), "no_object_head": _per_clip(full - 25.0 + rng.normal(0, 5, 60)),
              "no_action_head": _per_clip(full + np.concatenate([noise, -noise]))}  # differences that sum to 0
    rows = compare_variants(scores, {name: VARIANTS[name].change for name in scores})
    assert rows["full"]["reference"] and "paired_test" not in rows["full"]
    hurt, none = rows["no_object_head"], rows["no_action_head"]
    assert hurt["paired_test"]["high"] < 0 and hurt["paired_test"]["p_value"] < 0.01
    assert hurt["sentence"].startswith("Removing the ObjectHead lowers the score") and "full model does better" in hurt["sentence"]
    assert none["paired_test"]["low"] <= 0 <= none["paired_test"]["high"]
    assert none["sentence"].startswith("Removing the ActionHead: no detectable effect")
    assert hurt["CIDEr"] == pytest.approx(scores["no_object_head"].mean())
    assert hurt["interval"]["low"] < hurt["CIDEr"] < hurt["interval"]["high"]


def test_the_sentences_name_random_features_collapse_and_weak_evidence():
    test = {"difference": 1.0, "low": -2.0, "high": 4.0, "p_value": 0.5, "clips": 60}
    text = effect_sentence("removing the ObjectHead", test, 51.0, 50.0, random_features=True, collapsed=True)
    assert "no detectable effect" in text and "random backbones" in text and "collapsed" in text
    weak = effect_sentence("fewer prefix queries", {**test, "low": 0.5, "p_value": 0.08}, 51.0, 50.0)
    assert "weak evidence" in weak
    up = effect_sentence("fewer prefix queries", {**test, "low": 0.5, "p_value": 0.01}, 51.0, 50.0)
    assert up.startswith("Fewer prefix queries raises the score")


def test_seed_summary_reports_mean_sd_range_and_the_main_result_as_one_draw():
    summary = seed_summary({0: 70.0, 1: 80.0, 2: 90.0}, {"CIDEr": 88.0, "low": 75.0, "high": 100.0}, same_schedule=True)
    assert (summary["mean"], summary["sd"], summary["min"], summary["max"]) == (80.0, 10.0, 70.0, 90.0)
    assert "80.0 ± 10.0" in summary["sentence"] and "inside the seeds' range" in summary["sentence"]
    other = seed_summary({0: 70.0, 1: 80.0}, {"CIDEr": 95.0, "low": 80.0, "high": 110.0}, same_schedule=False)
    assert "another schedule" in other["sentence"] and "inside" not in other["sentence"]
    assert seed_summary({0: 70.0})["sd"] is None


# ------------------------------------------------------------ saved runs


def _scores(values: list[float]) -> CaptionScores:
    ids = [f"clip{i}" for i in range(len(values))]
    per_clip = pd.DataFrame({"CIDEr": values, "prediction": ["a caption"] * len(values)}, index=pd.Index(ids, name="videoID"))
    return CaptionScores({"CIDEr": float(np.mean(values)), "BLEU-4": 1.0}, per_clip,
                         ScoredSet("mini", "public_test", len(ids), 10, 10, 10.0, ids))


def test_a_saved_run_is_read_back_only_with_the_same_settings(tmp_path):
    run = PlannedRun("no_object_head", 0)
    config = variant_config(load_config("smoke"), run.variant, run.seed)
    signature = ablations.run_signature(config, "public_test", "last")
    result = ablations.RunResult(run, config.train.run_name, "ckpt", _scores([10.0, 20.0, 30.0]),
                                 {"clip0": "a", "clip1": "b", "clip2": "c"}, {"train": 1.0}, ablations.schedule_of(config))
    ablations.save_run(tmp_path / run.key, result, signature)
    again = ablations.load_run(tmp_path / run.key, run, signature)
    assert again.reused and again.cider == 20.0 and again.predictions == result.predictions
    longer = variant_config(load_config("smoke", "ablation.epochs=9"), run.variant, run.seed)
    assert ablations.load_run(tmp_path / run.key, run, ablations.run_signature(longer, "public_test", "last")) is None
    assert ablations.load_run(tmp_path / "elsewhere", run, signature) is None


# ------------------------------------------------------------ the runner, end to end on tiny data


DIMS = {"temporal": 8, "object": 6, "context": 5}
TINY = ("data.mini_train_clips=12 data.mini_validation_clips=3 data.mini_test_clips=6 data.mini_frame_size=32 "
        "data.mini_fps=4 data.mini_seconds=1 generation.num_beams=1 generation.max_new_tokens=6 text.pos_model=rules "
        "heads.hidden_size=16 heads.num_heads=2 heads.num_object_queries=2 heads.object_encoder_layers=1 "
        "qformer.num_queries=3 qformer.num_layers=1 qformer.num_heads=2 qformer.intermediate_size=32 "
        "decoder.small_hidden_size=16 decoder.small_layers=1 decoder.small_heads=2 decoder.small_intermediate_size=32 "
        "decoder.small_moe_intermediate_size=16 train.batch_size=8 ablation.epochs=1 ablation.seeds=0,1 "
        "ablation.variants=full,no_object_head ablation.fewer_queries=1")


@pytest.fixture
def tiny_study(tmp_path, monkeypatch):
    """A tiny mini dataset with random stored features; text targets from a bag-of-words stand-in (no model load)."""
    from qvidcap.data.vatex import load_clips
    from qvidcap.features.clip_features import ClipFeatures
    from qvidcap.features.store import FeatureStore
    from qvidcap.training import train as train_module
    from synthetic_training import BagOfWordsEncoder

    monkeypatch.setattr(train_module, "build_text_targets",
                        partial(train_module.build_text_targets, sentence_model=BagOfWordsEncoder()))
    config = load_config("smoke", f"paths.output_dir={tmp_path}/out paths.data_dir={tmp_path}/data {TINY}")
    env = Environment("local", "cpu", 0, "", tmp_path / "data", tmp_path / "out", None)
    store = FeatureStore(env.output_dir / "features" / "mini")
    store.initialise({"feature_dims": DIMS})
    generator = torch.Generator().manual_seed(0)
    with store.writer(shard_clips=8) as writer:
        for i, record in enumerate(r for split in ("train", "validation", "public_test")
                                   for r in load_clips(config, env, split).records):
            n = i % 3
            writer.add(ClipFeatures(record.video_id, torch.randn(2, 8, generator=generator),
                                    torch.randn(2, 5, generator=generator), torch.randn(n, 6, generator=generator),
                                    torch.zeros(n, 4), torch.ones(n), torch.zeros(n, dtype=torch.long),
                                    torch.zeros(n, dtype=torch.long)))
    return config, env


@pytest.mark.slow  # about 20 s on 2 quiet cores (28 s measured on a busy one); the chain test runs notebook 09 too
@needs_java
def test_the_runner_trains_scores_saves_and_a_rerun_skips_what_is_done(tiny_study, monkeypatch):
    from qvidcap.training import train as train_module

    config, env = tiny_study
    study = ablations.run_ablations(config, env)
    assert list(study.results) == ["full-seed0", "full-seed1", "no_object_head-seed0"] and not study.left
    for key, result in study.results.items():
        saved = study.directory / key
        assert (saved / "run.json").is_file() and (saved / "per_clip.csv").is_file() and not result.reused
        assert (env.output_dir / "checkpoints" / result.run_name / "last" / "config.json").is_file()
    rebuilt = json.loads((env.output_dir / "checkpoints" / "qvidcap-ablation-no_object_head-seed0" / "last" /
                          "config.json").read_text())
    assert rebuilt["heads"]["object_head"] is False  # the checkpoint carries the variant
    results = ablations.write_results(study, None, config)
    assert set(results["variants"]) == {"full", "no_object_head"} and results["seeds"]["count"] == 2
    assert "paired_test" in results["variants"]["no_object_head"] and results["variants"]["full"]["interval"]
    assert (study.directory / "results.json").is_file()
    assert ablations.read_results(config, env)["variants"].keys() == results["variants"].keys()

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(train_module, "train", no_training)
    again = ablations.run_ablations(config, env)
    assert all(r.reused for r in again.results.values())
    assert {k: r.cider for k, r in again.results.items()} == {k: r.cider for k, r in study.results.items()}
    assert ablations.plan_table(config, env)["saved"].all()


def test_at_a_passed_deadline_the_runner_stops_before_training_and_says_what_is_left(tiny_study, monkeypatch):
    from qvidcap.runtime.deadline import ENV_VAR, read_stop

    config, env = tiny_study
    monkeypatch.setenv(ENV_VAR, "1.0")  # long past
    study = ablations.run_ablations(config, env)
    assert not study.results and study.left == ["full-seed0", "full-seed1", "no_object_head-seed0"]
    stop = read_stop(env.output_dir)
    assert stop.stage == "ablations" and "full-seed0" in stop.left


def test_a_rerun_reads_finished_runs_back_and_trains_only_the_rest(tiny_study, monkeypatch):
    """Java-free: two runs saved as done, the third trained by a stand-in that stops at the deadline."""
    from qvidcap.training import train as train_module
    from qvidcap.training.train import TrainResult

    config, env = tiny_study
    directory = ablations.ablation_dir(config, env, "public_test")
    done = planned_runs(config)[:2]
    for run in done:
        run_config = variant_config(config, run.variant, run.seed)
        result = ablations.RunResult(run, run_config.train.run_name, "ckpt", _scores([10.0, 20.0]), {"clip0": "a", "clip1": "b"},
                                     {"train": 1.0}, ablations.schedule_of(run_config))
        ablations.save_run(directory / run.key, result, ablations.run_signature(run_config, "public_test", "last"))
    trained = []

    def stand_in(run_config, env, resume=True, data=None, **kwargs):
        trained.append(run_config.train.run_name)
        return TrainResult(env.output_dir, env.output_dir, None, pd.DataFrame(), pd.DataFrame(), 0, "deadline", {})

    monkeypatch.setattr(train_module, "train", stand_in)
    monkeypatch.setattr(train_module, "prepare_training_data", lambda config, env: object())
    monkeypatch.setattr(ablations, "require_java", lambda: None)
    monkeypatch.setattr(ablations._SharedMeteor, "start", lambda self: None)
    study = ablations.run_ablations(config, env)
    assert trained == ["qvidcap-ablation-no_object_head-seed0"]
    assert [k for k, r in study.results.items() if r.reused] == ["full-seed0", "full-seed1"]
    assert study.left == ["no_object_head-seed0"] and "while training no_object_head-seed0" in study.stopped
