"""Loading VATEX, whichever copy is at hand, into `ClipRecord`s.

Three copies read the same way: the official annotation JSON files (a list of
`{"videoID", "enCap", "chCap"}`), Kaggle copies saved by Hugging Face `datasets.save_to_disk`
(the same three columns), and the built-in mini dataset (official JSON files). Every record is
checked; a bad one (missing fields, duplicate or malformed videoID, empty or non-string captions,
no video file) raises `AnnotationError` naming it, or, when lenient, is skipped and recorded in
`ClipSet.skipped` so the notebook can show what was left out and why. Not every YouTube clip
survives, so each `ClipSet` says how many of the clips its annotations reference have a video.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from qvidcap.config import StudyConfig
from qvidcap.data.records import SPLITS, ClipRecord, VideoIdError, parse_video_id
from qvidcap.runtime import env as env_module
from qvidcap.runtime.env import Environment
from qvidcap.runtime.kaggle_inputs import MAX_DEPTH, MAX_DIRS, source_roots, walk

logger = logging.getLogger(__name__)

OFFICIAL_FILES = {  # split -> official annotation file names, newest first
    "train": ("vatex_training_v1.0.json",),
    "validation": ("vatex_validation_v1.0.json",),
    "public_test": ("vatex_public_test_english_v1.1.json", "vatex_public_test_english_v1.0.json"),
    "private_test": ("vatex_private_test_without_annotations.json",),
}
SAVED_SPLIT_NAMES = {  # split -> folder names of save_to_disk copies (e.g. vatex/json/train)
    "train": ("train", "training"),
    "validation": ("validation", "val"),
    "public_test": ("public_test", "test"),
    "private_test": ("private_test",),
}
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov")
SEARCH_DEPTH = MAX_DEPTH  # folders below a candidate root searched for annotations and videos/
OPTIONAL_SPLITS = ("validation", "private_test")  # some copies lack them; training holds out part of train
_warned: set[str] = set()


class AnnotationError(ValueError):
    """An annotation file that cannot be read, or a bad record in it (strict mode)."""


class DatasetNotFoundError(FileNotFoundError):
    """No copy of the requested dataset (or of one split of it) where we looked."""


@dataclass(frozen=True)
class SkippedRecord:
    index: int  # position of the record in the annotation file
    video_id: str | None  # None when the record has no usable videoID
    reason: str


@dataclass
class ClipSet:
    """The clips of one split that can be used, and an account of those that cannot."""

    split: str
    source: str  # "mini", "vatex", or the annotation path for the low-level readers
    records: list[ClipRecord]
    skipped: list[SkippedRecord] = field(default_factory=list)
    num_referenced: int = 0  # records in the annotation file, good or bad
    num_with_video: int = 0  # referenced clips (distinct videoIDs) whose video file exists

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[ClipRecord]:
        return iter(self.records)

    def __getitem__(self, index: int) -> ClipRecord:
        return self.records[index]

    @property
    def video_ids(self) -> list[str]:
        return [r.video_id for r in self.records]

    def summary(self) -> dict:
        """One row for a table of splits."""
        return {"split": self.split, "source": self.source, "referenced": self.num_referenced,
                "with video": self.num_with_video, "usable": len(self.records), "skipped": len(self.skipped),
                "captions": sum(len(r.captions) for r in self.records)}


@dataclass(frozen=True)
class DatasetLocation:
    """Where one dataset's annotations (per split) and videos are."""

    name: str  # "mini" or "vatex"
    root: Path
    annotations: dict[str, Path]  # split -> official JSON file or save_to_disk folder
    video_dirs: tuple[Path, ...]  # searched in order for <videoID>.mp4

    @property
    def video_dir(self) -> Path:
        return self.video_dirs[0]


# ---------------------------------------------------------------- reading records


def _index_videos(video_dirs: Sequence[Path]) -> dict[str, Path]:
    """videoID -> video file, from one directory listing per folder (the first folder wins)."""
    index: dict[str, Path] = {}
    for folder in video_dirs:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            stem, suffix = os.path.splitext(entry.name)
            if suffix.lower() in VIDEO_SUFFIXES and stem not in index and entry.is_file():
                index[stem] = Path(entry.path)
    return index


def _clean_captions(value, name: str, required: bool) -> tuple[list[str], str | None]:
    """Captions with whitespace runs (\\r, \\n, tabs) collapsed, or the reason they are unusable."""
    if value is None:
        return [], (f"has no {name}" if required else None)
    if not isinstance(value, (list, tuple)):
        return [], f"{name} is a {type(value).__name__}, expected a list of strings"
    if required and not value:
        return [], f"{name} is empty"
    captions = []
    for i, caption in enumerate(value):
        if not isinstance(caption, str):
            return [], f"{name}[{i}] is a {type(caption).__name__} ({caption!r}), expected a string"
        caption = " ".join(caption.split())
        if not caption:
            return [], f"{name}[{i}] is an empty caption"
        captions.append(caption)
    return captions, None


def records_from_rows(rows: Iterable, split: str, video_dirs: Sequence[Path] | None, lenient: bool,
                      source: str) -> ClipSet:
    """Check annotation rows and turn the good ones into ClipRecords.

    `video_dirs=None` skips the video check (annotations only). The private test has no captions:
    its records need only a videoID.
    """
    _check_split(split)
    need_captions = split != "private_test"
    videos = _index_videos(video_dirs) if video_dirs is not None else {}
    records: list[ClipRecord] = []
    skipped: list[SkippedRecord] = []
    first_seen: dict[str, int] = {}
    with_video: set[str] = set()
    num_rows = 0
    for index, row in enumerate(rows):
        num_rows += 1
        video_id = row.get("videoID") if isinstance(row, dict) else None
        video_id = video_id if isinstance(video_id, str) else None
        if video_id is not None and video_id in videos:
            with_video.add(video_id)
        reason = _check_row(row, video_id, first_seen, need_captions)
        captions = captions_zh = []
        if reason is None:
            captions, reason = _clean_captions(row.get("enCap"), "enCap", need_captions)
        if reason is None:
            captions_zh, reason = _clean_captions(row.get("chCap"), "chCap", required=False)
        if reason is None and video_dirs is not None and video_id not in videos:
            reason = f"has no video file ({video_id}.mp4) in {', '.join(str(d) for d in video_dirs) or 'no folder'}"
        if video_id is not None and video_id not in first_seen:
            first_seen[video_id] = index
        if reason is not None:
            if not lenient:
                raise AnnotationError(f"{source}: record {index} (videoID {video_id!r}) {reason}; fix the record, "
                                      "or set data.lenient=true to skip bad records")
            skipped.append(SkippedRecord(index, video_id, reason))
            continue
        records.append(ClipRecord(video_id, split, captions, captions_zh, videos.get(video_id)))
    return ClipSet(split, source, records, skipped, num_rows, len(with_video))


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")


def _check_row(row, video_id: str | None, first_seen: dict[str, int], need_captions: bool) -> str | None:
    if not isinstance(row, dict):
        return f"is a {type(row).__name__}, expected an object with videoID and enCap"
    if "videoID" not in row:
        return "has no videoID"
    if video_id is None:
        return f"has a videoID that is a {type(row['videoID']).__name__}, expected a string"
    try:
        parse_video_id(video_id)
    except VideoIdError as e:
        return f"has a malformed videoID: {e}"
    if video_id in first_seen:
        return f"duplicates the videoID of record {first_seen[video_id]}"
    if need_captions and "enCap" not in row:
        return "has no enCap (English captions)"
    return None


def read_annotation_file(path: str | Path, split: str, video_dir: Path | Sequence[Path] | None,
                         lenient: bool) -> ClipSet:
    """Records of one official VATEX JSON file (a list of {videoID, enCap, chCap})."""
    import json

    _check_split(split)
    path = Path(path)
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise DatasetNotFoundError(f"annotation file {str(path)!r} does not exist; run `qvidcap data` "
                                   "or set paths.vatex_input to a VATEX copy") from e
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise AnnotationError(f"annotation file {str(path)!r} is not readable JSON ({e}); "
                              "re-download it or point paths.vatex_input at a good copy") from e
    if not isinstance(rows, list):
        raise AnnotationError(f"annotation file {str(path)!r} holds a {type(rows).__name__}; expected a list "
                              "of records {videoID, enCap, chCap} as in the official VATEX files")
    return records_from_rows(rows, split, _as_dirs(video_dir), lenient, str(path))


def read_saved_dataset(path: str | Path, split: str, video_dir: Path | Sequence[Path] | None,
                       lenient: bool) -> ClipSet:
    """Records of a Hugging Face `save_to_disk` copy (columns videoID, enCap, chCap), as on Kaggle."""
    import datasets

    _check_split(split)
    path = Path(path)
    try:
        saved = datasets.load_from_disk(str(path))
    except FileNotFoundError as e:
        raise DatasetNotFoundError(f"no saved dataset at {str(path)!r}; expected a folder written by "
                                   "datasets.save_to_disk (e.g. vatex/json/train)") from e
    except Exception as e:  # datasets raises several kinds for a corrupt folder
        raise AnnotationError(f"{str(path)!r} is not a readable datasets.save_to_disk folder ({e})") from e
    if isinstance(saved, datasets.DatasetDict):
        names = [n for n in SAVED_SPLIT_NAMES[split] if n in saved]
        if not names:
            raise DatasetNotFoundError(f"saved DatasetDict {str(path)!r} has splits {list(saved)}, none for {split!r}")
        saved = saved[names[0]]
    missing = {"videoID"} - set(saved.column_names)
    if missing:
        raise AnnotationError(f"saved dataset {str(path)!r} has columns {saved.column_names}; "
                              "expected videoID, enCap and chCap")
    return records_from_rows(saved.to_list(), split, _as_dirs(video_dir), lenient, str(path))


def read_annotations(path: str | Path, split: str, video_dir: Path | Sequence[Path] | None,
                     lenient: bool) -> ClipSet:
    """Either reader, chosen by what `path` is: a JSON file or a save_to_disk folder."""
    return (read_saved_dataset if Path(path).is_dir() else read_annotation_file)(path, split, video_dir, lenient)


def _as_dirs(video_dir: Path | Sequence[Path] | None) -> tuple[Path, ...] | None:
    if video_dir is None:
        return None
    if isinstance(video_dir, (str, os.PathLike)):
        return (Path(video_dir),)
    return tuple(Path(d) for d in video_dir)


# ---------------------------------------------------------------- finding a copy


def annotation_names() -> list[str]:
    """The names a search for annotations looks for (for the message when nothing is found)."""
    official = [n for names in OFFICIAL_FILES.values() for n in names]
    return official + ["dataset_dict.json, state.json or dataset_info.json of save_to_disk folders "
                       f"({'/'.join(n for names in SAVED_SPLIT_NAMES.values() for n in names)})", "videos/"]


def find_annotations(root: Path, budget: list[int] | None = None) -> dict[str, Path]:
    """split -> annotation file or save_to_disk folder found under `root` (official JSON first)."""
    found: dict[str, Path] = {}
    saved: dict[str, Path] = {}
    for folder, dirs, files in walk(root, SEARCH_DEPTH, budget):
        for split, names in OFFICIAL_FILES.items():
            for name in names:
                if name in files and split not in found:
                    found[split] = folder / name
        is_saved = "state.json" in files or "dataset_info.json" in files
        if "dataset_dict.json" in files:  # a whole DatasetDict saved in one folder
            for split, names in SAVED_SPLIT_NAMES.items():
                if any(n in dirs for n in names) and split not in saved:
                    saved[split] = folder
        for split, names in SAVED_SPLIT_NAMES.items():
            if is_saved and folder.name in names and split not in saved:
                saved[split] = folder
    return {**saved, **found}


def find_video_dirs(root: Path, budget: list[int] | None = None) -> list[Path]:
    """Every videos/ folder under `root` (Kaggle copies keep clips at <root>/videos/<videoID>.mp4)."""
    if root.name == "videos":
        return [root]
    return sorted(folder / "videos" for folder, dirs, _ in walk(root, SEARCH_DEPTH, budget) if "videos" in dirs)


def kagglehub_cache_dirs(handles: Sequence[str]) -> list[Path]:
    """Version folders of the given Kaggle datasets in the kagglehub cache, newest version first."""
    cache = Path(os.environ.get("KAGGLEHUB_CACHE", "~/.cache/kagglehub")).expanduser()
    found = []
    for handle in handles:
        versions = cache / "datasets" / handle / "versions"
        if versions.is_dir():
            numbered = [v for v in versions.iterdir() if v.is_dir()]
            found += sorted(numbered, key=lambda v: int(v.name) if v.name.isdigit() else -1, reverse=True)
    return found


def vatex_search_roots(config: StudyConfig, env: Environment) -> list[Path]:
    """Where a VATEX copy may be, in the order they are tried."""
    roots = []
    if config.paths.vatex_input:
        roots.append(Path(config.paths.vatex_input).expanduser())
    input_dir = env.input_dir or (env_module.KAGGLE_INPUT if env_module.KAGGLE_INPUT.is_dir() else None)
    if input_dir is not None and input_dir.is_dir():
        roots += source_roots(input_dir)  # /kaggle/input/<slug>, datasets/<owner>/<slug>, notebooks/<user>/<slug>
    roots += kagglehub_cache_dirs(config.data.kaggle_datasets)
    roots.append(env.data_dir / "vatex")
    return roots


def find_vatex(config: StudyConfig, env: Environment) -> DatasetLocation | None:
    """The first VATEX copy with annotations, with the videos/ folders of every copy found (None if none)."""
    if config.paths.vatex_input and not Path(config.paths.vatex_input).expanduser().exists():
        raise DatasetNotFoundError(f"paths.vatex_input={config.paths.vatex_input!r} does not exist; "
                                   "point it at a VATEX copy or set it to \"\" to search the usual places")
    location = None
    video_dirs: list[Path] = []
    budget = [MAX_DIRS]  # one cap on folders listed for the whole search
    for root in vatex_search_roots(config, env):
        if not root.is_dir():
            continue
        video_dirs += [d for d in find_video_dirs(root, budget) if d not in video_dirs]
        annotations = find_annotations(root, budget)
        if location is None and annotations:
            location = (root, annotations)
    if location is None:
        return None
    root, annotations = location
    return DatasetLocation("vatex", root, annotations, tuple(video_dirs))


def mini_location(env: Environment) -> DatasetLocation:
    from qvidcap.data.minidata import ANNOTATION_FILES

    root = env.data_dir / "mini"
    return DatasetLocation("mini", root, {s: root / n for s, n in ANNOTATION_FILES.items()}, (root / "videos",))


def resolve_dataset(config: StudyConfig, env: Environment) -> DatasetLocation:
    """Where the configured dataset is: the mini dataset, or the first VATEX copy found.

    With data.source="vatex" and no copy found, falls back to the mini dataset (with a warning) when
    data.fallback_to_mini is set, and otherwise raises DatasetNotFoundError saying what to supply.
    """
    source = config.data.source
    if source == "mini":
        return mini_location(env)
    if source != "vatex":
        raise ValueError(f"data.source={source!r}; expected 'mini' or 'vatex'")
    location = find_vatex(config, env)
    if location is not None:
        return location
    looked = (", ".join(str(r) for r in vatex_search_roots(config, env)) or "nowhere") + \
        f", up to {SEARCH_DEPTH} folders deep, for {', '.join(annotation_names())}"
    if config.data.fallback_to_mini:
        message = f"no VATEX copy found (looked in {looked}); using the built-in mini dataset instead"
        if message not in _warned:  # once per process, not once per split
            _warned.add(message)
            logger.warning(message)
        return mini_location(env)
    raise DatasetNotFoundError(
        f"no VATEX copy found (looked in {looked}); attach {config.data.kaggle_datasets[0]} to the Kaggle notebook, "
        "set paths.vatex_input to a local copy, or run `qvidcap data --set data.source=vatex` with Kaggle credentials"
    )


def load_clips(config: StudyConfig, env: Environment, split: str, *, lenient: bool | None = None,
               missing_ok: bool = False) -> ClipSet:
    """The usable clips of one split of the configured dataset (the mini dataset is generated if missing).

    `lenient=None` takes data.lenient. data.max_clips_per_split > 0 keeps the first that many records.
    A split the copy has no annotations for raises DatasetNotFoundError, or, with `missing_ok`, gives
    an empty ClipSet (some VATEX copies have no validation split).
    """
    _check_split(split)
    location = resolve_dataset(config, env)
    if location.name == "mini":
        from qvidcap.data.minidata import generate_mini_dataset

        generate_mini_dataset(config.data, location.root)
    path = location.annotations.get(split)
    if path is None:
        if missing_ok:
            logger.info("%s %s: no annotations in the copy at %s; the split is left out", location.name, split,
                        location.root)
            return ClipSet(split, location.name, [])
        raise DatasetNotFoundError(f"the {location.name} copy at {location.root} has no annotations for split "
                                   f"{split!r}; it has {sorted(location.annotations)}")
    lenient = config.data.lenient if lenient is None else lenient
    clips = read_annotations(path, split, location.video_dirs, lenient)
    clips = replace(clips, source=location.name)
    if config.data.max_clips_per_split > 0:
        clips.records = clips.records[: config.data.max_clips_per_split]
    logger.info("%s %s: %d clips referenced, %d with a video, %d usable, %d skipped", location.name, split,
                clips.num_referenced, clips.num_with_video, len(clips), len(clips.skipped))
    return clips


def load_splits(config: StudyConfig, env: Environment, splits: Sequence[str] | None = None, *,
                lenient: bool | None = None) -> dict[str, ClipSet]:
    """`load_clips` for several splits (default: every split the dataset has annotations for).

    Named splits in OPTIONAL_SPLITS that the copy lacks are left out of the result, not an error.
    """
    location = resolve_dataset(config, env)
    if splits is None:
        splits = [s for s in SPLITS if s in location.annotations]
    loaded = {split: load_clips(config, env, split, lenient=lenient, missing_ok=split in OPTIONAL_SPLITS)
              for split in splits}
    return {split: clips for split, clips in loaded.items() if split in location.annotations}


def split_report(config: StudyConfig, env: Environment) -> list[dict]:
    """Per split, what the copy in use has: annotations (where, or none), records in them, videos present."""
    location = resolve_dataset(config, env)
    rows = []
    for split in SPLITS:
        path = location.annotations.get(split)
        row = {"split": split, "annotations": str(path) if path else "none", "records": 0, "videos present": 0}
        if path is not None:
            clips = load_clips(config, env, split, lenient=True)
            row.update(records=clips.num_referenced, **{"videos present": clips.num_with_video})
        rows.append(row)
    found = [f"{r['split']} ({r['records']} records, {r['videos present']} videos)" for r in rows if r["records"]]
    missing = [r["split"] for r in rows if r["annotations"] == "none"]
    logger.info("%s copy at %s: %s%s", location.name, location.root, ", ".join(found) or "no annotated split",
                f"; no annotations for {', '.join(missing)}" if missing else "")
    return rows
