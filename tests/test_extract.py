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


def test_two_workers_split_the_clips(setup):
    config, env, records = setup
    good = records[:5]
    reports = [extract_features(config, env, "train", clips=good, dataset="mini", worker_index=w, num_workers=2)
               for w in (0, 1)]
    assert [r.extracted for r in reports] == [3, 2]
    assert FeatureStore(env.output_dir / "features" / "mini").video_ids == [r.video_id for r in good]


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
    monkeypatch.setattr("qvidcap.data.load_clips", lambda c, e, split: _clip_set(split, records[:2]))
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
