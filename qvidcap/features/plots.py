"""Figures and tables the extraction notebook shows: sampled frames, boxes on a keyframe, stream shapes,
and the sentences that read them (computed here, so the notebook states nothing it has not measured)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from qvidcap.config import FeatureConfig, SamplingConfig, StudyConfig, load_config
from qvidcap.features.clip_features import ClipFeatures
from qvidcap.features.store import FeatureStore
from qvidcap.video import SampledClip

VATEX_CLIPS = 41_250  # train + validation + public test clips of VATEX
# widths of the named backbones' feature vectors (what the store holds), by the name the config gives
TEMPORAL_WIDTHS = {"videomae-base": 768, "videomae-large": 1024, "videomae-small": 384, "videomae-huge": 1280}
CLIP_WIDTHS = {"ViT-B-32": 512, "ViT-B-16": 512, "ViT-L-14": 768, "ViT-H-14": 1024}
ASSUMED_BOXES_PER_KEYFRAME = 4.0  # DETR boxes over 0.8 on a VATEX keyframe: the GPU budget's assumption, not measured
# bytes one box adds to a shard beyond its embedding: box (4 x float32), score (fp16), label (int32), keyframe (int16)
BOX_EXTRA_BYTES = 16 + 2 + 4 + 2


def feature_widths(config: StudyConfig) -> dict[str, int]:
    """`{"temporal": Dt, "object": Do, "context": Dc}` that `config`'s extractors produce, known without building them.

    Linked widths (`config.heads.*_dim`, filled from a store) win; otherwise the named backbone's width, or the
    random backbone's (`features.random_size`: "small" = `features.small_hidden_size`, "base" = VideoMAE-base
    and ViT-B-32); the motion width times the `features.temporal_grid` cells.
    """
    f, h = config.features, config.heads
    temporal = next((w for key, w in TEMPORAL_WIDTHS.items() if key in f.temporal_model), 0) if f.temporal_model else 0
    clip = CLIP_WIDTHS.get(f.clip_model, 0) if f.clip_model else 0
    if not f.temporal_model:
        temporal = 768 if f.random_size == "base" else f.small_hidden_size
    temporal *= f.temporal_grid ** 2  # the g x g cells sit side by side in one vector
    if not f.clip_model:
        clip = 512 if f.random_size == "base" else f.small_hidden_size
    return {"temporal": h.temporal_dim or temporal, "object": h.object_dim or clip, "context": h.context_dim or clip}


def stream_lengths(sampling: SamplingConfig, features: FeatureConfig) -> dict[str, int]:
    """Tokens per clip of each stream: T motion steps, N keyframes, and at most P boxes."""
    steps = sampling.temporal_frames // 2 if sampling.temporal_windows == 1 else sampling.num_keyframes  # tubelet of 2
    return {"T": steps, "N": sampling.num_keyframes, "P": sampling.num_keyframes * features.max_objects}


def clip_payload_bytes(config: StudyConfig, boxes: float) -> float:
    """Bytes of one clip's tensors in the store at `config`'s widths with `boxes` boxes (fp16 embeddings)."""
    widths, lengths = feature_widths(config), stream_lengths(config.sampling, config.features)
    return (2 * lengths["T"] * widths["temporal"] + 2 * lengths["N"] * widths["context"]
            + boxes * (2 * widths["object"] + BOX_EXTRA_BYTES) + 8)


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


def store_table(store: FeatureStore, gpu_profile: str = "kaggle") -> pd.DataFrame:
    """Clips, widths and size of a store, and all of VATEX projected at the GPU profile's real widths.

    The projection keeps this store's measured overhead per clip (manifests, shard headers) and replaces its
    payload by the GPU profile's: its widths and stream lengths, with the assumed boxes per keyframe and
    with every keyframe at `features.max_objects` (the most the store can hold).
    """
    per_clip = store.bytes_per_clip()
    gpu = load_config(gpu_profile)
    overhead = max(0.0, per_clip - _measured_payload(store))
    keyframes, cap = gpu.sampling.num_keyframes, gpu.features.max_objects
    assumed = overhead + clip_payload_bytes(gpu, ASSUMED_BOXES_PER_KEYFRAME * keyframes)
    most = overhead + clip_payload_bytes(gpu, cap * keyframes)
    widths = feature_widths(gpu)
    rows = {
        "clips stored": f"{len(store):,}",
        "failures": f"{len(store.failures):,}",
        "feature widths (this store)": ", ".join(f"{k} {v}" for k, v in store.feature_dims.items()),
        "KiB per clip (this store)": f"{per_clip / 1024:.1f}",
        "size now (MB)": f"{per_clip * len(store) / 1e6:.2f}",
        f"feature widths ({gpu_profile} profile)": ", ".join(f"{k} {v}" for k, v in widths.items()),
        f"all {VATEX_CLIPS:,} VATEX clips at {gpu_profile} widths, {ASSUMED_BOXES_PER_KEYFRAME:g} boxes per keyframe "
        "(assumed) (GB)": f"{assumed * VATEX_CLIPS / 1e9:.2f}",
        f"all {VATEX_CLIPS:,} VATEX clips at {gpu_profile} widths, {cap * keyframes} boxes (the cap) (GB)":
            f"{most * VATEX_CLIPS / 1e9:.2f}",
    }
    return pd.DataFrame({"value": rows})


def _measured_payload(store: FeatureStore) -> float:
    """Mean tensor bytes per clip of a store, from its widths and a sample of its clips' box counts."""
    if len(store) == 0:
        return 0.0
    dims = store.feature_dims
    sample = [store.get(v) for v in store.video_ids[:64]]
    return float(np.mean([2 * c.temporal.numel() + 2 * c.context.numel()
                          + c.num_objects * (2 * dims["object"] + BOX_EXTRA_BYTES) + 8 for c in sample]))


def objects_per_clip(store: FeatureStore) -> pd.DataFrame:
    """One row per stored clip: its videoID, number of boxes and mean box score (for a histogram)."""
    rows = []
    for video_id in store.video_ids:
        features = store.get(video_id)
        rows.append({"video_id": video_id, "objects": features.num_objects,
                     "mean score": float(features.scores.mean()) if features.num_objects else float("nan")})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- sentences that read the outputs


def detections_note(features: ClipFeatures, config: StudyConfig) -> str:
    """Markdown under the boxes of one clip: what they are worth on this profile."""
    n, scores = features.num_objects, features.scores.float()
    if not n:
        return f"DETR kept no box on this clip (threshold {config.features.detection_threshold:g})."
    spread = f"scores {float(scores.min()):.2f} to {float(scores.max()):.2f}"
    if not config.features.detector_model:
        return (f"**These {n} boxes are noise.** The detector is a DETR with random weights and the threshold is "
                f"{config.features.detection_threshold:g}, so every proposal passes ({spread}): boxes land on empty "
                "background as readily as on a shape, and the class names are arbitrary ids. Only the code path is "
                "real here; on the GPU profiles the same cell shows COCO objects found by the pretrained "
                f"`{load_config('kaggle').features.detector_model}`.")
    return (f"{n} boxes over the threshold {config.features.detection_threshold:g} ({spread}) from "
            f"`{config.features.detector_model}`.")


def objects_verdict(counts: pd.DataFrame, config: StudyConfig) -> str:
    """Markdown on the boxes-per-clip histogram (`counts` from `objects_per_clip`): is it informative?"""
    most = config.sampling.num_keyframes * config.features.max_objects
    if counts.empty:
        return "No clip is stored yet."
    at_cap = int((counts["objects"] == most).sum())
    share = 100 * at_cap / len(counts)
    text = (f"{at_cap:,} of {len(counts):,} clips ({share:.0f}%) keep the most boxes the settings allow, {most} "
            f"({config.features.max_objects} per keyframe x {config.sampling.num_keyframes} keyframes); the mean is "
            f"{counts['objects'].mean():.1f}.")
    if share >= 99:
        text += (" The histogram is a single bar: the count says nothing about the videos, only that the cap was "
                 "reached everywhere" + (" (a random DETR with threshold 0 keeps every proposal)."
                                          if not config.features.detector_model else "."))
    else:
        text += " The count varies with what the detector finds, so the object sequence's length differs between clips."
    return text


def window_cost_verdict(one_pass: float, per_keyframe: float, num_keyframes: int) -> str:
    """Markdown comparing the two VideoMAE layouts' measured seconds per clip."""
    ratio = per_keyframe / one_pass if one_pass > 0 else float("nan")
    if ratio < 0.8 * num_keyframes:
        how = (f"less than the {num_keyframes}x the work would suggest (a batch {num_keyframes} times larger probably "
               "keeps the cores busier)")
    elif ratio > 1.25 * num_keyframes:
        how = (f"more than the {num_keyframes}x the work would suggest: timings of a few milliseconds on a shared CPU "
               "are noisy, so read the ratio as rough")
    else:
        how = f"about the {num_keyframes}x the work suggests"
    return (f"On these clips, {num_keyframes} windows per clip cost **{ratio:.1f}x** one pass "
            f"({1000 * per_keyframe:.1f} ms against {1000 * one_pass:.1f} ms of VideoMAE per clip): {how}.")


def extraction_summary(reports: list, store: FeatureStore, counts: pd.DataFrame, config: StudyConfig) -> str:
    """The Summary cell of notebook 03: what was extracted, how wide, how big, what failed."""
    extracted = sum(r.summary()["extracted"] for r in reports)
    kept = sum(r.summary()["already stored"] for r in reports)
    lengths = stream_lengths(config.sampling, config.features)
    dims = store.feature_dims
    lines = [
        f"- {len(store):,} clips in the store ({extracted:,} extracted by this run, {kept:,} found already stored), "
        f"{len(store.failures):,} failed to decode.",
        f"- Per clip: motion ({lengths['T']}, {dims['temporal']}), context ({lengths['N']}, {dims['context']}), "
        f"objects (up to {lengths['P']}, {dims['object']}); {store.bytes_per_clip() / 1024:.1f} KiB on disk in float16.",
        f"- Boxes per clip: mean {counts['objects'].mean():.1f} of at most {lengths['P']}"
        + (" (random DETR: every proposal kept)." if not config.features.detector_model else "."),
    ]
    return "\n".join(lines)
