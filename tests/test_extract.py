"""The extraction driver: good clips stored, bad ones recorded and skipped, re-runs free, workers apart."""
import numpy as np
import pytest

from qvidcap.config import load_config
from qvidcap.data.records import ClipRecord
from qvidcap.runtime.env import detect_environment
from qvidcap.features.extract import extract_features, launcher_rank
from qvidcap.features.store import FeatureStore, FeatureStoreError
from qvidcap.video import write_video

TINY = {"sampling.temporal_size": 32, "sampling.keyframe_size": 48, "sampling.temporal_frames": 4,
        "sampling.num_keyframes": 2, "features.small_hidden_size": 32, "features.small_layers": 1,
        "features.small_heads": 2, "features.batch_clips": 2, "features.shard_clips": 2, "features.num_workers": 2}


@pytest.fixture()
def setup(tmp_path):
    config = load_config("smoke", {**TINY, "paths.output_dir": str(tmp_path / "out"), "paths.data_dir": str(tmp_path / "data")})
    env = detect_environment(config)
    videos = tmp_path / "videos"
    videos.mkdir()
    rng = np.random.default_rng(0)
    records = []
    for i in range(5):
        path = write_video(videos / f"good{i}.mp4", rng.integers(0, 255, (6 + i, 40 + 2 * i, 50, 3), dtype=np.uint8))
        records.append(ClipRecord(f"good{i}", "train", ["a caption"], video_path=path))
    (videos / "empty.mp4").write_bytes(b"")
    (videos / "text.mp4").write_text("not a video at all " * 20)
    truncated = videos / "truncated.mp4"
    truncated.write_bytes((videos / "good4.mp4").read_bytes()[:300])
    for name in ("empty", "text", "truncated"):
        records.append(ClipRecord(name, "train", ["a caption"], video_path=videos / f"{name}.mp4"))
    records.append(ClipRecord("novideo", "train", ["a caption"], video_path=None))
    return config, env, records


def test_good_clips_extracted_bad_ones_recorded(setup):
    config, env, records = setup
    report = extract_features(config, env, "train", clips=records, dataset="mini")
    assert (report.extracted, report.failed, report.already_stored) == (5, 4, 0)
    store = FeatureStore(env.output_dir / "features" / "mini")
    assert store.video_ids == [f"good{i}" for i in range(5)]
    assert sorted(f["video_id"] for f in store.failures) == ["empty", "novideo", "text", "truncated"]
    reasons = {f["video_id"]: f["reason"] for f in store.failures}
    assert "empty" in reasons["empty"] and "no video file" in reasons["novideo"]
    assert store.get("good3").temporal.shape == (2, 32)
    assert (store.extractors_dir / "extractors.json").is_file()


def test_rerun_costs_nothing_and_resumes(setup):
    config, env, records = setup
    extract_features(config, env, "train", clips=records[:3], dataset="mini")
    report = extract_features(config, env, "train", clips=records[:5], dataset="mini")
    assert (report.already_stored, report.extracted) == (3, 2)
    again = extract_features(config, env, "train", clips=records[:5], dataset="mini")
    assert (again.already_stored, again.extracted) == (5, 0)


def test_second_run_uses_the_stores_saved_extractors(setup, monkeypatch):
    config, env, records = setup
    extract_features(config, env, "train", clips=records[:2], dataset="mini")
    first = FeatureStore(env.output_dir / "features" / "mini").get("good0")
    store_root = env.output_dir / "features" / "mini"
    (store_root / "shards" / "w00-00000.json").unlink()  # forget good0/good1, keep the saved extractors
    extract_features(config, env, "train", clips=records[:2], dataset="mini")
    again = FeatureStore(store_root).get("good0")
    assert (first.temporal == again.temporal).all() and (first.objects == again.objects).all()


def test_two_workers_split_the_clips(setup, tmp_path):
    config, env, records = setup
    config.features.batch_clips = 1  # the detector pads a batch to its largest frame: batch-mates change features
    good = records[:5]
    reports = [extract_features(config, env, "train", clips=good, dataset="mini", worker_index=w, num_workers=2)
               for w in (0, 1)]
    assert [r.extracted for r in reports] == [3, 2]
    two = FeatureStore(env.output_dir / "features" / "mini")
    assert two.video_ids == [r.video_id for r in good]
    one = load_config("smoke", {**TINY, "features.batch_clips": 1, "paths.output_dir": str(tmp_path / "one")})
    extract_features(one, detect_environment(one), "train", clips=good, dataset="mini")
    _same_features(two, FeatureStore(tmp_path / "one" / "features" / "mini"))


def test_other_extractors_cannot_extend_the_store(setup):
    config, env, records = setup
    extract_features(config, env, "train", clips=records[:1], dataset="mini")
    other = load_config("smoke", {**TINY, "features.max_objects": 5, "paths.output_dir": str(env.output_dir)})
    with pytest.raises(FeatureStoreError, match="filled by other extractors"):
        extract_features(other, env, "train", clips=records[:2], dataset="mini")


def test_bad_worker_index():
    config = load_config()
    with pytest.raises(ValueError, match="worker_index"):
        extract_features(config, None, "train", worker_index=2, num_workers=2, clips=[])


def test_launcher_rank_reads_accelerate_environment(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert launcher_rank() is None
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert launcher_rank() == (1, 2, 1)


def test_cli_extracts_given_splits(setup, monkeypatch, capsys):
    config, env, records = setup
    monkeypatch.setattr("qvidcap.data.load_clips", lambda c, e, split, **kw: _clip_set(split, records[:2]))
    from qvidcap.cli import main

    code = main(["extract", "--split", "train", "--set", f"paths.output_dir={env.output_dir}",
                 *[a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]])
    assert code == 0 and "'extracted': 2" in capsys.readouterr().out


def _clip_set(split, records):
    from qvidcap.data import ClipSet

    return ClipSet(split=split, source="mini", records=records)



def test_extraction_benchmark_prints_its_table(setup, capsys):
    import argparse

    from qvidcap.bench import extraction

    config, env, records = setup
    parser = argparse.ArgumentParser()
    extraction.add_arguments(parser)
    args = parser.parse_args(["--clips", "2", "--videos", str(records[0].video_path.parent)])
    assert extraction.main(args, config) == 0
    out = capsys.readouterr().out
    for line in ("decode only", "pipeline", "floor", "naive", "VideoMAE per clip", "VATEX clips"):
        assert line in out


def test_a_clip_the_models_fail_on_is_skipped_not_the_batch(setup):
    from qvidcap.features.extractors import build_extractors

    config, env, records = setup
    extractors = build_extractors(config)
    real_extract = extractors.extract

    def extract(clips):
        if any(c.video_id == "good1" for c in clips):
            raise RuntimeError("model cannot take this frame")
        return real_extract(clips)

    extractors.extract = extract
    report = extract_features(config, env, "train", clips=records[:4], dataset="mini", extractors=extractors)
    assert (report.extracted, report.failed) == (3, 1)
    assert "model cannot take this frame" in report.failures[0]["reason"]
    assert FeatureStore(env.output_dir / "features" / "mini").video_ids == ["good0", "good2", "good3"]


# ------------------------------------------------------------ the deadline, several processes


def _same_features(store_a, store_b, exact=True):
    """The same clips with the same features; `exact=False` allows float rounding (other batches, threads)."""
    import torch

    assert store_a.video_ids == store_b.video_ids and store_a.video_ids
    for video_id in store_a.video_ids:
        a, b = store_a.get(video_id), store_b.get(video_id)
        for name in ("temporal", "context", "objects", "boxes", "scores", "labels", "object_keyframe"):
            x, y = getattr(a, name), getattr(b, name)
            if exact or not x.is_floating_point():
                assert x.shape == y.shape and (x == y).all(), (video_id, name)
            else:
                torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-4)  # seen: 8e-6 on boxes


class _ReachedAfter:
    """A deadline that is reached at the `n`-th check."""

    def __init__(self, n):
        import time

        self.checks, self.n, self.at = 0, n, time.time() - 1

    def reached(self):
        self.checks += 1
        return self.checks >= self.n


def test_a_deadline_stop_then_resume_gives_the_uninterrupted_store(setup, tmp_path, monkeypatch):
    from qvidcap.features import extract
    from qvidcap.runtime.deadline import read_stop

    config, env, records = setup
    good = records[:5]
    reference = load_config("smoke", {**TINY, "paths.output_dir": str(tmp_path / "reference")})
    extract_features(reference, detect_environment(reference), "train", clips=good, dataset="mini")
    deadline = _ReachedAfter(2)  # checked before the first batch, then after it
    monkeypatch.setattr(extract.Deadline, "from_env", classmethod(lambda cls: deadline))
    stopped = extract_features(config, env, "train", clips=good, dataset="mini")
    assert stopped.stopped and stopped.extracted == 2
    stop = read_stop(env.output_dir)
    assert (stop.stage, stop.done, stop.left) == ("extraction", "train: 2 of 5 clips stored", "train: 3 clips")
    later = extract_features(config, env, "validation", clips=[], dataset="mini")  # nothing to do: no note
    assert not later.stopped
    monkeypatch.setattr(extract.Deadline, "from_env", classmethod(lambda cls: _ReachedAfter(10 ** 9)))
    resumed = extract_features(config, env, "train", clips=good, dataset="mini")
    assert (resumed.stopped, resumed.already_stored, resumed.extracted) == (False, 2, 3)
    _same_features(FeatureStore(env.output_dir / "features" / "mini"), FeatureStore(tmp_path / "reference" / "features" / "mini"))


def test_after_the_deadline_later_splits_join_the_note(setup, monkeypatch):
    from qvidcap.features import extract
    from qvidcap.runtime.deadline import read_stop

    config, env, records = setup
    monkeypatch.setattr(extract.Deadline, "from_env", classmethod(lambda cls: _ReachedAfter(1)))
    first = extract_features(config, env, "train", clips=records[:3], dataset="mini")
    second = extract_features(config, env, "public_test", clips=records[3:5], dataset="mini")
    assert first.stopped and second.stopped and first.extracted == second.extracted == 0
    stop = read_stop(env.output_dir)
    assert stop.done == "train: 0 of 3 clips stored, public_test: 0 of 2 clips stored"
    assert stop.left == "train: 3 clips, public_test: 2 clips"
    assert not (env.output_dir / "features" / "mini" / "meta.json").exists()  # models never loaded


def test_a_second_writer_of_the_same_worker_index_is_refused(setup):
    import fcntl

    config, env, records = setup
    shards = env.output_dir / "features" / "mini" / "shards"
    shards.mkdir(parents=True)
    with open(shards / ".w00.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(FeatureStoreError, match="worker 0 .* being written by another process"):
            extract_features(config, env, "train", clips=records[:1], dataset="mini")
        extract_features(config, env, "train", clips=records[:2], dataset="mini", worker_index=1, num_workers=2)
    assert FeatureStore(env.output_dir / "features" / "mini").video_ids == ["good1"]
    extract_features(config, env, "train", clips=records[:1], dataset="mini")  # released: worker 0 may write again


@pytest.mark.slow  # two processes each import torch and build the extractors: about a minute on 2 cores
def test_two_processes_through_accelerate_fill_the_store_one_process_would(tmp_path):
    """The Kaggle kernel's own launch line (accelerate spawns the ranks; on CPU here)."""
    import os
    import shlex
    import subprocess
    import sys
    from pathlib import Path

    from qvidcap.runtime.kaggle_kernel import TWO_GPUS

    from qvidcap.data.minidata import generate_mini_dataset

    mini = {"data.mini_train_clips": 5, "data.mini_validation_clips": 1, "data.mini_test_clips": 1,
            "data.mini_frame_size": 32, "data.mini_fps": 4, "data.mini_seconds": 1}
    settings = {**TINY, **mini, "paths.data_dir": str(tmp_path / "data"), "features.num_workers": 1}
    one = load_config("smoke", {**settings, "paths.output_dir": str(tmp_path / "one")})
    generate_mini_dataset(one.data, tmp_path / "data" / "mini")  # once, before the processes read it
    extract_features(one, detect_environment(one), "train")
    args = [a for k, v in {**settings, "paths.output_dir": str(tmp_path / "two")}.items() for a in ("--set", f"{k}={v}")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    launch = shlex.split(TWO_GPUS)
    launch[0] = str(Path(sys.executable).parent / launch[0])
    done = subprocess.run([*launch, "extract", "--split", "train", "--device", "cpu", *args],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    two = FeatureStore(tmp_path / "two" / "features" / "mini")
    assert {p.name[:3] for p in two.shard_dir.glob("w*.json")} == {"w00", "w01"}  # each rank wrote its own shards
    _same_features(two, FeatureStore(tmp_path / "one" / "features" / "mini"), exact=False)


def test_a_split_the_copy_lacks_extracts_nothing_and_does_not_raise(setup, tmp_path):
    import json

    config, env, records = setup
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "vatex_training_v1.0.json").write_text(json.dumps([{"videoID": "0wR5jVB-WPk_000417_000427", "enCap": ["a"]}]))
    config = load_config("smoke", {**TINY, "data.source": "vatex", "data.fallback_to_mini": False,
                                   "paths.vatex_input": str(copy), "paths.output_dir": str(env.output_dir)})
    report = extract_features(config, env, "validation")
    assert (report.clips, report.extracted, report.stopped) == (0, 0, False)


def test_features_only_mode_deletes_each_video_once_its_features_are_stored(setup):
    from qvidcap.config import apply_overrides

    config, env, records = setup
    config = apply_overrides(config, {"features.delete_videos": True})
    extract_features(config, env, "train", clips=records, dataset="mini")
    store = FeatureStore(env.output_dir / "features" / "mini")
    assert len(store) == 5
    for record in records:
        if record.video_path is None:
            continue
        stored = record.video_id in store
        assert record.video_path.exists() != stored, f"{record.video_id}: stored={stored}"  # failed clips keep their file


def test_features_of_an_older_mini_dataset_are_made_again_but_vatex_ones_are_kept(setup):
    import dataclasses

    config, env, records = setup
    good = [r for r in records if r.video_id.startswith("good")]
    extract_features(config, env, "train", clips=good[:3], dataset="mini")
    extract_features(config, env, "train", clips=good[:3], dataset="vatex")
    other = dataclasses.replace(config, data=dataclasses.replace(config.data, mini_backgrounds=("dark_gray",)))
    again = extract_features(other, env, "train", clips=good, dataset="mini")  # same videoIDs, other pictures
    assert (again.already_stored, again.extracted) == (0, 5)
    store = FeatureStore(env.output_dir / "features" / "mini")
    assert len(store) == 5 and store.dataset_stamp and store.dataset_stamp != _stamp_of(config)
    # more clips per split do not change the pictures of the first ones: nothing is redone
    bigger = dataclasses.replace(other, data=dataclasses.replace(other.data, mini_train_clips=900))
    assert extract_features(bigger, env, "train", clips=good, dataset="mini").already_stored == 5
    kept = extract_features(other, env, "train", clips=good[:3], dataset="vatex")
    assert (kept.already_stored, kept.extracted) == (3, 0)


def _stamp_of(config):
    from qvidcap.features.extract import dataset_stamp

    return dataset_stamp(config, "mini")
