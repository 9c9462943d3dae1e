"""Does the GPU profile fit a 16 GB T4? A memory plan from counted weights and measured activations.

    python -m qvidcap.planning.memory_plan [--profile kaggle] [--batch-size 16]

- Decoder weights: DeepSeek-VL2-tiny's language model built on the meta device from its real config
  (`dry_run.DEEPSEEK_VL2_TINY` through the loader's `text_config_from_vl2`), 2 bytes a weight (fp16:
  a T4 has no bf16), frozen, so no gradient or optimizer state.
- Trainable weights (heads, Q-Former, CaptionHead): counted on the real model; fp32 weights, fp32
  gradients and two fp32 Adam moments under mixed precision: 16 bytes a weight.
- Activations: measured, not guessed. One training step (forward under autocast, losses, backward)
  runs on the CPU at the real widths with the decoder cut to `decoder_layers` (layer 0 dense, the rest
  MoE). `SavedTensorMeter` sums the bytes autograd keeps for backward, by module;
  `LiveMemoryMeter` follows every tensor the step creates and records the peak. Both are scaled to 12
  layers with the measured bytes of one MoE layer. The CPU runs bfloat16 autocast in place of the
  GPU's float16 autocast: the same bytes per value and the same casting rules for matmuls (the CPU's
  list of ops kept in fp32 differs in a few ops; see docs/gpu-budget.md).
- Extractors: weights in fp16 plus the peak of tensors created by one inference call at the profile's
  batch sizes, measured the same way (fp32 on the CPU, halved: inference keeps no fp32 copies).
"""
from __future__ import annotations

import argparse
import logging
import sys
import weakref
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable

import pandas as pd
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from qvidcap.config import StudyConfig

logger = logging.getLogger(__name__)

GIB = 2**30
T4_GIB = 15.0  # memory a T4 shows to CUDA (16 GB board, 15,360 MiB usable per nvidia-smi): an assumption
CUDA_CONTEXT_GIB = 0.45  # CUDA context + cuBLAS/cuDNN workspaces outside PyTorch's allocator: an assumption
SAFETY = 0.10  # fraction of the card kept free for allocator fragmentation and variance in caption lengths
FULL_LAYERS = 12  # decoder layers of DeepSeek-VL2-tiny's language model
PREFIX_TOKENS = 15 + 1  # Q-Former queries + the start token
CAPTION_TOKENS = 30  # decoder.max_caption_tokens (EOS included)
GPUS_PER_PLATFORM = {"kaggle": 2, "colab": 1}  # Kaggle's T4 x2 runs DDP: each GPU also holds gradient buckets


def _storage_key(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def _storages(tensors: Iterable[torch.Tensor]) -> set[int]:
    return {_storage_key(t) for t in tensors if isinstance(t, torch.Tensor) and t.device.type != "meta"}


class SavedTensorMeter:
    """Bytes of the tensors autograd keeps for backward, attributed to the innermost module running.

    Each storage counts once (views and tensors saved twice are not double counted); the model's own
    weights and buffers are not activations and are skipped.
    """

    def __init__(self, model: nn.Module, exclude: Iterable[torch.Tensor] = ()):
        self.model = model
        self.excluded = _storages([*model.parameters(), *model.buffers(), *exclude])
        self.by_module: dict[str, int] = defaultdict(int)  # module name -> bytes ("<outside>" = no module)
        self._seen: set[int] = set()
        self._stack: list[str] = []
        self._handles: list = []
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        key = _storage_key(t)
        if key and key not in self.excluded and key not in self._seen:
            self._seen.add(key)
            self.by_module[self._stack[-1] if self._stack else "<outside>"] += t.untyped_storage().nbytes()
        return t

    def _leave(self, module: nn.Module, args, output) -> None:
        self._stack.pop()  # returns None: a forward hook's return value would replace the module's output

    def __enter__(self) -> "SavedTensorMeter":
        for name, module in self.model.named_modules():
            self._handles.append(module.register_forward_pre_hook(lambda m, a, name=name: self._stack.append(name)))
            self._handles.append(module.register_forward_hook(self._leave))
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    @property
    def total(self) -> int:
        return sum(self.by_module.values())


class LiveMemoryMeter(TorchDispatchMode):
    """Peak bytes of the tensors created while active (weights and inputs that existed before are not counted).

    Every op's outputs are followed until their last reference dies (a storage shared by views counts
    once), on the CPU, so the peak of a GPU step can be measured where there is no GPU.
    """

    def __init__(self, exclude: Iterable[torch.Tensor] = ()):
        super().__init__()
        self.excluded = _storages(exclude)
        self.current = 0
        self.peak = 0
        self._live: dict[int, list[int]] = {}  # storage key -> [references, bytes]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                self._follow(t)
        return out

    def _follow(self, t: torch.Tensor) -> None:
        key = _storage_key(t)
        if not key or key in self.excluded:
            return
        entry = self._live.get(key)
        if entry is None:
            entry = self._live[key] = [0, t.untyped_storage().nbytes()]
            self.current += entry[1]
            self.peak = max(self.peak, self.current)
        entry[0] += 1
        weakref.finalize(t, self._release, key)

    def _release(self, key: int) -> None:
        entry = self._live.get(key)
        if entry is None:
            return
        entry[0] -= 1
        if entry[0] == 0:
            self.current -= entry[1]
            del self._live[key]


def component(module_name: str) -> str:
    """The plan's row for a module name of QVidCap."""
    if module_name == "<outside>":
        return "auxiliary losses"
    if module_name == "":
        return "caption loss (logits slice, fp32 copy, cross-entropy)"
    if module_name.startswith("decoder.lm_head"):
        return "lm_head logits"
    parts = module_name.split(".")
    if module_name.startswith("decoder.model.layers."):
        return f"decoder layer {parts[3]}"
    if module_name.startswith("decoder"):
        return "decoder embeddings + final norm"
    return "heads + Q-Former"


def synthetic_batch(config: StudyConfig, batch_size: int, vocab_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A worst-case training batch at the profile's shapes: every keyframe with `max_objects` boxes,
    every caption `CAPTION_TOKENS` long, `text.max_phrases` phrases per caption."""
    from qvidcap.planning.dry_run import REAL_FEATURE_DIMS, SENTENCE_EMBED_DIM

    g = torch.Generator().manual_seed(seed)
    s = config.sampling
    steps = s.temporal_frames // 2 if s.temporal_windows == 1 else s.num_keyframes  # VideoMAE tubelet of 2
    boxes = s.num_keyframes * config.features.max_objects
    k = config.text.max_phrases
    return {
        "temporal": torch.randn(batch_size, steps, REAL_FEATURE_DIMS["temporal"], generator=g),  # (B, T, Dt)
        "context": torch.randn(batch_size, s.num_keyframes, REAL_FEATURE_DIMS["context"], generator=g),  # (B, N, Dc)
        "objects": torch.randn(batch_size, boxes, REAL_FEATURE_DIMS["object"], generator=g),  # (B, P, Do)
        "object_mask": torch.ones(batch_size, boxes, dtype=torch.long),
        "input_ids": torch.randint(4, vocab_size, (batch_size, CAPTION_TOKENS), generator=g),  # (B, L)
        "attention_mask": torch.ones(batch_size, CAPTION_TOKENS, dtype=torch.long),
        "object_targets": torch.randn(batch_size, k, SENTENCE_EMBED_DIM, generator=g),  # (B, K, E)
        "object_target_mask": torch.ones(batch_size, k, dtype=torch.long),
        "action_targets": torch.randn(batch_size, k, SENTENCE_EMBED_DIM, generator=g),
        "action_target_mask": torch.ones(batch_size, k, dtype=torch.long),
        "global_target": torch.randn(batch_size, SENTENCE_EMBED_DIM, generator=g),  # (B, E)
    }


MODEL_INPUTS = ("temporal", "context", "objects", "object_mask", "input_ids", "attention_mask")


@dataclass
class StepMeasurement:
    """One measured training step at `decoder_layers` layers, and its projection to the full decoder."""

    batch_size: int
    decoder_layers: int
    saved: dict[str, int]  # component -> bytes saved for backward (measured)
    peak: int  # peak bytes of tensors created by the step (measured)
    moe_layer: int  # bytes saved by one MoE layer (measured: layer 1)
    trainable_parameters: int

    @property
    def saved_full(self) -> int:
        """Saved bytes with all 12 layers: the measured ones plus one MoE layer per missing layer."""
        return sum(self.saved.values()) + (FULL_LAYERS - self.decoder_layers) * self.moe_layer

    @property
    def peak_full(self) -> int:
        return self.peak + (FULL_LAYERS - self.decoder_layers) * self.moe_layer


def measure_training_step(config: StudyConfig, batch_size: int, decoder_layers: int = 2,
                          dtype: torch.dtype = torch.bfloat16) -> StepMeasurement:
    """Forward (under CPU autocast in `dtype`), losses and backward of the real-width model, metered."""
    from qvidcap.planning.dry_run import build_real_size_captioner, word_tokenizer
    from qvidcap.training.losses import compute_losses

    if decoder_layers < 2:
        raise ValueError(f"decoder_layers is {decoder_layers!r}; at least 2 are needed to measure a MoE layer")
    tokenizer = word_tokenizer()
    model = build_real_size_captioner(config, tokenizer, decoder_layers, dtype=dtype).train()
    batch = synthetic_batch(config, batch_size, len(tokenizer))
    inputs = {k: batch[k] for k in MODEL_INPUTS}
    with LiveMemoryMeter(exclude=[*model.parameters(), *model.buffers(), *batch.values()]) as live:
        with SavedTensorMeter(model, exclude=batch.values()) as saved:
            with torch.autocast("cpu", dtype=dtype):
                output = model(**inputs)
            losses = compute_losses(output, batch, config.train)
            del output
        losses.total.backward()
        del losses
    by_component: dict[str, int] = defaultdict(int)
    for name, size in saved.by_module.items():
        by_component[component(name)] += size
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return StepMeasurement(batch_size, decoder_layers, dict(by_component), live.peak,
                           by_component["decoder layer 1"], trainable)


@dataclass
class ExtractorMemory:
    name: str
    batch: str  # what one call holds
    weight_bytes: int  # in fp16
    peak_activation_bytes: int  # measured in fp32 on the CPU, halved for fp16


def measure_extractors(config: StudyConfig) -> list[ExtractorMemory]:
    """Inference memory of the three real-size extractors at the profile's batch sizes (fp16 on the GPU)."""
    from qvidcap.features.extractors import build_extractors

    s, f = config.sampling, config.features
    extractors = build_extractors(config, "cpu")
    rows = []
    video = torch.randint(0, 255, (f.batch_clips, s.temporal_frames, s.temporal_size, s.temporal_size, 3),
                          dtype=torch.uint8)  # (B, F, S, S, 3)
    frames = [torch.randint(0, 255, (s.keyframe_size, s.keyframe_size * 16 // 9, 3), dtype=torch.uint8)
              for _ in range(f.detector_batch_frames)]  # 16:9 keyframes at the short side asked for
    crops = torch.rand(f.batch_clips * 8, 3, extractors.clip.image_size, extractors.clip.image_size)
    calls = (
        ("VideoMAE-base", extractors.temporal.model, f"{f.batch_clips} windows of {s.temporal_frames}x{s.temporal_size}²",
         lambda: extractors.temporal(video, batch_size=f.batch_clips)),
        ("DETR-R50", extractors.detector.model, f"{f.detector_batch_frames} keyframes {frames[0].shape[1]}x{s.keyframe_size}",
         lambda: extractors.detector(frames, batch_size=f.detector_batch_frames)),
        ("CLIP ViT-B/32", extractors.clip.model, f"{len(crops)} crops of {extractors.clip.image_size}²",
         lambda: extractors.clip(crops, batch_size=len(crops))),
    )
    for name, model, batch, call in calls:
        with LiveMemoryMeter(exclude=[*model.parameters(), *model.buffers(), video, crops, *frames]) as live:
            call()
        weights = sum(p.numel() for p in model.parameters()) * 2
        rows.append(ExtractorMemory(name, batch, weights, live.peak // 2))
    return rows


@dataclass
class MemoryPlan:
    profile: str
    batch_size: int  # per GPU
    grad_accum_steps: int
    rows: dict[str, float]  # component -> GiB on one T4 while training
    saved_by_component: dict[str, float]  # GiB, scaled to 12 layers
    extractors: list[ExtractorMemory] = field(default_factory=list)
    capacity_gib: float = T4_GIB

    @property
    def total_gib(self) -> float:
        return sum(self.rows.values())

    @property
    def limit_gib(self) -> float:
        return self.capacity_gib * (1 - SAFETY)

    @property
    def fits(self) -> bool:
        return self.total_gib <= self.limit_gib

    def table(self) -> pd.DataFrame:
        rows = [*self.rows.items(), ("total", self.total_gib), (f"T4 limit ({SAFETY:.0%} kept free)", self.limit_gib)]
        return pd.DataFrame(rows, columns=["component", "GiB"]).set_index("component").round(2)

    def extractor_table(self) -> pd.DataFrame:
        return pd.DataFrame([{"extractor": e.name, "one call": e.batch, "weights GiB": e.weight_bytes / GIB,
                              "peak activations GiB": e.peak_activation_bytes / GIB,
                              "total GiB": (e.weight_bytes + e.peak_activation_bytes) / GIB}
                             for e in self.extractors]).set_index("extractor").round(2)

    def verdict(self) -> str:
        word = "fits" if self.fits else "does NOT fit"
        return (f"profile {self.profile}: batch {self.batch_size} per GPU (x{self.grad_accum_steps} accumulation) "
                f"{word} a 16 GB T4 in fp16: {self.total_gib:.2f} GiB of {self.limit_gib:.2f} GiB allowed "
                f"({self.capacity_gib:.1f} GiB visible, {SAFETY:.0%} kept free)")


def plan_from_measurement(profile: str, step: StepMeasurement, grad_accum_steps: int,
                          processes: int = 1) -> MemoryPlan:
    """The training-time rows on one T4 for a measured step."""
    from qvidcap.planning.dry_run import decoder_parameter_count

    decoder = decoder_parameter_count()
    trainable = step.trainable_parameters
    saved_full = step.saved_full
    rows = {
        "decoder weights (fp16, frozen, 12 layers)": decoder * 2 / GIB,
        "trainable weights fp32 + grads fp32 + Adam m, v": trainable * 16 / GIB,
        "activations saved for backward (measured, 12 layers)": saved_full / GIB,
        "transient peak above saved (measured)": (step.peak_full - saved_full) / GIB,
        "CUDA context and workspaces (assumed)": CUDA_CONTEXT_GIB,
    }
    if processes > 1:
        rows["DDP gradient buckets (2 GPUs)"] = trainable * 4 / GIB
    saved = {k: v / GIB for k, v in step.saved.items()}
    moe = saved.pop("decoder layer 1", 0.0)
    saved = {k: v for k, v in saved.items() if not k.startswith("decoder layer")} | {
        "decoder layer 0 (dense)": step.saved.get("decoder layer 0", 0) / GIB,
        f"decoder layers 1-{FULL_LAYERS - 1} (MoE, {moe:.3f} GiB each)": moe * (FULL_LAYERS - 1)}
    return MemoryPlan(profile, step.batch_size, grad_accum_steps, rows, saved)


def plan_memory(profile: str = "kaggle", batch_size: int | None = None, decoder_layers: int = 2,
                effective_batch: int | None = None, with_extractors: bool = True) -> MemoryPlan:
    """Measure the profile's training step; when it does not fit, halve the batch (raising the
    accumulation so that batch x accumulation stays `effective_batch`) until it does."""
    from qvidcap.planning.dry_run import real_size_config

    config = real_size_config(profile)
    batch = batch_size or config.train.batch_size
    effective = effective_batch or batch * config.train.grad_accum_steps
    processes = GPUS_PER_PLATFORM.get(profile, 1)
    while True:
        step = measure_training_step(config, batch, decoder_layers)
        plan = plan_from_measurement(profile, step, max(1, effective // batch), processes)
        logger.info("%s", plan.verdict())
        if plan.fits or batch == 1:
            break
        batch //= 2
    if with_extractors:
        plan.extractors = measure_extractors(config)
    return plan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qvidcap.planning.memory_plan", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="kaggle", choices=["kaggle", "colab"])
    parser.add_argument("--batch-size", type=int, default=None, help="per-GPU batch to try first (default: the profile's)")
    parser.add_argument("--decoder-layers", type=int, default=2, help="layers run for the measurement (>= 2)")
    parser.add_argument("--no-extractors", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    plan = plan_memory(args.profile, args.batch_size, args.decoder_layers, with_extractors=not args.no_extractors)
    print(plan.table().to_string())
    print("\nactivations saved for backward, by component (GiB, 12 layers):")
    print(pd.Series(plan.saved_by_component).round(3).to_string())
    if plan.extractors:
        print("\nfeature extractors, inference in fp16 (one model on the GPU at a time needs the largest row):")
        print(plan.extractor_table().to_string())
    print(f"\n{plan.verdict()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
