"""The caption pipeline and `qvidcap caption`, on a real (tiny, untrained) checkpoint and real mp4 files.

The session fixture writes a few small clips with PyAV, builds the default profile's random
extractors at a tiny size, extracts the clips, builds the model and its word tokenizer, and saves a
checkpoint the way training does (extractors copied in). `tests/test_serve.py` reuses it.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

COLOURS = [(230, 40, 40), (40, 200, 60), (50, 90, 240), (240, 220, 40)]
CAPTIONS = ["a red square moves right", "a green square moves down", "a blue square moves left",
            "a yellow square moves up", "the square slides across a dark background"]
TINY = {"sampling.num_keyframes": 2, "sampling.temporal_frames": 4, "sampling.temporal_size": 32,
        "sampling.keyframe_size": 64, "features.small_hidden_size": 32, "features.small_layers": 1,
        "features.small_heads": 2, "features.max_objects": 2, "heads.hidden_size": 32, "heads.num_heads": 2,
        "heads.num_object_queries": 2, "heads.object_encoder_layers": 1, "qformer.num_queries": 4,
        "qformer.num_layers": 1, "qformer.num_heads": 2, "qformer.intermediate_size": 64,
        "decoder.small_hidden_size": 32, "decoder.small_layers": 1, "decoder.small_heads": 2,
        "decoder.small_intermediate_size": 64, "decoder.small_moe_intermediate_size": 32,
        "heads.dropout": 0.0, "qformer.dropout": 0.0, "generation.num_beams": 2, "generation.max_new_tokens": 6}


def write_clip(path: Path, colour: tuple[int, int, int], step: tuple[int, int], seconds: float = 2.0,
               fps: int = 12, size: int = 64) -> Path:
    """An H.264 mp4 of one coloured square moving by `step` pixels a frame over a darker shade of its colour."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(int(seconds * fps)):
            frame = np.empty((size, size, 3), dtype=np.uint8)
            frame[:] = [c // 3 for c in colour]
            x = (8 + step[0] * i) % (size - 16)
            y = (8 + step[1] * i) % (size - 16)
            frame[y:y + 16, x:x + 16] = colour
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def build_tiny_checkpoint(root: Path, clips: list[Path], steps: int = 160) -> Path:
    """A tiny model briefly trained (caption loss only) to tell `clips` apart, saved by the real save
    path with the extractors that made its features; returns the checkpoint directory.

    Clip i is taught `CAPTIONS[i]`, so a caption that comes back for the wrong clip is visible.
    """
    import torch

    from qvidcap.checkpoint import save_checkpoint
    from qvidcap.config import load_config
    from qvidcap.features.clip_features import collate_features
    from qvidcap.features.extractors import build_extractors
    from qvidcap.model import build_captioner
    from qvidcap.model.captioner import link_widths
    from qvidcap.model.tokenizer import build_tokenizer, tokenize_captions
    from qvidcap.video import sample_clip

    torch.manual_seed(0)
    config = load_config("smoke", TINY)
    extractors = build_extractors(config, "cpu")
    extractors_dir = extractors.save(root / "store" / "extractors")
    batch = collate_features(extractors.extract([sample_clip(p, config.sampling) for p in clips]))
    config = link_widths(config, extractors.feature_dims, text_embed_dim=16)
    tokenizer = build_tokenizer(config, CAPTIONS)
    ids = tokenize_captions(tokenizer, CAPTIONS[: len(clips)], config.decoder.max_caption_tokens)
    width = max(map(len, ids))
    input_ids = torch.tensor([row + [tokenizer.pad_token_id] * (width - len(row)) for row in ids])  # (B, L)
    attention_mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in ids])  # (B, L)
    model = build_captioner(config, tokenizer).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        loss = model(batch["temporal"], batch["context"], batch["objects"], batch["object_mask"],
                     input_ids, attention_mask).caption_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return save_checkpoint(root / "checkpoint", model.eval(), config, tokenizer, extractors_dir=extractors_dir)


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> dict[str, Path]:
    """Tiny clips (four moving squares, one long video) and bad files, written once per session."""
    root = tmp_path_factory.getbasetemp() / "serving-media"
    if not (root / "done").exists():
        root.mkdir(exist_ok=True)
        steps = [(2, 0), (0, 2), (-2, 0), (0, -2)]
        for i, (colour, step) in enumerate(zip(COLOURS, steps)):
            write_clip(root / f"clip{i}.mp4", colour, step)
        write_clip(root / "long.mp4", COLOURS[0], (1, 1), seconds=9.0, fps=8)
        (root / "text.mp4").write_text("this is not a video\n")
        (root / "empty.mp4").write_bytes(b"")
        good = (root / "clip0.mp4").read_bytes()
        (root / "truncated.mp4").write_bytes(good[: len(good) // 2])
        (root / "done").touch()
    return {p.stem: p for p in root.glob("*.mp4")}


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory, media) -> Path:
    root = tmp_path_factory.getbasetemp() / "serving-checkpoint"
    if not (root / "checkpoint" / "config.json").exists():  # test_serve.py imports this fixture too
        root.mkdir(exist_ok=True)
        build_tiny_checkpoint(root, [media[f"clip{i}"] for i in range(len(COLOURS))])
    return root / "checkpoint"


@pytest.fixture(scope="session")
def pipeline(checkpoint):
    from qvidcap.inference import CaptionPipeline

    return CaptionPipeline.from_checkpoint(checkpoint, device="cpu")


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
    from qvidcap.inference import window_bounds

    assert window_bounds(72, 24) == [(0, 24), (24, 48), (48, 72)]
    assert window_bounds(80, 24) == [(0, 24), (24, 48), (48, 80)]  # 8 frames left: merged
    assert window_bounds(60, 24) == [(0, 24), (24, 48), (48, 60)]  # 12 frames left: kept
    assert window_bounds(10, 24) == [(0, 10)]
    with pytest.raises(ValueError, match="window_frames"):
        window_bounds(10, 0)


def test_windows_of_a_long_video_decode_only_their_own_frames(pipeline, media):
    from qvidcap.inference import sample_windows

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
    from qvidcap.inference import plot_caption

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
