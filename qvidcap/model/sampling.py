"""Sampled captions and their log-probabilities: what self-critical training rewards and differentiates.

Two passes, each simple on its own. `sample_captions` first draws k captions per clip with the decoder's
own `generate` (multinomial sampling over the whole vocabulary, KV cache, all clips in one batch) without
gradients; then one teacher-forced forward of the captioner over the drawn tokens gives each token's
log-probability with gradients. Both passes run in eval mode (no dropout, no word dropout), so the
log-probabilities are those of the very distribution the tokens were drawn from, as a policy gradient
needs. Tokens after a caption's first EOS are masked out (generate pads them); the EOS itself counts.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class SampledCaptions:
    token_ids: torch.Tensor  # (B*k, L): clip b's samples are rows b*k … b*k + k − 1; pad id after EOS
    mask: torch.Tensor  # (B*k, L): 1 on caption tokens up to and including the first EOS, 0 after
    log_probs: torch.Tensor  # (B*k,): sum of the sampled tokens' log-probabilities under the mask, with grad
    captions: list[str]  # (B*k) decoded, special tokens stripped
    num_samples: int  # k


def eos_mask(token_ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    """(B, L) long: 1 on every token up to and including the first EOS of its row, 0 after it."""
    is_eos = (token_ids == eos_id).long()  # (B, L)
    before = torch.cumsum(is_eos, dim=1) - is_eos  # EOS tokens strictly before each position
    return (before == 0).long()


def sequence_log_probs(logits: torch.Tensor, token_ids: torch.Tensor, mask: torch.Tensor,
                       temperature: float = 1.0) -> torch.Tensor:
    """Sum over the masked positions of log p(token): logits (B, L, V) predict token_ids (B, L). (B,)"""
    log_p = F.log_softmax(logits.float() / temperature, dim=-1)  # (B, L, V)
    picked = log_p.gather(-1, token_ids.unsqueeze(-1)).squeeze(-1)  # (B, L)
    return (picked * mask.to(picked.dtype)).sum(dim=1)


def _repeat_clips(clips: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
    """Each clip's tensors repeated k times in a row: (B, ...) -> (B*k, ...)."""
    return {name: clips[name].repeat_interleave(k, dim=0) for name in ("temporal", "context", "objects", "object_mask")}


@torch.no_grad()
def draw_token_ids(model: nn.Module, clips: dict[str, torch.Tensor], num_samples: int, max_new_tokens: int,
                   temperature: float = 1.0) -> torch.Tensor:
    """(B*k, ≤ max_new_tokens) token ids sampled from the captioner's decoder, pad id after EOS, no gradients.

    `model` is the unwrapped QVidCap; `clips` holds `temporal`, `context`, `objects`, `object_mask` (B, ...).
    """
    if num_samples < 1 or temperature <= 0:
        raise ValueError(f"num_samples={num_samples!r} and temperature={temperature!r}; expected num_samples >= 1 "
                         "and temperature > 0")
    was_training = model.training
    model.eval()
    try:
        enc = model.encode_video(clips["temporal"], clips["context"], clips["objects"], clips["object_mask"])
        embed = model.decoder.get_input_embeddings()
        prefix = enc.prefix.repeat_interleave(num_samples, dim=0)  # (B*k, Qf, H)
        start = torch.full((prefix.shape[0], 1), model.start_id, dtype=torch.long, device=prefix.device)
        start_embeds = embed(start)  # (B*k, 1, H)
        inputs_embeds = torch.cat([prefix.to(start_embeds.dtype), start_embeds], dim=1)  # (B*k, Qf + 1, H)
        mask = torch.ones(inputs_embeds.shape[:2], dtype=torch.long, device=inputs_embeds.device)
        return model.decoder.generate(
            inputs_embeds=inputs_embeds, attention_mask=mask, do_sample=True, temperature=temperature, top_k=0,
            top_p=1.0, num_beams=1, max_new_tokens=max_new_tokens, eos_token_id=model.eos_id,
            pad_token_id=model.pad_id, bos_token_id=model.start_id, use_cache=True,
        )  # (B*k, new tokens)
    finally:
        model.train(was_training)


def sample_captions(model: nn.Module, clips: dict[str, torch.Tensor], num_samples: int, max_new_tokens: int,
                    temperature: float = 1.0, policy: nn.Module | None = None) -> SampledCaptions:
    """k sampled captions per clip with their log-probabilities (with gradients through what trains).

    `model` is the unwrapped QVidCap; `policy` is the module the gradient pass calls (the Accelerate- or
    DDP-wrapped model in training, so gradients are synchronised); by default `model` itself. The
    gradient pass runs in eval mode, like the sampling, and restores the previous mode afterwards.
    """
    token_ids = draw_token_ids(model, clips, num_samples, max_new_tokens, temperature)  # (B*k, L)
    mask = eos_mask(token_ids, model.eos_id)  # (B*k, L)
    policy = policy if policy is not None else model
    was_training = model.training
    model.eval()
    try:
        output = policy(**_repeat_clips(clips, num_samples), input_ids=token_ids, attention_mask=mask)
    finally:
        model.train(was_training)
    log_probs = sequence_log_probs(output.logits, token_ids, mask, temperature)  # (B*k,)
    captions = [text.strip() for text in model.tokenizer.batch_decode(token_ids * mask + model.pad_id * (1 - mask),
                                                                       skip_special_tokens=True)]
    return SampledCaptions(token_ids, mask, log_probs, captions, num_samples)


def greedy_captions(model: nn.Module, clips: dict[str, torch.Tensor], max_new_tokens: int) -> list[str]:
    """One greedy caption per clip (the "greedy" baseline of self-critical training), no gradients."""
    return model.generate(clips["temporal"], clips["context"], clips["objects"], clips["object_mask"], num_beams=1,
                          max_new_tokens=max_new_tokens)
