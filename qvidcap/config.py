"""The study's configuration: one dataclass per component, composed into `StudyConfig`.

A profile is a named set of overrides over the defaults, nothing more: the defaults *are* the
`smoke` profile (CPU, offline, built-in mini dataset, small random models), and `kaggle` / `colab`
change sizes and model names for the GPU reproduction. Every field can be overridden from a notebook's
`parameters` cell, from papermill `-p overrides "..."`, or from the command line (`--set key=value`).

Widths that one component takes from another (feature widths, the sentence-embedding width) are
left at 0 here and filled in at build time from the feature store and the text-target model, so they
are linked in one place and saved with every checkpoint.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A config key or value that does not fit the schema."""


@dataclass
class PathsConfig:
    data_dir: str = ""  # datasets are written here; "" = the environment's default (see qvidcap.runtime.env)
    output_dir: str = ""  # features, checkpoints, metrics, figures; "" = the environment's default
    vatex_input: str = ""  # a read-only VATEX copy to read from (e.g. /kaggle/input/vatex0110); "" = search


@dataclass
class DataConfig:
    source: str = "mini"  # "mini" (built-in, generated) or "vatex"
    fallback_to_mini: bool = True  # use the mini dataset when VATEX cannot be had (smoke profile only)
    lenient: bool = True  # bad annotation records are skipped and recorded instead of raising
    max_clips_per_split: int = 0  # 0 = every clip; a small number for quick runs
    kaggle_datasets: tuple[str, ...] = (  # Kaggle copies of VATEX, downloaded in order; they hold different parts of the videos
        "khaledatef1/vatex0110",
        "khaledatef1/vatex011011",
        "khaledatef1/vatex01101",
    )
    # the built-in mini dataset
    mini_seed: int = 0  # the whole mini dataset is a function of this seed
    mini_train_clips: int = 600  # clips in vatex_training_v1.0.json (more clips beat more epochs on random features)
    mini_validation_clips: int = 40  # clips in vatex_validation_v1.0.json
    mini_test_clips: int = 60  # clips in vatex_public_test_english_v1.1.json
    mini_frame_size: int = 96  # pixels, square
    mini_fps: int = 12  # frames per second
    mini_seconds: float = 3.0  # clip length, seconds
    mini_backgrounds: tuple[str, ...] = ("black",)  # drawn per clip from these (black, dark_gray, light_gray): each
    # extra one costs the random backbones most of what they see of count and motion (see minidata's docstring)


@dataclass
class SamplingConfig:
    num_keyframes: int = 4  # N keyframes per clip for DETR and CLIP (linspace over the clip)
    temporal_frames: int = 16  # frames per VideoMAE pass
    temporal_windows: int = 1  # 1 = one pass over the whole clip; N = one window per keyframe
    temporal_size: int = 64  # side of the square VideoMAE input, pixels (224 for videomae-base)
    keyframe_size: int = 96  # short side of decoded keyframes, pixels (DETR/CLIP resize further)
    # decode bounds, checked on the container header before any frame is decoded (video.check_header):
    # frames are scaled so their short side reaches keyframe_size, so a 2x8000 clip would decode at
    # 96x384000 pixels a frame (7 GB for a 26 KB upload); such clips are refused, not letterboxed
    max_aspect_ratio: float = 20.0  # long side / short side (32:9 screens are 3.6, strips of 20:1 still decode)
    max_decoded_pixels: int = 4096 * 2304  # area of one frame once scaled to the sampling size (its long side follows)
    max_pixels: int = 4096 * 2304  # width x height as stored (4K fits); the decoder holds up to ~17 such frames
    max_frames: int = 1_000_000  # frames in the stream (decord indexes every one on open); ~9 h at 30 fps
    max_seconds: float = 6 * 3600.0  # duration from the header, seconds


@dataclass
class FeatureConfig:
    temporal_model: str = ""  # Hugging Face name, e.g. "MCG-NJU/videomae-base"; "" = small random VideoMAE
    detector_model: str = ""  # e.g. "facebook/detr-resnet-50"; "" = small random DETR
    clip_model: str = ""  # open_clip architecture, e.g. "ViT-B-32"; "" = small random ViT
    clip_pretrained: str = ""  # open_clip weights tag, e.g. "openai"; "" = random weights
    detection_threshold: float = 0.0  # keep boxes whose best class score exceeds this (0.8 in the original)
    max_objects: int = 3  # at most this many boxes per keyframe, best score first
    min_box_pixels: int = 7  # crops smaller than this on either side are dropped
    batch_clips: int = 8  # clips per model batch
    detector_batch_frames: int = 32  # keyframes per DETR call (DETR is the memory-hungry model)
    num_workers: int = 1  # decoding threads running ahead of the models
    dtype: str = "auto"  # "auto" = float16 on GPU, float32 on CPU (stored features are always float16)
    temporal_grid: int = 1  # motion tokens averaged over each of g x g cells of space (1 = all of space, as the
    # original); Dt grows g * g times. Measured with 2 on the default profile: no better motion or count hit rate
    shard_clips: int = 128  # clips per shard file of the feature store
    delete_videos: bool = False  # features-only mode (Colab): delete each video file once its features are stored
    # random backbones (a model name left empty): "small" below, or "base" = the real architectures
    # (VideoMAE-base, DETR-R50, ViT-B-32) with random weights, for benchmarks
    random_size: str = "small"
    small_hidden_size: int = 64  # width of the small VideoMAE, DETR transformer and ViT
    small_layers: int = 2
    small_heads: int = 4
    small_patch_size: int = 16  # ViT / VideoMAE patch side of the small random backbones, pixels


@dataclass
class TextConfig:
    sentence_model: str = "all-MiniLM-L6-v2"  # sentence-transformers model for the auxiliary targets
    pos_model: str = "auto"  # spaCy pipeline for noun phrases and verbs; "auto" = spaCy if installed else rules
    max_phrases: int = 8  # noun phrases / verbs kept per caption
    batch_size: int = 256  # sentences per embedding batch
    center_targets: bool = True  # remove each kind's mean training embedding from the targets (see TextTargets.centred)


@dataclass
class HeadsConfig:
    hidden_size: int = 64  # D: the common width every stream is projected to (1024 in the original)
    num_heads: int = 4  # attention heads in every head (8 in the original)
    num_object_queries: int = 4  # learned ObjectHead queries (8 in the original)
    object_encoder_layers: int = 2  # transformer layers over [motion, objects, context]
    global_layers: int = 1
    dropout: float = 0.1
    stream_deltas: bool = True  # motion and keyframe tokens also carry how they differ from the clip's mean token
    # (what changes over the clip: the static background cancels, as in TSN's RGB difference)
    # ablation switches (qvidcap.evaluation.ablations): a head switched off is not built, its output leaves every
    # head after it and the Q-Former memory, and its auxiliary loss is not computed (QVidCap's docstring)
    object_head: bool = True  # False: the ActionHead reads learned constant queries; object and context streams unread
    action_head: bool = True  # False: no action tokens for the GlobalHead and the Q-Former
    global_head: bool = True  # False: no global token in the Q-Former memory
    # linked at build time (0 = not yet known)
    temporal_dim: int = 0  # width of the temporal stream (768 for videomae-base)
    object_dim: int = 0  # width of object crop embeddings (512 for CLIP ViT-B/32)
    context_dim: int = 0  # width of keyframe embeddings (512 for CLIP ViT-B/32)
    text_embed_dim: int = 0  # width of the sentence embeddings the auxiliary losses compare to


@dataclass
class QFormerConfig:
    kind: str = "qformer"  # "qformer" (num_layers blocks) or "cross_attention" (the original's one cross-attention layer, nothing else)
    num_queries: int = 8  # learned queries; their outputs become the decoder's prefix (15 in the original)
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 256
    dropout: float = 0.1


@dataclass
class DecoderConfig:
    kind: str = "deepseek_small"  # "deepseek_small" (random, word-level), "deepseek_vl2", or "hf" (any causal LM)
    name: str = ""  # "deepseek-ai/deepseek-vl2-tiny", a local path, or an HF causal LM name ("gpt2")
    train_mode: str = "full"  # "frozen", "lora" or "full"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: tuple[str, ...] = ()  # module names LoRA adapts; () = q/k/v/o_proj (DeepSeek) or peft's default for the model type
    max_caption_tokens: int = 30  # caption tokens kept for training, EOS included
    dtype: str = "auto"  # decoder weights: "auto" = a pretrained decoder in bfloat16 on compute capability >= 8.0, float16 on older GPUs, float32 on CPU; the small random decoder float32
    experts_implementation: str = "eager"  # DeepSeek MoE experts: "eager" (per-expert loop) or "grouped_mm" (one grouped GEMM; GPU profiles)
    finite_check_steps: int = 8  # float16 decoder: check every layer's output for inf/NaN on this many first forwards (0 = off)
    # sizes of the small DeepSeek-MoE decoder (default profile only)
    small_hidden_size: int = 96
    small_layers: int = 2
    small_heads: int = 4
    small_intermediate_size: int = 192
    small_moe_intermediate_size: int = 64
    small_experts: int = 4
    small_experts_per_token: int = 2
    small_shared_experts: int = 1  # shared experts in each MoE layer (2 in deepseek-vl2-tiny)
    small_dense_layers: int = 1  # first layers with a dense MLP instead of MoE (first_k_dense_replace)
    small_min_word_count: int = 1  # words seen fewer times in the training captions become <unk>
    word_dropout: float = 0.25  # training: share of teacher-forced caption words shown to the decoder as <unk>


@dataclass
class GenerationConfig:
    num_beams: int = 3  # 5 in the original
    max_new_tokens: int = 20  # 32 in the original
    batch_size: int = 32  # clips per generate() call


@dataclass
class TrainConfig:
    epochs: int = 16  # passes over every (clip, caption) pair (20 in the original)
    batch_size: int = 16  # samples per process per micro-batch (16 in the original)
    grad_accum_steps: int = 1  # micro-batches per optimizer step
    lr: float = 2e-3  # AdamW peak learning rate, after linear warm-up, then linear decay to 0
    weight_decay: float = 0.01  # AdamW decay of weight matrices (biases and norms get none)
    warmup_ratio: float = 0.05  # fraction of all optimizer steps spent warming up
    max_grad_norm: float = 1.0  # gradient-norm clipping; 0 = none
    mixed_precision: str = "auto"  # "no", "fp16", "bf16"; "auto" = bf16 if supported, fp16 on other GPUs, no on CPU
    seed: int = 0  # model init, dropout and the epoch orders derive from it
    num_workers: int = 0  # DataLoader workers
    caption_weight: float = 0.4  # weight of the caption cross-entropy in the total loss
    object_weight: float = 0.2  # weight of the Hungarian-matched noun-phrase cosine loss
    action_weight: float = 0.2  # weight of the Hungarian-matched verb cosine loss
    global_weight: float = 0.2  # weight of the whole-caption cosine loss
    captions_per_clip: int = 5  # k = the first k captions of each clip are samples (VATEX's 5 regular ones); 0 = all
    save_every_steps: int = 0  # 0 = at the end of every epoch only
    standardize_features: bool = True  # the model standardises each feature stream with training-set mean/std
    eval_clips: int = 40  # validation clips captioned each epoch for the quick metric
    holdout_clips: int = 0  # train clips held out to pick the best checkpoint instead of validation clips; 0 = the
    # validation split, or 5% of the train clips (at least 1) when no validation clip has features
    max_nonfinite_steps: int = 10  # NaN/inf-loss steps skipped before the run stops: a few odd batches (an fp16
    # overflow) are survivable, more mean the lr or the precision is wrong
    captions_per_epoch: int = 0  # k > 0: each epoch draws k of a clip's captions (a different draw each epoch); 0 = every pair
    val_clips: int = 0  # validation clips whose loss is computed each epoch (a fixed seeded subset); 0 = all
    run_name: str = "qvidcap"


@dataclass
class ScstConfig:
    """Self-critical sequence training, the optional CIDEr-optimised stage after cross-entropy (qvidcap.training.scst)."""

    enabled: bool = False  # notebooks and the study run the stage only when true; `qvidcap train-scst` runs it when asked
    init_checkpoint: str = ""  # the CE checkpoint to start from; "" = the best checkpoint of train.run_name
    run_suffix: str = "-scst"  # the stage writes <output>/checkpoints/<train.run_name><run_suffix>/
    epochs: int = 4  # passes over the training clips (each clip once per epoch, k samples each)
    batch_clips: int = 8  # clips per process per optimizer step (x num_samples sampled captions)
    num_samples: int = 5  # k captions sampled per clip
    baseline: str = "mean_others"  # "mean_others" (mean reward of the clip's other k-1 samples) or "greedy"
    temperature: float = 1.0  # sampling temperature (log-probabilities are of the same tempered distribution)
    lr: float = 2e-4  # AdamW learning rate, constant (SCST fine-tunes: well below train.lr)
    max_new_tokens: int = 0  # longest sampled caption; 0 = generation.max_new_tokens


@dataclass
class EvalConfig:
    split: str = "public_test"  # "validation" or "public_test"
    spice: bool = False  # SPICE needs Stanford CoreNLP downloaded on first use
    checkpoint: str = ""  # "" = the best checkpoint of train.run_name
    blind_candidates: int = 1000  # training captions tried as the caption-blind baseline (seeded sample)
    blind_pool_clips: int = 2000  # training clips each candidate's consensus CIDEr is measured on (seeded sample)
    seed: int = 0  # seeds the blind baseline's samples and the untrained model's random weights
    max_clips: int = 0  # caption and score only the split's first this many clips; 0 = all


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"  # interface to bind; "0.0.0.0" exposes the API to the network
    port: int = 5000
    max_upload_mb: float = 300.0  # largest uploaded file, MiB (+64 KiB of form framing); larger: 413 on its Content-Length
    upload_folder: str = "uploads"  # uploads live here as qvidcap-upload-<pid>-<hex> while captioned; a dead server's are removed at start
    threads: int = 6  # waitress worker threads: one is kept for /health, the others take uploads (which wait for a decode slot)
    # origins allowed to call the API from a browser, comma-separated, e.g. "http://localhost:3000";
    # "" = no cross-origin access (same-origin pages and non-browser clients only), "*" = any site
    cors_origins: str = ""
    # waitress connection handling: idle sockets must not hold the slots real requests need
    connection_limit: int = 500  # open connections at once (the poll loop has no select() 1024-fd ceiling)
    channel_timeout_s: float = 15.0  # a connection with no traffic and no request in progress this long is closed
    cleanup_interval_s: float = 2.0  # how often idle connections are looked for and closed
    # per request: time, concurrency and memory
    request_timeout_s: float = 120.0  # deadline from the body received to the caption; 504 when exceeded
    decode_memory_mb: float = 1024.0  # memory the decodes running at once may use: sets how many run together
    max_video_seconds: float = 600.0  # longest upload accepted, seconds of video (header duration); longer gets 413


@dataclass
class AblationConfig:
    """The ablation study of notebook 09 (qvidcap.evaluation.ablations): which variants, which seeds, what schedule.

    The full model is trained once per seed of `seeds`, every other variant once with the first seed, all on
    the same stored features with this schedule, and scored on the same clips of `split`.
    """

    variants: tuple[str, ...] = (  # names in qvidcap.evaluation.ablations.VARIANTS; "full" is always run
        "full", "no_object_head", "no_action_head", "no_global_head", "no_aux_losses", "cross_attention", "fewer_queries")
    seeds: tuple[int, ...] = (0, 1, 2)  # the full model is trained once per seed; () = train.seed only
    # the default profile's schedule is sized by time (9 runs in about 2 minutes on 2 cores), not by what learns:
    # measured, the default model stops giving one caption for every clip within 2-3 epochs (375-560 steps;
    # 6-7 epochs before the text targets were centred): these 112 steps leave every variant before that point
    epochs: int = 3  # epochs per variant; 0 = train.epochs (the main run's schedule)
    captions_per_epoch: int = 1  # captions drawn per clip per epoch; 0 = train.captions_per_epoch
    lr: float = 0.0  # peak learning rate of the variants; 0 = train.lr
    eval_clips: int = 0  # quick-CIDEr clips captioned after each epoch; 0 = none (the variants are scored once, at the end)
    val_clips: int = 4  # validation clips whose loss is logged after each epoch (0 = all); picks "best" when eval_clips is 0
    checkpoint: str = "last"  # which checkpoint of each variant is scored: "last" (the schedule's end) or "best"
    fewer_queries: int = 2  # Q-Former queries (prefix length) of the "fewer_queries" variant
    split: str = ""  # split the variants are scored on; "" = eval.split
    run_prefix: str = "ablation"  # variant runs are train.run_name-<run_prefix>-<variant>-seed<s>


@dataclass
class StudyConfig:
    profile: str = "smoke"
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1"
    paths: PathsConfig = field(default_factory=PathsConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    text: TextConfig = field(default_factory=TextConfig)
    heads: HeadsConfig = field(default_factory=HeadsConfig)
    qformer: QFormerConfig = field(default_factory=QFormerConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    scst: ScstConfig = field(default_factory=ScstConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    ablation: AblationConfig = field(default_factory=AblationConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "StudyConfig":
        """Rebuild a config saved with `to_dict` (a checkpoint's or a feature store's); unknown keys fail."""
        return apply_overrides(cls(), _flatten(values))

    @classmethod
    def from_json(cls, path: str | Path) -> "StudyConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))


_GPU_COMMON: dict[str, Any] = {
    "data.source": "vatex",
    "data.fallback_to_mini": False,
    "sampling.num_keyframes": 8,
    "sampling.temporal_frames": 16,
    "sampling.temporal_size": 224,
    "sampling.keyframe_size": 800,  # DETR's training scale (short side 800); docs/gpu-budget.md has the trade-off
    "features.temporal_model": "MCG-NJU/videomae-base-finetuned-kinetics",  # VATEX clips are Kinetics clips
    "features.detector_model": "facebook/detr-resnet-50",
    "features.clip_model": "ViT-B-32",
    "features.clip_pretrained": "openai",
    "features.detection_threshold": 0.8,
    "features.max_objects": 10,
    "features.batch_clips": 16,
    "features.detector_batch_frames": 8,  # 800 px keyframes: ~4.7x the activations of 360 px
    "features.num_workers": 4,
    "features.shard_clips": 512,
    "text.sentence_model": "sentence-transformers/all-roberta-large-v1",
    "text.pos_model": "en_core_web_sm",
    "heads.hidden_size": 1024,
    "heads.num_heads": 8,
    "heads.num_object_queries": 8,
    "qformer.num_queries": 15,
    "qformer.num_heads": 8,
    "qformer.intermediate_size": 4096,
    "decoder.kind": "deepseek_vl2",
    "decoder.name": "deepseek-ai/deepseek-vl2-tiny",
    "decoder.train_mode": "frozen",
    "decoder.word_dropout": 0.0,  # a frozen pretrained decoder needs no push towards the prefix
    "decoder.experts_implementation": "grouped_mm",
    "generation.num_beams": 5,
    "generation.max_new_tokens": 32,
    "generation.batch_size": 16,
    "train.epochs": 10,  # x 3 captions per clip per epoch: each clip 30 times, each caption 3 times on average
    "train.captions_per_clip": 0,  # draw from all ten captions
    "train.captions_per_epoch": 3,  # the original trained on every pair, 20 x 10 per clip (docs/gpu-budget.md)
    "train.val_clips": 500,  # validation loss on a fixed subset each epoch
    "train.batch_size": 16,
    "train.lr": 1e-4,
    "train.mixed_precision": "auto",
    "train.num_workers": 2,
    "train.save_every_steps": 500,
    "train.eval_clips": 200,
    # notebook 09: one epoch per variant (a tenth of the main run's training), one seed, the heads and LoRA (only
    # meaningful with a pretrained decoder); the other variants are listed and selectable (notebook parameter)
    "ablation.variants": ("full", "no_object_head", "no_action_head", "no_global_head", "lora_decoder"),
    "ablation.seeds": (0,),
    "ablation.epochs": 1,
    "ablation.captions_per_epoch": 0,  # train.captions_per_epoch (3)
    "ablation.val_clips": 100,
    "ablation.fewer_queries": 4,
}

PROFILES: dict[str, dict[str, Any]] = {
    "smoke": {},  # the defaults above
    "colab": {**_GPU_COMMON, "profile": "colab",  # one T4, 2 cores, ~12 h, 15 GB Drive: a documented subset
              "data.max_clips_per_split": 6000,  # 6,000 train clips; validation and the public test whole
              "features.delete_videos": True, "features.num_workers": 2},
    "kaggle": {**_GPU_COMMON, "profile": "kaggle", "features.num_workers": 3},
}


def load_config(profile: str = "smoke", overrides: str | dict[str, Any] | None = None) -> StudyConfig:
    """The config of a named profile with `overrides` applied on top.

    `overrides` is a dict `{"train.epochs": 2}` or a string `"train.epochs=2 data.source=mini"`
    (whitespace-separated `key=value`; tuple values comma-separated), the form papermill and the
    command line pass.
    """
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; expected one of {sorted(PROFILES)}")
    config = apply_overrides(StudyConfig(), {**PROFILES[profile], "profile": profile})
    if overrides:
        config = apply_overrides(config, parse_overrides(overrides) if isinstance(overrides, str) else overrides)
    return config


def parse_overrides(text: str) -> dict[str, str]:
    """`"a.b=1 c.d=x"` -> `{"a.b": "1", "c.d": "x"}`; values stay strings until checked against the schema."""
    pairs: dict[str, str] = {}
    for item in re.split(r"[\s;]+", text.strip()):
        if not item:
            continue
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. train.epochs=2)")
        key, value = item.split("=", 1)
        pairs[key.strip()] = value.strip()
    return pairs


def apply_overrides(config: StudyConfig, overrides: dict[str, Any]) -> StudyConfig:
    """A copy of `config` with dotted keys set; unknown keys and values of the wrong type raise ConfigError."""
    config = dataclasses.replace(config, **{f.name: dataclasses.replace(getattr(config, f.name))
                                            for f in dataclasses.fields(config)
                                            if dataclasses.is_dataclass(getattr(config, f.name))})
    known = _known_keys()
    for key, value in overrides.items():
        if key not in known:
            close = difflib.get_close_matches(key, known, n=3)
            hint = f"; did you mean {' or '.join(close)}?" if close else "; see qvidcap.config for the keys"
            raise ConfigError(f"unknown config key {key!r}{hint}")
        section, _, name = key.rpartition(".")
        target = getattr(config, section) if section else config
        setattr(target, name, _coerce(key, value, known[key]))
    return config


def _known_keys() -> dict[str, Any]:
    keys: dict[str, Any] = {}
    hints = typing.get_type_hints(StudyConfig)
    for f in dataclasses.fields(StudyConfig):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            for sub, sub_kind in typing.get_type_hints(kind).items():
                keys[f"{f.name}.{sub}"] = sub_kind
        else:
            keys[f.name] = kind
    return keys


def _coerce(key: str, value: Any, kind: Any) -> Any:
    def bad() -> ConfigError:
        expected = (f"comma-separated {typing.get_args(kind)[0].__name__} values" if typing.get_origin(kind) is tuple
                    else getattr(kind, "__name__", kind))
        return ConfigError(f"{key} expects {expected}, got {value!r} ({type(value).__name__})")

    if typing.get_origin(kind) is tuple:
        item = typing.get_args(kind)[0]  # tuple[str, ...] or tuple[int, ...]
        items = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise bad()
        try:
            return tuple(_coerce(key, v, item) for v in items)
        except ConfigError:
            raise bad() from None
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"true", "1", "yes", "false", "0", "no"}:
            return value.lower() in {"true", "1", "yes"}
        raise bad()
    if kind is int:
        if isinstance(value, bool):
            raise bad()
        if isinstance(value, int):
            return value
        if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
            return int(value)
        raise bad()
    if kind is float:
        if isinstance(value, bool):
            raise bad()
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise bad() from None
        raise bad()
    if kind is str:
        if isinstance(value, str):
            return value
        raise bad()
    raise bad()


def changed_settings(config: StudyConfig, base: StudyConfig | None = None) -> dict[str, Any]:
    """`{"train.lr": 0.001, ...}`: the dotted settings of `config` whose values differ from `base` (the defaults),
    in the form `apply_overrides` takes back."""
    default, mine = _flatten((base or StudyConfig()).to_dict()), _flatten(config.to_dict())
    return {key: value for key, value in mine.items() if default.get(key) != value}


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
