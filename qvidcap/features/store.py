"""The feature store: float16 features of every clip, in sharded safetensors files indexed by videoID.

Layout of a store at `root`:

    meta.json                     what made the features (`Extractors.describe()`), written once
    extractors/                   random extractor weights + configs, so the exact extractors can be rebuilt
    shards/w00-00003.safetensors  the features of up to `features.shard_clips` clips, written by worker 0
    shards/w00-00003.json         that shard's manifest (its videoIDs); written after the shard, so a
                                  shard counts only once its manifest exists
    failures.jsonl                one line per clip that could not be extracted (videoID, reason)

Every file is written to a temporary name and renamed into place, so a killed run leaves either a
whole shard or none. Each worker writes only its own shards, so several workers (one per GPU) fill one
store without locks, and the index is the union of all manifests.
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

from qvidcap.features.clip_features import ClipFeatures

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
SHARD_NAME = re.compile(r"^w(?P<worker>\d+)-(?P<number>\d+)\.json$")
COMPATIBILITY_KEYS = ("temporal", "detector", "clip", "sampling")  # the part of describe() a store insists on


class FeatureStoreError(RuntimeError):
    """A store that does not match the extractors or the model that wants to use it."""


@dataclass
class _Shard:
    path: Path  # the .safetensors file
    video_ids: list[str]


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


class FeatureStore:
    """Read and write the features of clips by videoID. Reads are cached per shard (cheap for training)."""

    def __init__(self, root: str | Path, cache_bytes: int = 4 << 30):
        self.root = Path(root)
        self.shard_dir = self.root / "shards"
        self.cache_bytes = cache_bytes  # shards kept in memory, least recently used dropped first
        self._cache: OrderedDict[Path, dict[str, torch.Tensor]] = OrderedDict()
        self.refresh()

    # ---- index -------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Re-read the manifests (another worker may have written shards since)."""
        self._where: dict[str, tuple[_Shard, int]] = {}
        self._shards: list[_Shard] = []
        if not self.shard_dir.is_dir():
            return
        for manifest in sorted(self.shard_dir.glob("w*-*.json")):
            if not SHARD_NAME.match(manifest.name):
                continue
            shard_path = manifest.with_suffix(".safetensors")
            if not shard_path.is_file():
                logger.warning("manifest %s has no shard file; ignored", manifest)
                continue
            shard = _Shard(shard_path, json.loads(manifest.read_text())["video_ids"])
            self._shards.append(shard)
            for position, video_id in enumerate(shard.video_ids):
                self._where.setdefault(video_id, (shard, position))

    @property
    def meta(self) -> dict:
        path = self.root / "meta.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    @property
    def dataset_stamp(self) -> str:
        """What the features were made from (`extract.dataset_stamp`); "" for a store older than the stamp."""
        return str(self.meta.get("dataset_stamp", ""))

    def clear(self) -> None:
        """Remove every stored feature, failure record and saved extractor: the store starts empty."""
        import shutil

        for name in ("shards", "extractors"):
            shutil.rmtree(self.root / name, ignore_errors=True)
        for name in ("meta.json", "failures.jsonl"):
            (self.root / name).unlink(missing_ok=True)
        self._cache.clear()
        self.refresh()

    @property
    def video_ids(self) -> list[str]:
        return sorted(self._where)

    def __contains__(self, video_id: object) -> bool:
        return video_id in self._where

    def __len__(self) -> int:
        return len(self._where)

    @property
    def feature_dims(self) -> dict[str, int]:
        """{"temporal": Dt, "object": Do, "context": Dc}; empty for a store nothing has been written to."""
        return dict(self.meta.get("extractors", {}).get("feature_dims", {}))

    @property
    def extractors_dir(self) -> Path:
        return self.root / "extractors"

    # ---- reading -----------------------------------------------------------------------------

    def get(self, video_id: str) -> ClipFeatures:
        """The stored features of one clip (float16 tensors; cast them where they are used)."""
        if video_id not in self._where:
            raise KeyError(f"videoID {video_id!r} is not in the feature store {str(self.root)!r} "
                           f"({len(self)} clips); extract it first (qvidcap extract)")
        shard, position = self._where[video_id]
        tensors = self._load(shard.path)
        start, end = tensors["object_offsets"][position:position + 2].tolist()
        return ClipFeatures(
            video_id=video_id,
            temporal=tensors["temporal"][position],
            context=tensors["context"][position],
            objects=tensors["objects"][start:end],
            boxes=tensors["boxes"][start:end].float(),
            scores=tensors["scores"][start:end].float(),
            labels=tensors["labels"][start:end].long(),
            object_keyframe=tensors["object_keyframe"][start:end].long(),
        )

    def _load(self, path: Path) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        if path in self._cache:
            self._cache.move_to_end(path)
            return self._cache[path]
        tensors = load_file(str(path))
        self._cache[path] = tensors
        while len(self._cache) > 1 and sum(_nbytes(t) for t in self._cache.values()) > self.cache_bytes:
            self._cache.popitem(last=False)
        return tensors

    def bytes_per_clip(self) -> float:
        """Average bytes on disk per stored clip (shards and manifests)."""
        if not self._shards:
            return 0.0
        total = sum(s.path.stat().st_size + s.path.with_suffix(".json").stat().st_size for s in self._shards)
        return total / sum(len(s.video_ids) for s in self._shards)

    def check_dims(self, expected: dict[str, int]) -> None:
        """Refuse a model that expects other feature widths than the store holds."""
        stored = self.feature_dims
        wrong = {k: (v, stored.get(k)) for k, v in expected.items() if v and stored.get(k) not in (None, v)}
        if wrong:
            detail = ", ".join(f"{k}: model expects {a}, store has {b}" for k, (a, b) in wrong.items())
            raise FeatureStoreError(f"feature store {str(self.root)!r} does not fit the model ({detail}); "
                                    f"re-extract with the model's extractors or build the model from the store's dims")

    # ---- failures ----------------------------------------------------------------------------

    @property
    def failures_path(self) -> Path:
        return self.root / "failures.jsonl"

    def record_failure(self, video_id: str, reason: str, path: str | None = None) -> None:
        """Append one failure line (a single write: lines from several workers do not interleave)."""
        self.root.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"video_id": video_id, "reason": reason, "path": path, "time": time.time()}) + "\n"
        with open(self.failures_path, "a+b") as f:
            if f.tell() > 0:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":  # the last line was cut by a kill: end it first
                    line = "\n" + line
            f.write(line.encode("utf-8"))

    @property
    def failures(self) -> list[dict]:
        """The latest failure of each clip that is still not in the store."""
        if not self.failures_path.is_file():
            return []
        latest: dict[str, dict] = {}
        for line in self.failures_path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill mid-write
                continue
            latest[entry["video_id"]] = entry
        return [entry for video_id, entry in latest.items() if video_id not in self]

    # ---- writing -----------------------------------------------------------------------------

    def initialise(self, description: dict, dataset_stamp: str = "") -> None:
        """Record what makes this store's features, or refuse extractors that differ from those that did."""
        meta = self.meta
        if meta:
            made_by = {k: meta["extractors"].get(k) for k in COMPATIBILITY_KEYS}
            offered = {k: description.get(k) for k in COMPATIBILITY_KEYS}
            if made_by != offered:
                differ = [k for k in COMPATIBILITY_KEYS if made_by[k] != offered[k]]
                raise FeatureStoreError(
                    f"feature store {str(self.root)!r} was filled by other extractors (they differ in: "
                    f"{', '.join(differ)}); extract into a new folder (paths.output_dir) or delete this store "
                    f"to start over. Stored: {json.dumps({k: made_by[k] for k in differ})[:500]}")
            return
        self.root.mkdir(parents=True, exist_ok=True)
        from qvidcap import __version__

        _atomic_write_text(self.root / "meta.json", json.dumps(
            {"format": FORMAT_VERSION, "kit_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
             "dataset_stamp": dataset_stamp, "extractors": description}, indent=2))

    def writer(self, worker_index: int = 0, shard_clips: int = 128) -> "ShardWriter":
        return ShardWriter(self, worker_index, shard_clips)


class ShardWriter:
    """Buffers clips and writes them as whole shards of this worker (tmp file + rename, then the manifest)."""

    def __init__(self, store: FeatureStore, worker_index: int, shard_clips: int):
        if shard_clips < 1:
            raise ValueError(f"shard_clips must be at least 1, got {shard_clips}")
        self.store, self.worker_index, self.shard_clips = store, worker_index, shard_clips
        self.pending: list[ClipFeatures] = []
        store.shard_dir.mkdir(parents=True, exist_ok=True)
        numbers = [int(m["number"]) for p in store.shard_dir.glob(f"w{worker_index:02d}-*")
                   if (m := re.match(r"^w\d+-(?P<number>\d+)\.", p.name))]
        self.next_number = max(numbers, default=-1) + 1  # never reuse a number, even of a partial shard

    def add(self, features: ClipFeatures) -> None:
        self.pending.append(features)
        if len(self.pending) >= self.shard_clips:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        from safetensors.torch import save_file

        clips, self.pending = self.pending, []
        counts = torch.tensor([0] + [c.num_objects for c in clips])
        tensors = {
            "temporal": torch.stack([c.temporal for c in clips]).half(),  # (C, T, Dt)
            "context": torch.stack([c.context for c in clips]).half(),  # (C, N, Dc)
            "objects": torch.cat([c.objects.reshape(-1, c.objects.shape[-1]) for c in clips]).half(),  # (sum P, Do)
            "boxes": torch.cat([c.boxes.reshape(-1, 4) for c in clips]).float(),  # (sum P, 4)
            "scores": torch.cat([c.scores for c in clips]).half(),
            "labels": torch.cat([c.labels for c in clips]).to(torch.int32),
            "object_keyframe": torch.cat([c.object_keyframe for c in clips]).to(torch.int16),
            "object_offsets": counts.cumsum(0),  # (C + 1,) clip i's objects are [offsets[i], offsets[i + 1])
        }
        name = f"w{self.worker_index:02d}-{self.next_number:05d}"
        self.next_number += 1
        shard = self.store.shard_dir / f"{name}.safetensors"
        tmp = shard.with_name(shard.name + ".tmp")
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
        os.chmod(tmp, 0o644)
        os.replace(tmp, shard)
        _atomic_write_text(shard.with_suffix(".json"), json.dumps({"video_ids": [c.video_id for c in clips]}))
        logger.debug("wrote shard %s (%d clips)", shard.name, len(clips))
        self.store.refresh()

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.flush()  # whole clips extracted before an error are kept


def _nbytes(tensors: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())
