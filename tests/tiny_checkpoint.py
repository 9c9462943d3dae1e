"""Tiny clips and a tiny checkpoint taught one caption per clip, shared by the inference and serving tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np

COLOURS = [(230, 40, 40), (40, 200, 60), (50, 90, 240), (240, 220, 40)]
CAPTIONS = ["a red square moves right", "a green square moves down", "a blue square moves left",
            "a yellow square moves up", "the square slides across a dark background"]
TINY = {"sampling.num_keyframes": 2, "sampling.temporal_frames": 4, "sampling.temporal_size": 32,
        "sampling.keyframe_size": 64, "features.small_hidden_size": 32, "features.small_layers": 1,
        "features.small_heads": 2, "features.max_objects": 2, "heads.hidden_size": 32, "heads.num_heads": 2,
        "heads.num_object_queries": 2, "heads.object_encoder_layers": 1, "qformer.num_queries": 4,
        "qformer.num_layers": 1, "qformer.num_heads": 2, "qformer.intermediate_size": 64,
        "decoder.small_hidden_size": 32, "decoder.small_layers": 1, "decoder.small_heads": 2,
        "decoder.small_intermediate_size": 64, "decoder.small_moe_intermediate_size": 32,
        "heads.dropout": 0.0, "qformer.dropout": 0.0, "generation.num_beams": 2, "generation.max_new_tokens": 6,
        "decoder.word_dropout": 0.0}


def write_clip(path: Path, colour: tuple[int, int, int], step: tuple[int, int], seconds: float = 2.0,
               fps: int = 12, size: int = 64) -> Path:
    """An H.264 mp4 of one coloured square moving by `step` pixels a frame over a darker shade of its colour."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(int(seconds * fps)):
            frame = np.empty((size, size, 3), dtype=np.uint8)
            frame[:] = [c // 3 for c in colour]
            x = (8 + step[0] * i) % (size - 16)
            y = (8 + step[1] * i) % (size - 16)
            frame[y:y + 16, x:x + 16] = colour
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def build_tiny_checkpoint(root: Path, clips: list[Path], steps: int = 160) -> Path:
    """A tiny model briefly trained (caption loss only) to tell `clips` apart, saved by the real save
    path with the extractors that made its features; returns the checkpoint directory.

    Clip i is taught `CAPTIONS[i]`, so a caption that comes back for the wrong clip is visible.
    """
    import torch

    from qvidcap.model.checkpoint import save_checkpoint
    from qvidcap.config import load_config
    from qvidcap.features.clip_features import collate_features
    from qvidcap.features.extractors import build_extractors
    from qvidcap.model import build_captioner
    from qvidcap.model.captioner import link_widths
    from qvidcap.model.tokenizer import build_tokenizer, tokenize_captions
    from qvidcap.video import sample_clip

    torch.manual_seed(0)
    config = load_config("smoke", TINY)
    extractors = build_extractors(config, "cpu")
    extractors_dir = extractors.save(root / "store" / "extractors")
    batch = collate_features(extractors.extract([sample_clip(p, config.sampling) for p in clips]))
    config = link_widths(config, extractors.feature_dims, text_embed_dim=16)
    tokenizer = build_tokenizer(config, CAPTIONS)
    ids = tokenize_captions(tokenizer, CAPTIONS[: len(clips)], config.decoder.max_caption_tokens)
    width = max(map(len, ids))
    input_ids = torch.tensor([row + [tokenizer.pad_token_id] * (width - len(row)) for row in ids])  # (B, L)
    attention_mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in ids])  # (B, L)
    model = build_captioner(config, tokenizer).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        loss = model(batch["temporal"], batch["context"], batch["objects"], batch["object_mask"],
                     input_ids, attention_mask).caption_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return save_checkpoint(root / "checkpoint", model.eval(), config, tokenizer, extractors_dir=extractors_dir)
