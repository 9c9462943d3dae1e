"""QVidCap: features → heads → Q-Former → prefix → language decoder → caption.

`encode_video` is the one path from features to prefix; `forward` (training) and `generate`
(evaluation, serving) both call it.

Decoder input, training and generation alike: `[prefix (Qf), start token, caption tokens]`, where the
start token is the tokenizer's BOS (EOS where it has none) and captions already end with EOS
(`tokenize_captions`). Labels are -100 on the prefix, on the start token and on padding, so the loss is
over the caption tokens and their EOS only. Generation feeds `[prefix, start]` as `inputs_embeds` and
lets the decoder continue with its KV cache until EOS.

Ablations switch heads off in the config (`heads.object_head`, `heads.action_head`, `heads.global_head`,
`qformer.kind`); a checkpoint's config rebuilds the same variant. A head switched off is not built, and:

- **without the ObjectHead**, the ActionHead reads learned constant queries (`ConstantQueries`, the same for
  every clip) in place of ξ; the object and context streams are not read (their projections are not
  built); ξ leaves the GlobalHead's input and the Q-Former memory; there is no object loss.
- **without the ActionHead**, the GlobalHead reads [motion, ξ] and the Q-Former memory holds no action
  tokens; there is no action loss.
- **without the GlobalHead**, the Q-Former memory holds no global token; there is no global loss.

The Q-Former memory is then M = Q·[ObjectHead] + Q·[ActionHead] + [GlobalHead] tokens (2Q + 1 with all three);
at least one head must stay. The encoding's outputs of a head switched off are None, and
`qvidcap.training.losses.compute_losses` leaves their losses out of the total.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedTokenizerBase

from qvidcap.config import StudyConfig
from qvidcap.model.decoder import build_decoder
from qvidcap.model.heads import ActionHead, ConstantQueries, GlobalHead, InputProjection, ObjectHead
from qvidcap.model.qformer import CaptionHead, build_qformer
from qvidcap.model.tokenizer import caption_start_id

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100


@dataclass
class VideoEncoding:
    """What `encode_video` produces; a head switched off (ablation) gives None for its outputs."""

    object_embeds: torch.Tensor | None  # (B, Q, E)
    action_embeds: torch.Tensor | None  # (B, Q, E), L2-normalised
    global_embed: torch.Tensor | None  # (B, E)
    prefix: torch.Tensor  # (B, Qf, H) in the decoder's input-embedding space
    object_attention: torch.Tensor | None  # (B, Q, T + P + N): ObjectHead queries over [motion, objects, context]
    interaction: torch.Tensor | None  # (B, T, Q): ActionHead motion-object weights
    qformer_attention: torch.Tensor  # (B, Qf, M), M = 2Q + 1 with every head: Q-Former queries over [objects, actions, global]


@dataclass
class CaptionerOutput:
    caption_loss: torch.Tensor  # scalar: mean cross-entropy over caption tokens (EOS included)
    logits: torch.Tensor  # (B, L, V): logits[:, i] predicts input_ids[:, i]
    object_embeds: torch.Tensor | None  # (B, Q, E); None without the ObjectHead
    action_embeds: torch.Tensor | None  # (B, Q, E); None without the ActionHead
    global_embed: torch.Tensor | None  # (B, E); None without the GlobalHead


def link_widths(config: StudyConfig, feature_dims: dict[str, int], text_embed_dim: int) -> StudyConfig:
    """A copy of `config` with the heads' input widths and the sentence-embedding width filled in.

    `feature_dims` is `{"temporal": Dt, "object": Do, "context": Dc}` (a feature store's `feature_dims`).
    """
    missing = {"temporal", "object", "context"} - set(feature_dims)
    if missing:
        raise ValueError(f"feature_dims {feature_dims!r} lacks {sorted(missing)}; expected temporal, object, context")
    heads = dataclasses.replace(config.heads, temporal_dim=int(feature_dims["temporal"]),
                                object_dim=int(feature_dims["object"]), context_dim=int(feature_dims["context"]),
                                text_embed_dim=int(text_embed_dim))
    return dataclasses.replace(config, heads=heads)


class QVidCap(nn.Module):
    """The captioner: `encode_video` (features → prefix), `forward` (caption loss), `generate` (captions).

    Built by `build_captioner`; `config` is the linked StudyConfig it was built from (saved with checkpoints).
    """

    def __init__(self, config: StudyConfig, decoder: nn.Module, tokenizer: PreTrainedTokenizerBase):
        super().__init__()
        if config.heads.text_embed_dim <= 0:
            raise ValueError(f"heads.text_embed_dim is {config.heads.text_embed_dim!r}; fill it (and the feature "
                             "widths) with qvidcap.model.link_widths before building the model")
        heads = config.heads
        if not (heads.object_head or heads.action_head or heads.global_head):
            raise ValueError("heads.object_head, heads.action_head and heads.global_head are all false: the Q-Former "
                             "would read nothing; keep at least one head")
        self.config = config
        self.tokenizer = tokenizer
        width = heads.hidden_size
        hidden = decoder.get_input_embeddings().embedding_dim
        self.projection = InputProjection(heads)
        self.object_head = ObjectHead(heads) if heads.object_head else None
        # without the ObjectHead, the ActionHead reads queries that are the same for every clip
        self.object_queries = ConstantQueries(heads) if heads.action_head and not heads.object_head else None
        self.action_head = ActionHead(heads) if heads.action_head else None
        self.global_head = GlobalHead(heads) if heads.global_head else None
        self.qformer = build_qformer(width, config.qformer)
        self.caption_head = CaptionHead(width, hidden)
        self.decoder = decoder
        self.start_id = caption_start_id(tokenizer)
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id

    def train(self, mode: bool = True) -> "QVidCap":
        """As nn.Module.train, except that a frozen decoder stays in eval mode (no dropout): frozen means
        it behaves exactly as pretrained, while gradients still flow through it to the prefix."""
        super().train(mode)
        if self.config.decoder.train_mode == "frozen":
            self.decoder.eval()
        return self

    def encode_video(self, temporal: torch.Tensor, context: torch.Tensor, objects: torch.Tensor,
                     object_mask: torch.Tensor) -> VideoEncoding:
        """temporal (B, T, Dt), context (B, N, Dc), objects (B, P, Do), object_mask (B, P) 1 = real box."""
        # 1. every stream to the common width D
        streams = self.projection(temporal, context, objects, object_mask)
        # 2. the three heads, each reading what the one before produced (a head switched off gives None)
        obj = self.object_head(streams) if self.object_head is not None else None  # ξ (B, Q, D)
        xi = obj.queries if obj is not None else None
        act = None
        if self.action_head is not None:
            queries = xi if xi is not None else self.object_queries(temporal.shape[0])  # (B, Q, D)
            act = self.action_head(streams.motion, queries)  # (B, Q, D)
        actions = act.features if act is not None else None
        glo = self.global_head(streams.motion, xi, actions) if self.global_head is not None else None  # (B, D)
        # 3. the Q-Former reads the heads; the CaptionHead maps its queries into the decoder's space
        q = self.qformer(xi, actions, glo.features if glo is not None else None)  # (B, Qf, D)
        prefix = self.caption_head(q.queries)  # (B, Qf, H)
        def out(head, name: str):
            return getattr(head, name) if head is not None else None

        return VideoEncoding(out(obj, "embeds"), out(act, "embeds"), out(glo, "embed"), prefix,
                             out(obj, "attention"), out(act, "interaction"), q.attention)

    def _decoder_inputs(self, prefix: torch.Tensor, input_ids: torch.Tensor | None = None) -> torch.Tensor:
        """[prefix (Qf), start (1), tokens (L)] as embeddings (B, Qf + 1 + L, H) in the decoder's dtype."""
        embed = self.decoder.get_input_embeddings()
        start = torch.full((prefix.shape[0], 1), self.start_id, dtype=torch.long, device=prefix.device)
        tokens = start if input_ids is None else torch.cat([start, input_ids], dim=1)  # (B, 1 + L)
        token_embeds = embed(tokens)  # (B, 1 + L, H)
        return torch.cat([prefix.to(token_embeds.dtype), token_embeds], dim=1)  # (B, Qf + 1 + L, H)

    def _word_dropout(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Teacher-forced words replaced by <unk> with probability `decoder.word_dropout` (training only).

        A decoder trained from scratch can lower its loss by modelling the captions' language alone and
        ignore the prefix (every clip then gets one caption); hiding some of the words it conditions on
        makes the video prefix worth reading. The labels are untouched.
        """
        rate = self.config.decoder.word_dropout
        if not self.training or rate <= 0:
            return input_ids
        unk = self.tokenizer.unk_token_id if self.tokenizer.unk_token_id is not None else self.pad_id
        hidden = torch.rand(input_ids.shape, device=input_ids.device) < rate  # (B, L)
        return input_ids.masked_fill(hidden, unk)

    def forward(self, temporal: torch.Tensor, context: torch.Tensor, objects: torch.Tensor,
                object_mask: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> CaptionerOutput:
        """Caption loss and head outputs. input_ids (B, L) end with EOS and are right-padded;
        attention_mask (B, L) is 1 on real tokens, 0 on padding."""
        # 1. encode the clip into head outputs and a prefix
        enc = self.encode_video(temporal, context, objects, object_mask)
        B, Qf, _ = enc.prefix.shape
        # 2. the decoder reads [prefix, start, caption]; in training some caption words are hidden from it
        inputs_embeds = self._decoder_inputs(enc.prefix, self._word_dropout(input_ids))  # (B, Qf + 1 + L, H)
        seen = torch.ones(B, Qf + 1, dtype=attention_mask.dtype, device=attention_mask.device)
        mask = torch.cat([seen, attention_mask], dim=1)  # (B, Qf + 1 + L)
        logits = self.decoder(inputs_embeds=inputs_embeds, attention_mask=mask, use_cache=False).logits
        # 3. position Qf + i predicts caption token i: keep those logits, score only real tokens
        logits = logits[:, Qf: Qf + input_ids.shape[1]].float()  # (B, L, V)
        labels = input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)  # (B, L)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX)
        return CaptionerOutput(loss, logits, enc.object_embeds, enc.action_embeds, enc.global_embed)

    @torch.inference_mode()
    def generate_ids(self, temporal: torch.Tensor, context: torch.Tensor, objects: torch.Tensor,
                     object_mask: torch.Tensor, num_beams: int | None = None, max_new_tokens: int | None = None,
                     use_cache: bool = True) -> torch.Tensor:
        """Generated token ids (B, ≤ max_new_tokens), padded with pad id after EOS. Runs in eval mode
        (dropout off) and restores the previous mode afterwards."""
        num_beams = num_beams or self.config.generation.num_beams
        max_new_tokens = max_new_tokens or self.config.generation.max_new_tokens
        was_training = self.training
        self.eval()
        try:
            enc = self.encode_video(temporal, context, objects, object_mask)
            inputs_embeds = self._decoder_inputs(enc.prefix)  # (B, Qf + 1, H)
            mask = torch.ones(inputs_embeds.shape[:2], dtype=torch.long, device=inputs_embeds.device)
            return self.decoder.generate(
                inputs_embeds=inputs_embeds, attention_mask=mask, num_beams=num_beams, do_sample=False,
                max_new_tokens=max_new_tokens, eos_token_id=self.eos_id, pad_token_id=self.pad_id,
                bos_token_id=self.start_id, use_cache=use_cache,
            )  # (B, new tokens): with inputs_embeds only, generate returns only the new tokens
        finally:
            self.train(was_training)

    def generate(self, temporal: torch.Tensor, context: torch.Tensor, objects: torch.Tensor,
                 object_mask: torch.Tensor, num_beams: int | None = None, max_new_tokens: int | None = None,
                 use_cache: bool = True) -> list[str]:
        """One caption per clip (greedy when num_beams is 1, else beam search), special tokens stripped."""
        ids = self.generate_ids(temporal, context, objects, object_mask, num_beams, max_new_tokens, use_cache)
        return [text.strip() for text in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]

    def _frozen_decoder_keys(self) -> set[str]:
        """State-dict keys of the decoder's frozen weights, tied duplicates (GPT-2's lm_head) included."""
        return {f"decoder.{n}" for n, p in self.decoder.named_parameters(remove_duplicate=False) if not p.requires_grad}

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Every weight except a frozen decoder's (those come back from the pretrained checkpoint)."""
        frozen = self._frozen_decoder_keys()
        return {k: v for k, v in self.state_dict().items() if k not in frozen}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load what `trainable_state_dict` saved; anything else missing or extra is an error."""
        result = self.load_state_dict(state, strict=False)
        missing = sorted(set(result.missing_keys) - self._frozen_decoder_keys())
        if missing or result.unexpected_keys:
            raise RuntimeError(f"state dict does not fit this model: missing {missing[:20]}, "
                               f"unexpected {result.unexpected_keys[:20]}; was it saved with another config?")

    def parameter_table(self) -> pd.DataFrame:
        """Trainable and frozen parameter counts per component."""
        rows = []
        for name, module in self.named_children():
            params = list(module.parameters())
            trainable = sum(p.numel() for p in params if p.requires_grad)
            rows.append({"component": name, "trainable": trainable,
                         "frozen": sum(p.numel() for p in params) - trainable})
        table = pd.DataFrame(rows).set_index("component")
        table.loc["total"] = table.sum()
        return table


def build_captioner(config: StudyConfig, tokenizer: PreTrainedTokenizerBase, device: str = "cpu") -> QVidCap:
    """The whole model for `config` (widths linked, see `link_widths`), on the CPU; `device` picks the
    decoder's dtype ("auto": a pretrained decoder is built directly in the GPU's half dtype, bf16 on compute
    capability >= 8.0, fp16 below; fp32 on CPU). Every caller that will run it on a GPU passes that GPU
    here, then moves it with `.to(device)`."""
    decoder = build_decoder(config.decoder, tokenizer, device)
    model = QVidCap(config, decoder, tokenizer)
    total = model.parameter_table().loc["total"]
    logger.info("built QVidCap: %s trainable, %s frozen parameters", f"{total['trainable']:,}", f"{total['frozen']:,}")
    return model
