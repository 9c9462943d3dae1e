"""Milliseconds per batch of the self-critical reward: the kit's CIDEr-D against pycocoevalcap's per batch.

`qvidcap bench reward [--clips 600] [--batch 64] [--repeats 20]`: the reward scores each sampled caption
against its own clip's references with document frequencies from the whole training pool, computed once.
Calling pycocoevalcap's `CiderScorer` per batch recomputes the frequencies from that batch's references
every time (so it is also a different, noisier reward); both are timed on the same mini-dataset captions.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from qvidcap.config import DataConfig, StudyConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clips", type=int, default=600, help="training clips in the reference pool")
    parser.add_argument("--batch", type=int, default=64, help="sampled captions per batch")
    parser.add_argument("--repeats", type=int, default=20)


def main(args: argparse.Namespace, config: StudyConfig) -> int:
    from pycocoevalcap.cider.cider_scorer import CiderScorer

    from qvidcap.data.minidata import generate_mini_dataset
    from qvidcap.training.cider import ConsensusCider, simple_tokenize

    root = Path(tempfile.mkdtemp(prefix="qvidcap-reward-"))
    generate_mini_dataset(DataConfig(mini_train_clips=args.clips, mini_validation_clips=2, mini_test_clips=2), root)
    rows = json.loads((root / "vatex_training_v1.0.json").read_text())
    pool = {r["videoID"]: [simple_tokenize(c) for c in r["enCap"]] for r in rows}
    ids = list(pool)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    reward = ConsensusCider(pool)
    build = time.perf_counter() - start
    kit, coco = [], []
    for _ in range(args.repeats):
        batch = [ids[i] for i in rng.integers(0, len(ids), args.batch)]
        candidates = [pool[ids[i]][0] for i in rng.integers(0, len(ids), args.batch)]
        start = time.perf_counter()
        reward.score_pairs(candidates, batch)
        kit.append(time.perf_counter() - start)
        start = time.perf_counter()
        scorer = CiderScorer(n=4, sigma=6.0)
        for video_id, candidate in zip(batch, candidates):
            scorer += (candidate, pool[video_id])
        scorer.compute_score()
        coco.append(time.perf_counter() - start)
    print(f"reference pool: {len(ids)} clips, {sum(map(len, pool.values()))} captions; built once in {1000 * build:.0f} ms")
    print(f"batch of {args.batch}: kit reward {1000 * np.median(kit):.1f} ms, "
          f"pycocoevalcap per batch {1000 * np.median(coco):.1f} ms (median of {args.repeats})")
    return 0
