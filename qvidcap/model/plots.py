"""Figures of the model's inside: attention maps and a loss curve (matplotlib + seaborn, imported lazily)."""
from __future__ import annotations

from typing import Sequence

import torch


def object_token_labels(num_motion: int, object_mask: torch.Tensor, num_context: int) -> list[str]:
    """Column labels of the ObjectHead's memory: m0.., o0.. (padding marked "pad"), c0.."""
    objects = [f"o{i}" if int(real) else "pad" for i, real in enumerate(object_mask.tolist())]
    return [f"m{i}" for i in range(num_motion)] + objects + [f"c{i}" for i in range(num_context)]


def qformer_token_labels(num_object_queries: int) -> list[str]:
    """Column labels of the Q-Former's memory: object queries, action features, the global feature."""
    return [f"obj{i}" for i in range(num_object_queries)] + [f"act{i}" for i in range(num_object_queries)] + ["global"]


def plot_attention(weights: torch.Tensor, columns: Sequence[str], rows: Sequence[str] | None = None,
                   title: str = "", ax=None):
    """Heatmap of one clip's attention weights (rows = queries, columns = memory tokens); returns the axes."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    if weights.ndim != 2:
        raise ValueError(f"plot_attention takes one clip's (queries, tokens) weights, got shape {tuple(weights.shape)}")
    rows = list(rows) if rows is not None else [f"q{i}" for i in range(weights.shape[0])]
    if ax is None:
        _, ax = plt.subplots(figsize=(max(4.0, 0.45 * len(columns) + 2), max(2.5, 0.35 * len(rows) + 1)))
    sns.heatmap(weights.detach().float().cpu().numpy(), ax=ax, xticklabels=list(columns), yticklabels=rows,
                cmap="viridis", vmin=0.0, cbar_kws={"label": "weight"})
    ax.set_xlabel("memory token")
    ax.set_ylabel("query")
    ax.set_title(title)
    return ax


def plot_losses(losses: Sequence[float], title: str = "caption loss", ax=None):
    """Loss against step; returns the axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(1, len(losses) + 1), list(losses), marker="o", markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy")
    ax.set_title(title)
    return ax
