"""`qvidcap evaluate` end to end on a tiny mini dataset: random features, a random checkpoint, real scoring."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from qvidcap.config import load_config
from qvidcap.runtime.env import detect_environment
from qvidcap.features.clip_features import ClipFeatures
from qvidcap.evaluation.published import run_table

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="pycocoevalcap needs Java")
NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"

DIMS = {"temporal": 8, "object": 6, "context": 5}


def _random_features(video_id: str, generator: torch.Generator, num_objects: int) -> ClipFeatures:
    return ClipFeatures(
        video_id=video_id,
        temporal=torch.randn(2, DIMS["temporal"], generator=generator),
        context=torch.randn(2, DIMS["context"], generator=generator),
        objects=torch.randn(num_objects, DIMS["object"], generator=generator),
        boxes=torch.zeros(num_objects, 4), scores=torch.ones(num_objects),
        labels=torch.zeros(num_objects, dtype=torch.long), object_keyframe=torch.zeros(num_objects, dtype=torch.long),
    )


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A 6/2/5-clip mini dataset, features for every clip but the last test clip, and an untrained checkpoint."""
    from qvidcap.model.checkpoint import save_checkpoint
    from qvidcap.data.vatex import load_clips
    from qvidcap.features.store import FeatureStore
    from qvidcap.model import build_captioner, build_tokenizer, link_widths

    root = tmp_path_factory.mktemp("evaluate")
    config = load_config("smoke", f"paths.output_dir={root}/out paths.data_dir={root}/data data.mini_train_clips=6 "
                                  "data.mini_validation_clips=2 data.mini_test_clips=5 data.mini_frame_size=32 "
                                  "data.mini_fps=4 data.mini_seconds=1 generation.num_beams=2 generation.max_new_tokens=6 "
                                  "generation.batch_size=3")
    env = detect_environment(config)
    train, test = load_clips(config, env, "train"), load_clips(config, env, "public_test")
    generator = torch.Generator().manual_seed(0)
    store = FeatureStore(env.output_dir / "features" / "mini")
    with store.writer(shard_clips=4) as writer:
        for i, record in enumerate(train.records + test.records[:-1]):
            writer.add(_random_features(record.video_id, generator, num_objects=i % 3))
    tokenizer = build_tokenizer(config, [c for r in train.records for c in r.captions])
    model_config = link_widths(config, DIMS, text_embed_dim=4)
    torch.manual_seed(0)
    save_checkpoint(env.output_dir / "checkpoints" / config.train.run_name / "best",
                    build_captioner(model_config, tokenizer), model_config, tokenizer)
    return config, env, test


@pytest.fixture(scope="module")
def report(study):
    from qvidcap.evaluation.evaluate import evaluate

    config, env, _ = study
    return evaluate(config, env)


@needs_java
def test_metrics_json_holds_every_system_on_one_stated_set(study, report):
    config, env, test = study
    directory = env.output_dir / "eval" / config.train.run_name / "public_test"
    assert report.metrics_path == directory / "metrics.json"
    metrics = json.loads(report.metrics_path.read_text())
    assert set(metrics["systems"]) == {"trained", "blind", "untrained"}
    for scores in metrics["systems"].values():
        assert set(scores) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr"}
    scored = metrics["scored_set"]
    assert (scored["dataset"], scored["split"], scored["num_clips"], scored["refs_per_clip_min"]) == ("mini", "public_test", 4, 10)
    assert metrics["missing_features"] == [test.records[-1].video_id]
    assert (directory / "clip_ids.txt").read_text().split() == [r.video_id for r in test.records[:-1]]
    assert metrics["blind_caption"] and metrics["generation"] == {"num_beams": 2, "max_new_tokens": 6}
    assert metrics["diversity"]["blind"]["distinct_captions"] == 1 and metrics["diversity"]["blind"]["distinct_share"] == 0.25


@needs_java
def test_predictions_are_written_in_the_vatex_list_form(study, report):
    config, env, test = study
    directory = report.directory
    for system in ("trained", "blind", "untrained"):
        saved = json.loads((directory / system / "predictions.json").read_text())
        assert [p["videoID"] for p in saved] == [r.video_id for r in test.records[:-1]]
        assert all(isinstance(p["caption"], str) for p in saved)
        assert (directory / system / "per_clip.csv").is_file() and (directory / system / "scores.json").is_file()
    blind = json.loads((directory / "blind" / "predictions.json").read_text())
    assert len({p["caption"] for p in blind}) == 1


@needs_java
def test_report_table_and_the_run_table_apart_from_the_published_one(report):
    table = report.table()
    assert list(table.index) == ["trained", "blind", "untrained"]
    assert "CIDEr" in table.columns and "SPICE" not in table.columns
    metrics = json.loads(report.metrics_path.read_text())
    run = run_table(metrics["systems"], metrics["scored_set"], metrics["uncertainty"]["intervals"])
    assert list(run.index) == ["trained", "blind", "untrained"]
    assert run.loc["trained", "comparable with VATEX"].startswith("different data")
    assert run.loc["trained", "training"] == "cross-entropy" and run.loc["trained", "scored on"].startswith("mini public_test")
    low, high = map(float, run.loc["trained", "CIDEr 95% interval"].split("-"))
    assert low <= run.loc["trained", "CIDEr"] <= high


@needs_java
def test_cli_evaluate(study, capsys):
    from qvidcap.cli import main

    config, env, _ = study
    overrides = [f"paths.output_dir={env.output_dir}", f"paths.data_dir={env.data_dir}", "data.mini_train_clips=6",
                 "data.mini_validation_clips=2", "data.mini_test_clips=5", "data.mini_frame_size=32", "data.mini_fps=4",
                 "data.mini_seconds=1", "generation.num_beams=1", "generation.max_new_tokens=4"]
    argv = ["evaluate", "--split", "public_test", "--no-baselines",
            "--checkpoint", str(env.output_dir / "checkpoints" / config.train.run_name / "best")]
    for item in overrides:
        argv += ["--set", item]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "scored set: mini public_test: 4 clips, 10 references per clip" in out and "CIDEr" in out


def test_missing_checkpoint_is_a_clear_error(study, tmp_path):
    from qvidcap.model.checkpoint import CheckpointError
    from qvidcap.evaluation.evaluate import evaluate

    _, env, _ = study
    config = load_config("smoke", f"paths.output_dir={tmp_path} paths.data_dir={env.data_dir}")
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        evaluate(config, detect_environment(config))


@needs_java
def test_saved_report_reads_back(study, report):
    from qvidcap.evaluation.evaluate import load_predictions, load_report

    config, env, _ = study
    again = load_report(config, env)
    metrics = json.loads(again.metrics_path.read_text())
    assert set(again.scores) == set(metrics["systems"])
    for name, scores in again.scores.items():
        assert scores.corpus == metrics["systems"][name]
        assert again.predictions[name] == load_predictions(again.directory / name / "predictions.json")
        assert list(scores.per_clip.index) == scores.scored_set.video_ids


@pytest.mark.parametrize("name", ["06_evaluate.ipynb", "07_error_analysis.ipynb"])
def test_notebooks_are_clean_and_parameterised(name):
    import nbformat

    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(notebook)
    assert (notebook.nbformat, notebook.nbformat_minor) == (4, 5)
    assert notebook.metadata.kernelspec.name == "python3"
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", [])
    assert 'profile = "' in code[0].source and 'overrides = "' in code[0].source  # notebook 00's choice or a profile
    assert "bootstrap(profile, overrides" in code[1].source  # the set-up cell every notebook opens with
    assert all(not c.outputs and c.execution_count is None for c in code)
    assert all("def " not in c.source and len(c.source.splitlines()) <= 10 for c in code)


def test_published_rows_and_comparability():
    from qvidcap.evaluation.published import comparability, published_table

    table = published_table()
    assert table.loc["SwinBERT (Lin et al., CVPR 2022)", "CIDEr"] == 73.0
    assert not any("VATEX baseline" in m for m in table.index)  # could not be checked against the paper: left out
    assert (table["source"] != "").all() and not table["notes"].str.contains("not yet checked").any()
    assert comparability("vatex", "public_test", 6000, 10) == "comparable: full VATEX public test"
    assert "partial public test (4478 of 6000" in comparability("vatex", "public_test", 4478, 10)
    assert comparability("vatex", "validation", 3000, 10).startswith("different split")
    assert comparability("mini", "public_test", 60, 10).startswith("different data")


class _StopAfter:
    """A deadline reached after `calls` checks: the captioning loop stops between batches."""

    def __init__(self, calls: int):
        self.calls = calls

    def reached(self) -> bool:
        self.calls -= 1
        return self.calls < 0


class _CountingModel:
    """Wraps a captioner and counts the clips it is asked to caption."""

    def __init__(self, model):
        self.model, self.clips = model, 0

    def eval(self):
        self.model.eval()
        return self

    def generate(self, **kwargs):
        self.clips += kwargs["temporal"].shape[0]
        return self.model.generate(**kwargs)


def _model_and_store(study):
    from qvidcap.evaluation.evaluate import open_feature_store, split_clips
    from qvidcap.model.checkpoint import load_captioner

    config, env, _ = study
    model, _, _ = load_captioner(env.output_dir / "checkpoints" / config.train.run_name / "best", "cpu")
    store = open_feature_store(config, env)
    return model, store, list(split_clips(config, env, "public_test", store).references)


def test_two_ranks_caption_disjoint_shards_and_rank_0_merges_them(study, tmp_path):
    from qvidcap.evaluation.evaluate import caption_split, generate_captions, merge_shards, shard_of

    config, _, _ = study
    model, store, ids = _model_and_store(study)
    single = generate_captions(model, store, ids, config.generation)
    meta = {"checkpoint": "x", "num_beams": 2, "max_new_tokens": 6}
    assert merge_shards(tmp_path, ids, 2, meta) is None  # no shard yet: nothing to merge
    runs = [caption_split(model, store, ids, tmp_path, config.generation, meta, rank=r, world=2) for r in (0, 1)]
    assert [sorted(r.predictions) for r in runs] == [sorted(shard_of(ids, r, 2)) for r in (0, 1)]
    assert not set(runs[0].predictions) & set(runs[1].predictions)
    merged = merge_shards(tmp_path, ids, 2, meta)
    assert list(merged) == ids and merged == single
    with pytest.raises(RuntimeError, match="was made with"):
        merge_shards(tmp_path, ids, 2, {**meta, "num_beams": 5})


def test_captioning_stops_at_the_deadline_and_a_rerun_continues(study, tmp_path):
    from qvidcap.evaluation.evaluate import caption_split, generate_captions

    config, _, _ = study  # generation.batch_size = 3, 4 clips: two batches
    model, store, ids = _model_and_store(study)
    single = generate_captions(model, store, ids, config.generation)
    meta = {"checkpoint": "x"}
    first = _CountingModel(model)
    stopped = caption_split(first, store, ids, tmp_path, config.generation, meta, deadline=_StopAfter(1))
    assert not stopped.complete and first.clips == 3 and list(stopped.predictions) == ids[:3]
    saved = json.loads((tmp_path / "predictions.partial.rank0.json").read_text())
    assert saved["checkpoint"] == "x" and list(saved["predictions"]) == ids[:3]
    again = _CountingModel(model)
    done = caption_split(again, store, ids, tmp_path, config.generation, meta)
    assert done.complete and again.clips == 1 and done.predictions == single
    assert not (tmp_path / "predictions.partial.rank0.json").exists()
    other = _CountingModel(model)  # other generation settings: nothing saved is reused
    caption_split(other, store, ids, tmp_path / "other", config.generation, {"checkpoint": "y"})
    assert other.clips == 4


def test_evaluate_at_a_passed_deadline_records_the_stop(study, monkeypatch):
    from qvidcap.evaluation.evaluate import evaluate
    from qvidcap.runtime.deadline import ENV_VAR, read_stop

    config, env, _ = study
    monkeypatch.setenv(ENV_VAR, "1")
    assert evaluate(config, env) is None
    stop = read_stop(env.output_dir)
    assert stop.stage == "evaluation" and "trained 0 (of 4 clips over 1 rank(s))" in stop.done


def test_eval_max_clips_bounds_the_scored_set(study):
    from qvidcap.config import apply_overrides
    from qvidcap.evaluation.evaluate import open_feature_store, split_clips

    config, env, test = study
    bounded = apply_overrides(config, {"eval.max_clips": 2})
    clips = split_clips(bounded, env, "public_test", open_feature_store(bounded, env))
    assert list(clips.references) == [r.video_id for r in test.records[:2]]


@needs_java
def test_an_scst_checkpoint_is_scored_on_the_same_clips_and_tested_against_cross_entropy(study, report):
    import dataclasses

    from qvidcap.evaluation.evaluate import evaluate, scst_comparison, scst_note, scst_verdict
    from qvidcap.model import build_captioner
    from qvidcap.model.checkpoint import load_captioner, save_checkpoint

    config, env, test = study
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, run_name="scst-check"))
    ce = env.output_dir / "checkpoints" / "qvidcap" / "best"
    assert "No self-critical (SCST) checkpoint" in scst_note(config, env, ce) and "qvidcap train-scst" in scst_note(config, env, ce)
    _, model_config, tokenizer = load_captioner(ce)
    torch.manual_seed(1)  # other weights than the CE checkpoint: other captions
    save_checkpoint(env.output_dir / "checkpoints" / "scst-check-scst" / "best", build_captioner(model_config, tokenizer),
                    model_config, tokenizer, trainer_state={"init_checkpoint": str(ce), "epoch": 2})
    assert "fine-tuned from the cross-entropy checkpoint scored above" in scst_note(config, env, ce)
    scored = evaluate(config, env, checkpoint=ce, baselines=False)
    assert list(scored.table().index) == ["trained", "scst"]
    metrics = json.loads(scored.metrics_path.read_text())
    saved = json.loads((scored.directory / "scst" / "predictions.json").read_text())
    assert [p["videoID"] for p in saved] == [r.video_id for r in test.records[:-1]]
    assert scored.scores["scst"].scored_set.video_ids == scored.scores["trained"].scored_set.video_ids
    gain = metrics["uncertainty"]["paired_tests"]["scst - trained"]
    assert gain["difference"] == pytest.approx(metrics["systems"]["scst"]["CIDEr"] - metrics["systems"]["trained"]["CIDEr"], abs=1e-6)
    table = scst_comparison(scored, metrics["uncertainty"])
    assert list(table.index) == ["cross-entropy", "SCST"] and table.loc["SCST", "CIDEr"] == round(metrics["systems"]["scst"]["CIDEr"], 2)
    verdict = scst_verdict(scored, metrics["uncertainty"])
    expected = "raises" if gain["low"] > 0 else "lowers" if gain["high"] < 0 else "no detectable difference"
    assert expected in verdict and "mini dataset" in verdict
    assert scst_comparison(report, json.loads(report.metrics_path.read_text())["uncertainty"]).empty


def test_the_scst_verdict_calls_repetitive_short_captions_degraded():
    from types import SimpleNamespace

    from qvidcap.evaluation.evaluate import scst_verdict

    corpus = {"BLEU-4": 10.0, "METEOR": 20.0, "ROUGE-L": 40.0, "CIDEr": 50.0}
    ce = {f"c{i}": f"a {colour} circle moves left slowly" for i, colour in enumerate(["red", "blue", "green", "pink"])}
    hacked = {f"c{i}": "a red red red" for i in range(4)}
    report = SimpleNamespace(scores={"trained": SimpleNamespace(corpus=corpus), "scst": SimpleNamespace(corpus=corpus)},
                             predictions={"trained": ce, "scst": hacked}, dataset="vatex")
    interval = {"CIDEr": {"low": 40.0, "high": 60.0}}
    uncertainty = {"intervals": {"trained": interval, "scst": interval},
                   "paired_tests": {"scst - trained": {"difference": 5.0, "low": 1.0, "high": 9.0, "p_value": 0.01, "clips": 4}}}
    verdict = scst_verdict(report, uncertainty)
    assert "**raises**" in verdict and "**degrade**" in verdict and "reward hacking" in verdict
    assert "distinct captions fell from 4 to 1" in verdict and "0% → 100%" in verdict and "mini dataset" not in verdict
