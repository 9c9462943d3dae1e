"""01-02: datasets: the VATEX annotations (official JSON, Kaggle save_to_disk copies) and the built-in mini dataset.

`prepare_data` makes the configured dataset available (generate or download); `load_clips` reads one
split into `ClipRecord`s, with an account of the records it could not use.
"""
from qvidcap.data.records import SPLITS, ClipRecord, VideoIdError, format_video_id, parse_video_id
from qvidcap.data.vatex import (
    AnnotationError,
    ClipSet,
    DatasetLocation,
    DatasetNotFoundError,
    SkippedRecord,
    load_clips,
    load_splits,
    read_annotation_file,
    read_annotations,
    read_saved_dataset,
    resolve_dataset,
)
from qvidcap.data.minidata import generate_mini_dataset, read_mini_meta
from qvidcap.data.download import DownloadError, MissingCredentialsError, download_vatex
from qvidcap.data.prepare import prepare_data

__all__ = [
    "SPLITS", "ClipRecord", "VideoIdError", "format_video_id", "parse_video_id",
    "AnnotationError", "ClipSet", "DatasetLocation", "DatasetNotFoundError", "SkippedRecord",
    "load_clips", "load_splits", "read_annotation_file", "read_annotations", "read_saved_dataset", "resolve_dataset",
    "generate_mini_dataset", "read_mini_meta", "DownloadError", "MissingCredentialsError", "download_vatex",
    "prepare_data",
]
