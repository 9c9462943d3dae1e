"""Figures of the evaluation and error analysis (seaborn), one function per figure, each returning it."""
from __future__ import annotations

import textwrap

import pandas as pd


def plot_systems(table: pd.DataFrame, metrics: tuple[str, ...] = ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr"),
                 title: str = "", intervals: dict | None = None):
    """Grouped bars: each metric ×100 for each system (rows of `EvaluationReport.table()`), with 95% bootstrap
    intervals as error bars when `intervals` (system -> metric -> {"low", "high"}, see `report_intervals`) is given."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    shown = [m for m in metrics if m in table.columns]
    long = table[shown].rename_axis("system").reset_index().melt(id_vars="system", var_name="metric", value_name="score")
    fig, ax = plt.subplots(figsize=(7, 3.2))
    sns.barplot(data=long, x="metric", y="score", hue="system", ax=ax)
    ax.set(ylabel="score (×100)", xlabel="", title=title)
    for container, system in zip(ax.containers, list(dict.fromkeys(long["system"]))):
        ax.bar_label(container, fmt="%.1f", fontsize=7, padding=6 if intervals else 0)
        for patch, metric in zip(container, shown):
            bounds = (intervals or {}).get(system, {}).get(metric)
            if bounds is None:
                continue
            x, y = patch.get_x() + patch.get_width() / 2, patch.get_height()
            ax.errorbar(x, y, yerr=[[y - bounds["low"]], [bounds["high"] - y]], color="black", capsize=2, lw=0.8)
    fig.tight_layout()
    return fig


def plot_cider_distribution(table: pd.DataFrame, metric: str = "CIDEr"):
    """Histogram of per-clip `metric`, with the corpus mean marked (mean of per-clip CIDEr = corpus CIDEr)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(7, 3))
    sns.histplot(x=table[metric], bins=30, ax=ax)
    ax.axvline(table[metric].mean(), color="black", linestyle="--", label=f"mean {table[metric].mean():.1f}")
    ax.set(xlabel=f"per-clip {metric} (×100)", ylabel="clips")
    ax.legend(loc="upper right")
    fig.tight_layout()
    return fig


def plot_score_against(table: pd.DataFrame, columns: tuple[str, ...] = ("caption_length", "num_objects", "clip_seconds"),
                       metric: str = "CIDEr"):
    """Per-clip `metric` against each of `columns`: boxes for few distinct values, a scatter otherwise."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    columns = [c for c in columns if c in table.columns]
    fig, axes = plt.subplots(1, len(columns), figsize=(4 * len(columns), 3.2), squeeze=False, sharey=True)
    for ax, column in zip(axes[0], columns):
        if table[column].nunique() <= 12:
            sns.boxplot(data=table, x=column, y=metric, ax=ax, color="lightsteelblue", fliersize=0)
            sns.stripplot(data=table, x=column, y=metric, ax=ax, color="black", size=3, alpha=0.6)
        else:
            sns.regplot(data=table, x=column, y=metric, ax=ax, scatter_kws={"s": 10, "alpha": 0.6}, lowess=False)
        ax.set(xlabel=column.replace("_", " "), ylabel=f"per-clip {metric}")
    fig.tight_layout()
    return fig


def plot_hits(summary: pd.DataFrame, title: str = ""):
    """Stacked bars of hit / wrong / missed shares (rows of `analysis.hit_summary`)."""
    import matplotlib.pyplot as plt

    colours = {"hit": "#4c9a5b", "wrong": "#d1603d", "missed": "#b8b8b8"}
    fig, ax = plt.subplots(figsize=(6, 0.45 * len(summary) + 1.2))
    summary.plot.barh(stacked=True, ax=ax, color=[colours[c] for c in summary.columns], width=0.7)
    ax.set(xlabel="share of clips", ylabel="", xlim=(0, 1), title=title)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    fig.tight_layout()
    return fig


def show_clips(rows: pd.DataFrame, num_frames: int = 4, size: int = 96, max_references: int = 3, metric: str = "CIDEr"):
    """Frames of each clip in `rows` (needs `video_path`, `prediction`, `references`) with its caption,
    score and a few references beneath: one row of frames per clip."""
    import matplotlib.pyplot as plt

    from qvidcap.video import read_frames

    fig, axes = plt.subplots(len(rows), num_frames, figsize=(1.9 * num_frames + 4.2, 2.0 * len(rows)), squeeze=False)
    for (video_id, row), line in zip(rows.iterrows(), axes):
        try:
            frames = read_frames(row["video_path"], num_frames, size) if row.get("video_path") else None
        except Exception:  # a clip whose video is gone is still listed, without frames
            frames = None
        for i, ax in enumerate(line):
            ax.axis("off")
            if frames is not None:
                ax.imshow(frames[i])
        refs = "\n".join(textwrap.shorten(r, 75) for r in list(row["references"])[:max_references])
        text = (f"{video_id}   {metric} {row[metric]:.1f}\npredicted: {textwrap.shorten(row['prediction'] or '(empty)', 75)}\n"
                f"references:\n{refs}")
        line[-1].text(1.08, 0.5, text, transform=line[-1].transAxes, va="center", fontsize=8, family="monospace")
    fig.subplots_adjust(left=0.01, right=0.55, wspace=0.03, hspace=0.15)
    return fig
