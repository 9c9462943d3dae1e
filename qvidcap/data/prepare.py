"""The data step of the study: make the configured dataset available, then say what it holds.

`prepare_data` generates the mini dataset, or finds or downloads VATEX, falling back to the mini
dataset when VATEX cannot be had and data.fallback_to_mini allows it. `qvidcap data` runs it from a
terminal and prints the split table.
"""
from __future__ import annotations

import argparse
import logging
import sys

from qvidcap.config import StudyConfig
from qvidcap.data.download import DownloadError, MissingCredentialsError, download_vatex
from qvidcap.data.minidata import generate_mini_dataset
from qvidcap.data.records import SPLITS
from qvidcap.data.vatex import DatasetLocation, DatasetNotFoundError, load_splits, mini_location, resolve_dataset
from qvidcap.runtime.env import Environment, detect_environment

logger = logging.getLogger(__name__)


def prepare_data(config: StudyConfig, env: Environment, force: bool = False) -> DatasetLocation:
    """Where the configured dataset now is, generating or downloading it first when needed.

    `force` regenerates the mini dataset or downloads VATEX again.
    """
    if config.data.source == "vatex":
        try:
            download_vatex(config, env, force=force)
        except (MissingCredentialsError, DownloadError, DatasetNotFoundError) as e:
            if not config.data.fallback_to_mini:
                raise
            logger.warning("%s Using the built-in mini dataset instead (data.fallback_to_mini=true).", e)
            location = mini_location(env)
        else:
            location = resolve_dataset(config, env)  # falls back to mini (or raises) if the copy has no annotations
    else:
        location = resolve_dataset(config, env)
    if location.name == "mini":
        generate_mini_dataset(config.data, location.root, force=force)
    return location


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true",
                        help="regenerate the mini dataset, or download VATEX again even if a copy is found")


def main(args: argparse.Namespace, config: StudyConfig) -> int:
    from qvidcap.data.explore import split_summary

    env = detect_environment(config)
    try:
        location = prepare_data(config, env, force=args.force)
        clips = load_splits(config, env)
    except (MissingCredentialsError, DownloadError, DatasetNotFoundError) as e:
        print(f"qvidcap data: {e}", file=sys.stderr)
        return 1
    print(f"{location.name} dataset at {location.root}")
    print(split_summary(clips).to_string(index=False))
    missing = [s for s in SPLITS if s not in location.annotations]
    if missing:  # e.g. a copy without validation: training then holds out part of train
        print(f"no annotations for: {', '.join(missing)}")
    return 0
