"""What the notebooks after 03 need from it: the feature store, with every usable clip of their splits.

A notebook opened alone (from its badge, in a fresh runtime) calls `ensure_features` first. On the
default profile a missing store is extracted on the spot (minutes on a CPU); on a GPU profile it says
which clips are missing and that notebook 03 makes them, since extraction there takes hours.
"""
from __future__ import annotations

from typing import Sequence

from qvidcap.config import StudyConfig
from qvidcap.features.extract import drop_stale_features, extract_features, store_root
from qvidcap.features.store import FeatureStore
from qvidcap.runtime.bootstrap import make_or_explain
from qvidcap.runtime.env import Environment

SPLITS = ("train", "validation", "public_test")


def missing_clips(config: StudyConfig, env: Environment, splits: Sequence[str] = SPLITS) -> dict[str, int]:
    """Per split, how many usable clips have neither features nor a recorded failure in the store."""
    from qvidcap.data import load_clips

    missing = {}
    for split in splits:
        clips = load_clips(config, env, split, missing_ok=True)
        store = FeatureStore(store_root(env, clips.source))
        drop_stale_features(config, store, clips.source)
        done = set(store.video_ids) | {f["video_id"] for f in store.failures}
        missing[split] = sum(r.video_id not in done for r in clips.records)
    return {split: n for split, n in missing.items() if n}


def ensure_features(config: StudyConfig, env: Environment, splits: Sequence[str] = SPLITS) -> dict[str, int]:
    """Make sure `splits` are extracted; returns the clips this call extracted per split ({} if none were missing)."""
    missing = missing_clips(config, env, splits)
    if not missing:
        return {}
    what = "features of " + ", ".join(f"{n} {split} clips" for split, n in missing.items())
    how = "notebook 03 (or `qvidcap extract --split SPLIT` for each split)"

    def extract() -> dict[str, int]:
        done, extractors = {}, None
        for split in missing:
            report = extract_features(config, env, split, extractors=extractors)
            done[split], extractors = report.extracted, report.extractors
        return done

    return make_or_explain(config, what, how, extract)
