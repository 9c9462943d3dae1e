"""Figures of the evaluation and error analysis (seaborn), one function per figure, each returning it."""
from __future__ import annotations

import textwrap

import pandas as pd


AXIS_TITLES = {"caption_length": "caption length (words)", "num_objects": "detected objects in the clip's keyframes",
               "clip_seconds": "clip length (seconds)"}


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
        ax.set(xlabel=AXIS_TITLES.get(column, column.replace("_", " ")), ylabel=f"per-clip {metric} (×100)")
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


def plot_attribute_hits(scores: pd.DataFrame, title: str = "What the trained model's captions name, per attribute"):
    """Stacked bars of right / wrong / not-named shares per attribute (rows of `analysis.attribute_scores`),
    with each attribute's chance level (the best constant answer) marked across its bar."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    parts = {"right": ("right value", "#4c9a5b"), "wrong": ("wrong value", "#d1603d"), "not named": ("not named", "#b8b8b8")}
    shares = scores[list(parts)].astype(float).rename(columns={k: v[0] for k, v in parts.items()})
    fig, ax = plt.subplots(figsize=(7.5, 0.5 * len(scores) + 1.6))
    shares.iloc[::-1].plot.barh(stacked=True, ax=ax, color=[c for _, c in parts.values()], width=0.7)
    for y, (attribute, row) in enumerate(scores.iloc[::-1].iterrows()):
        ax.plot([row["chance"]] * 2, [y - 0.42, y + 0.42], color="black", lw=2)
        ax.text(row["right"] / 2, y, f"{row['right']:.0%}", va="center", ha="center", fontsize=8, color="white")
    ax.set_yticks(range(len(scores)), [f"{a} ({r['clips']} clips)" for a, r in scores.iloc[::-1].iterrows()])
    ax.set(xlabel="share of the clips judged", ylabel="attribute", xlim=(0, 1), title=title)
    handles, labels = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], color="black", lw=2))
    labels.append("chance: the best\nconstant answer")
    ax.legend(handles, labels, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    fig.tight_layout()
    return fig


def plot_attribute_confusions(hits: pd.DataFrame, attributes: tuple[str, ...] | None = None):
    """One row-normalised confusion heatmap per attribute of `analysis.mini_attribute_hits`: true value
    (rows) against the value the caption names (columns, with "not named"), each cell the share of the row's
    clips in percent (blank: none); colour, shape, size and count side by side above motion, cells of one size."""
    import matplotlib.pyplot as plt
    import numpy as np

    from qvidcap.evaluation.analysis import ATTRIBUTES, attribute_confusion

    attributes = [a for a in (attributes or ATTRIBUTES) if a in set(hits["attribute"])]
    tables = {a: attribute_confusion(hits, a) for a in attributes}
    small = [a for a in attributes if a != "motion"]
    rows = [small, ["motion"]] if "motion" in tables and small else [attributes]
    cell, left, bottom, top, right = 0.4, 1.35, 1.15, 0.45, 0.25  # inches: a cell, then the margins of each panel
    row_heights = [max(len(tables[a]) for a in row) * cell + bottom + top for row in rows]
    row_widths = [sum(left + tables[a].shape[1] * cell + right for a in row) for row in rows]
    width, height = max(row_widths), sum(row_heights) + 0.45  # 0.45 in for the figure's title
    fig = plt.figure(figsize=(width, height))
    y = height - 0.45
    for row, row_height in zip(rows, row_heights):
        y -= row_height
        x = 0.0
        for attribute in row:
            table = tables[attribute]
            counts = attribute_confusion(hits, attribute, normalize=False).sum(axis=1)
            w, h = table.shape[1] * cell, len(table) * cell
            ax = fig.add_axes([(x + left) / width, (y + row_height - top - h) / height, w / width, h / height])
            x += left + w + right
            ax.imshow(table.to_numpy(float), cmap="Blues", vmin=0, vmax=1, aspect="auto")  # (true values, named values)
            for (i, j), share in np.ndenumerate(table.to_numpy(float)):
                if share > 0:  # empty cells stay blank
                    ax.text(j, i, f"{share * 100:.0f}", ha="center", va="center", fontsize=8,
                            color="white" if share > 0.6 else "black")
            ax.grid(False)
            ax.set_yticks(range(len(table)), [f"{v} ({counts[v]})" for v in table.index], fontsize=9)
            ax.set_xticks(range(table.shape[1]), table.columns, rotation=45, ha="right", fontsize=9)
            ax.set_xlabel("named in the caption", fontsize=9)
            ax.set_ylabel("true value (clips)", fontsize=9)
            ax.set_title(f"{attribute}: {int(counts.sum())} clips", fontsize=10)
    fig.suptitle("What the caption names for each true value (% of the row's clips; a perfect reader fills the diagonal)",
                 fontsize=11, x=0.02, ha="left", y=1 - 0.12 / height, va="top")
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
        refs = "\n".join(textwrap.fill(r, 70, initial_indent="  ", subsequent_indent="    ")
                         for r in list(row["references"])[:max_references])
        predicted = textwrap.fill(row["prediction"] or "(empty)", 70, initial_indent="predicted: ", subsequent_indent="    ")
        text = f"{video_id}   {metric} {row[metric]:.1f}\n{predicted}\nreferences:\n{refs}"
        line[-1].text(1.08, 0.5, text, transform=line[-1].transAxes, va="center", fontsize=8, family="monospace")
    fig.subplots_adjust(left=0.01, right=0.55, wspace=0.03, hspace=0.15)
    return fig
