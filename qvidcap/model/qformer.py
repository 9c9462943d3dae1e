"""The Q-Former that reads the heads' outputs, and the CaptionHead that turns its queries into a prefix.

Memory tokens: [object queries (Q), action features (Q), global feature (1)], each tagged by a type
embedding; a head switched off for an ablation leaves its tokens out (M = 2Q + 1 with every head).
Learned queries (Qf = `qformer.num_queries`) go through `qformer.num_layers` blocks of self-attention,
cross-attention to that memory, and a feed-forward, all pre-norm with residuals (`qformer.kind="qformer"`).
`qformer.kind="cross_attention"` is the original QVidCap's reader instead: one cross-attention layer and
nothing else. The CaptionHead maps each query output to the decoder's hidden size H: the prefix embeddings.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from qvidcap.config import QFormerConfig

OBJECT_TOKEN, ACTION_TOKEN, GLOBAL_TOKEN = 0, 1, 2


class FeedForward(nn.Module):
    def __init__(self, width: int, intermediate: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(width, intermediate), nn.GELU(), nn.Linear(intermediate, width),
                                 nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class QFormerBlock(nn.Module):
    """Queries talk to each other, then read the memory, then think alone (pre-norm, residual)."""

    def __init__(self, width: int, config: QFormerConfig):
        super().__init__()
        self.norm_self = nn.LayerNorm(width)
        self.self_attn = nn.MultiheadAttention(width, config.num_heads, dropout=config.dropout, batch_first=True)
        self.norm_cross = nn.LayerNorm(width)
        self.cross_attn = nn.MultiheadAttention(width, config.num_heads, dropout=config.dropout, batch_first=True)
        self.norm_ff = nn.LayerNorm(width)
        self.ff = FeedForward(width, config.intermediate_size, config.dropout)

    def forward(self, queries: torch.Tensor, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """queries (B, Qf, D), memory (B, M, D) -> queries (B, Qf, D), cross-attention (B, Qf, M)."""
        x = self.norm_self(queries)
        queries = queries + self.self_attn(x, x, x, need_weights=False)[0]  # (B, Qf, D)
        read, weights = self.cross_attn(self.norm_cross(queries), memory, memory)  # (B, Qf, D), (B, Qf, M)
        queries = queries + read
        queries = queries + self.ff(self.norm_ff(queries))  # (B, Qf, D)
        return queries, weights


@dataclass
class QFormerOutput:
    queries: torch.Tensor  # (B, Qf, D)
    attention: torch.Tensor  # (B, Qf, M), M = 2Q + 1 with every head: last cross-attention over the memory, head-averaged


def memory_tokens(type_embed: nn.Embedding, objects: torch.Tensor | None, actions: torch.Tensor | None,
                  global_feature: torch.Tensor | None) -> torch.Tensor:
    """[objects (Q), actions (Q), global (1)] with their type embeddings added; heads given as None are left out.

    objects (B, Q, D), actions (B, Q, D), global_feature (B, D) -> memory (B, M, D)."""
    parts = [(objects, OBJECT_TOKEN), (actions, ACTION_TOKEN),
             (global_feature.unsqueeze(1) if global_feature is not None else None, GLOBAL_TOKEN)]
    parts = [(tokens, kind) for tokens, kind in parts if tokens is not None]
    if not parts:
        raise ValueError("the Q-Former got no memory: every head is switched off (heads.object_head, "
                         "heads.action_head, heads.global_head); keep at least one")
    memory = torch.cat([tokens for tokens, _ in parts], dim=1)  # (B, M, D)
    types = torch.cat([torch.full((tokens.shape[1],), kind, dtype=torch.long, device=memory.device)
                       for tokens, kind in parts])  # (M,)
    return memory + type_embed(types)  # (B, M, D)


class QFormer(nn.Module):
    def __init__(self, width: int, config: QFormerConfig):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(config.num_queries, width) * 0.02)  # (Qf, D)
        self.type_embed = nn.Embedding(3, width)  # object / action / global
        self.memory_norm = nn.LayerNorm(width)
        self.blocks = nn.ModuleList([QFormerBlock(width, config) for _ in range(config.num_layers)])
        self.norm = nn.LayerNorm(width)

    def forward(self, objects: torch.Tensor | None, actions: torch.Tensor | None,
                global_feature: torch.Tensor | None) -> QFormerOutput:
        """objects (B, Q, D), actions (B, Q, D), global_feature (B, D), each None when its head is off
        -> queries (B, Qf, D)."""
        # 1. the memory: the heads' outputs, tagged by type
        memory = self.memory_norm(memory_tokens(self.type_embed, objects, actions, global_feature))  # (B, M, D)
        B = memory.shape[0]
        # 2. the learned queries read it block by block
        queries = self.queries.unsqueeze(0).expand(B, -1, -1)  # (B, Qf, D)
        weights = memory.new_zeros(B, queries.shape[1], memory.shape[1])
        for block in self.blocks:
            queries, weights = block(queries, memory)
        return QFormerOutput(queries=self.norm(queries), attention=weights)


class CrossAttentionReader(nn.Module):
    """The original QVidCap's Q-Former (`qformer.kind="cross_attention"`): learned queries, one multi-head
    cross-attention over the type-tagged memory, and nothing else: no self-attention, feed-forward, norm
    or residual. The queries' outputs are the attention's outputs."""

    def __init__(self, width: int, config: QFormerConfig):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(config.num_queries, width) * 0.02)  # (Qf, D)
        self.type_embed = nn.Embedding(3, width)  # object / action / global
        self.cross_attn = nn.MultiheadAttention(width, config.num_heads, dropout=config.dropout, batch_first=True)

    def forward(self, objects: torch.Tensor | None, actions: torch.Tensor | None,
                global_feature: torch.Tensor | None) -> QFormerOutput:
        """As `QFormer.forward`."""
        memory = memory_tokens(self.type_embed, objects, actions, global_feature)  # (B, M, D)
        queries = self.queries.unsqueeze(0).expand(memory.shape[0], -1, -1)  # (B, Qf, D)
        read, weights = self.cross_attn(queries, memory, memory)  # (B, Qf, D), (B, Qf, M)
        return QFormerOutput(queries=read, attention=weights)


QFORMER_KINDS = {"qformer": QFormer, "cross_attention": CrossAttentionReader}


def build_qformer(width: int, config: QFormerConfig) -> nn.Module:
    """The reader of the heads' outputs that `qformer.kind` names."""
    if config.kind not in QFORMER_KINDS:
        raise ValueError(f"qformer.kind={config.kind!r}; expected one of {sorted(QFORMER_KINDS)}")
    return QFORMER_KINDS[config.kind](width, config)


class CaptionHead(nn.Module):
    """Query outputs (B, Qf, D) -> prefix embeddings (B, Qf, H) in the decoder's input space."""

    def __init__(self, width: int, decoder_hidden_size: int):
        super().__init__()
        self.proj = nn.Linear(width, decoder_hidden_size)

    def forward(self, queries: torch.Tensor) -> torch.Tensor:
        return self.proj(queries)  # (B, Qf, H)
