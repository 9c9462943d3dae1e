"""Figures and tables the extraction notebook shows: sampled frames, boxes on a keyframe, stream shapes."""
from __future__ import annotations

import numpy as np
import pandas as pd

from qvidcap.features.clip_features import ClipFeatures
from qvidcap.features.store import FeatureStore
from qvidcap.video import SampledClip

VATEX_CLIPS = 41_250  # train + validation + public test clips of VATEX


def plot_sampled_clip(clip: SampledClip, max_temporal: int = 8):
    """Two rows: the keyframes (for DETR and CLIP) and the first frames of the VideoMAE window."""
    import matplotlib.pyplot as plt

    temporal = clip.temporal[0]  # (F, S, S, 3) first window
    step = max(1, len(temporal) // max_temporal)
    shown = list(range(0, len(temporal), step))[:max_temporal]
    columns = max(clip.num_keyframes, len(shown))
    fig, axes = plt.subplots(2, columns, figsize=(1.6 * columns, 3.6), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for k, frame in enumerate(clip.keyframes):
        axes[0, k].imshow(frame)
        axes[0, k].set_title(f"keyframe {k}\nframe {clip.keyframe_indices[k]}", fontsize=8)
    for col, i in enumerate(shown):
        axes[1, col].imshow(temporal[i])
        axes[1, col].set_title(f"VideoMAE in\nframe {clip.temporal_indices[0, i]}", fontsize=8)
    fig.suptitle(f"{clip.video_id}: {clip.info.width}x{clip.info.height}, {clip.info.num_frames} frames "
                 f"at {clip.info.fps:.0f} fps", fontsize=10)
    fig.tight_layout()
    return fig


def plot_detections(keyframe: np.ndarray, features: ClipFeatures, keyframe_index: int = 0, label_name=None, ax=None):
    """The boxes kept on one keyframe, with label and score."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(keyframe)
    ax.axis("off")
    mine = (features.object_keyframe == keyframe_index).nonzero().flatten().tolist()
    colours = plt.get_cmap("tab10")
    for n, i in enumerate(mine):
        x1, y1, x2, y2 = features.boxes[i].tolist()
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=2, color=colours(n % 10)))
        name = label_name(int(features.labels[i])) if label_name else str(int(features.labels[i]))
        ax.text(x1 + 1, y1 + 1, f"{name} {float(features.scores[i]):.2f}", va="top", fontsize=7,
                color="white", bbox={"facecolor": colours(n % 10), "alpha": 0.7, "pad": 1, "lw": 0})
    ax.set_title(f"keyframe {keyframe_index}: {len(mine)} boxes", fontsize=9)
    return ax


def stream_table(features: ClipFeatures) -> pd.DataFrame:
    """Shape and dtype of every tensor of one clip's features, with what it holds."""
    meaning = {
        "temporal": "VideoMAE tokens pooled over space (T, Dt)",
        "context": "CLIP embedding of each keyframe, L2-normalised (N, Dc)",
        "objects": "CLIP embedding of each box crop, L2-normalised (P, Do)",
        "boxes": "box corners x1 y1 x2 y2 in keyframe pixels (P, 4)",
        "scores": "detector score of each box (P,)",
        "labels": "detector class of each box (P,)",
        "object_keyframe": "keyframe each box comes from (P,)",
    }
    rows = [{"tensor": name, "shape": tuple(getattr(features, name).shape), "dtype": str(getattr(features, name).dtype).removeprefix("torch."),
             "holds": text} for name, text in meaning.items()]
    return pd.DataFrame(rows).set_index("tensor")


def store_table(store: FeatureStore) -> pd.DataFrame:
    """Clips, widths and size of a store, and its size projected to all of VATEX."""
    per_clip = store.bytes_per_clip()
    rows = {
        "clips stored": len(store),
        "failures": len(store.failures),
        "feature widths": store.feature_dims,
        "KiB per clip": round(per_clip / 1024, 1),
        "size now (MB)": round(per_clip * len(store) / 1e6, 2),
        f"projected for {VATEX_CLIPS:,} VATEX clips (GB)": round(per_clip * VATEX_CLIPS / 1e9, 2),
    }
    return pd.DataFrame({"value": rows})


def objects_per_clip(store: FeatureStore) -> pd.DataFrame:
    """One row per stored clip: its videoID, number of boxes and mean box score (for a histogram)."""
    rows = []
    for video_id in store.video_ids:
        features = store.get(video_id)
        rows.append({"video_id": video_id, "objects": features.num_objects,
                     "mean score": float(features.scores.mean()) if features.num_objects else float("nan")})
    return pd.DataFrame(rows)
