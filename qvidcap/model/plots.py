"""Figures of the model: the whole architecture, attention maps, loss and learning curves
(matplotlib + seaborn, imported lazily)."""
from __future__ import annotations

from typing import Sequence

import pandas as pd
import torch

from qvidcap.config import StudyConfig
from qvidcap.features.plots import feature_widths, stream_lengths

# widths of the decoders and sentence models the profiles name (the loaders read them from the checkpoints)
DECODER_WIDTHS = {"deepseek-vl2-tiny": 1280, "deepseek-vl2-small": 2048, "deepseek-vl2": 2560, "gpt2": 768}
SENTENCE_WIDTHS = {"all-minilm-l6-v2": 384, "all-minilm-l12-v2": 384, "all-mpnet-base-v2": 768,
                   "all-roberta-large-v1": 1024}


def _known(table: dict[str, int], name: str) -> int:
    key = name.rsplit("/", 1)[-1].lower()
    return next((w for k, w in sorted(table.items(), key=lambda kv: -len(kv[0])) if key == k.lower()), 0)


def architecture_widths(config: StudyConfig) -> dict[str, int]:
    """Every size the architecture figure names, from `config` alone (no model is built).

    Keys: T, N, P (stream lengths), Dt, Do, Dc (feature widths), D, Q, Qf, H (decoder width), E (sentence
    embeddings); 0 where a named model's width is not known here.
    """
    widths, lengths = feature_widths(config), stream_lengths(config.sampling, config.features)
    d = config.decoder
    decoder = d.small_hidden_size if d.kind == "deepseek_small" else _known(DECODER_WIDTHS, d.name)
    return {**lengths, "Dt": widths["temporal"], "Do": widths["object"], "Dc": widths["context"],
            "D": config.heads.hidden_size, "Q": config.heads.num_object_queries, "Qf": config.qformer.num_queries,
            "H": decoder, "E": config.heads.text_embed_dim or _known(SENTENCE_WIDTHS, config.text.sentence_model)}


def sentence_embed_dim(config: StudyConfig) -> int:
    """E: the width of `text.sentence_model`'s embeddings (the auxiliary losses' targets); 0 if not known here."""
    return architecture_widths(config)["E"]


def plot_architecture(config: StudyConfig, ax=None):
    """The whole captioner as boxes and arrows, every shape written with `config`'s sizes; returns the axes.

    B stays a letter (the batch); the object count P is the most the settings allow (padding fills the rest).
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    w = {k: (v if v else k) for k, v in architecture_widths(config).items()}
    f, d = config.features, config.decoder
    if ax is None:
        _, ax = plt.subplots(figsize=(16, 6.2))
    ax.set_xlim(0, 16)
    ax.set_ylim(-0.1, 6.0)
    ax.axis("off")
    colours = {"features": "#dbe9f6", "projection": "#e8e8e8", "head": "#fde2c8", "qformer": "#d9f0d3",
               "decoder": "#e5d8f0", "text": "#ffffff"}
    centres = {}

    off = {name for name in ("object_head", "action_head", "global_head") if not getattr(config.heads, name, True)}

    def box(name, x, y, text, kind, width=2.0, height=1.05):
        if name in off:  # an ablation switched this head off (heads.<name> = false): drawn, but empty
            text, kind = text.split("\n")[0] + "\nswitched off", "text"
        ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height, boxstyle="round,pad=0.04",
                                    facecolor=colours[kind], edgecolor="#555555", lw=1.2,
                                    linestyle="--" if name in off else "-"))
        ax.text(x, y, text, ha="center", va="center", fontsize=8.5)
        centres[name] = (x, y, width / 2, height / 2)

    def arrow(a, b, label="", style="-|>", dashed=False):
        (xa, ya, wa, _), (xb, yb, wb, _) = centres[a], centres[b]
        start, end = (xa + wa, ya), (xb - wb, yb)
        ax.annotate("", xy=end, xytext=start, arrowprops={"arrowstyle": style, "color": "#333333", "lw": 1.1,
                                                           "linestyle": "--" if dashed else "-",
                                                           "shrinkA": 2, "shrinkB": 2})
        if label:
            ax.text((start[0] + end[0]) / 2, (start[1] + end[1]) / 2 + 0.12, label, ha="center", fontsize=7.5,
                    color="#333333")

    temporal = f"VideoMAE\n{f.temporal_model.rsplit('/', 1)[-1]}" if f.temporal_model else "VideoMAE (small, random)"
    detector = f"DETR {f.detector_model.rsplit('/', 1)[-1]}" if f.detector_model else "DETR (small, random)"
    clip = f"CLIP {f.clip_model}" if f.clip_model else "CLIP ViT (small, random)"
    decoder = d.name.rsplit("/", 1)[-1] if d.name else "DeepSeek-MoE (small, random)"
    box("temporal", 1.45, 5.1, f"{temporal}\nmotion (B, {w['T']}, {w['Dt']})", "features", width=2.85)
    box("objects", 1.45, 3.3, f"{detector} boxes,\n{clip} crops\nobjects (B, {w['P']}, {w['Do']}) + mask",
        "features", width=2.85, height=1.25)
    box("context", 1.45, 1.5, f"{clip}\nkeyframes\ncontext (B, {w['N']}, {w['Dc']})", "features", width=2.85)
    for name, y, length, width in (("temporal", 5.1, w["T"], w["Dt"]), ("objects", 3.3, w["P"], w["Do"]),
                                   ("context", 1.5, w["N"], w["Dc"])):
        box(f"proj_{name}", 4.15, y, f"Linear {width} → {w['D']}\n(B, {length}, {w['D']})", "projection", width=1.9,
            height=0.8)
        arrow(name, f"proj_{name}")
    box("object_head", 6.9, 5.1, f"ObjectHead\n{w['Q']} queries over\nmotion, objects, context\nξ (B, {w['Q']}, {w['D']})",
        "head", width=2.3, height=1.3)
    box("action_head", 6.9, 3.3, f"ActionHead\nmotion × ξ attention\n(B, {w['Q']}, {w['D']})", "head", width=2.3)
    box("global_head", 6.9, 1.5, f"GlobalHead\n[motion, ξ, actions]\n(B, {w['D']})", "head", width=2.3)
    for name in ("proj_temporal", "proj_objects", "proj_context"):
        arrow(name, "object_head")
    arrow("proj_temporal", "action_head")
    arrow("proj_temporal", "global_head")
    ax.annotate("", xy=(6.9, 3.3 + 0.53), xytext=(6.9, 5.1 - 0.66),
                arrowprops={"arrowstyle": "-|>", "color": "#333333", "lw": 1.1})
    ax.annotate("", xy=(6.9, 1.5 + 0.53), xytext=(6.9, 3.3 - 0.53),
                arrowprops={"arrowstyle": "-|>", "color": "#333333", "lw": 1.1})
    qformer = "Q-Former" if getattr(config.qformer, "kind", "qformer") == "qformer" else "one cross-attention\n(the original's)"
    box("qformer", 9.7, 3.3, f"{qformer}\n{w['Qf']} queries read\n{2 * w['Q'] + 1 if isinstance(w['Q'], int) else '2Q+1'} head tokens\n"
        f"(B, {w['Qf']}, {w['D']})", "qformer", width=2.1, height=1.3)
    for name in ("object_head", "action_head", "global_head"):
        arrow(name, "qformer")
    box("caption_head", 12.0, 3.3, f"CaptionHead\nLinear {w['D']} → {w['H']}\nprefix (B, {w['Qf']}, {w['H']})",
        "qformer", width=1.95)
    arrow("qformer", "caption_head")
    trained = {"frozen": "frozen", "lora": "LoRA-tuned", "full": "trained"}.get(d.train_mode, d.train_mode)
    box("decoder", 14.45, 3.3, f"{decoder}\nlanguage model, {trained}\nreads [prefix, caption]\nwidth {w['H']}",
        "decoder", width=2.5, height=1.3)
    arrow("caption_head", "decoder")
    box("caption", 14.45, 1.25, f"caption\n≤ {config.generation.max_new_tokens} tokens,\n"
        f"{config.generation.num_beams} beams", "text", width=2.0, height=0.95)
    ax.annotate("", xy=(14.45, 1.25 + 0.5), xytext=(14.45, 3.3 - 0.68),
                arrowprops={"arrowstyle": "-|>", "color": "#333333", "lw": 1.1})
    ax.text(9.0, 0.3, f"auxiliary losses (training only), in the sentence-embedding width E = {w['E']}:\n"
            f"ObjectHead ↔ noun phrases, ActionHead ↔ verbs (Hungarian-matched), GlobalHead ↔ whole caption",
            ha="center", va="center", fontsize=8, style="italic", color="#444444")
    ax.set_title(f"QVidCap on the {config.profile} profile (B = clips in a batch; every other size from the config)",
                 fontsize=11)
    return ax


def object_token_labels(num_motion: int, object_mask: torch.Tensor, num_context: int) -> list[str]:
    """Column labels of the ObjectHead's memory: m0.., o0.. (padding marked "pad"), c0.."""
    objects = [f"o{i}" if int(real) else "pad" for i, real in enumerate(object_mask.tolist())]
    return [f"m{i}" for i in range(num_motion)] + objects + [f"c{i}" for i in range(num_context)]


def qformer_token_labels(num_object_queries: int) -> list[str]:
    """Column labels of the Q-Former's memory: object queries, action features, the global feature."""
    return [f"obj{i}" for i in range(num_object_queries)] + [f"act{i}" for i in range(num_object_queries)] + ["global"]


def plot_attention(weights: torch.Tensor, columns: Sequence[str], rows: Sequence[str] | None = None,
                   title: str = "", ax=None, xlabel: str = "memory token (what is read)",
                   ylabel: str = "query (who reads)"):
    """Heatmap of one clip's attention weights (rows read, columns are read; each row sums to 1); returns the axes.

    The colour scale spans this map's own range over its real columns (padding, at exactly 0, shows as the
    lowest colour), widened to include the uniform level, 1 / the number of real (not "pad") columns, which a
    white line marks on the colour bar: a row at that level everywhere attends to nothing in particular.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    if weights.ndim != 2:
        raise ValueError(f"plot_attention takes one clip's (queries, tokens) weights, got shape {tuple(weights.shape)}")
    rows = list(rows) if rows is not None else [f"q{i}" for i in range(weights.shape[0])]
    values = weights.detach().float().cpu().numpy()
    real = [c != "pad" for c in columns]
    uniform = 1.0 / max(1, sum(real))
    low = min(float(values[:, real].min()) if any(real) else 0.0, uniform)
    high = max(float(values.max()), uniform)
    margin = 0.05 * (high - low) or 0.05 * uniform
    if ax is None:
        _, ax = plt.subplots(figsize=(max(4.0, 0.45 * len(columns) + 2), max(2.5, 0.35 * len(rows) + 1.2)))
    sns.heatmap(values, ax=ax, xticklabels=list(columns), yticklabels=rows, cmap="viridis",
                vmin=max(0.0, low - margin), vmax=high + margin,
                cbar_kws={"label": f"attention weight\n(white line: uniform, {uniform:.3f})"})
    ax.collections[0].colorbar.ax.axhline(uniform, color="white", lw=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return ax


def plot_losses(losses: Sequence[float], title: str = "caption loss", ax=None):
    """Loss against step; returns the axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(1, len(losses) + 1), list(losses), marker="o", markersize=3)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("caption cross-entropy (nats per token)")
    ax.set_title(title)
    return ax


STEP_LOSS_TITLES = {"loss": "total (weighted sum)", "caption": "caption cross-entropy (nats/token)",
                    "object": "object: 1 − matched cosine", "action": "action: 1 − matched cosine",
                    "global": "global: 1 − cosine"}


def plot_step_losses(steps: pd.DataFrame, window: int = 10):
    """One panel per loss component against the epoch (fractional: step / steps per epoch), smoothed over
    `window` steps; `steps` is the per-step log (`TrainResult.steps`). Returns the figure."""
    import matplotlib.pyplot as plt

    per_epoch = steps.groupby("epoch")["step"].max()
    steps_per_epoch = float(per_epoch.diff().dropna().median()) if len(per_epoch) > 1 else float(per_epoch.iloc[0])
    x = steps["step"] / max(1.0, steps_per_epoch)
    names = [n for n in STEP_LOSS_TITLES if n in steps]
    fig, axes = plt.subplots(1, len(names), figsize=(3.1 * len(names), 2.8), squeeze=False)
    for ax, name in zip(axes[0], names):
        ax.plot(x, steps[name].rolling(window, min_periods=1).mean(), lw=1.2)
        ax.set_title(STEP_LOSS_TITLES[name], fontsize=9)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    axes[0][0].set_ylabel(f"loss (mean of {window} steps)")
    fig.tight_layout()
    return fig


def plot_learning_curves(history: pd.DataFrame, best_epoch: int | None = None):
    """Per epoch: training and validation caption loss (left); quick CIDEr and distinct greedy captions
    (right, two axes). Integer epoch ticks; a dotted line at `best_epoch` (the checkpoint kept as best/).
    Returns the figure."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = history["epoch"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 3.6))
    left.plot(epochs, history["train_caption"], "o-", label="training (dropout on, epoch mean)")
    if "val_caption" in history:
        left.plot(epochs, history["val_caption"], "o-", label="validation (eval mode, epoch end)")
    left.set(xlabel="epoch", ylabel="caption cross-entropy (nats/token)", title="Caption loss per epoch")
    if "quick_cider" in history:
        right.plot(epochs, history["quick_cider"], "o-", color="C2", label="quick CIDEr")
        right.set(xlabel="epoch", ylabel="quick CIDEr-D (x100)", title="Validation captions per epoch")
        if "distinct_captions" in history:
            twin = right.twinx()
            twin.plot(epochs, history["distinct_captions"], "s--", color="gray", label="distinct captions")
            twin.set_ylabel("distinct captions (gray)")
            twin.set_ylim(bottom=0)
            twin.grid(False)
            twin.yaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in (left, right):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if best_epoch is not None:
            ax.axvline(best_epoch, color="C3", ls=":", lw=1.5, label=f"best/ (epoch {best_epoch})")
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig
