"""The three heads that turn a clip's feature streams into object, action and global representations.

Read top to bottom: the mask and position helpers, the input projections, then ObjectHead, ActionHead
and GlobalHead, each taking what the one before it produced. `ConstantQueries` stands in for the
ObjectHead in the ablation without it (`heads.object_head=false`, see `qvidcap.model.captioner`).

Names: B batch, T temporal steps, N keyframes, P objects (padded), Q object queries, D the common width
(`heads.hidden_size`), E the sentence-embedding width the auxiliary losses compare with
(`heads.text_embed_dim`). Masks at the public boundary are 1 = real, 0 = padding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from qvidcap.config import HeadsConfig

MOTION, OBJECT, CONTEXT = 0, 1, 2  # token types of the ObjectHead's input sequence


def _additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A public 1/0 padding mask (B, S) as the additive float mask attention layers take.

    Real positions add 0, padding adds the most negative finite value (not -inf), so a row whose keys
    are all padding gives uniform weights instead of NaN.
    """
    return (1.0 - mask.to(dtype)) * torch.finfo(dtype).min  # (B, S)


def sinusoidal_positions(length: int, width: int, device=None) -> torch.Tensor:
    """Fixed sine/cosine encodings of positions 0..length-1 (length, width), as in "Attention Is All You Need".

    Motion and keyframe tokens need them: the heads' attention is otherwise blind to order, and "moves
    left" and "moves right" differ only in the order of the same views.
    """
    position = torch.arange(length, dtype=torch.float32, device=device).unsqueeze(1)  # (L, 1)
    frequency = torch.exp(torch.arange(0, width, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / width))
    table = torch.zeros(length, width, device=device)  # (L, W)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: width // 2])
    return table


def _encoder_layer(config: HeadsConfig) -> nn.TransformerEncoderLayer:
    return nn.TransformerEncoderLayer(
        d_model=config.hidden_size, nhead=config.num_heads, dim_feedforward=4 * config.hidden_size,
        dropout=config.dropout, activation="gelu", batch_first=True, norm_first=True,
    )


@dataclass
class ProjectedStreams:
    motion: torch.Tensor  # (B, T, D)
    objects: torch.Tensor | None  # (B, P, D); None without the ObjectHead (the only reader of objects and context)
    context: torch.Tensor | None  # (B, N, D); None without the ObjectHead
    object_mask: torch.Tensor  # (B, P) 1 = real box


def with_deltas(tokens: torch.Tensor) -> torch.Tensor:
    """(B, T, D) -> (B, T, 2D): each token beside its difference from the clip's mean token.

    On a fixed camera most of a token is the static scene; the difference keeps what moves or changes
    (TSN's RGB difference, Wang et al. 2016, taken in feature space), which the heads can read linearly."""
    return torch.cat([tokens, tokens - tokens.mean(dim=1, keepdim=True)], dim=-1)


class InputProjection(nn.Module):
    """Linear maps of the temporal (Dt), object (Do) and context (Dc) streams to the common width D,
    each followed by a LayerNorm: L2-normalised CLIP vectors have entries near 1/sqrt(Do), far smaller
    than VideoMAE's, and the norm puts the three streams on one scale. Motion and keyframe tokens then get
    their time order added (`sinusoidal_positions`); objects are a set and get none.

    Only the ObjectHead reads the object and context streams, so without it (`heads.object_head=false`)
    their projections are not built and those streams are not read at all."""

    def __init__(self, config: HeadsConfig):
        super().__init__()
        for name, width in (("temporal_dim", config.temporal_dim), ("object_dim", config.object_dim),
                            ("context_dim", config.context_dim)):
            if width <= 0:
                raise ValueError(f"heads.{name} is {width!r}; fill the feature widths first with "
                                 "qvidcap.model.link_widths(config, store.feature_dims, text_embed_dim)")
        d = config.hidden_size
        self.deltas = config.stream_deltas
        widen = 2 if self.deltas else 1  # a token and its difference from the clip's mean, side by side
        self.temporal = nn.Sequential(nn.Linear(widen * config.temporal_dim, d), nn.LayerNorm(d))
        if config.object_head:
            self.objects = nn.Sequential(nn.Linear(config.object_dim, d), nn.LayerNorm(d))
            self.context = nn.Sequential(nn.Linear(widen * config.context_dim, d), nn.LayerNorm(d))
        else:
            self.objects = self.context = None
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, temporal: torch.Tensor, context: torch.Tensor, objects: torch.Tensor,
                object_mask: torch.Tensor) -> ProjectedStreams:
        """temporal (B, T, Dt), context (B, N, Dc), objects (B, P, Do), object_mask (B, P) -> widths D."""
        motion = self.temporal(with_deltas(temporal) if self.deltas else temporal)  # (B, T, D) from (B, T, [2] Dt)
        motion = motion + sinusoidal_positions(motion.shape[1], motion.shape[2], motion.device).to(motion.dtype)
        if self.context is None:  # no ObjectHead: nothing reads objects or context
            return ProjectedStreams(motion=self.dropout(motion), objects=None, context=None, object_mask=object_mask)
        context = self.context(with_deltas(context) if self.deltas else context)  # (B, N, D) from (B, N, [2] Dc)
        context = context + sinusoidal_positions(context.shape[1], context.shape[2], context.device).to(context.dtype)
        return ProjectedStreams(
            motion=self.dropout(motion),  # (B, T, D)
            objects=self.dropout(self.objects(objects)),  # (B, P, D)
            context=self.dropout(context),  # (B, N, D)
            object_mask=object_mask,
        )


@dataclass
class ObjectHeadOutput:
    queries: torch.Tensor  # ξ (B, Q, D): what the other heads and the Q-Former read
    embeds: torch.Tensor  # (B, Q, E): compared with the caption's noun-phrase embeddings
    attention: torch.Tensor  # (B, Q, T + P + N): query cross-attention, averaged over heads


class ObjectHead(nn.Module):
    """Learned queries reading a transformer encoding of [motion (T), objects (P), context (N)].

    Padded objects are masked both in the encoder and in the queries' cross-attention, so their values
    never reach the output; a clip with no objects still has its motion and context tokens to attend to.
    """

    def __init__(self, config: HeadsConfig):
        super().__init__()
        d = config.hidden_size
        self.queries = nn.Parameter(torch.randn(config.num_object_queries, d) * 0.02)  # (Q, D)
        self.type_embed = nn.Embedding(3, d)  # motion / object / context
        self.encoder = nn.TransformerEncoder(_encoder_layer(config), config.object_encoder_layers,
                                             norm=nn.LayerNorm(d), enable_nested_tensor=False)
        self.cross_attn = nn.MultiheadAttention(d, config.num_heads, dropout=config.dropout, batch_first=True)
        self.norm = nn.LayerNorm(d)
        self.to_text = nn.Linear(d, config.text_embed_dim)

    def forward(self, streams: ProjectedStreams) -> ObjectHeadOutput:
        B, T, _ = streams.motion.shape
        N = streams.context.shape[1]
        # 1. one sequence of all tokens, each tagged with its stream type
        types = streams.motion.new_tensor([MOTION] * T + [OBJECT] * streams.objects.shape[1] + [CONTEXT] * N,
                                          dtype=torch.long)  # (S,)
        tokens = torch.cat([streams.motion, streams.objects, streams.context], dim=1)  # (B, S, D), S = T + P + N
        tokens = tokens + self.type_embed(types)  # (B, S, D)
        # 2. the key mask: motion and context tokens are always real, objects as the mask says
        ones_t = streams.object_mask.new_ones(B, T)
        ones_n = streams.object_mask.new_ones(B, N)
        key_mask = _additive_mask(torch.cat([ones_t, streams.object_mask, ones_n], dim=1), tokens.dtype)  # (B, S)
        # 3. encode, then let the learned queries attend to the encoding
        memory = self.encoder(tokens, src_key_padding_mask=key_mask)  # (B, S, D)
        queries = self.queries.unsqueeze(0).expand(B, -1, -1)  # (B, Q, D)
        attended, weights = self.cross_attn(queries, memory, memory, key_padding_mask=key_mask)  # (B, Q, D), (B, Q, S)
        xi = self.norm(queries + attended)  # (B, Q, D)
        return ObjectHeadOutput(queries=xi, embeds=self.to_text(xi), attention=weights)


class ConstantQueries(nn.Module):
    """The ObjectHead's stand-in when it is ablated: `num_object_queries` learned queries, the same for every
    clip, which the ActionHead reads in place of ξ. They carry no information about the clip, so the
    ActionHead's output depends on the motion stream alone."""

    def __init__(self, config: HeadsConfig):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(config.num_object_queries, config.hidden_size) * 0.02)  # (Q, D)

    def forward(self, batch_size: int) -> torch.Tensor:
        return self.queries.unsqueeze(0).expand(batch_size, -1, -1)  # (B, Q, D)


class InteractionAttention(nn.Module):
    """Additive attention of each motion step over the object queries: score = v·tanh(W·M + U·ξ + b)."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.w_motion = nn.Linear(hidden_size, hidden_size, bias=True)  # W and b
        self.u_object = nn.Linear(hidden_size, hidden_size, bias=False)  # U
        self.score = nn.Linear(hidden_size, 1, bias=False)  # v

    def forward(self, motion: torch.Tensor, xi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """motion (B, T, D), xi (B, Q, D) -> motion-object context M_e (B, T, D), weights (B, T, Q)."""
        energy = torch.tanh(self.w_motion(motion).unsqueeze(2) + self.u_object(xi).unsqueeze(1))  # (B, T, Q, D)
        weights = self.score(energy).squeeze(-1).softmax(dim=-1)  # (B, T, Q)
        return weights @ xi, weights  # (B, T, D), (B, T, Q)


@dataclass
class ActionHeadOutput:
    features: torch.Tensor  # (B, Q, D): what the global head and the Q-Former read
    embeds: torch.Tensor  # (B, Q, E), L2-normalised: compared with the caption's verb embeddings
    interaction: torch.Tensor  # (B, T, Q): motion-object interaction weights


class ActionHead(nn.Module):
    """Motion steps enriched by the objects they involve, read back by the object queries (one head)."""

    def __init__(self, config: HeadsConfig):
        super().__init__()
        d = config.hidden_size
        self.interaction = InteractionAttention(d)
        self.fuse = nn.Sequential(nn.Linear(2 * d, d), nn.LayerNorm(d))
        self.read = nn.MultiheadAttention(d, 1, dropout=config.dropout, batch_first=True)
        self.norm = nn.LayerNorm(d)
        self.to_text = nn.Linear(d, config.text_embed_dim)

    def forward(self, motion: torch.Tensor, xi: torch.Tensor) -> ActionHeadOutput:
        """motion (B, T, D), xi (B, Q, D) from the ObjectHead."""
        context, interaction = self.interaction(motion, xi)  # (B, T, D), (B, T, Q)
        fused = self.fuse(torch.cat([motion, context], dim=-1))  # (B, T, 2D) -> (B, T, D)
        read, _ = self.read(xi, fused, fused, need_weights=False)  # (B, Q, D)
        features = self.norm(xi + read)  # (B, Q, D)
        embeds = F.normalize(self.to_text(features), dim=-1)  # (B, Q, E)
        return ActionHeadOutput(features=features, embeds=embeds, interaction=interaction)


@dataclass
class GlobalHeadOutput:
    features: torch.Tensor  # (B, D)
    embed: torch.Tensor  # (B, E): compared with the whole caption's embedding


class GlobalHead(nn.Module):
    """[motion (T), object queries (Q), action features (Q)] -> encoder layer(s) -> mean -> projection.

    Without the ObjectHead or the ActionHead (ablations) their tokens are left out of the sequence."""

    def __init__(self, config: HeadsConfig):
        super().__init__()
        d = config.hidden_size
        self.encoder = nn.TransformerEncoder(_encoder_layer(config), config.global_layers,
                                             norm=nn.LayerNorm(d), enable_nested_tensor=False)
        self.to_text = nn.Linear(d, config.text_embed_dim)

    def forward(self, motion: torch.Tensor, xi: torch.Tensor | None = None,
                action: torch.Tensor | None = None) -> GlobalHeadOutput:
        """motion (B, T, D), xi (B, Q, D) or None, action (B, Q, D) or None; every token is real, so the mean
        is plain."""
        tokens = torch.cat([t for t in (motion, xi, action) if t is not None], dim=1)  # (B, T + 2Q, D) when all are there
        features = self.encoder(tokens).mean(dim=1)  # (B, D)
        return GlobalHeadOutput(features=features, embed=self.to_text(features))
