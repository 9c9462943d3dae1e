"""The language decoder chosen by `decoder.kind`, prepared for `decoder.train_mode`.

| kind | model | tokenizer |
|---|---|---|
| `deepseek_small` | `DeepseekCausalLM` (DeepSeek MoE) at `decoder.small_*` sizes, random | word-level, from the captions |
| `deepseek_vl2` | `DeepseekCausalLM` loaded from a DeepSeek-VL2 checkpoint's language weights | the checkpoint's |
| `hf` | any `AutoModelForCausalLM` by name or path | the checkpoint's |

`train_mode`: `frozen` (no decoder weight trains; gradients still flow through it to the prefix),
`lora` (peft adapters on the attention projections), `full`.
"""
from __future__ import annotations

import logging

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from qvidcap.config import DecoderConfig
from qvidcap.model.finite_guard import install_finite_guard
from qvidcap.runtime.precision import default_dtype, half_dtype

logger = logging.getLogger(__name__)

KINDS = ("deepseek_small", "deepseek_vl2", "hf")
TRAIN_MODES = ("frozen", "lora", "full")
EXPERTS_IMPLEMENTATIONS = ("eager", "grouped_mm", "batched_mm")  # transformers' experts backends that run anywhere


class DecoderError(RuntimeError):
    """A decoder that cannot be built or loaded as configured."""


def decoder_dtype(config: DecoderConfig, device: str | torch.device = "cpu") -> torch.dtype:
    """Weights dtype of the decoder: `decoder.dtype`, or for "auto" a pretrained decoder in the GPU's half
    dtype (bf16 on compute capability >= 8.0, fp16 below: a T4's bf16 is emulated) and fp32 on CPU.

    The small random decoder stays fp32 under "auto": it trains all its weights, and fp16 mixed precision
    needs fp32 master weights (it is a few MB).
    """
    names = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if config.dtype in names:
        return names[config.dtype]
    if config.dtype != "auto":
        raise DecoderError(f"decoder.dtype is {config.dtype!r}; expected auto, {', '.join(names)}")
    if config.kind == "deepseek_small":
        return torch.float32
    return half_dtype(device)


def build_decoder(config: DecoderConfig, tokenizer: PreTrainedTokenizerBase, device: str | torch.device = "cpu") -> nn.Module:
    """The causal LM of `config.kind`, built directly in `decoder_dtype` (no fp32 copy first), trainable
    as `config.train_mode` says; `device` only picks the dtype. A float16 decoder gets the overflow guard."""
    if config.kind not in KINDS:
        raise DecoderError(f"unknown decoder.kind {config.kind!r}; expected one of {KINDS}")
    if config.train_mode not in TRAIN_MODES:
        raise DecoderError(f"unknown decoder.train_mode {config.train_mode!r}; expected one of {TRAIN_MODES}")
    if config.experts_implementation not in EXPERTS_IMPLEMENTATIONS:
        raise DecoderError(f"unknown decoder.experts_implementation {config.experts_implementation!r}; expected one of "
                           f"{EXPERTS_IMPLEMENTATIONS} (eager = the per-expert loop, grouped_mm = one grouped GEMM)")
    dtype = decoder_dtype(config, device)
    if config.kind == "deepseek_small":
        from qvidcap.model.deepseek_vl2 import DeepseekCausalLM, small_text_config

        text_config = small_text_config(config, len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id,
                                        tokenizer.pad_token_id)
        with default_dtype(dtype):
            model = DeepseekCausalLM(text_config)
    elif config.kind == "deepseek_vl2":
        from qvidcap.model.deepseek_vl2 import load_deepseek_vl2_language_model, resolve_checkpoint_dir

        directory = resolve_checkpoint_dir(config.name or "deepseek-ai/deepseek-vl2-tiny")
        model = load_deepseek_vl2_language_model(directory, dtype)
    else:
        model = _load_hf(config, dtype)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        raise DecoderError(f"the tokenizer has {len(tokenizer)} tokens but the decoder's embedding only "
                           f"{model.get_input_embeddings().num_embeddings}; use the decoder's own tokenizer")
    _set_experts_implementation(model, config)
    if dtype == torch.float16:
        install_finite_guard(model, config.finite_check_steps)
    logger.info("decoder %s in %s", type(model).__name__, str(dtype).removeprefix("torch."))
    return prepare_for_training(model, config)


def _set_experts_implementation(model: nn.Module, config: DecoderConfig) -> None:
    """`decoder.experts_implementation` on the DeepSeek MoE decoder (transformers' public switch)."""
    from qvidcap.model.deepseek_vl2 import DeepseekCausalLM

    if not isinstance(model, DeepseekCausalLM):
        return
    model.set_experts_implementation(config.experts_implementation)


def _load_hf(config: DecoderConfig, dtype: torch.dtype) -> nn.Module:
    from transformers import AutoModelForCausalLM

    if not config.name:
        raise DecoderError("decoder.kind='hf' needs decoder.name (e.g. gpt2, HuggingFaceTB/SmolLM2-135M or a path)")
    try:
        return AutoModelForCausalLM.from_pretrained(config.name, dtype=dtype)
    except Exception as e:
        raise DecoderError(f"could not load the causal LM {config.name!r} ({type(e).__name__}); offline, pass a local "
                           "directory holding its config.json, weights and tokenizer as decoder.name") from e


def prepare_for_training(model: nn.Module, config: DecoderConfig) -> nn.Module:
    """Set which decoder weights train (`config.train_mode`): all, none, or LoRA adapters only."""
    if config.train_mode == "full":
        return model.requires_grad_(True)
    model.requires_grad_(False)
    if config.train_mode == "frozen":
        return model
    from peft import LoraConfig, get_peft_model

    targets = list(config.lora_target_modules) or _default_lora_targets(model)
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=targets, bias="none")
    try:
        return get_peft_model(model, lora)
    except ValueError as e:
        raise DecoderError(f"LoRA could not find the decoder's attention projections ({e}); set "
                           "decoder.lora_target_modules to its module names, e.g. q_proj,v_proj") from e


def _default_lora_targets(model: nn.Module) -> list[str] | None:
    """q/k/v/o_proj where the model has them (DeepSeek, LLaMA, Qwen, SmolLM); else peft's own default."""
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    found = [n for n in ("q_proj", "k_proj", "v_proj", "o_proj") if n in names]
    return found or None
