"""Published VATEX English captioning results, and this run's scores in a table of their own.

The numbers are the public-test (6,000 clips, 10 references each) results as the cited papers report
them (BLEU-4, METEOR, ROUGE-L, CIDEr, ×100), each row with the source it was read from; only rows
checked against a source are listed (the VATEX paper's own baseline, 28.4 / 21.7 / 47.0 / 45.1, is
left out: it could not be checked against the paper). Validation results run about 10 CIDEr higher, and
SCST (CIDEr-optimised fine-tuning) results are marked. This run's systems go in `run_table`, apart: a
run is only "comparable" when it scored the full public test; anything else (the mini dataset, a
partial copy of VATEX whose videos were lost, another split) is labelled as different data there.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd

VATEX_PUBLIC_TEST_CLIPS = 6000
VATEX_REFERENCES_PER_CLIP = 10


@dataclass(frozen=True)
class PublishedResult:
    model: str
    bleu4: float | None
    meteor: float | None
    rouge_l: float | None
    cider: float | None
    notes: str  # training (SCST or not), split caveats, verification status
    source: str  # where the numbers were read


VATEX_PUBLIC_TEST: tuple[PublishedResult, ...] = (
    PublishedResult("ORG-TRL (Zhang et al., CVPR 2020)", 32.1, 22.2, 48.9, 49.7, "", "VALOR paper, Table 4"),
    PublishedResult("OpenBook", 33.9, 23.7, 50.2, 57.5, "", "VALOR paper, Table 4"),
    PublishedResult("SMPFF", 39.7, 26.0, 53.6, 70.5, "", "VALOR paper, Table 4"),
    PublishedResult("SwinBERT (Lin et al., CVPR 2022)", 38.7, 26.2, 53.2, 73.0,
                    "no CIDEr optimisation; validation 84.4", "SwinBERT paper and repository README"),
    PublishedResult("VALOR-B", 41.9, 26.6, 54.6, 73.9, "no SCST", "VALOR paper, Table 4"),
    PublishedResult("GIT", 41.6, 28.1, 55.4, 91.5, "SCST", "VALOR Table 4, VAST Table 14"),
    PublishedResult("VALOR-L", 45.6, 29.4, 57.4, 95.8, "SCST", "VALOR Table 4, VAST Table 14"),
    PublishedResult("VAST (NeurIPS 2023)", 45.0, None, None, 99.5, "SCST; best found", "VAST paper, Table 14"),
)

_COLUMNS = {"bleu4": "BLEU-4", "meteor": "METEOR", "rouge_l": "ROUGE-L", "cider": "CIDEr"}


def published_table() -> pd.DataFrame:
    """The published rows: model, BLEU-4, METEOR, ROUGE-L, CIDEr, notes, source (– where not reported)."""
    table = pd.DataFrame([asdict(r) for r in VATEX_PUBLIC_TEST]).rename(columns=_COLUMNS)
    return table.set_index("model")


def comparability(dataset: str, split: str, num_clips: int, refs_per_clip_min: int) -> str:
    """'comparable' only for the full VATEX public test with all references; otherwise what differs."""
    if dataset != "vatex":
        return f"different data: the {dataset or 'unnamed'} dataset, not VATEX; not comparable"
    if split != "public_test":
        return f"different split ({split}); published rows are public test"
    if num_clips != VATEX_PUBLIC_TEST_CLIPS or refs_per_clip_min < VATEX_REFERENCES_PER_CLIP:
        return (f"partial public test ({num_clips} of {VATEX_PUBLIC_TEST_CLIPS} clips, "
                f"≥{refs_per_clip_min} refs each): CIDEr's IDF differs; not directly comparable")
    return "comparable: full VATEX public test"


TRAINING = {"trained": "cross-entropy", "scst": "SCST (CIDEr-optimised, after cross-entropy)",
            "blind": "none: one caption for every clip", "untrained": "none: random weights"}


def run_table(run_scores: dict[str, dict[str, float]], scored_set: dict, intervals: dict | None = None) -> pd.DataFrame:
    """This run's systems, one row each: scores ×100, CIDEr's 95% interval (when `intervals` is given),
    how it was trained, and which data it scored with the verdict of `comparability`.

    `run_scores` is system -> scores ×100 (as `metrics.json["systems"]`); `scored_set` is the scored
    set of those scores (`metrics.json["scored_set"]` or `asdict(ScoredSet)`); `intervals` is
    `metrics.json["uncertainty"]["intervals"]`.
    """
    verdict = comparability(scored_set.get("dataset", ""), scored_set.get("split", ""),
                            int(scored_set.get("num_clips", 0)), int(scored_set.get("refs_per_clip_min", 0)))
    described = scored_set.get("description") or f"{scored_set.get('num_clips')} clips"
    rows = []
    for system, scores in run_scores.items():
        cider = (intervals or {}).get(system, {}).get("CIDEr")
        rows.append({"system": system, **{c: scores.get(c) for c in _COLUMNS.values()},
                     **({"CIDEr 95% interval": f"{cider['low']:.1f}-{cider['high']:.1f}"} if cider else {}),
                     "training": TRAINING.get(system, ""), "scored on": described, "comparable with VATEX": verdict})
    return pd.DataFrame(rows).set_index("system").round(1)
