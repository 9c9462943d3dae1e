"""Standardise each feature stream with statistics of the training clips, inside the model.

The small random extractors of the default profile give features dominated by one direction shared by
every clip (random CLIP vectors all point roughly the same way; random VideoMAE tokens share a large
offset), so what tells clips apart is a small part of each vector and the heads do not learn to read it
(the global loss stays at its constant-prediction value). Subtracting the training mean and dividing
by the training standard deviation, per dimension, fixes that; for pretrained features it is harmless.

The statistics live as non-persistent buffers on the model's input projection and are applied by a
forward pre-hook, so every path through `encode_video` (training, generation, evaluation, serving) uses
them, they move with `.to(device)`, and the model's state-dict keys do not change. Checkpoints store them
in `feature_stats.safetensors`; `attach_feature_stats` puts them back on a rebuilt model.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from qvidcap.features.clip_features import ClipFeatures

STREAMS = ("temporal", "context", "objects")
_HANDLE = "_qvidcap_feature_stats_hook"


def compute_feature_stats(clips: Iterable[ClipFeatures], eps: float = 1e-4) -> dict[str, torch.Tensor]:
    """`{"<stream>_mean": (D,), "<stream>_std": (D,)}` over every token (every box, for objects) of `clips`."""
    clips = list(clips)
    if not clips:
        raise ValueError("compute_feature_stats got no clips; it needs the training clips' features")
    stats = {}
    for stream in STREAMS:
        tokens = torch.cat([getattr(c, stream).float().reshape(-1, getattr(c, stream).shape[-1]) for c in clips])  # (n, D)
        if tokens.shape[0] < 2:  # e.g. no boxes at all: leave the stream as it is
            width = tokens.shape[-1]
            stats[f"{stream}_mean"], stats[f"{stream}_std"] = torch.zeros(width), torch.ones(width)
            continue
        stats[f"{stream}_mean"] = tokens.mean(0)
        stats[f"{stream}_std"] = tokens.std(0).clamp_min(eps)
    return stats


def attach_feature_stats(model: nn.Module, stats: dict[str, torch.Tensor]) -> None:
    """Make `model` (a QVidCap) standardise its input streams with `stats`; attaching again replaces them."""
    projection = model.projection
    for name, value in stats.items():
        projection.register_buffer(f"feature_{name}", value.detach().float().clone(), persistent=False)
    if getattr(projection, _HANDLE, None) is None:
        setattr(projection, _HANDLE, projection.register_forward_pre_hook(_standardise))


def feature_stats_of(model: nn.Module) -> dict[str, torch.Tensor] | None:
    """The statistics attached to `model`, or None."""
    projection = model.projection
    if getattr(projection, _HANDLE, None) is None:
        return None
    return {f"{s}_{k}": getattr(projection, f"feature_{s}_{k}").detach().cpu() for s in STREAMS for k in ("mean", "std")}


def _standardise(projection: nn.Module, inputs: tuple) -> tuple:
    """Pre-hook of InputProjection.forward(temporal, context, objects, object_mask)."""
    temporal, context, objects, object_mask = inputs

    def scale(x: torch.Tensor, stream: str) -> torch.Tensor:
        mean, std = getattr(projection, f"feature_{stream}_mean"), getattr(projection, f"feature_{stream}_std")
        return ((x.float() - mean) / std).to(x.dtype)

    objects = scale(objects, "objects") * object_mask.unsqueeze(-1).to(objects.dtype)  # padding stays zero
    return scale(temporal, "temporal"), scale(context, "context"), objects, object_mask
