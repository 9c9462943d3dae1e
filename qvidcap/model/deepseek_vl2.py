"""DeepSeek-VL2's language model, built natively from transformers' `DeepseekOcr2TextModel`.

The DeepSeek-VL2 checkpoints hold a whole vision-language model; captioning needs only its language
model: the safetensors entries under `language.` with their config in `config.json` → `language_config`.
This module

1. reads that `language_config` into a `DeepseekOcr2TextConfig` (every size from the file),
2. builds `DeepseekCausalLM`: the text model plus an untied `lm_head`, with `GenerationMixin`, so
   Hugging Face `generate` (inputs_embeds, beam search, KV cache) works on it,
3. maps the checkpoint's weights onto it: the `language.` prefix stripped, the per-expert
   `experts.{e}.{gate,up,down}_proj` stacked into the fused `gate_up_proj (E, 2I, H)` and
   `down_proj (E, H, I)`, everything else (vision, projector, tile tags) skipped. A key the model
   lacks, or a model weight the checkpoint lacks, is a `CheckpointMismatchError` listing them all.

The same `DeepseekCausalLM` class with a small random config is the default profile's decoder.
No `trust_remote_code` anywhere.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import torch
from torch import nn
from transformers import GenerationMixin
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.models.deepseek_ocr2.configuration_deepseek_ocr2 import DeepseekOcr2TextConfig
from transformers.integrations import use_experts_implementation
from transformers.models.deepseek_ocr2.modeling_deepseek_ocr2 import (
    DeepseekOcr2TextExperts,
    DeepseekOcr2TextModel,
    DeepseekOcr2TextPreTrainedModel,
    DeepseekOcr2TextRotaryEmbedding,
    DeepseekOcr2TextTopkRouter,
)

from qvidcap.config import DecoderConfig

logger = logging.getLogger(__name__)

LANGUAGE_PREFIX = "language."
SKIPPED_PREFIXES = ("vision.", "projector.", "image_newline", "view_seperator", "view_separator")
_EXPERT_KEY = re.compile(r"^(model\.layers\.\d+\.mlp\.experts)\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight$")
# keys of language_config that DeepseekOcr2TextConfig takes as they are
_TEXT_CONFIG_KEYS = (
    "vocab_size", "hidden_size", "intermediate_size", "moe_intermediate_size", "num_hidden_layers",
    "num_attention_heads", "num_key_value_heads", "n_routed_experts", "n_shared_experts", "num_experts_per_tok",
    "routed_scaling_factor", "topk_method", "n_group", "topk_group", "max_position_embeddings", "rms_norm_eps",
    "hidden_act", "bos_token_id", "eos_token_id", "pad_token_id", "attention_bias", "initializer_range",
)


class CheckpointError(RuntimeError):
    """A DeepSeek-VL2 checkpoint that cannot be read or is not supported."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's language weights and the model's parameters do not correspond one to one."""


@use_experts_implementation
class DeepseekExperts(DeepseekOcr2TextExperts):
    """The routed experts, declared here with transformers' experts decorator.

    transformers lets a model class pick `grouped_mm` (all experts as one grouped GEMM, about 10x fewer
    GPU ops than the per-expert loop) only when the class's own module declares its experts with
    `@use_experts_implementation`; `DeepseekCausalLM` lives in this module, so its experts are declared
    here. The text config's `experts_implementation` (`decoder.experts_implementation`; "eager" = the
    per-expert loop when unset, "grouped_mm") or `model.set_experts_implementation(...)` then chooses.
    """


class DeepseekRouter(DeepseekOcr2TextTopkRouter):
    """The MoE router, in float32 even under autocast (transformers' router casts its inputs to float32,
    but an fp16/bf16 autocast region would run its matmul in half precision all the same)."""

    def forward(self, hidden_states):
        with torch.autocast(device_type=hidden_states.device.type, enabled=False):
            return super().forward(hidden_states)


class DeepseekCausalLM(DeepseekOcr2TextPreTrainedModel, GenerationMixin):
    """`DeepseekOcr2TextModel` + an untied `lm_head`: a causal LM that `generate` can drive.

    The MoE routers (`mlp.gate`) keep float32 weights whatever the model's dtype (loaded, `.to(dtype)`,
    `.half()`) and compute in float32 under autocast too: the router's softmax picks experts, and
    half-precision logits would pick other ones.
    """

    _tied_weights_keys: dict[str, str] = {}

    def __init__(self, config: DeepseekOcr2TextConfig):
        if config._experts_implementation is None:  # not asked for: the per-expert loop, as before
            config._experts_implementation = "eager"
        super().__init__(config)
        self.model = DeepseekOcr2TextModel(config)
        for layer in self.model.layers:
            if type(getattr(layer.mlp, "experts", None)) is DeepseekOcr2TextExperts:
                layer.mlp.experts.__class__ = DeepseekExperts  # the same module and weights, declared here
            if type(getattr(layer.mlp, "gate", None)) is DeepseekOcr2TextTopkRouter:
                layer.mlp.gate.__class__ = DeepseekRouter
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()
        self._keep_routers_float32()
        self.register_load_state_dict_post_hook(lambda module, incompatible: module._keep_routers_float32())

    def _routers(self) -> list[DeepseekOcr2TextTopkRouter]:
        return [m for m in self.modules() if isinstance(m, DeepseekOcr2TextTopkRouter)]

    def _keep_routers_float32(self) -> None:
        for router in self._routers():
            if router.weight.dtype != torch.float32:
                router.weight.data = router.weight.data.float()

    def _apply(self, fn, recurse: bool = True):
        """As nn.Module._apply (`.to`, `.half()`, `.cuda()`), except that routers keep their float32 values:
        a device move applies, a cast does not (casting there and back would round them)."""
        before = {router: router.weight.data for router in self._routers()}
        super()._apply(fn, recurse)
        for router, weight in before.items():
            if router.weight.dtype != torch.float32:
                router.weight.data = weight.to(router.weight.device)
        return self

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, cache=None, inputs_embeds=None,
                use_cache=None, logits_to_keep: int = 0, **kwargs) -> CausalLMOutputWithPast:
        """Logits (B, L, V) for input_ids (B, L) or inputs_embeds (B, L, H); `cache` is the KV cache."""
        if "past_key_values" in kwargs:  # the name generate used before transformers 5.40
            cache = kwargs.pop("past_key_values")
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             cache=cache, inputs_embeds=inputs_embeds, use_cache=use_cache, **kwargs)
        hidden = outputs.last_hidden_state  # (B, L, H)
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]  # (B, k, H)
        return CausalLMOutputWithPast(logits=self.lm_head(hidden), cache=outputs.cache)


def _rope(theta: float) -> dict:
    return {"rope_type": "default", "rope_theta": float(theta)}


def text_config_from_vl2(vl2_config: dict) -> DeepseekOcr2TextConfig:
    """The `DeepseekOcr2TextConfig` of a DeepSeek-VL2 `config.json` (as a dict), read from `language_config`."""
    if "language_config" not in vl2_config:
        raise CheckpointError(f"config.json has no 'language_config' (model_type {vl2_config.get('model_type')!r}); "
                              "expected a DeepSeek-VL2 checkpoint such as deepseek-ai/deepseek-vl2-tiny")
    lang = vl2_config["language_config"]
    if lang.get("use_mla", False):
        raise CheckpointError("language_config.use_mla is true: multi-head latent attention is not supported by "
                              "this loader (only deepseek-vl2-tiny's plain attention is); use decoder.kind=hf with a "
                              "causal LM, or a DeepSeek-VL2 checkpoint with use_mla false")
    unsupported = {k: lang.get(k) for k, ok in (("rope_scaling", None), ("scoring_func", "softmax"), ("norm_topk_prob", False))
                   if lang.get(k, ok) != ok}
    if unsupported:
        raise CheckpointError(f"language_config has {unsupported}, which DeepseekOcr2TextModel would silently ignore; "
                              "only deepseek-vl2-tiny's settings (no rope_scaling, softmax router, norm_topk_prob "
                              "false) are supported")
    missing = [k for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads") if k not in lang]
    if missing:
        raise CheckpointError(f"language_config lacks {missing}; the checkpoint's config.json is incomplete")
    values = {k: lang[k] for k in _TEXT_CONFIG_KEYS if k in lang and lang[k] is not None}
    layers = lang["num_hidden_layers"]
    dense = min(int(lang.get("first_k_dense_replace", 0)), layers)
    return DeepseekOcr2TextConfig(
        **values,
        mlp_layer_types=["dense"] * dense + ["sparse"] * (layers - dense),
        rope_parameters=_rope(lang.get("rope_theta", 10000.0)),
        tie_word_embeddings=False,
    )


def small_text_config(config: DecoderConfig, vocab_size: int, bos: int, eos: int, pad: int) -> DeepseekOcr2TextConfig:
    """The default profile's decoder: the same MoE architecture at `decoder.small_*` sizes."""
    dense = min(config.small_dense_layers, config.small_layers)
    return DeepseekOcr2TextConfig(
        vocab_size=vocab_size, hidden_size=config.small_hidden_size, intermediate_size=config.small_intermediate_size,
        moe_intermediate_size=config.small_moe_intermediate_size, num_hidden_layers=config.small_layers,
        num_attention_heads=config.small_heads, num_key_value_heads=config.small_heads,
        n_routed_experts=config.small_experts, n_shared_experts=config.small_shared_experts,
        num_experts_per_tok=config.small_experts_per_token, topk_method="greedy",
        mlp_layer_types=["dense"] * dense + ["sparse"] * (config.small_layers - dense),
        max_position_embeddings=256, rope_parameters=_rope(10000.0), tie_word_embeddings=False,
        bos_token_id=bos, eos_token_id=eos, pad_token_id=pad, experts_implementation=config.experts_implementation,
    )


def _safetensors_files(directory: Path) -> list[Path]:
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [directory / s for s in shards]
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"no *.safetensors in {directory}; a DeepSeek-VL2 checkpoint directory holds "
                              "config.json, the safetensors shards and the tokenizer files")
    return files


def read_language_state_dict(directory: Path, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The checkpoint's language weights under the model's names, experts fused; other weights skipped."""
    from safetensors import safe_open

    state: dict[str, torch.Tensor] = {}
    experts: dict[str, dict[int, dict[str, torch.Tensor]]] = {}  # "model.layers.i.mlp.experts" -> e -> proj
    unexpected: list[str] = []
    for path in _safetensors_files(directory):
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                if not key.startswith(LANGUAGE_PREFIX):
                    if not key.startswith(SKIPPED_PREFIXES):
                        unexpected.append(key)
                    continue
                name = key[len(LANGUAGE_PREFIX):]
                tensor = f.get_tensor(key)
                tensor = tensor if name.endswith("mlp.gate.weight") else tensor.to(dtype)  # the router stays fp32
                match = _EXPERT_KEY.match(name)
                if match:
                    experts.setdefault(match[1], {}).setdefault(int(match[2]), {})[match[3]] = tensor
                else:
                    state[name] = tensor
    if unexpected:
        raise CheckpointMismatchError(f"{len(unexpected)} checkpoint keys outside language./vision./projector.: "
                                      f"{unexpected[:20]}")
    for prefix in sorted(experts):
        by_expert = experts.pop(prefix)  # freed layer by layer: the fused copy never doubles the whole model
        count = max(by_expert) + 1
        incomplete = [f"{prefix}.{e}.{p}" for e in range(count) for p in ("gate_proj", "up_proj", "down_proj")
                      if p not in by_expert.get(e, {})]
        if incomplete:
            raise CheckpointMismatchError(f"expert weights missing from the checkpoint: {incomplete[:20]}")
        state[f"{prefix}.gate_up_proj"] = torch.stack(
            [torch.cat([by_expert[e]["gate_proj"], by_expert[e]["up_proj"]], dim=0) for e in range(count)])  # (E, 2I, H)
        state[f"{prefix}.down_proj"] = torch.stack([by_expert[e]["down_proj"] for e in range(count)])  # (E, H, I)
    return state


# the language weights last read, kept for the process: (directory, dtype, files) -> (state, version counters)
_SESSION_WEIGHTS: dict[tuple, tuple[dict[str, torch.Tensor], list[int]]] = {}


def _session_key(directory: Path, dtype: torch.dtype) -> tuple:
    files = tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in _safetensors_files(directory))
    return str(directory.resolve()), str(dtype), files


def _room_to_keep(state: dict[str, torch.Tensor]) -> bool:
    """Keep a CPU copy only while as much RAM again is still free (Colab has 12 GB, the weights take 6)."""
    if not any(t.device.type == "cpu" for t in state.values()):
        return True
    try:
        import psutil
    except ImportError:
        return True
    size = sum(t.numel() * t.element_size() for t in state.values())
    return psutil.virtual_memory().available > size


def session_language_state_dict(directory: Path, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """`read_language_state_dict`, read once per process: the 6.7 GB file is not re-read by a second notebook
    stage (evaluate after train) or a second `build_decoder` in the same kernel.

    Models built from it share these tensors (no second copy). If any was changed in place since it was
    read (an optimizer step bumps a tensor's version counter; `decoder.train_mode=full` does that), the
    file is read again, so a fresh model never starts from trained weights. One checkpoint is kept at a
    time; `clear_session_weights()` frees it.
    """
    key = _session_key(directory, dtype)
    held = _SESSION_WEIGHTS.get(key)
    if held is not None and [t._version for t in held[0].values()] == held[1]:
        logger.info("reusing the DeepSeek-VL2 language weights read earlier in this process from %s", directory)
        return held[0]
    _SESSION_WEIGHTS.clear()
    state = read_language_state_dict(directory, dtype)
    if _room_to_keep(state):
        _SESSION_WEIGHTS[key] = (state, [t._version for t in state.values()])
    return state


def clear_session_weights() -> None:
    """Drop the language weights kept by `session_language_state_dict` (frees their memory once no model uses them)."""
    _SESSION_WEIGHTS.clear()


def load_deepseek_vl2_language_model(directory: str | Path, dtype: torch.dtype = torch.float32,
                                     reuse: bool = True) -> DeepseekCausalLM:
    """Build `DeepseekCausalLM` from a local DeepSeek-VL2 checkpoint directory and load its language weights.

    The model is built on the meta device and the weights assigned, so only one copy is ever in memory.
    Only the `language.*` tensors are read from the safetensors files (lazily, by `safe_open`); with
    `reuse` they are read once per process (`session_language_state_dict`).
    """
    directory = Path(directory)
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{config_file} not found; decoder.name must be a DeepSeek-VL2 checkpoint directory "
                              "(config.json, *.safetensors, tokenizer files) or a hub name")
    text_config = text_config_from_vl2(json.loads(config_file.read_text()))
    with torch.device("meta"):
        model = DeepseekCausalLM(text_config)
    state = session_language_state_dict(directory, dtype) if reuse else read_language_state_dict(directory, dtype)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise CheckpointMismatchError(f"checkpoint {directory} does not match the model built from its config: "
                                      f"missing {missing[:20]} ({len(missing)}), unexpected {unexpected[:20]} "
                                      f"({len(unexpected)})")
    shapes = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(model.state_dict()[k].shape)}"
              for k, v in state.items() if v.shape != model.state_dict()[k].shape]
    if shapes:
        raise CheckpointMismatchError(f"shape mismatches in {directory}: {shapes[:10]}")
    model.load_state_dict(state, strict=True, assign=True)
    model.model.rotary_emb = DeepseekOcr2TextRotaryEmbedding(text_config)  # its non-persistent buffers were on meta
    logger.info("loaded the DeepSeek-VL2 language model from %s (%d tensors, %s)", directory, len(state), dtype)
    return model.eval()


def resolve_checkpoint_dir(name: str) -> Path:
    """A local directory as it is; a hub name downloaded (config, safetensors, tokenizer) or found in the cache."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"]))
    except Exception as e:  # offline, unknown repo, no huggingface_hub: one clear sentence
        raise CheckpointError(f"could not find or download the DeepSeek-VL2 checkpoint {name!r} ({type(e).__name__}); "
                              "without network, download it elsewhere and pass the directory holding config.json, "
                              "*.safetensors and the tokenizer files as decoder.name=/path/to/deepseek-vl2-tiny") from e
