"""Looking at a captioning dataset before modelling it: split sizes, caption lengths, vocabulary, frames.

Tables are pandas DataFrames (one row per caption, or per split) so a notebook shows them as they
are; plots take an optional matplotlib `ax` and return it, drawn with seaborn.
"""
from __future__ import annotations

import re
import textwrap
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from qvidcap.data.records import ClipRecord
from qvidcap.data.vatex import ClipSet

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
STOPWORDS = frozenset(
    "a an the is are was were be been of to in on at by for from with and or that this these those it its "
    "his her their there we you he she they as into onto over while can".split()
)


def tokenize(caption: str) -> list[str]:
    """Lower-cased words with punctuation dropped, close to what the PTB tokenizer of the metrics keeps."""
    return WORD.findall(caption.lower())


def _as_list(clips: Mapping[str, ClipSet] | Iterable[ClipSet]) -> list[ClipSet]:
    return list(clips.values()) if isinstance(clips, Mapping) else list(clips)


def caption_table(clips: Mapping[str, ClipSet] | Iterable[ClipSet]) -> pd.DataFrame:
    """One row per English caption: split, video_id, caption_index, caption, words (its length)."""
    rows = [
        {"split": s.split, "video_id": r.video_id, "caption_index": i, "caption": c, "words": len(tokenize(c))}
        for s in _as_list(clips) for r in s.records for i, c in enumerate(r.captions)
    ]
    return pd.DataFrame(rows, columns=["split", "video_id", "caption_index", "caption", "words"])


def split_summary(clips: Mapping[str, ClipSet] | Iterable[ClipSet]) -> pd.DataFrame:
    """One row per split: clips referenced, with a video, usable, skipped; captions; length; vocabulary."""
    rows = []
    for clip_set in _as_list(clips):
        captions = [c for r in clip_set.records for c in r.captions]
        words = [tokenize(c) for c in captions]
        rows.append({
            **clip_set.summary(),
            "captions per clip": round(len(captions) / len(clip_set), 2) if len(clip_set) else 0.0,
            "words per caption": round(float(np.mean([len(w) for w in words])), 2) if words else 0.0,
            "vocabulary": len({w for ws in words for w in ws}),
        })
    return pd.DataFrame(rows)


def skipped_table(clips: Mapping[str, ClipSet] | Iterable[ClipSet]) -> pd.DataFrame:
    """The records left out of each split, and why."""
    rows = [{"split": s.split, "index": k.index, "video_id": k.video_id, "reason": k.reason}
            for s in _as_list(clips) for k in s.skipped]
    return pd.DataFrame(rows, columns=["split", "index", "video_id", "reason"])


def word_counts(captions: Iterable[str], skip_stopwords: bool = False) -> Counter:
    return Counter(w for c in captions for w in tokenize(c) if not (skip_stopwords and w in STOPWORDS))


def top_words(table: pd.DataFrame, n: int = 20, skip_stopwords: bool = True) -> pd.DataFrame:
    """The n most frequent words of a caption table, with their share of all (kept) words."""
    counts = word_counts(table["caption"], skip_stopwords)
    total = sum(counts.values()) or 1
    rows = [{"word": w, "count": c, "share": round(c / total, 4)} for w, c in counts.most_common(n)]
    return pd.DataFrame(rows, columns=["word", "count", "share"])


def vocabulary_table(table: pd.DataFrame, reference_split: str = "train") -> pd.DataFrame:
    """Per split: vocabulary size, words seen once, and words (and word uses) never seen in `reference_split`."""
    seen = set(word_counts(table.loc[table["split"] == reference_split, "caption"]))
    rows = []
    for split, part in table.groupby("split", sort=False):
        counts = word_counts(part["caption"])
        unseen = {w: c for w, c in counts.items() if w not in seen}
        rows.append({"split": split, "vocabulary": len(counts), "words seen once": sum(c == 1 for c in counts.values()),
                     f"words not in {reference_split}": len(unseen),
                     f"uses of words not in {reference_split} (%)": round(100 * sum(unseen.values()) / max(1, sum(counts.values())), 2)})
    return pd.DataFrame(rows)


def sample_records(clip_set: ClipSet, n: int, seed: int = 0) -> list[ClipRecord]:
    """n records of a split, drawn without replacement, the same for the same seed."""
    if len(clip_set) == 0:
        raise ValueError(f"split {clip_set.split!r} has no usable clips to sample; see its skipped records")
    picks = np.random.default_rng(seed).choice(len(clip_set), size=min(n, len(clip_set)), replace=False)
    return [clip_set.records[i] for i in sorted(picks)]


# ---------------------------------------------------------------- plots


def _axes(ax: "Axes | None", figsize=(7, 3.5)) -> "Axes":
    import matplotlib.pyplot as plt

    return ax if ax is not None else plt.subplots(figsize=figsize)[1]


def plot_caption_lengths(table: pd.DataFrame, ax: "Axes | None" = None) -> "Axes":
    """Histogram of words per caption, one outline per split, each normalised to percent of its captions."""
    import seaborn as sns

    ax = _axes(ax)
    sns.histplot(data=table, x="words", hue="split", discrete=True, stat="percent", common_norm=False,
                 element="step", fill=False, ax=ax)
    ax.set(xlabel="words per caption", ylabel="% of the split's captions", title="Caption length")
    return ax


def plot_top_words(table: pd.DataFrame, n: int = 20, skip_stopwords: bool = True, ax: "Axes | None" = None) -> "Axes":
    """Bar chart of the n most frequent words."""
    import seaborn as sns

    ax = _axes(ax, figsize=(7, 0.25 * n + 1))
    words = top_words(table, n, skip_stopwords)
    sns.barplot(data=words, x="count", y="word", color=sns.color_palette()[0], ax=ax)
    ax.set(xlabel="occurrences", ylabel="", title=f"Top {n} words" + (" (stop words left out)" if skip_stopwords else ""))
    return ax


def plot_captions_per_clip(clips: Mapping[str, ClipSet] | Iterable[ClipSet], ax: "Axes | None" = None) -> "Axes":
    """How many captions each clip has, per split (VATEX: always 10)."""
    import seaborn as sns

    ax = _axes(ax)
    data = pd.DataFrame([{"split": s.split, "captions": len(r.captions)} for s in _as_list(clips) for r in s.records])
    sns.countplot(data=data, x="captions", hue="split", ax=ax)
    ax.set(xlabel="captions per clip", ylabel="clips", title="Captions per clip")
    return ax


def frame_strip(records: list[ClipRecord], num_frames: int = 5, size: int = 96, caption_index: int = 0,
                wrap: int = 0) -> "Figure":
    """A grid of evenly spaced frames, one row per clip, each row titled with one of its captions

    (wrapped at `wrap` characters; 0 = about 16 per frame).
    """
    import matplotlib.pyplot as plt

    from qvidcap.video import read_frames

    if not records:
        raise ValueError("frame_strip got no records; pass at least one clip with a video")
    height = 1.9 * len(records)
    fig, axes = plt.subplots(len(records), num_frames, figsize=(1.6 * num_frames, height), squeeze=False)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.4 / height, wspace=0.05, hspace=0.35)
    for row, record in zip(axes, records):
        if not record.has_video:
            raise FileNotFoundError(f"clip {record.video_id!r} has no video file ({record.video_path}); "
                                    "sample from records loaded with their videos")
        frames = read_frames(record.video_path, num_frames, size)  # (F, H, W, 3)
        for ax, frame in zip(row, frames):
            ax.imshow(frame)
            ax.set_axis_off()
        caption = record.captions[caption_index] if len(record.captions) > caption_index else "(no caption)"
        text = "\n".join(textwrap.wrap(f"{record.video_id}: {caption}", wrap or 16 * num_frames))
        # the caption spans the whole row, so it stays out of the layout of its first axes
        row[0].text(0, 1.04, text, transform=row[0].transAxes, ha="left", va="bottom", fontsize=9).set_in_layout(False)
    return fig


# ---------------------------------------------------------------- the Summary cells of notebooks 01 and 02


def data_summary(summary: pd.DataFrame, dataset: str, root) -> str:
    """The Summary cell of notebook 01 (Markdown), from `split_summary`'s table."""
    lines = [f"- Dataset **{dataset}** at `{root}`: " + ", ".join(
        f"{row['split']} {int(row['usable']):,} usable of {int(row['referenced']):,} referenced clips"
        for _, row in summary.iterrows()) + "."]
    missing = int((summary["referenced"] - summary["with video"]).sum())
    skipped = int(summary["skipped"].sum())
    lines.append(f"- {missing:,} referenced clips have no video file; {skipped:,} records were skipped (listed above)."
                 if missing or skipped else "- Every referenced clip has its video, and no record was skipped.")
    per_clip = sorted(set(summary["captions per clip"].round(2)))
    count = f"{per_clip[0]:g}" if len(per_clip) == 1 else f"{per_clip[0]:g} to {per_clip[-1]:g}"
    lines.append(f"- {count} English captions per clip on average, of {summary['words per caption'].min():.1f} to "
                 f"{summary['words per caption'].max():.1f} words depending on the split.")
    return "\n".join(lines)


def caption_summary(captions: pd.DataFrame, vocabulary: pd.DataFrame, n_words: int = 5) -> str:
    """The Summary cell of notebook 02 (Markdown), from `caption_table` and `vocabulary_table`."""
    words = captions["words"]
    train = vocabulary.iloc[0]
    unseen_column = next(c for c in vocabulary.columns if c.startswith("uses of words not in"))
    unseen = ", ".join(f"{row['split']} {row[unseen_column]:g}%" for _, row in vocabulary.iloc[1:].iterrows())
    top = ", ".join(top_words(captions, n_words)["word"])
    return "\n".join([
        f"- {len(captions):,} captions; {words.mean():.1f} words on average (median {int(words.median())}, "
        f"longest {int(words.max())}).",
        f"- {int(train['vocabulary']):,} distinct words in {train['split']}"
        + (f"; uses of words never seen in {train['split']}: {unseen}." if unseen else "."),
        f"- The most frequent content words: {top}.",
    ])
