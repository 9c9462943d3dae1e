"""Training samples: one per (clip, caption) pair, with the clip's stored features and the caption's cached targets.

Nothing is computed per sample beyond indexing: features are read from the store once and kept in
memory, text targets come from `qvidcap.training.text_targets`. The order of an epoch is a permutation drawn
from (seed, epoch), so a resumed run can replay exactly the batches it had not yet seen.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping

import torch
from torch.utils.data import Dataset, Sampler

from qvidcap.data.records import ClipRecord
from qvidcap.features.clip_features import ClipFeatures, collate_features
from qvidcap.training.text_targets import CaptionTargets, TextTargets

logger = logging.getLogger(__name__)


@dataclass
class CaptionSample:
    clip: ClipFeatures
    caption: str
    targets: CaptionTargets


def select_captions(records: Iterable[ClipRecord], captions_per_clip: int = 0) -> list[tuple[str, str]]:
    """`(video_id, caption)` pairs: every non-empty caption of each clip, or its first `captions_per_clip`."""
    pairs = []
    for record in records:
        captions = [c for c in record.captions if c and c.strip()]
        if captions_per_clip > 0:
            captions = captions[:captions_per_clip]
        pairs += [(record.video_id, c) for c in captions]
    return pairs


class CaptionDataset(Dataset):
    """`(clip features, caption, targets)` for every (clip, caption) pair whose clip has features."""

    def __init__(self, records: Iterable[ClipRecord], features: Mapping[str, ClipFeatures], text_targets: TextTargets,
                 captions_per_clip: int = 0):
        pairs = select_captions(records, captions_per_clip)
        self.features = features
        self.text_targets = text_targets
        self.samples = [(v, c) for v, c in pairs if v in features]
        skipped = len(pairs) - len(self.samples)
        if skipped:
            logger.warning("%d (clip, caption) pairs skipped: their clips have no stored features", skipped)
        missing = [c for _, c in self.samples if c not in text_targets]
        if missing:
            raise KeyError(f"{len(missing)} captions have no text targets (e.g. {missing[0][:60]!r}); "
                           "build the targets over the same records")
        if not self.samples:
            raise ValueError("no training samples: no clip with captions has stored features; run `qvidcap extract` first")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> CaptionSample:
        video_id, caption = self.samples[index]
        return CaptionSample(self.features[video_id], caption, self.text_targets.get(caption))


def collate_samples(samples: list[CaptionSample], pad_token_id: int = 0) -> dict:
    """Pad samples into one training batch (see docs/architecture.md for the keys and shapes).

    Adds to `collate_features`' video tensors: `input_ids (B, L)` / `attention_mask (B, L)` (right
    padding), `object_targets (B, K, E)` / `object_target_mask (B, K)`, the same for actions, and
    `global_target (B, E)`, plus `captions` (the text, for logs).
    """
    batch = collate_features([s.clip for s in samples])
    lengths = [len(s.targets.token_ids) for s in samples]
    input_ids = torch.full((len(samples), max(lengths)), pad_token_id, dtype=torch.long)  # (B, L)
    attention_mask = torch.zeros(len(samples), max(lengths), dtype=torch.long)  # (B, L)
    for i, s in enumerate(samples):
        input_ids[i, : lengths[i]] = torch.as_tensor(s.targets.token_ids, dtype=torch.long)
        attention_mask[i, : lengths[i]] = 1
    batch["input_ids"], batch["attention_mask"] = input_ids, attention_mask
    batch["object_targets"], batch["object_target_mask"] = _pad_phrases([s.targets.object_embeds for s in samples])
    batch["action_targets"], batch["action_target_mask"] = _pad_phrases([s.targets.action_embeds for s in samples])
    batch["global_target"] = torch.stack([s.targets.global_embed for s in samples])  # (B, E)
    batch["captions"] = [s.caption for s in samples]
    return batch


def _pad_phrases(embeds: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """A list of `(K_i, E)` -> `(B, K, E)` zero-padded and a `(B, K)` mask (K at least 1)."""
    k = max(1, max(e.shape[0] for e in embeds))
    dim = embeds[0].shape[1]
    padded = torch.zeros(len(embeds), k, dim)  # (B, K, E)
    mask = torch.zeros(len(embeds), k, dtype=torch.long)  # (B, K)
    for i, e in enumerate(embeds):
        padded[i, : e.shape[0]] = e
        mask[i, : e.shape[0]] = 1
    return padded, mask


def epoch_order(num_samples: int, seed: int, epoch: int) -> list[int]:
    """The sample order of one epoch: a permutation that depends on (seed, epoch) only."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(num_samples, generator=generator).tolist()


class EpochSampler(Sampler[int]):
    """Yields `epoch_order(...)` from position `start` on: a resumed run skips what it already trained on."""

    def __init__(self, num_samples: int, seed: int, epoch: int, start: int = 0):
        self.order = epoch_order(num_samples, seed, epoch)[start:]

    def __iter__(self) -> Iterator[int]:
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)
