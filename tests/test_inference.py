"""The caption pipeline and `qvidcap caption`, on a real (tiny, untrained) checkpoint and real mp4 files.

The session fixture writes a few small clips with PyAV, builds the default profile's random
extractors at a tiny size, extracts the clips, builds the model and its word tokenizer, and saves a
checkpoint the way training does (extractors copied in). `tests/test_serve.py` reuses it.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tiny_checkpoint import CAPTIONS, COLOURS

def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qvidcap.cli", "caption", "--device", "cpu", *args],
                          capture_output=True, text=True, timeout=300)


def test_caption_gives_each_clip_its_trained_caption_with_stage_timings(pipeline, media):
    for i, expected in enumerate(CAPTIONS[: len(COLOURS)]):
        result = pipeline.caption(media[f"clip{i}"])
        assert result.caption == expected
        assert result.path == str(media[f"clip{i}"])
        assert (result.start_seconds, result.end_seconds) == (0.0, pytest.approx(2.0))
        timings = result.timings
        assert timings.decode_s > 0 and timings.features_s > 0 and timings.generation_s > 0
        assert timings.total_s == pytest.approx(timings.decode_s + timings.features_s + timings.generation_s)


def test_caption_many_batches_and_matches_one_at_a_time(pipeline, media, monkeypatch):
    monkeypatch.setattr(pipeline.config.generation, "batch_size", 3)  # a full batch and a partial one
    paths = [media[f"clip{i}"] for i in (3, 1, 0, 2)]
    batched = pipeline.caption_many(paths)
    assert [r.caption for r in batched] == [pipeline.caption(p).caption for p in paths]
    assert [r.path for r in batched] == [str(p) for p in paths]


@pytest.mark.parametrize("name", ["text", "empty", "truncated"])
def test_files_that_are_not_videos_raise_a_decode_error_naming_the_file(pipeline, media, name):
    from qvidcap.video import VideoDecodeError

    with pytest.raises(VideoDecodeError, match=name):
        pipeline.caption(media[name])


def test_window_bounds_cover_every_frame_and_merge_a_short_tail():
    from qvidcap.serving.inference import window_bounds

    assert window_bounds(72, 24) == [(0, 24), (24, 48), (48, 72)]
    assert window_bounds(80, 24) == [(0, 24), (24, 48), (48, 80)]  # 8 frames left: merged
    assert window_bounds(60, 24) == [(0, 24), (24, 48), (48, 60)]  # 12 frames left: kept
    assert window_bounds(10, 24) == [(0, 10)]
    with pytest.raises(ValueError, match="window_frames"):
        window_bounds(10, 0)


def test_windows_of_a_long_video_decode_only_their_own_frames(pipeline, media):
    from qvidcap.serving.inference import sample_windows

    windows = list(sample_windows(media["long"], pipeline.config.sampling, 3.0))
    assert [span for span, _ in windows] == [(0.0, 3.0), (3.0, 6.0), (6.0, 9.0)]
    for (start, end), clip in windows:
        fps = clip.info.fps
        indices = np.concatenate([clip.keyframe_indices, clip.temporal_indices.ravel()])
        assert indices.min() >= round(start * fps) and indices.max() < round(end * fps)
        assert clip.keyframes.shape[0] == pipeline.config.sampling.num_keyframes


def test_caption_windows_gives_one_timed_caption_per_window(pipeline, media):
    captions = pipeline.caption_windows(media["long"], 3.0)
    assert [(c.start_seconds, c.end_seconds) for c in captions] == [(0.0, 3.0), (3.0, 6.0), (6.0, 9.0)]
    assert all(c.caption and c.path == str(media["long"]) for c in captions)
    with pytest.raises(ValueError, match="window_seconds"):
        pipeline.caption_windows(media["long"], 0)


def test_plot_caption_shows_frames_under_the_caption(media):
    import matplotlib

    matplotlib.use("Agg")
    from qvidcap.serving.inference import plot_caption

    figure = plot_caption(media["clip0"], "a red square moves right", reference="a square", num_frames=3, size=64)
    assert len(figure.axes) == 3
    assert figure._suptitle.get_text() == "clip0.mp4: a red square moves right\nreference: a square"


def test_cli_prints_path_tab_caption_and_reports_bad_files_on_stderr(checkpoint, media):
    missing = media["clip0"].with_name("missing.mp4")
    done = run_cli(str(media["clip0"]), str(media["text"]), str(missing), str(media["clip1"]), "--checkpoint", str(checkpoint))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"{media['clip0']}\t{CAPTIONS[0]}", f"{media['clip1']}\t{CAPTIONS[1]}"]
    assert f"cannot decode video '{media['text']}'" in done.stderr
    assert f"cannot decode video '{missing}': no such file" in done.stderr


def test_cli_json_lists_results_and_errors(checkpoint, media):
    done = run_cli(str(media["clip2"]), str(media["empty"]), "--checkpoint", str(checkpoint), "--json")
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert results[0]["caption"] == CAPTIONS[2] and set(results[0]["timings"]) >= {"decode_s", "features_s", "generation_s"}
    assert results[1]["path"] == str(media["empty"]) and "empty" in results[1]["error"]


def test_cli_fails_only_when_every_file_failed(checkpoint, media, capsys):
    from qvidcap.cli import main

    assert main(["caption", "--device", "cpu", str(media["text"]), str(media["truncated"]),
                 "--checkpoint", str(checkpoint)]) == 1
    err = capsys.readouterr().err
    assert str(media["text"]) in err and str(media["truncated"]) in err


def test_cli_window_prints_a_timed_caption_per_window(checkpoint, media, capsys):
    from qvidcap.cli import main

    assert main(["caption", "--device", "cpu", str(media["long"]), "--checkpoint", str(checkpoint), "--window", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[1] for line in lines] == ["0.0-4.0s", "4.0-9.0s"]
    assert all(line.startswith(f"{media['long']}\t") and line.split("\t")[2] for line in lines)


def test_cli_says_which_checkpoint_is_missing(media, tmp_path, capsys):
    from qvidcap.cli import main

    assert main(["caption", "--device", "cpu", str(media["clip0"]), "--checkpoint", str(tmp_path / "nothing")]) == 2
    assert "not a complete checkpoint" in capsys.readouterr().err


def test_cli_refuses_a_window_that_is_not_positive(checkpoint, media, capsys):
    from qvidcap.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["caption", str(media["long"]), "--checkpoint", str(checkpoint), "--window", "0"])
    assert exit_info.value.code == 2 and "positive number of seconds" in capsys.readouterr().err


def test_trained_on_says_which_data_the_checkpoint_knows_and_what_that_means():
    from qvidcap.config import load_config
    from qvidcap.serving.inference import trained_on

    mini = trained_on(load_config("smoke", {"data.mini_train_clips": 123}))
    assert (mini.dataset, mini.train_clips) == ("mini", 123)
    assert "mini dataset (123 generated clips" in mini.sentence() and "coloured shapes" in mini.sentence()
    capped = trained_on(load_config("smoke", {"data.max_clips_per_split": 50}))
    assert capped.train_clips == 50
    colab = trained_on(load_config("colab"))
    assert (colab.dataset, colab.train_clips, colab.may_be_mini) == ("vatex", 6000, False)
    assert "trained on VATEX (at most 6,000 training clips" in colab.sentence() and "shapes" not in colab.sentence()
    kaggle = trained_on(load_config("kaggle")).to_dict()
    assert kaggle["train_clips"] is None and "up to 25,991 clips" in kaggle["note"]
    fallback = trained_on(load_config("smoke", {"data.source": "vatex"}))
    assert fallback.may_be_mini and "fallback to the mini dataset" in fallback.sentence()


def test_cli_says_once_on_stderr_which_data_the_checkpoint_was_trained_on(checkpoint, media, capsys):
    from qvidcap.cli import main
    from qvidcap.config import StudyConfig
    from qvidcap.serving.inference import trained_on

    expected = trained_on(StudyConfig.from_json(checkpoint / "config.json")).sentence()
    assert main(["caption", "--device", "cpu", str(media["clip0"]), str(media["clip1"]), "--checkpoint", str(checkpoint)]) == 0
    out, err = capsys.readouterr()
    assert err.count("trained on") == 1 and expected in err
    assert out.splitlines() == [f"{media['clip0']}\t{CAPTIONS[0]}", f"{media['clip1']}\t{CAPTIONS[1]}"]
