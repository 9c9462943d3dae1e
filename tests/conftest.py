"""Session fixtures shared by several test files: tiny clips, bad files and a tiny trained checkpoint."""
from __future__ import annotations

from pathlib import Path

import pytest

from tiny_checkpoint import COLOURS, build_tiny_checkpoint, write_clip


@pytest.fixture(autouse=True)
def no_study_deadline(monkeypatch):
    """Each test starts without a study deadline, and none outlives it: code under test (the study runner,
    the Kaggle kernel's first cell) exports one into os.environ, where later tests would inherit it."""
    from qvidcap.runtime.deadline import ENV_VAR

    monkeypatch.setenv(ENV_VAR, "")  # recorded first, so undone last: the variable is removed after the test


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
    if not (root / "checkpoint" / "config.json").exists():
        root.mkdir(exist_ok=True)
        build_tiny_checkpoint(root, [media[f"clip{i}"] for i in range(len(COLOURS))])
    return root / "checkpoint"


@pytest.fixture(scope="session")
def pipeline(checkpoint):
    from qvidcap.serving.inference import CaptionPipeline

    return CaptionPipeline.from_checkpoint(checkpoint, device="cpu")
