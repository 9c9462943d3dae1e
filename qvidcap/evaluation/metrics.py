"""Caption scores as papers report them on VATEX: pycocoevalcap's BLEU-1..4, METEOR, ROUGE-L, CIDEr-D
(and SPICE when asked and it can run), ×100, over all references of each clip, after its PTB tokenizer.

Rules for awkward input, applied the same way to every system scored (model, baselines):

- **The scored set is the reference set.** Every clip in `references` is scored; predictions for
  other clips are ignored (logged). The scores carry the scored set (dataset, split, number of clips,
  references per clip) and its exact clip IDs, so a partial copy of VATEX is never taken for the full one.
- **A clip with no prediction** raises `MissingPredictionError` naming the clips; pass
  `missing="empty"` to score such clips as an empty caption instead (recorded in the scores).
- **An empty prediction** is a real output and is scored as it is: 0 on every metric.
- **Text is sanitised** before the Java tools see it (`sanitize_caption`): reduced to ASCII (accents
  dropped, other characters become spaces) and every line break, tab or control character becomes a
  space, so one caption stays one line (a stray `\\r` misaligns the PTB tokenizer and breaks METEOR).
- **References may differ in number per clip** (CIDEr and BLEU average or clip over whatever a clip
  has); empty references are dropped, and a clip left with none raises `ScoringError`.

CIDEr's IDF comes from the references of the clips being scored, so scores on a subset, or with
fewer references per clip, are not comparable with full-set numbers (and a handful of clips gives a
CIDEr near 0). The Java-free CIDEr-D of training (`quick_cider`) lives in `qvidcap.training.cider`.
"""
from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from qvidcap.training.cider import ScoringError, sanitize_caption

logger = logging.getLogger(__name__)

METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
MIN_CLIPS_FOR_CIDER = 10  # below this CIDEr's IDF is meaningless (one clip gives 0); scores warn


class MissingPredictionError(ScoringError):
    """Clips of the scored set that have no prediction."""

    def __init__(self, missing: list[str], total: int):
        self.missing = missing
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        super().__init__(
            f"{len(missing)} of {total} clips to score have no prediction: {shown}; caption them, "
            "drop them from the references (the scored set is stated with the scores), "
            "or pass missing='empty' to score them as empty captions"
        )


class JavaNotFoundError(RuntimeError):
    """pycocoevalcap's tokenizer, METEOR and SPICE run on Java, and there is none."""


# ---------------------------------------------------------------------------------------------
# the full pycocoevalcap protocol


@dataclass
class ScoredSet:
    """Which clips a set of scores is over: never compare scores over different sets."""

    dataset: str  # "mini" or "vatex" (or "" when not stated)
    split: str  # "public_test", "validation", ...
    num_clips: int
    refs_per_clip_min: int
    refs_per_clip_max: int
    refs_per_clip_mean: float
    video_ids: list[str] = field(repr=False)
    missing_scored_as_empty: list[str] = field(default_factory=list, repr=False)

    def describe(self) -> str:
        refs = (f"{self.refs_per_clip_min}" if self.refs_per_clip_min == self.refs_per_clip_max
                else f"{self.refs_per_clip_min}-{self.refs_per_clip_max} (mean {self.refs_per_clip_mean:.1f})")
        return f"{self.dataset or 'dataset?'} {self.split or 'split?'}: {self.num_clips} clips, {refs} references per clip"


@dataclass
class CaptionScores:
    """Corpus scores ×100, per-clip scores, the scored set, and metrics that could not run (with why)."""

    corpus: dict[str, float]  # BLEU-1..4, METEOR, ROUGE-L, CIDEr (and SPICE), ×100
    per_clip: pd.DataFrame  # index videoID; CIDEr, BLEU-4, METEOR, ROUGE-L (SPICE) ×100, prediction
    scored_set: ScoredSet
    skipped: dict[str, str] = field(default_factory=dict)  # metric -> reason it was not computed
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        scored = asdict(self.scored_set)
        scored.pop("video_ids")
        return {"scores": self.corpus, "scored_set": {**scored, "description": self.scored_set.describe()},
                "skipped": self.skipped, "notes": self.notes}

    def save(self, directory: str | Path) -> Path:
        """Write `scores.json`, `per_clip.csv` and `clip_ids.txt` (the exact scored clips) into `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "clip_ids.txt").write_text("\n".join(self.scored_set.video_ids) + "\n")
        self.per_clip.to_csv(directory / "per_clip.csv")
        path = directory / "scores.json"
        path.write_text(json.dumps({**self.to_dict(), "clip_ids_file": "clip_ids.txt"}, indent=2))
        return path

    @classmethod
    def load(cls, directory: str | Path) -> "CaptionScores":
        directory = Path(directory)
        saved = json.loads((directory / "scores.json").read_text())
        scored = {k: v for k, v in saved["scored_set"].items() if k != "description"}
        video_ids = (directory / "clip_ids.txt").read_text().split()
        per_clip = pd.read_csv(directory / "per_clip.csv", index_col=0, keep_default_na=False)
        return cls(saved["scores"], per_clip, ScoredSet(video_ids=video_ids, **scored), saved["skipped"], saved["notes"])


def require_java() -> str:
    """Path of the `java` executable, or a JavaNotFoundError that says how to get one."""
    java = shutil.which("java")
    if java is None:
        raise JavaNotFoundError(
            "Java was not found on PATH, and pycocoevalcap's PTB tokenizer, METEOR and SPICE run on it: "
            "install a Java runtime (apt-get install default-jre, or conda install openjdk) "
            "or use qvidcap.training.cider.quick_cider for a Java-free CIDEr"
        )
    return java


def score_captions(predictions: dict[str, str], references: dict[str, list[str]], *, spice: bool = False,
                   missing: str = "error", dataset: str = "", split: str = "", meteor_scorer=None) -> CaptionScores:
    """Score `predictions` (videoID -> caption) against `references` (videoID -> captions) the COCO way.

    See the module docstring for the rules on missing, empty and non-ASCII captions. `spice=True`
    adds SPICE when it can run; when it cannot (no CoreNLP and no network, Java too new) it is
    recorded in `skipped` with the reason instead of failing the evaluation. `meteor_scorer` is a running
    pycocoevalcap `Meteor` to score with (a caller scoring many systems starts one and reuses it: loading
    its Java process is most of a scoring's time, and its scores do not depend on earlier calls);
    None starts one for this call and closes it after.
    """
    if missing not in ("error", "empty"):
        raise ScoringError(f"missing={missing!r}; expected 'error' or 'empty'")
    gts, res, missing_ids = _prepare(predictions, references, missing)
    require_java()
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge

    tokenized = _ptb_tokenize({**{("ref", k): v for k, v in gts.items()}, **{("hyp", k): v for k, v in res.items()}})
    gts_tok = {k: tokenized[("ref", k)] for k in gts}  # one Java start for references and predictions
    res_tok = {k: tokenized[("hyp", k)] for k in res}
    video_ids = list(gts)
    corpus: dict[str, float] = {}
    per_clip = pd.DataFrame(index=pd.Index(video_ids, name="videoID"))
    bleu, bleu_clip = Bleu(4).compute_score(gts_tok, res_tok, verbose=0)
    for k in range(4):
        corpus[f"BLEU-{k + 1}"] = 100.0 * bleu[k]
    per_clip["BLEU-4"] = 100.0 * np.asarray(bleu_clip[3])
    meteor_scorer = meteor_scorer if meteor_scorer is not None else Meteor()
    try:
        meteor, meteor_clip = meteor_scorer.compute_score(gts_tok, res_tok)
    except ValueError as e:  # the jar died (memory, a bad line) and answered nothing
        raise ScoringError(f"METEOR's Java process gave no score ({e}); it needs about 2 GB of memory "
                           "(java -Xmx2G) and one-line ASCII captions") from e
    finally:
        del meteor_scorer  # closes the process this call started; a caller's stays open
    corpus["METEOR"], per_clip["METEOR"] = 100.0 * meteor, 100.0 * np.asarray(meteor_clip)
    rouge, rouge_clip = Rouge().compute_score(gts_tok, res_tok)
    corpus["ROUGE-L"], per_clip["ROUGE-L"] = 100.0 * float(rouge), 100.0 * np.asarray(rouge_clip)
    cider, cider_clip = Cider().compute_score(gts_tok, res_tok)
    corpus["CIDEr"], per_clip["CIDEr"] = 100.0 * float(cider), 100.0 * np.asarray(cider_clip)
    skipped: dict[str, str] = {}
    if spice:
        spice_result = _try_spice(gts_tok, res_tok)
        if isinstance(spice_result, str):
            skipped["SPICE"] = spice_result
            logger.warning("SPICE skipped: %s", spice_result)
        else:
            corpus["SPICE"], per_clip["SPICE"] = spice_result[0], spice_result[1].to_numpy()
    per_clip["prediction"] = [res[v][0]["caption"] for v in video_ids]
    per_clip["prediction_tokens"] = [res_tok[v][0] for v in video_ids]
    counts = [len(gts[v]) for v in video_ids]
    scored_set = ScoredSet(dataset, split, len(video_ids), min(counts), max(counts), float(np.mean(counts)),
                           video_ids, missing_ids)
    notes = []
    if len(video_ids) < MIN_CLIPS_FOR_CIDER:
        notes.append(f"only {len(video_ids)} clips scored: CIDEr's IDF needs many clips, so CIDEr is not meaningful")
    if missing_ids:
        notes.append(f"{len(missing_ids)} clips had no prediction and were scored as empty captions")
    logger.info("scored %s: CIDEr %.1f, BLEU-4 %.1f", scored_set.describe(), corpus["CIDEr"], corpus["BLEU-4"])
    return CaptionScores(corpus, per_clip, scored_set, skipped, notes)


def _prepare(predictions: dict[str, str], references: dict[str, list[str]], missing: str
             ) -> tuple[dict[str, list[dict]], dict[str, list[dict]], list[str]]:
    """Apply the rules: sanitise, drop empty references, check coverage. Inputs in pycocoevalcap's form."""
    if not references:
        raise ScoringError("no clips to score: the references are empty")
    missing_ids = sorted(v for v in references if v not in predictions)
    if missing_ids and missing == "error":
        raise MissingPredictionError(missing_ids, len(references))
    extra = [v for v in predictions if v not in references]
    if extra:
        logger.info("%d predictions are for clips outside the scored set and are ignored", len(extra))
    gts, res, no_refs = {}, {}, []
    for video_id, refs in references.items():
        if isinstance(refs, str):
            raise ScoringError(f"references of {video_id!r} must be a list of captions, got a string {refs!r}")
        clean = [c for c in (sanitize_caption(r) for r in refs) if c]
        if not clean:
            no_refs.append(video_id)
            continue
        gts[video_id] = [{"caption": c} for c in clean]
        res[video_id] = [{"caption": sanitize_caption(predictions.get(video_id, ""))}]
    if no_refs:
        raise ScoringError(f"{len(no_refs)} clips have no non-empty reference caption: {', '.join(no_refs[:10])}; "
                           "drop them from the scored set")
    return gts, res, missing_ids


@contextlib.contextmanager
def _without_speed_lines():
    """The PTB tokenizer's Java process writes a speed line to this process's stderr on every call (noise
    in a notebook); catch what it writes there and pass on anything else as a warning."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            for line in caught.read().decode(errors="replace").splitlines():
                if line.strip() and not line.startswith("PTBTokenizer tokenized"):
                    logger.warning("PTB tokenizer: %s", line)


def _ptb_tokenize(captions: dict) -> dict:
    """pycocoevalcap's PTB tokenizer (lower-cased, punctuation dropped); empty captions stay empty."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    non_empty = {k: [c for c in v if c["caption"]] for k, v in captions.items()}
    non_empty = {k: v for k, v in non_empty.items() if v}
    with _without_speed_lines():
        tokenized = PTBTokenizer().tokenize(non_empty) if non_empty else {}
    out: dict[str, list[str]] = {}
    for key, caps in captions.items():
        it = iter(tokenized.get(key, []))
        out[key] = [next(it) if c["caption"] else "" for c in caps]
    return out


def _try_spice(gts: dict[str, list[str]], res: dict[str, list[str]]) -> tuple[float, pd.Series] | str:
    """SPICE ×100 (corpus, per clip), or the reason it cannot run here."""
    try:
        corenlp = importlib.import_module("pycocoevalcap.spice.get_stanford_models")
        from pycocoevalcap.spice.spice import Spice
    except ImportError as e:
        return f"pycocoevalcap's SPICE could not be imported ({e})"
    jar = Path(corenlp.SPICEDIR) / corenlp.SPICELIB / f"{corenlp.JAR}.jar"
    if not jar.exists():
        try:
            socket.create_connection(("nlp.stanford.edu", 80), timeout=10).close()
        except OSError as e:
            return (f"SPICE needs Stanford CoreNLP ({corenlp.JAR}), which is not downloaded and "
                    f"nlp.stanford.edu cannot be reached ({e}); run once with network, or copy the jar to {jar}")
    try:
        scorer = Spice()
        score, clip_scores = scorer.compute_score(gts, res)
    except (OSError, subprocess.CalledProcessError) as e:
        return f"SPICE failed to run ({type(e).__name__}: {e}); it is known to fail on Java newer than 8 and offline"
    per_clip = pd.Series([s["All"]["f"] for s in clip_scores], index=sorted(gts), dtype=float) * 100.0
    return 100.0 * float(score), per_clip.reindex(list(gts))  # Spice scores clips in sorted order


def references_of(records: Iterable) -> dict[str, list[str]]:
    """videoID -> reference captions of `ClipRecord`s (anything with `.video_id` and `.captions`)."""
    return {r.video_id: list(r.captions) for r in records}


# ---------------------------------------------------------------- CIDEr-D, step by step


def cider_d_example(captions: dict[str, str], video_id: str, references: dict[str, list[str]], n: int = 4,
                    sigma: float = 6.0) -> pd.DataFrame:
    """CIDEr-D of each caption (label -> caption) against clip `video_id`, taken apart: one row per caption.

    Document frequencies come from the references of every clip in `references` (the scored set), as in
    pycocoevalcap. Columns: the caption's words, for each n the penalised cosine similarity averaged over
    the clip's references (`n=1` .. `n=4`), the mean length penalty, CIDEr-D ×100 (= 10 × the mean over n,
    ×100), and the same score from `ConsensusCider`, the package's vectorised scorer, which must agree.
    Tokenised with `simple_tokenize` (the Java-free stand-in for the PTB tokenizer).
    """
    from collections import Counter

    from qvidcap.training.cider import ConsensusCider, simple_tokenize

    if video_id not in references:
        raise ScoringError(f"clip {video_id!r} is not among the {len(references)} clips of `references`")
    grams = lambda words, k: Counter(tuple(words[i:i + k]) for i in range(len(words) - k + 1))  # noqa: E731
    pool = {v: [simple_tokenize(r).split() for r in refs if r.strip()] for v, refs in references.items()}
    frequency = Counter(g for refs in pool.values() for g in {g for r in refs for k in range(1, n + 1) for g in grams(r, k)})
    log_clips = np.log(float(len(pool)))

    def vector(words: list[str], k: int) -> dict:
        return {g: tf * (log_clips - np.log(max(1.0, frequency[g]))) for g, tf in grams(words, k).items()}

    rows = {}
    for label, caption in captions.items():
        words = simple_tokenize(caption).split()
        per_order, penalties = [], []
        for reference in pool[video_id]:
            penalty = np.exp(-((len(words) - len(reference)) ** 2) / (2 * sigma**2))  # l = words (bigrams + 1)
            penalties.append(penalty)
            terms = []
            for k in range(1, n + 1):
                hyp, ref = vector(words, k), vector(reference, k)
                overlap = sum(min(w, ref.get(g, 0.0)) * ref.get(g, 0.0) for g, w in hyp.items())
                norms = np.sqrt(sum(w * w for w in hyp.values())) * np.sqrt(sum(w * w for w in ref.values()))
                terms.append(penalty * (overlap / norms if norms else overlap))
            per_order.append(terms)
        similarity = np.mean(per_order, axis=0)  # (n,): each order averaged over the references
        package = ConsensusCider({v: [" ".join(r) for r in refs] for v, refs in pool.items()})
        rows[label] = {"caption": " ".join(words), **{f"n={k + 1}": round(float(similarity[k]), 4) for k in range(n)},
                       "length penalty": round(float(np.mean(penalties)), 3),
                       "CIDEr-D ×100": round(float(10 * similarity.mean() * 100), 2),
                       "ConsensusCider ×100": round(float(package.score_pairs([" ".join(words)], [video_id])[0]), 2)}
    return pd.DataFrame.from_dict(rows, orient="index")
