"""Two baselines every trained model must beat, scored on the same split with the same protocol.

- **Caption-blind**: one training caption given to every clip, the one the training captions agree
  with most (highest mean CIDEr-D against the other training clips' references). It shows what a
  model earns by learning the dataset's typical sentence and nothing about the video.
- **Untrained**: the same architecture with random weights and the same generation settings. It shows
  that the scores come from training, not from the decoder or the features alone.

Consensus is computed on seeded samples (`eval.blind_candidates` captions against
`eval.blind_pool_clips` clips) with the IDF of the pool, so it stays cheap on all of VATEX and gives the
same caption every run.
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from qvidcap.training.cider import ConsensusCider, ScoringError, simple_tokenize
from qvidcap.runtime.progress import progress

logger = logging.getLogger(__name__)


@dataclass
class BlindBaseline:
    caption: str  # the caption given to every clip
    consensus: float  # its mean CIDEr-D ×100 against the pool (simple tokens, pool IDF)
    source_video_id: str  # the training clip it was taken from
    candidates: pd.DataFrame  # every candidate tried: caption, source clip, consensus; best first

    def predictions(self, video_ids: Sequence[str]) -> dict[str, str]:
        return {video_id: self.caption for video_id in video_ids}


def blind_baseline(train_references: dict[str, list[str]], num_candidates: int = 1000, pool_clips: int = 2000,
                   seed: int = 0) -> BlindBaseline:
    """The training caption with the highest consensus CIDEr-D against the other training clips.

    `train_references` is videoID -> training captions. Candidates are `num_candidates` distinct
    captions drawn with `seed` (all of them when there are fewer); each is scored against
    `pool_clips` clips drawn with the same seed, leaving out the clip it came from. Ties go to the
    caption that sorts first.
    """
    if len(train_references) < 2:
        raise ScoringError(f"the blind baseline needs at least 2 training clips, got {len(train_references)}")
    rng = random.Random(seed)
    video_ids = sorted(train_references)
    pool_ids = video_ids if len(video_ids) <= pool_clips else sorted(rng.sample(video_ids, pool_clips))
    pool = {v: [t for t in (simple_tokenize(c) for c in train_references[v]) if t] for v in pool_ids}
    pool = {v: refs for v, refs in pool.items() if refs}
    source: dict[str, str] = {}  # caption -> first clip (in sorted order) that has it
    for video_id in video_ids:
        for caption in train_references[video_id]:
            if caption.strip() and caption not in source:
                source[caption] = video_id
    captions = sorted(source)
    if len(captions) > num_candidates:
        captions = sorted(rng.sample(captions, num_candidates))
    scorer = ConsensusCider(pool)
    position = {v: i for i, v in enumerate(scorer.video_ids)}
    rows = []
    for caption in progress(captions, desc="blind baseline: consensus"):
        per_clip = scorer.score(simple_tokenize(caption))  # (pool clips,) ×10
        keep = np.ones(len(per_clip), dtype=bool)
        if source[caption] in position:
            keep[position[source[caption]]] = False
        rows.append({"caption": caption, "source_video_id": source[caption],
                     "consensus": 100.0 * float(per_clip[keep].mean()) if keep.any() else 0.0})
    table = pd.DataFrame(rows).sort_values(["consensus", "caption"], ascending=[False, True], ignore_index=True)
    best = table.iloc[0]
    logger.info("blind baseline: %r (consensus CIDEr-D %.1f over %d candidates, %d pool clips)",
                best["caption"], best["consensus"], len(table), len(pool))
    return BlindBaseline(str(best["caption"]), float(best["consensus"]), str(best["source_video_id"]), table)


def untrained_captioner(config, tokenizer, seed: int = 0, device: str = "cpu"):
    """The trained model's architecture (`config`, widths linked) with fresh random weights from `seed`,
    in eval mode on `device`, its decoder built in that device's dtype (a GPU's half dtype)."""
    import torch

    from qvidcap.model import build_captioner

    torch.manual_seed(seed)
    return build_captioner(config, tokenizer, device).to(device).eval()
