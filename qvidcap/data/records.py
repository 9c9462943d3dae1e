"""One record type for a captioned clip, whatever copy of VATEX (or the mini dataset) it came from."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

SPLITS = ("train", "validation", "public_test", "private_test")

# "<youtube id>_<start 6 digits>_<end 6 digits>"; the YouTube id may itself hold "_" and "-",
# so the two time fields are split off the right.
VIDEO_ID_PATTERN = re.compile(r"^(?P<youtube_id>[A-Za-z0-9_-]+)_(?P<start>\d{6})_(?P<end>\d{6})$")


class VideoIdError(ValueError):
    """A videoID that is not in the VATEX shape."""


def format_video_id(youtube_id: str, start: int, end: int) -> str:
    """`("0wR5jVB-WPk", 417, 427)` -> `"0wR5jVB-WPk_000417_000427"`; checked by `parse_video_id`."""
    video_id = f"{youtube_id}_{int(start):06d}_{int(end):06d}"
    parse_video_id(video_id)
    return video_id


def parse_video_id(video_id: str) -> tuple[str, int, int]:
    """`"0wR5jVB-WPk_000417_000427"` -> `("0wR5jVB-WPk", 417, 427)` (start and end in seconds)."""
    match = VIDEO_ID_PATTERN.match(video_id) if isinstance(video_id, str) else None
    if not match:
        raise VideoIdError(
            f"videoID {video_id!r} is not in the VATEX shape '<youtube id>_<start:6 digits>_<end:6 digits>'"
        )
    start, end = int(match["start"]), int(match["end"])
    if end <= start:
        raise VideoIdError(f"videoID {video_id!r} ends ({end} s) before it starts ({start} s)")
    return match["youtube_id"], start, end


@dataclass
class ClipRecord:
    video_id: str  # VATEX videoID
    split: str  # one of SPLITS
    captions: list[str]  # enCap: English references (10 in VATEX; may be empty for the private test)
    captions_zh: list[str] = field(default_factory=list)  # chCap
    video_path: Path | None = None  # the clip's video file, None when no copy has it

    @property
    def youtube_id(self) -> str:
        return parse_video_id(self.video_id)[0]

    @property
    def start_seconds(self) -> int:
        return parse_video_id(self.video_id)[1]

    @property
    def end_seconds(self) -> int:
        return parse_video_id(self.video_id)[2]

    @property
    def has_video(self) -> bool:
        return self.video_path is not None and Path(self.video_path).is_file()

    def to_annotation(self) -> dict:
        """The record in the official VATEX JSON shape (`videoID`, `enCap`, `chCap`)."""
        return {"videoID": self.video_id, "enCap": list(self.captions), "chCap": list(self.captions_zh)}
