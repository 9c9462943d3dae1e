"""The feature store: round trip, atomic shards, resume, several workers, refusals."""
import json

import pytest
import torch

from qvidcap.features.clip_features import ClipFeatures
from qvidcap.features.store import FeatureStore, FeatureStoreError

DESCRIPTION = {"temporal": {"name": "t"}, "detector": {"name": "d"}, "clip": {"name": "c"},
               "sampling": {"num_keyframes": 2}, "feature_dims": {"temporal": 6, "object": 4, "context": 4}}


def fake_clip(video_id: str, num_objects: int) -> ClipFeatures:
    seed = sum(map(ord, video_id))
    g = torch.Generator().manual_seed(seed)
    return ClipFeatures(
        video_id=video_id,
        temporal=torch.randn(3, 6, generator=g).half(),
        context=torch.randn(2, 4, generator=g).half(),
        objects=torch.randn(num_objects, 4, generator=g).half(),
        boxes=torch.rand(num_objects, 4, generator=g) * 90,
        scores=torch.rand(num_objects, generator=g),
        labels=torch.randint(0, 90, (num_objects,), generator=g),
        object_keyframe=torch.randint(0, 2, (num_objects,), generator=g),
    )


def fill(store: FeatureStore, ids, worker_index=0, shard_clips=2):
    store.initialise(DESCRIPTION)
    with store.writer(worker_index, shard_clips) as writer:
        for i, video_id in enumerate(ids):
            writer.add(fake_clip(video_id, i % 3))


def test_round_trip(tmp_path):
    store = FeatureStore(tmp_path / "store")
    assert len(store) == 0 and store.feature_dims == {}
    fill(store, ["a", "b", "c", "d", "e"])
    store = FeatureStore(tmp_path / "store")  # a fresh reader sees the same
    assert store.video_ids == ["a", "b", "c", "d", "e"] and len(store) == 5 and "c" in store and "z" not in store
    assert store.feature_dims == {"temporal": 6, "object": 4, "context": 4}
    for i, video_id in enumerate(["a", "b", "c", "d", "e"]):
        got, want = store.get(video_id), fake_clip(video_id, i % 3)
        assert got.video_id == video_id and got.num_objects == i % 3
        assert got.temporal.dtype == torch.float16 and got.objects.shape == (i % 3, 4)
        for name in ("temporal", "context", "objects", "labels", "object_keyframe"):
            assert torch.equal(getattr(got, name), getattr(want, name)), name
        torch.testing.assert_close(got.boxes, want.boxes)
        torch.testing.assert_close(got.scores, want.scores, atol=1e-3, rtol=1e-3)
    assert store.bytes_per_clip() > 0
    with pytest.raises(KeyError, match="'z' is not in the feature store"):
        store.get("z")


def test_a_shard_without_its_manifest_does_not_count(tmp_path):
    store = FeatureStore(tmp_path)
    fill(store, ["a", "b", "c"], shard_clips=2)  # shard 0: a, b; shard 1: c
    (store.shard_dir / "w00-00001.json").unlink()  # killed between the shard and its manifest
    (store.shard_dir / "w00-00002.safetensors.tmp").write_bytes(b"half a shard")  # killed mid-write
    store = FeatureStore(tmp_path)
    assert store.video_ids == ["a", "b"]


def test_resume_after_a_crash_mid_shard_loses_and_duplicates_nothing(tmp_path):
    store = FeatureStore(tmp_path)
    store.initialise(DESCRIPTION)
    writer = store.writer(0, shard_clips=2)
    for video_id in ["a", "b", "c"]:
        writer.add(fake_clip(video_id, 1))
    del writer  # "killed": c was buffered, never flushed
    store = FeatureStore(tmp_path)
    assert store.video_ids == ["a", "b"]
    todo = [v for v in ["a", "b", "c", "d"] if v not in store]
    assert todo == ["c", "d"]
    fill(store, todo)
    store = FeatureStore(tmp_path)
    assert store.video_ids == ["a", "b", "c", "d"]
    manifests = [json.loads(p.read_text())["video_ids"] for p in sorted(store.shard_dir.glob("*.json"))]
    assert sorted(sum(manifests, [])) == ["a", "b", "c", "d"]  # each clip stored once


def test_two_workers_fill_one_store(tmp_path):
    ids = [f"clip{i}" for i in range(7)]
    for worker in (0, 1):
        fill(FeatureStore(tmp_path), ids[worker::2], worker_index=worker)
    store = FeatureStore(tmp_path)
    assert store.video_ids == sorted(ids)
    assert {p.name[:3] for p in store.shard_dir.glob("*.safetensors")} == {"w00", "w01"}


def test_other_extractors_are_refused(tmp_path):
    store = FeatureStore(tmp_path)
    store.initialise(DESCRIPTION)
    store.initialise({**DESCRIPTION, "kit_version": "9"})  # runtime details may differ
    with pytest.raises(FeatureStoreError, match="differ in: clip"):
        store.initialise({**DESCRIPTION, "clip": {"name": "other"}})


def test_a_model_expecting_other_widths_is_refused(tmp_path):
    store = FeatureStore(tmp_path)
    fill(store, ["a"])
    store.check_dims({"temporal": 6, "object": 4})
    with pytest.raises(FeatureStoreError, match="temporal: model expects 768, store has 6"):
        store.check_dims({"temporal": 768, "object": 4, "context": 4})


def test_failures_are_recorded_and_cleared_once_extracted(tmp_path):
    store = FeatureStore(tmp_path)
    store.record_failure("a", "the file is empty (0 bytes)", "/videos/a.mp4")
    store.record_failure("b", "no video file", None)
    with open(store.failures_path, "a") as f:
        f.write('{"video_id": "c", "rea')  # a line cut by a kill
    assert [f["video_id"] for f in store.failures] == ["a", "b"]
    store.record_failure("d", "truncated", "/videos/d.mp4")
    assert [f["video_id"] for f in store.failures] == ["a", "b", "d"]
    fill(store, ["a"])
    assert [f["video_id"] for f in FeatureStore(tmp_path).failures] == ["b", "d"]
