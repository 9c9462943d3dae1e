"""Training throughput: cached text targets vs targets computed inside `__getitem__` (as the original did).

    qvidcap bench training [--steps 20] [--batch-size 32]

Both variants read the same features and run the same model; the second splits each caption into
phrases and embeds them with the sentence model every time a sample is read. Prints samples/s for the
data loading alone and for whole training steps (forward, losses, backward, optimizer).
"""
from __future__ import annotations

import argparse
import itertools
import time
from functools import partial

import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from qvidcap.config import StudyConfig
from qvidcap.training.dataset import CaptionDataset, CaptionSample, collate_samples
from qvidcap.training.losses import compute_losses
from qvidcap.training.phrases import PhraseSplitter
from qvidcap.training.text_targets import CaptionTargets, load_sentence_model


class PerSampleTargets(Dataset):
    """The original's way: phrase split, sentence embeddings and tokens computed for every sample read."""

    def __init__(self, cached: CaptionDataset, config: StudyConfig, tokenizer, sentence_model):
        self.cached = cached
        self.config = config
        self.tokenizer = tokenizer
        self.sentence_model = sentence_model
        self.splitter = PhraseSplitter(config.text.pos_model, config.text.max_phrases)

    def __len__(self) -> int:
        return len(self.cached)

    def __getitem__(self, index: int) -> CaptionSample:
        from qvidcap.model.tokenizer import tokenize_captions

        video_id, caption = self.cached.samples[index]
        phrases = self.splitter([caption])[0]
        strings = [caption, *phrases.nouns, *phrases.verbs]
        embeds = self.sentence_model.encode(strings, convert_to_tensor=True, show_progress_bar=False).float().cpu()  # (S, E)
        tokens = tokenize_captions(self.tokenizer, [caption], self.config.decoder.max_caption_tokens)[0]
        k = len(phrases.nouns)
        targets = CaptionTargets(tokens, embeds[0], embeds[1: 1 + k], embeds[1 + k:])
        return CaptionSample(self.cached.features[video_id], caption, targets)


def measure(dataset: Dataset, model, config: StudyConfig, pad_id: int, steps: int, batch_size: int) -> dict[str, float]:
    """Samples/s of loading `steps` batches, then of `steps` training steps on them."""
    collate = partial(collate_samples, pad_token_id=pad_id)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, collate_fn=collate,
                        generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    batches = list(itertools.islice(loader, steps))
    load_seconds = time.perf_counter() - start
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.train.lr)
    model.train()
    start = time.perf_counter()
    for batch in itertools.islice(loader, steps):
        keys = ("temporal", "context", "objects", "object_mask", "input_ids", "attention_mask")
        losses = compute_losses(model(**{k: batch[k] for k in keys}), batch, config.train)
        losses.total.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    step_seconds = time.perf_counter() - start
    samples = sum(len(b["captions"]) for b in batches)
    return {"loading samples/s": samples / load_seconds, "training samples/s": samples / step_seconds}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=20, help="batches measured per variant")
    parser.add_argument("--batch-size", type=int, default=None, help="default: train.batch_size")


def main(args: argparse.Namespace, config: StudyConfig) -> int:
    from qvidcap.runtime.env import detect_environment
    from qvidcap.model import build_captioner, link_widths
    from qvidcap.training.train import prepare_training_data

    env = detect_environment(config)
    torch.manual_seed(config.train.seed)
    data = prepare_training_data(config, env)
    linked = link_widths(config, data.feature_dims, data.text_targets.embed_dim)
    batch_size = args.batch_size or config.train.batch_size
    sentence_model = load_sentence_model(config.text.sentence_model, "cpu")
    variants = {"cached text targets": data.train,
                "per-sample targets (original)": PerSampleTargets(data.train, config, data.tokenizer, sentence_model)}
    rows = {}
    for name, dataset in variants.items():
        model = build_captioner(linked, data.tokenizer)
        rows[name] = measure(dataset, model, config, data.tokenizer.pad_token_id, args.steps, batch_size)
    table = pd.DataFrame(rows).T.round(1)
    print(f"training throughput, profile {config.profile}, batch {batch_size}, {args.steps} batches, "
          f"{torch.get_num_threads()} threads, pos backend {data.text_targets.meta['pos_backend']}, "
          f"sentence model {config.text.sentence_model}")
    print(table.to_string())
    return 0
