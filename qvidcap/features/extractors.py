"""The three feature extractors as one bundle: sampled clips in, `ClipFeatures` out.

`build_extractors` makes them from the config (pretrained by name, or small random models);
`Extractors.save` writes what cannot be rebuilt from a name (random weights and their configs) so that
`load_extractors` rebuilds exactly the extractors that filled a feature store.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import torch

from qvidcap.config import FeatureConfig, SamplingConfig, StudyConfig
from qvidcap.features.clip_features import ClipFeatures
from qvidcap.features.clip_image import ClipImageEncoder
from qvidcap.features.detector import Detections, ObjectDetector
from qvidcap.features.loading import compute_dtype
from qvidcap.features.temporal import TemporalExtractor
from qvidcap.video import SampledClip

logger = logging.getLogger(__name__)

MANIFEST = "extractors.json"


class Extractors:
    """VideoMAE (motion), DETR + CLIP crops (objects), CLIP keyframes (context), run batched over clips."""

    def __init__(self, temporal: TemporalExtractor, detector: ObjectDetector, clip: ClipImageEncoder,
                 features: FeatureConfig, sampling: SamplingConfig, device: str, dtype: torch.dtype):
        self.temporal, self.detector, self.clip = temporal, detector, clip
        self.features, self.sampling = features, sampling
        self.device, self.dtype = device, dtype

    @property
    def feature_dims(self) -> dict[str, int]:
        return {"temporal": self.temporal.dim, "object": self.clip.dim, "context": self.clip.dim}

    def extract(self, clips: list[SampledClip]) -> list[ClipFeatures]:
        """Features of a batch of sampled clips, every model called once per batch (in chunks)."""
        if not clips:
            return []
        temporal = self.extract_temporal(clips)  # (B, T, Dt)
        keyframes = [torch.from_numpy(c.keyframes).to(self.device) for c in clips]  # B x (N, H, W, 3), moved once
        frames = [frame for clip_frames in keyframes for frame in clip_frames]  # B * N x (H, W, 3)
        detections = self.detector(frames, batch_size=self.features.detector_batch_frames)

        crops, counts = [], []
        n = self.sampling.num_keyframes
        for b, clip_frames in enumerate(keyframes):
            regions = self._regions(clip_frames, detections[b * n:(b + 1) * n])  # (N + P, 5)
            crops.append(self.clip.crop(clip_frames, regions))  # (N + P, 3, S, S)
            counts.append(len(regions) - n)
        embeddings = self.clip(torch.cat(crops), batch_size=self.features.batch_clips * 8)  # (sum(N + P), Dc)

        results, offset = [], 0
        for b, clip in enumerate(clips):
            found = detections[b * n:(b + 1) * n]
            count = counts[b]
            clip_embeddings = embeddings[offset:offset + n + count]
            offset += n + count
            results.append(ClipFeatures(
                video_id=clip.video_id,
                temporal=temporal[b].half(),
                context=clip_embeddings[:n].half(),
                objects=clip_embeddings[n:].half(),
                boxes=torch.cat([d.boxes for d in found]).reshape(-1, 4),
                scores=torch.cat([d.scores for d in found]),
                labels=torch.cat([d.labels for d in found]).long(),
                object_keyframe=torch.cat([torch.full((len(d.scores),), k, dtype=torch.long) for k, d in enumerate(found)]),
            ))
        return results

    def extract_temporal(self, clips: list[SampledClip]) -> torch.Tensor:
        """(B, T, Dt): T = F / tubelet steps of the one window, or one step per window (mean over its steps)."""
        windows = torch.from_numpy(np.stack([c.temporal for c in clips]))  # (B, W, F, S, S, 3)
        b, w = windows.shape[:2]
        hidden = self.temporal(windows.flatten(0, 1), batch_size=self.features.batch_clips)  # (B * W, T, Dt)
        hidden = hidden.view(b, w, *hidden.shape[1:])  # (B, W, T, Dt)
        return hidden[:, 0] if w == 1 else hidden.mean(dim=2)  # (B, T, Dt) or (B, W, Dt)

    @staticmethod
    def _regions(frames: torch.Tensor, found: list[Detections]) -> torch.Tensor:
        """(N + P, 5) regions to embed: each whole keyframe first, then every kept box (frame index, xyxy)."""
        n, height, width = frames.shape[:3]
        whole = torch.tensor([[k, 0, 0, width, height] for k in range(n)], dtype=torch.float32)
        boxes = [torch.cat([torch.full((len(d.boxes), 1), float(k)), d.boxes], dim=1) for k, d in enumerate(found)]
        return torch.cat([whole, *boxes])

    def describe(self) -> dict:
        """Everything that decides the features: model names or configs and weight digests, sampling, dtype."""
        from qvidcap import __version__

        return {
            "temporal": self.temporal.describe(),
            "detector": self.detector.describe(),
            "clip": self.clip.describe(),
            "sampling": dataclasses.asdict(self.sampling),
            "feature_dims": self.feature_dims,
            "compute_dtype": str(self.dtype).removeprefix("torch."),
            "stored_dtype": "float16",
            "features": dataclasses.asdict(self.features),
            "kit_version": __version__,
        }

    def save(self, directory: str | Path) -> Path:
        """Write random weights (safetensors) with their configs, and the manifest `load_extractors` reads."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with _quiet_transformers():
            self.temporal.save(directory / "temporal")
            self.detector.save(directory / "detector")
            self.clip.save(directory / "clip")
        (directory / MANIFEST).write_text(json.dumps(self.describe(), indent=2))
        return directory


def build_extractors(config: StudyConfig, device: str = "cpu", weights_dir: str | Path | None = None) -> Extractors:
    """The extractors the config names; random ones are taken from `weights_dir` when it holds saved ones."""
    features, sampling = config.features, config.sampling
    if features.random_size not in ("small", "base"):
        raise ValueError(f"features.random_size must be 'small' or 'base', got {features.random_size!r}")
    if sampling.temporal_windows not in (1, sampling.num_keyframes):
        raise ValueError(f"sampling.temporal_windows must be 1 (one pass) or num_keyframes ({sampling.num_keyframes}), "
                         f"got {sampling.temporal_windows}")
    dtype = compute_dtype(features.dtype, device)
    weights = Path(weights_dir) if weights_dir else None
    with _quiet_transformers():
        temporal = TemporalExtractor.build(features, sampling, device, dtype, weights / "temporal" if weights else None)
        detector = ObjectDetector.build(features, device, dtype, weights / "detector" if weights else None)
        clip = ClipImageEncoder.build(features, sampling, device, dtype, weights / "clip" if weights else None)
    logger.info("extractors on %s (%s): temporal %s, detector %s, CLIP %s", device, dtype,
                temporal.name or "random", detector.name or "random", clip.name or "random")
    return Extractors(temporal, detector, clip, features, sampling, device, dtype)


def load_extractors(directory: str | Path, device: str = "cpu") -> Extractors:
    """Rebuild the extractors saved by `Extractors.save` (a feature store keeps them in `<store>/extractors/`)."""
    directory = Path(directory)
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(f"no {MANIFEST} in {str(directory)!r}; expected a folder written by Extractors.save")
    manifest = json.loads(manifest_path.read_text())
    config = StudyConfig()
    config.features = _dataclass_from(FeatureConfig, manifest["features"])
    config.sampling = _dataclass_from(SamplingConfig, manifest["sampling"])
    config.features.dtype = "auto"  # the compute dtype follows the device it is loaded on
    return build_extractors(config, device, weights_dir=directory)


@contextlib.contextmanager
def _quiet_transformers():
    """No per-file progress bars from transformers while the small extractors are saved or loaded."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def _dataclass_from(kind, values: dict):
    known = {f.name for f in dataclasses.fields(kind)}
    return kind(**{k: v for k, v in values.items() if k in known})
