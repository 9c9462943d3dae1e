"""A tiny learnable captioning task for the training tests: features that encode what the captions say.

Each clip has a colour, a shape and a motion; its context features encode the colour, its object
features the shape (0 to 3 boxes), its temporal features the motion, all with noise. Sentence
embeddings come from a bag-of-words stand-in (a fixed random vector per word), so no model is loaded.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from qvidcap.config import StudyConfig, load_config
from qvidcap.data.records import ClipRecord
from qvidcap.features.clip_features import ClipFeatures

COLOURS = ["red", "blue", "green", "yellow"]
SHAPES = ["circle", "square", "triangle"]
MOTIONS = [("moves", "left"), ("grows", None), ("bounces", None), ("shrinks", None)]
WIDTH = 16


class BagOfWordsEncoder:
    """Stands in for a SentenceTransformer: the normalised sum of a fixed random vector per word."""

    def __init__(self, dim: int = 24):
        self.dim = dim

    def _word(self, word: str) -> torch.Tensor:
        seed = int(hashlib.sha256(word.encode()).hexdigest()[:8], 16)
        return torch.randn(self.dim, generator=torch.Generator().manual_seed(seed))

    def encode(self, sentences, batch_size=32, convert_to_tensor=True, show_progress_bar=False):
        rows = [torch.stack([self._word(w) for w in s.split()] or [torch.zeros(self.dim)]).sum(0) for s in sentences]
        return torch.nn.functional.normalize(torch.stack(rows), dim=-1)


def tiny_config(tmp_path: Path, **overrides) -> StudyConfig:
    values = {"paths.output_dir": str(tmp_path / "outputs"), "paths.data_dir": str(tmp_path / "data"),
              "text.pos_model": "rules", "heads.hidden_size": 32, "heads.num_heads": 2, "heads.num_object_queries": 3,
              "heads.object_encoder_layers": 1, "qformer.num_queries": 4, "qformer.num_layers": 1,
              "qformer.num_heads": 2, "qformer.intermediate_size": 64, "decoder.small_hidden_size": 32,
              "decoder.small_layers": 1, "decoder.small_heads": 2, "decoder.small_intermediate_size": 64,
              "decoder.small_moe_intermediate_size": 32, "train.batch_size": 8, "train.epochs": 2,
              "train.eval_clips": 6, "generation.max_new_tokens": 8, "train.lr": 3e-3}
    values.update(overrides)
    return load_config("smoke", values)


def make_clips(num_clips: int, split: str, seed: int = 0) -> tuple[list[ClipRecord], dict[str, ClipFeatures]]:
    generator = torch.Generator().manual_seed(seed)
    basis = torch.randn(16, WIDTH, generator=torch.Generator().manual_seed(1234))  # shared across splits
    records, features = [], {}
    for i in range(num_clips):
        colour = COLOURS[i % len(COLOURS)]
        shape = SHAPES[(i // len(COLOURS)) % len(SHAPES)]
        verb, where = MOTIONS[(i // 3) % len(MOTIONS)]
        video_id = f"{split}{i:04d}xx_{i:06d}_{i + 10:06d}"
        tail = f" to the {where}" if where else ""
        captions = [f"a {colour} {shape} {verb}{tail}", f"the {colour} {shape} {verb}{tail}",
                    f"one {colour} {shape} {verb}{tail} slowly"]
        records.append(ClipRecord(video_id, split, captions))
        num_objects = i % 4

        def noisy(row: int, count: int) -> torch.Tensor:
            return (basis[row].expand(count, WIDTH) + 0.3 * torch.randn(count, WIDTH, generator=generator)).half()

        features[video_id] = ClipFeatures(
            video_id=video_id,
            temporal=noisy(8 + MOTIONS.index((verb, where)), 3),
            context=noisy(COLOURS.index(colour), 2),
            objects=noisy(4 + SHAPES.index(shape), num_objects),
            boxes=torch.zeros(num_objects, 4), scores=torch.ones(num_objects),
            labels=torch.zeros(num_objects, dtype=torch.long), object_keyframe=torch.zeros(num_objects, dtype=torch.long),
        )
    return records, features


def make_training_data(config: StudyConfig, tmp_path: Path, num_train: int = 48, num_validation: int = 12):
    """`TrainingData` for `train(..., data=...)`, built from the synthetic clips."""
    from qvidcap.training.dataset import CaptionDataset
    from qvidcap.model.tokenizer import build_tokenizer
    from qvidcap.training.text_targets import build_text_targets
    from qvidcap.training.train import TrainingData

    train_records, features = make_clips(num_train, "train")
    validation_records, validation_features = make_clips(num_validation, "val", seed=1)
    features.update(validation_features)
    store_dir = tmp_path / "store"
    (store_dir / "extractors").mkdir(parents=True, exist_ok=True)
    (store_dir / "extractors" / "extractors.json").write_text('{"kind": "synthetic"}')
    tokenizer = build_tokenizer(config, [c for r in train_records for c in r.captions])
    captions = [c for r in train_records + validation_records for c in r.captions]
    targets = build_text_targets(captions, config, tokenizer, store_dir / "text_targets", sentence_model=BagOfWordsEncoder())
    return TrainingData(
        train=CaptionDataset(train_records, features, targets),
        validation=CaptionDataset(validation_records, features, targets),
        validation_references={r.video_id: r.captions for r in validation_records},
        text_targets=targets, tokenizer=tokenizer, feature_dims={"temporal": WIDTH, "object": WIDTH, "context": WIDTH},
        store_dir=store_dir,
    )
