"""A score is a draw, not a number: bootstrap intervals over clips, and a paired test between two systems.

The clips of a test set are a sample; another sample of the same size would give another CIDEr. The
bootstrap resamples the scored clips with replacement and reads the spread of the score.

- **CIDEr-D and ROUGE-L**: pycocoevalcap's corpus score is the mean of the per-clip scores (CIDEr-D's
  document frequencies are fixed by the references of the scored set), so resampling per-clip scores
  recomputes the corpus score exactly, with the document frequencies held fixed.
- **BLEU-n and METEOR**: their corpus scores pool n-gram or alignment counts over clips and are not the
  mean of per-clip scores. The interval is the bootstrap spread of the per-clip mean placed around the
  corpus score (low = corpus − (mean − q₂.₅), high = corpus + (q₉₇.₅ − mean)): an approximation, said so
  in `metrics.json`.
- **Two systems on the same clips**: the paired bootstrap interval of the mean per-clip difference, and a
  two-sided sign-flip permutation p-value (under "no difference" each clip's difference is as likely
  to have the other sign).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

EXACT = ("CIDEr", "ROUGE-L")  # corpus score = mean of per-clip scores
APPROXIMATE = ("BLEU-4", "METEOR")  # corpus score pools counts; interval = per-clip spread around it
METHOD = {**{m: "bootstrap of per-clip scores (exact: corpus = mean)" for m in EXACT},
          **{m: "bootstrap spread of the per-clip mean, placed around the corpus score (approximate)" for m in APPROXIMATE}}


@dataclass(frozen=True)
class Interval:
    metric: str
    estimate: float
    low: float
    high: float
    level: float
    resamples: int
    method: str


@dataclass(frozen=True)
class PairedTest:
    metric: str
    difference: float  # mean per-clip score of a minus b (for CIDEr and ROUGE-L: the corpus difference)
    low: float
    high: float
    p_value: float
    clips: int
    resamples: int

    def sentence(self, a: str, b: str) -> str:
        verdict = "a detectable difference" if self.p_value < 0.05 else "no detectable difference"
        return (f"{a} − {b}: {self.metric} {self.difference:+.1f} (95% interval {self.low:+.1f} to {self.high:+.1f}, "
                f"p = {self.p_value:.3g} over {self.clips} clips): {verdict}")


def bootstrap_intervals(per_clip: pd.DataFrame, corpus: dict[str, float], *, resamples: int = 2000,
                        level: float = 0.95, seed: int = 0) -> list[Interval]:
    """A `level` interval for each metric that has per-clip scores (see the module docstring for the method)."""
    if len(per_clip) < 2:
        raise ValueError(f"a bootstrap interval needs at least 2 scored clips, got {len(per_clip)}")
    picks = np.random.default_rng(seed).integers(0, len(per_clip), size=(resamples, len(per_clip)))  # (R, clips)
    tail = (1.0 - level) / 2
    intervals = []
    for metric in (*EXACT, *APPROXIMATE):  # every metric on the same resamples of clips
        if metric not in per_clip or metric not in corpus:
            continue
        values = per_clip[metric].to_numpy(dtype=float)
        means = values[picks].mean(axis=1)  # (R,)
        q_low, q_high = np.quantile(means, [tail, 1.0 - tail])
        estimate = float(corpus[metric])
        if metric in EXACT:
            low, high = float(q_low), float(q_high)
        else:
            mean = float(values.mean())
            low, high = estimate - (mean - float(q_low)), estimate + (float(q_high) - mean)
        intervals.append(Interval(metric, estimate, low, high, level, resamples, METHOD[metric]))
    return intervals


def paired_test(a: pd.Series, b: pd.Series, metric: str = "CIDEr", *, resamples: int = 5000,
                level: float = 0.95, seed: int = 0) -> PairedTest:
    """System a against system b on the clips both were scored on (per-clip scores indexed by videoID)."""
    if set(a.index) != set(b.index):
        only = sorted(set(a.index) ^ set(b.index))
        raise ValueError(f"a paired test needs the same clips for both systems; {len(only)} differ, e.g. {only[:3]}")
    if len(a) < 2:
        raise ValueError(f"a paired test needs at least 2 clips, got {len(a)}")
    diff = (a.astype(float) - b.loc[a.index].astype(float)).to_numpy()  # (clips,)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(resamples, len(diff)))].mean(axis=1)  # (R,)
    tail = (1.0 - level) / 2
    low, high = np.quantile(means, [tail, 1.0 - tail])
    signs = rng.choice([-1.0, 1.0], size=(resamples, len(diff)))  # (R, clips)
    flipped = np.abs((signs * diff).mean(axis=1))
    observed = abs(diff.mean())
    p_value = (np.count_nonzero(flipped >= observed - 1e-12) + 1) / (resamples + 1)
    return PairedTest(metric, float(diff.mean()), float(low), float(high), float(p_value), len(diff), resamples)


def intervals_table(intervals: dict[str, list[Interval]]) -> pd.DataFrame:
    """One row per system and metric: estimate, low, high."""
    rows = [{"system": system, **asdict(i)} for system, items in intervals.items() for i in items]
    return pd.DataFrame(rows).set_index(["system", "metric"])[["estimate", "low", "high"]]


CHALLENGERS = ("scst",)  # systems that claim to improve on the reference: tested as "<system> - <reference>"


def report_intervals(scores: dict, reference_system: str = "trained", *, resamples: int = 2000,
                     seed: int = 0) -> dict:
    """For `metrics.json`: each system's intervals, and `reference_system` against every other on CIDEr.

    `scores` maps a system name to its `CaptionScores` (all on the same clips, as evaluation makes them).
    A baseline is tested as "<reference> - <baseline>"; a system of `CHALLENGERS` (the SCST checkpoint,
    which claims to improve on the cross-entropy one) as "<system> - <reference>".
    """
    out = {"level": 0.95, "resamples": resamples, "method": METHOD, "intervals": {}, "paired_tests": {}}
    for name, system in scores.items():
        out["intervals"][name] = {i.metric: {"estimate": i.estimate, "low": i.low, "high": i.high}
                                  for i in bootstrap_intervals(system.per_clip, system.corpus, resamples=resamples, seed=seed)}
    if reference_system in scores:
        for name in scores:
            if name == reference_system:
                continue
            a, b = (name, reference_system) if name in CHALLENGERS else (reference_system, name)
            test = paired_test(scores[a].per_clip["CIDEr"], scores[b].per_clip["CIDEr"], "CIDEr", seed=seed)
            out["paired_tests"][f"{a} - {b}"] = {**asdict(test), "sentence": test.sentence(a, b)}
    return out
