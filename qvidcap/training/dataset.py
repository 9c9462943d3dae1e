"""Training samples: one per (clip, caption) pair, with the clip's stored features and the caption's cached targets.

Nothing is computed per sample beyond indexing: features are read from the store once and kept in
memory, text targets come from `qvidcap.training.text_targets`. The order of an epoch is a permutation drawn
from (seed, epoch), so a resumed run can replay exactly the batches it had not yet seen. With
`train.captions_per_epoch = k`, an epoch takes only k captions of each clip, the next k of a fixed
seeded shuffle of the clip's captions each epoch, so ten captions are all seen once in 10/k epochs.
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

    @property
    def clip_groups(self) -> list[list[int]]:
        """The sample indices of each clip, clips in order of first appearance."""
        groups: dict[str, list[int]] = {}
        for index, (video_id, _) in enumerate(self.samples):
            groups.setdefault(video_id, []).append(index)
        return list(groups.values())

    def epoch_size(self, captions_per_epoch: int = 0) -> int:
        """Samples in one epoch: all, or at most `captions_per_epoch` of each clip."""
        if captions_per_epoch <= 0:
            return len(self.samples)
        return sum(min(captions_per_epoch, len(group)) for group in self.clip_groups)

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


def epoch_captions(groups: list[list[int]], seed: int, epoch: int, per_clip: int) -> list[int]:
    """The samples one epoch trains on, in order: `per_clip` of each clip's group, shuffled (seed, epoch).

    Each group is shuffled once by `seed`; epoch e takes its items e·k … e·k + k − 1 (wrapping round),
    so consecutive epochs see different captions and every caption comes round before one repeats.
    """
    shuffles = torch.Generator().manual_seed(seed)
    chosen = []
    for group in groups:
        order = torch.randperm(len(group), generator=shuffles).tolist()
        chosen += [group[order[(epoch * per_clip + j) % len(group)]] for j in range(min(per_clip, len(group)))]
    return [chosen[i] for i in epoch_order(len(chosen), seed, epoch)]


class EpochSampler(Sampler[int]):
    """Yields the epoch's order from position `start` on: a resumed run skips what it already trained on.

    `groups` (a dataset's `clip_groups`) and `per_clip > 0` limit the epoch to `per_clip` captions per clip
    (`epoch_captions`); otherwise every sample, in `epoch_order`.
    """

    def __init__(self, num_samples: int, seed: int, epoch: int, start: int = 0,
                 groups: list[list[int]] | None = None, per_clip: int = 0):
        if per_clip > 0 and groups is not None:
            self.order = epoch_captions(groups, seed, epoch, per_clip)[start:]
        else:
            self.order = epoch_order(num_samples, seed, epoch)[start:]

    def __iter__(self) -> Iterator[int]:
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)
