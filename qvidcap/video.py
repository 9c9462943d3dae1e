"""Decoding: every clip is opened once and decoded once, at the size the models need.

`sample_clip` picks the union of the frame indices the extractors need (VideoMAE windows and
keyframes), asks decord for all of them in one `get_batch` call, resized at decode time (so a long
1080p clip never sits in memory at full resolution), and hands each extractor its view of that one
decode. Frame indices are positions in the decoded stream (end exclusive, 0-based).

Every clip is checked against the bounds in `SamplingConfig` (aspect ratio, stored pixels, frame
count, duration) on its container header, before a frame is decoded: decoding scales the short side
up to the size the models need, so an absurd aspect ratio (2x8000) would otherwise decode frames of
96x384000 pixels. Such clips raise `VideoBoundsError`, a `VideoDecodeError` naming the bound.

Shape letters: N keyframes, W temporal windows, F frames per window, H x W pixels, 3 = RGB.
"""
from __future__ import annotations

import logging
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from qvidcap.config import SamplingConfig

logger = logging.getLogger(__name__)


# Output widths at which decord 0.6's resizing decoder fails ("Check failed: from_size == to_size"),
# found by trying every width from 2 to 1300 pixels.
DECORD_BAD_WIDTHS = frozenset({2, 3, 4, 6, 8, 12, 16, 24, 48, 72})


class VideoDecodeError(RuntimeError):
    """A video file that cannot be decoded: empty, truncated, not a video, or no frames."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot decode video {self.path!r}: {reason}")


class VideoBoundsError(VideoDecodeError):
    """A readable clip outside the decode bounds (`sampling.max_*`): refused before any frame is decoded."""

    def __init__(self, path: str | Path, reason: str, setting: str):
        self.setting = setting  # the config value that sets the bound, e.g. "sampling.max_aspect_ratio"
        super().__init__(path, f"{reason} ({setting})")


@dataclass
class VideoHeader:
    """What the container header says about the first video stream; 0 where it does not say."""

    width: int  # stored width, pixels
    height: int  # stored height, pixels
    num_frames: int  # frames the header announces (0 = not stated)
    seconds: float  # duration (0 = not stated)
    fps: float = 0.0


@dataclass
class VideoInfo:
    """What the container says about a clip, read without decoding any frame."""

    path: str
    num_frames: int  # frames decord will index (0 .. num_frames - 1)
    fps: float  # average frame rate
    width: int  # width as displayed (after the rotation), pixels
    height: int  # height as displayed, pixels
    rotation: int = 0  # counter-clockwise degrees of the display matrix (phone videos); decord turns frames upright

    @property
    def seconds(self) -> float:
        return self.num_frames / self.fps if self.fps > 0 else 0.0


@dataclass
class SampledClip:
    """The frames of one clip every extractor needs, from one decode (RGB uint8)."""

    video_id: str
    path: str
    temporal: np.ndarray  # (W, F, S, S, 3) VideoMAE windows, S = sampling.temporal_size
    keyframes: np.ndarray  # (N, H, W, 3) keyframes, short side = sampling.keyframe_size
    temporal_indices: np.ndarray  # (W, F) frame index of each temporal frame
    keyframe_indices: np.ndarray  # (N,) frame index of each keyframe
    info: VideoInfo
    padded: bool = False  # True when the clip had fewer frames than asked and indices repeat
    notes: list[str] = field(default_factory=list)  # anything unusual about this clip, for the failure/notes log

    @property
    def num_keyframes(self) -> int:
        return int(self.keyframes.shape[0])


def _open_reader(path: str | Path, width: int = -1, height: int = -1, num_threads: int = 1):
    """A decord VideoReader, with its errors turned into VideoDecodeError naming the file."""
    import decord

    try:
        reader = decord.VideoReader(str(path), width=width, height=height, num_threads=num_threads)
    except Exception as e:  # decord raises a bare RuntimeError/DECORDError for every failure
        raise VideoDecodeError(path, f"not a readable video ({_first_line(e)}); is it truncated or not a video file?") from e
    if len(reader) == 0:
        raise VideoDecodeError(path, "the video stream has no frames")
    return reader


def _check_file(path: str | Path) -> None:
    path = Path(path)
    if not path.is_file():
        raise VideoDecodeError(path, "no such file")
    if path.stat().st_size == 0:
        raise VideoDecodeError(path, "the file is empty (0 bytes)")


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__


def _header(container, stream) -> VideoHeader:
    fps = float(stream.average_rate or stream.guessed_rate or 0)
    seconds = 0.0
    if stream.duration and stream.time_base:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration:
        seconds = container.duration / 1_000_000  # AV_TIME_BASE
    frames = int(stream.frames or 0) or (round(seconds * fps) if seconds and fps else 0)
    return VideoHeader(int(stream.codec_context.width), int(stream.codec_context.height), frames, seconds, fps)


DECODE_BOUNDS = ("max_aspect_ratio", "max_decoded_pixels", "max_pixels", "max_frames", "max_seconds")


def apply_decode_bounds(sampling: SamplingConfig, bounds: SamplingConfig) -> SamplingConfig:
    """`sampling` (a checkpoint's: its sizes are what the model was trained on) with the decode bounds of
    `bounds` (the command line's `--set sampling.max_*`), which are the operator's to choose."""
    for name in DECODE_BOUNDS:
        setattr(sampling, name, getattr(bounds, name))
    return sampling


def check_header(path: str | Path, header: VideoHeader, sampling: SamplingConfig | None = None,
                 short_side: int | None = None) -> None:
    """Raise VideoBoundsError when the header is outside `sampling`'s decode bounds (defaults when None).

    `short_side`: the frames will be decoded with their short side scaled to it, so the aspect ratio
    and decoded area bounds apply too (the decoded long side is short_side x the aspect ratio).
    """
    bounds = sampling or SamplingConfig()
    width, height = header.width, header.height
    if width <= 0 or height <= 0:
        raise VideoDecodeError(path, f"the video stream reports a size of {width}x{height}")
    if width * height > bounds.max_pixels:
        raise VideoBoundsError(path, f"frames of {width}x{height} pixels are more than the {bounds.max_pixels:,} "
                                     f"a frame may have; scale the video down first", "sampling.max_pixels")
    ratio = max(width, height) / min(width, height)
    if short_side and ratio > bounds.max_aspect_ratio:
        raise VideoBoundsError(path, f"a {width}x{height} frame has an aspect ratio of {ratio:.1f}:1, more than "
                                     f"{bounds.max_aspect_ratio:g}:1; crop it to a usual shape first",
                               "sampling.max_aspect_ratio")
    decoded_w, decoded_h = resized_shape(width, height, short_side) if short_side else (width, height)
    if short_side and decoded_w * decoded_h > bounds.max_decoded_pixels:
        raise VideoBoundsError(path, f"a {width}x{height} frame scaled to a short side of {short_side} would be "
                                     f"{decoded_w}x{decoded_h}, more than {bounds.max_decoded_pixels:,} pixels; "
                                     f"crop it to a usual shape first", "sampling.max_decoded_pixels")
    if header.num_frames > bounds.max_frames:
        raise VideoBoundsError(path, f"the stream has {header.num_frames:,} frames, more than "
                                     f"{bounds.max_frames:,}; cut it shorter first", "sampling.max_frames")
    if header.seconds > bounds.max_seconds:
        raise VideoBoundsError(path, f"the video lasts {header.seconds:.0f} s, longer than "
                                     f"{bounds.max_seconds:g} s; cut it shorter first", "sampling.max_seconds")


def read_header(path: str | Path) -> VideoHeader:
    """Size, frame count and duration of the first video stream from the container, decoding nothing."""
    import av

    _check_file(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoDecodeError(path, "the file has no video stream")
            return _header(container, container.streams.video[0])
    except VideoDecodeError:
        raise
    except Exception as e:
        raise VideoDecodeError(path, f"not a readable video ({_first_line(e)}); is it truncated or not a video file?") from e


def _stream_geometry(path: str | Path, sampling: SamplingConfig | None = None,
                     short_side: int | None = None) -> tuple[int, int, int]:
    """(width, height, rotation) of the first video stream: stored size, and the counter-clockwise
    rotation in degrees that its display matrix asks for (phone videos), read from its first frame.

    The header is checked against the decode bounds (`check_header`) before that frame is decoded.
    """
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoDecodeError(path, "the file has no video stream")
            stream = container.streams.video[0]
            header = _header(container, stream)
            check_header(path, header, sampling, short_side)
            width, height = header.width, header.height
            stream.codec_context.thread_count = 1  # one frame: no decoder threads to start (10x faster on small clips)
            first = next(container.decode(stream), None)
            rotation = int(round(getattr(first, "rotation", 0) or 0)) if first is not None else 0
    except VideoDecodeError:
        raise
    except Exception as e:
        raise VideoDecodeError(path, f"not a readable video ({_first_line(e)}); is it truncated or not a video file?") from e
    if width <= 0 or height <= 0:
        raise VideoDecodeError(path, f"the video stream reports a size of {width}x{height}")
    return width, height, rotation % 360


def _open_resized(path: str | Path, short_side: int | None, num_threads: int = 1,
                  sampling: SamplingConfig | None = None):
    """(decord reader resizing at decode time to `short_side`, VideoInfo); None keeps the stored size.

    The clip must be inside `sampling`'s decode bounds (the defaults when None); VideoBoundsError if not.
    """
    _check_file(path)
    width, height, rotation = _stream_geometry(path, sampling, short_side)
    if rotation in (90, 270):  # decord turns such frames upright, then resizes to the size asked for
        width, height = height, width
    out_w, out_h = resized_shape(width, height, short_side) if short_side else (-1, -1)
    while out_w in DECORD_BAD_WIDTHS:  # decord 0.6 returns mis-sized buffers at these widths; callers resize exactly
        out_w += 1
    reader = _open_reader(path, width=out_w, height=out_h, num_threads=num_threads)
    max_frames = (sampling or SamplingConfig()).max_frames
    if len(reader) > max_frames:  # the header did not say, or said less
        raise VideoBoundsError(path, f"the stream has {len(reader):,} frames, more than {max_frames:,}; "
                                     f"cut it shorter first", "sampling.max_frames")
    return reader, VideoInfo(str(path), len(reader), float(reader.get_avg_fps() or 0.0), width, height, rotation)


def probe(path: str | Path) -> VideoInfo:
    """Frame count, frame rate and stored size of a clip, decoding one frame (for its rotation) at most.

    Only the pixel, frame and duration bounds apply: nothing is scaled, so any aspect ratio is fine."""
    reader, info = _open_resized(path, None)
    del reader
    return info


def decode_memory_bytes(sampling: SamplingConfig) -> int:
    """An upper estimate of the memory one `sample_clip` holds at once, for any clip inside the bounds:
    the decoder's reference frames at the stored size (H.264 keeps up to 16, 1.5 bytes a pixel in
    4:2:0), the sampled RGB frames at the decoded size, and the float32 copies that the square crops
    and the keyframe resize make."""
    temporal = sampling.temporal_windows * sampling.temporal_frames
    short = max(sampling.keyframe_size, sampling.temporal_size)
    area = min(short * short * sampling.max_aspect_ratio, sampling.max_decoded_pixels)  # one decoded frame
    decoded = (sampling.num_keyframes + temporal) * area * 3  # uint8 RGB from get_batch
    floats = 4 * 3 * (temporal * short * short + sampling.num_keyframes * area)
    decoder = 17 * sampling.max_pixels * 3 // 2
    return int(decoder + decoded + floats)


def resized_shape(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) with the short side at `short_side` pixels and the aspect ratio kept."""
    scale = short_side / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def evenly_spaced(num_frames: int, count: int) -> np.ndarray:
    """`count` frame indices spread over `num_frames` (linspace, first and last included); repeats when short."""
    if num_frames <= 0 or count <= 0:
        raise ValueError(f"evenly_spaced needs num_frames > 0 and count > 0, got {num_frames} and {count}")
    return np.linspace(0, num_frames - 1, count).round().astype(np.int64)


def temporal_indices(num_frames: int, sampling: SamplingConfig, keyframes: np.ndarray) -> np.ndarray:
    """(W, F) frame indices for VideoMAE: one window over the whole clip, or one per keyframe.

    With one window per keyframe, window i spreads F frames over the stretch of the clip centred on
    keyframe i that is 1/N of the clip long (clamped at the ends).
    """
    frames = sampling.temporal_frames
    if sampling.temporal_windows == 1:
        return evenly_spaced(num_frames, frames)[None]  # (1, F)
    if sampling.temporal_windows != len(keyframes):
        raise ValueError(f"sampling.temporal_windows must be 1 or num_keyframes ({len(keyframes)}), "
                         f"got {sampling.temporal_windows}")
    span = max(1.0, num_frames / len(keyframes))
    windows = []
    for centre in keyframes:
        start = min(max(0.0, centre - span / 2), max(0.0, num_frames - span))
        windows.append(np.linspace(start, start + span - 1, frames).round().clip(0, num_frames - 1))
    return np.stack(windows).astype(np.int64)  # (W, F)


def _center_square(frames: np.ndarray, size: int) -> np.ndarray:
    """(K, H, W, 3) uint8 -> (K, size, size, 3): centre crop to a square, then resize (antialiased)."""
    import torch
    import torch.nn.functional as F

    h, w = frames.shape[1:3]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = frames[:, top:top + side, left:left + side]
    if side == size:
        return np.ascontiguousarray(square)
    x = torch.from_numpy(np.ascontiguousarray(square)).permute(0, 3, 1, 2).float()  # (K, 3, side, side)
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=side > size, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()  # (K, size, size, 3)


def _resize_short(frames: np.ndarray, short_side: int) -> np.ndarray:
    """(K, H, W, 3) uint8 -> (K, H', W', 3) with min(H', W') = short_side."""
    import torch
    import torch.nn.functional as F

    h, w = frames.shape[1:3]
    new_w, new_h = resized_shape(w, h, short_side)
    if (new_w, new_h) == (w, h):
        return frames
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()  # (K, 3, H, W)
    x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", antialias=new_h < h, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def _get_frames(reader, path: str | Path, indices: np.ndarray) -> np.ndarray:
    """The frames at `indices` (any order, repeats allowed) from an open reader: (K, H, W, 3) uint8 RGB.

    Each distinct index is decoded once, all in one `get_batch` call.
    """
    unique, inverse = np.unique(np.asarray(indices, dtype=np.int64), return_inverse=True)
    if unique.size and (unique[0] < 0 or unique[-1] >= len(reader)):
        raise ValueError(f"frame indices {unique[0]}..{unique[-1]} outside 0..{len(reader) - 1} of {path}")
    try:
        frames = reader.get_batch(unique.tolist()).asnumpy()  # (U, H, W, 3)
    except Exception as e:
        raise VideoDecodeError(path, f"decoding frames failed ({_first_line(e)}); the file may be truncated") from e
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] != unique.size:
        raise VideoDecodeError(path, f"the decoder returned frames of shape {frames.shape}, expected ({unique.size}, H, W, 3)")
    return frames[inverse.reshape(-1)]  # (K, H, W, 3)


def read_frames(path: str | Path, num_frames: int, size: int) -> np.ndarray:
    """`num_frames` evenly spaced frames of a clip, short side resized to `size`: (F, H, W, 3) uint8 RGB."""
    reader, info = _open_resized(path, size)
    return _resize_short(_get_frames(reader, path, evenly_spaced(info.num_frames, num_frames)), size)


def open_video(path: str | Path, sampling: SamplingConfig, num_threads: int = 1):
    """(reader, VideoInfo): a decord reader that resizes at decode time to what `sampling` needs.

    Keep it open to cut several spans of one long video with `sample_span` without reopening it.
    """
    if sampling.num_keyframes < 1 or sampling.temporal_frames < 1:
        raise ValueError(f"sampling needs num_keyframes >= 1 and temporal_frames >= 1, got {sampling}")
    return _open_resized(path, max(sampling.keyframe_size, sampling.temporal_size), num_threads, sampling)


def sample_span(reader, info: VideoInfo, sampling: SamplingConfig, start: int = 0, end: int | None = None,
                video_id: str | None = None) -> SampledClip:
    """The VideoMAE windows and keyframes of frames [start, end) of an open video, from one `get_batch`."""
    end = info.num_frames if end is None else min(end, info.num_frames)
    if not 0 <= start < end:
        raise ValueError(f"span [{start}, {end}) is empty or outside the {info.num_frames} frames of {info.path}")
    length = end - start
    key_idx = start + evenly_spaced(length, sampling.num_keyframes)  # (N,)
    temp_idx = start + temporal_indices(length, sampling, key_idx - start)  # (W, F)
    frames = _get_frames(reader, info.path, np.concatenate([key_idx, temp_idx.reshape(-1)]))  # (N + W * F, H, W, 3)
    keyframes = _resize_short(frames[: len(key_idx)], sampling.keyframe_size)  # (N, H, W, 3)
    temporal = _center_square(frames[len(key_idx):], sampling.temporal_size)  # (W * F, S, S, 3)
    temporal = temporal.reshape(*temp_idx.shape, *temporal.shape[1:])  # (W, F, S, S, 3)

    notes = []
    needed = max(sampling.num_keyframes, sampling.temporal_frames)
    padded = length < needed
    if padded:
        notes.append(f"clip has {length} frames, fewer than the {needed} asked for: frames repeated")
    return SampledClip(video_id=video_id or Path(info.path).stem, path=info.path, temporal=temporal, keyframes=keyframes,
                       temporal_indices=temp_idx, keyframe_indices=key_idx, info=info, padded=padded, notes=notes)


def sample_clip(path: str | Path, sampling: SamplingConfig, video_id: str | None = None,
                num_threads: int = 1) -> SampledClip:
    """Decode a clip once and cut from it the VideoMAE windows and the keyframes.

    Raises VideoDecodeError (naming the file and the reason) for empty, truncated or non-video files.
    """
    reader, info = open_video(path, sampling, num_threads)
    return sample_span(reader, info, sampling, video_id=video_id)


def sample_clips(items: Iterable[tuple[str, str | Path]], sampling: SamplingConfig, num_workers: int = 1,
                 prefetch: int = 16) -> Iterator[tuple[str, SampledClip | VideoDecodeError]]:
    """Decode clips on `num_workers` threads, up to `prefetch` ahead of the consumer, in input order.

    `items` are (video_id, path) pairs; each yields (video_id, SampledClip) or, for a file that cannot
    be decoded, (video_id, VideoDecodeError) so that one bad clip never stops a long run. decord
    releases the GIL while decoding, so the threads overlap with the models' work.
    """
    def one(video_id: str, path: str | Path) -> SampledClip | VideoDecodeError:
        try:
            return sample_clip(path, sampling, video_id=video_id)
        except VideoDecodeError as e:
            return e
        except Exception as e:  # an unexpected decoder failure is this clip's problem, not the run's
            return VideoDecodeError(path, f"unexpected {type(e).__name__}: {_first_line(e)}")

    with ThreadPoolExecutor(max_workers=max(1, num_workers), thread_name_prefix="decode") as pool:
        pending: deque = deque()
        for video_id, path in items:
            pending.append((video_id, pool.submit(one, video_id, path)))
            if len(pending) >= max(1, prefetch):
                done_id, future = pending.popleft()
                yield done_id, future.result()
        while pending:
            done_id, future = pending.popleft()
            yield done_id, future.result()


def write_video(path: str | Path, frames: np.ndarray, fps: int = 12) -> Path:
    """Write (F, H, W, 3) RGB or (F, H, W) grayscale uint8 frames as an H.264 mp4 (PyAV).

    Odd sizes are written in 4:4:4 (4:2:0 needs even sides) and grayscale as `gray`, so tests and
    demos can make every kind of clip the decoder has to cope with.
    """
    import av

    frames = np.asarray(frames, dtype=np.uint8)
    gray = frames.ndim == 3
    height, width = frames.shape[1:3]
    pix_fmt = "gray" if gray else ("yuv420p" if height % 2 == 0 and width % 2 == 0 else "yuv444p")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        for frame in frames:
            picture = av.VideoFrame.from_ndarray(frame, format="gray" if gray else "rgb24")
            container.mux(stream.encode(picture))
        container.mux(stream.encode(None))
    return Path(path)
