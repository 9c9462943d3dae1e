"""What the extractors produce for one clip, and how clips are padded into a batch for the model."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ClipFeatures:
    """The three streams of one clip (stored in float16; cast by the caller)."""

    video_id: str
    temporal: torch.Tensor  # (T, Dt) VideoMAE tokens pooled over space
    context: torch.Tensor  # (N, Dc) CLIP embeddings of the N keyframes, L2-normalised
    objects: torch.Tensor  # (P, Do) CLIP embeddings of box crops, L2-normalised; P may be 0
    boxes: torch.Tensor  # (P, 4) xyxy in pixels of the decoded keyframe
    scores: torch.Tensor  # (P,) detector score of each box
    labels: torch.Tensor  # (P,) detector class id of each box (int64)
    object_keyframe: torch.Tensor  # (P,) index of the keyframe each box comes from (int64)

    @property
    def num_objects(self) -> int:
        return int(self.objects.shape[0])


def collate_features(clips: list[ClipFeatures], dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor | list[str]]:
    """Pad a list of clips into model inputs.

    Returns `temporal (B, T, Dt)`, `context (B, N, Dc)`, `objects (B, P, Do)` with P the most objects
    of any clip (at least 1), `object_mask (B, P)` (1 = real box, 0 = padding) and `video_ids`.
    Clips in one batch share T and N (the sampling config fixes them).
    """
    if not clips:
        raise ValueError("collate_features got an empty list of clips")
    temporal = torch.stack([c.temporal for c in clips]).to(dtype)  # (B, T, Dt)
    context = torch.stack([c.context for c in clips]).to(dtype)  # (B, N, Dc)
    object_dim = clips[0].objects.shape[-1]
    max_objects = max(1, max(c.num_objects for c in clips))
    objects = torch.zeros(len(clips), max_objects, object_dim, dtype=dtype)  # (B, P, Do)
    object_mask = torch.zeros(len(clips), max_objects, dtype=torch.long)  # (B, P)
    for i, clip in enumerate(clips):
        objects[i, : clip.num_objects] = clip.objects.to(dtype)
        object_mask[i, : clip.num_objects] = 1
    return {
        "temporal": temporal,
        "context": context,
        "objects": objects,
        "object_mask": object_mask,
        "video_ids": [c.video_id for c in clips],
    }
