"""The Java-free CIDEr-D that training chooses its best checkpoint by (evaluation adds the official
pycocoevalcap protocol on top, in `qvidcap.evaluation.metrics`).

`simple_tokenize` stands in for the PTB tokenizer; `quick_cider` is pycocoevalcap's CIDEr-D scorer on
those tokens; `ConsensusCider` scores many candidates against one fixed pool of clips at once.
"""
from __future__ import annotations

import re
import unicodedata

import numpy as np

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]")
_QUICK_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


class ScoringError(ValueError):
    """Predictions or references that cannot be scored as given."""


# ---------------------------------------------------------------------------------------------
# text


def sanitize_caption(text: str) -> str:
    """One clean ASCII line: accents dropped (café -> cafe), line breaks, tabs, other non-ASCII
    characters and METEOR's `|||` turned into spaces, runs of spaces collapsed. The Java tools break
    on anything else."""
    if not isinstance(text, str):
        raise ScoringError(f"a caption must be a string, got {text!r} ({type(text).__name__})")
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    text = _CONTROL.sub(" ", text)
    text = "".join(ch if ch.isascii() else " " for ch in text)
    return " ".join(text.replace("|||", " ").split())  # ||| separates fields in METEOR's protocol


def simple_tokenize(text: str) -> str:
    """A Java-free stand-in for the PTB tokenizer: lower-cased words and numbers, punctuation dropped."""
    return " ".join(_QUICK_TOKEN.findall(sanitize_caption(text).lower()))


# ---------------------------------------------------------------------------------------------
# Java-free CIDEr-D


def quick_cider(predictions: dict[str, str], references: dict[str, list[str]]) -> float:
    """CIDEr-D ×100 of `predictions` against `references` without Java.

    pycocoevalcap's own CIDEr-D scorer (σ=6, clipping, ×10) with `simple_tokenize` in place of the
    PTB tokenizer: close to, not identical with, the reported CIDEr. Scored set = the clips of
    `references` that have a prediction; clips without one are skipped (the trainer captions a sample).
    """
    from pycocoevalcap.cider.cider_scorer import CiderScorer

    scorer = CiderScorer(n=4, sigma=6.0)
    scored = 0
    for video_id, refs in references.items():
        if video_id not in predictions:
            continue
        tokenized_refs = [r for r in (simple_tokenize(c) for c in refs) if r]
        if not tokenized_refs:
            continue
        scorer += (simple_tokenize(predictions[video_id]), tokenized_refs)
        scored += 1
    if scored == 0:
        raise ScoringError("quick_cider found no clip with both a prediction and a non-empty reference")
    score, _ = scorer.compute_score()
    return float(score) * 100.0


class ConsensusCider:
    """CIDEr-D of many candidate captions against one fixed pool of reference clips, vectorised.

    Gives the same numbers as pycocoevalcap's `CiderScorer` over the pool (IDF from the pool's
    references, its length quirk included) but computes the reference vectors once, so scoring a
    candidate against thousands of clips costs one sparse column slice. Captions must be tokenized.
    """

    def __init__(self, references: dict[str, list[str]], n: int = 4, sigma: float = 6.0):
        from scipy import sparse

        self.n, self.sigma = n, sigma
        self.video_ids = list(references)
        ref_counts = [_ngram_counts(r, n) for refs in references.values() for r in refs]
        self.ref_clip = np.repeat(np.arange(len(self.video_ids)), [len(r) for r in references.values()])
        self.refs_per_clip = np.array([len(r) for r in references.values()], dtype=float)
        if (self.refs_per_clip == 0).any():
            raise ScoringError("ConsensusCider needs at least one reference per clip")
        document_frequency: dict[tuple[str, ...], int] = {}
        start = 0
        for count in self.refs_per_clip.astype(int):
            for gram in {g for c in ref_counts[start:start + count] for g in c}:
                document_frequency[gram] = document_frequency.get(gram, 0) + 1
            start += count
        self.log_num_clips = np.log(float(len(self.video_ids)))
        self.column = {gram: i for i, gram in enumerate(document_frequency)}
        self.idf = np.array([self.log_num_clips - np.log(max(1.0, df)) for df in document_frequency.values()])
        self.gram_order = np.array([len(g) - 1 for g in document_frequency])
        rows, cols, vals = [], [], []
        self.ref_norm = np.zeros((len(ref_counts), n))  # (R, n)
        self.ref_length = np.zeros(len(ref_counts))  # pycocoevalcap counts bigrams as the "length"
        for i, counts in enumerate(ref_counts):
            for gram, tf in counts.items():
                j = self.column[gram]
                weight = tf * self.idf[j]
                rows.append(i), cols.append(j), vals.append(weight)
                self.ref_norm[i, len(gram) - 1] += weight**2
                if len(gram) == 2:
                    self.ref_length[i] += tf
        self.ref_norm = np.sqrt(self.ref_norm)
        self.ref_weights = sparse.csc_matrix((vals, (rows, cols)), shape=(len(ref_counts), len(self.column)))

    def score(self, candidate: str) -> np.ndarray:
        """CIDEr-D (pycocoevalcap's scale, not ×100) of `candidate` against every clip of the pool: (num_clips,)."""
        per_ref = self._per_reference(candidate, slice(None))  # (R,)
        per_clip = np.bincount(self.ref_clip, weights=per_ref, minlength=len(self.video_ids))
        return per_clip / self.refs_per_clip * 10.0

    def score_pairs(self, candidates: list[str], video_ids: list[str]) -> np.ndarray:
        """CIDEr-D ×100 of each candidate against its own clip's references, with the pool's document
        frequencies: the reward of self-critical training, where the pool is the training references. (B,)"""
        if len(candidates) != len(video_ids):
            raise ValueError(f"{len(candidates)} candidates for {len(video_ids)} clips; expected one clip per candidate")
        if not hasattr(self, "_clip_rows"):
            ends = np.cumsum(self.refs_per_clip.astype(int))
            self._clip_index = {v: i for i, v in enumerate(self.video_ids)}
            self._clip_rows = [slice(int(e - c), int(e)) for e, c in zip(ends, self.refs_per_clip.astype(int))]
            self._ref_rows = self.ref_weights.tocsr()  # row slices of one clip's references
        scores = np.empty(len(candidates))
        for b, (candidate, video_id) in enumerate(zip(candidates, video_ids)):
            if video_id not in self._clip_index:
                raise ScoringError(f"clip {video_id!r} is not in the reference pool of this scorer")
            rows = self._clip_rows[self._clip_index[video_id]]
            scores[b] = self._per_reference(candidate, rows).mean() * 10.0
        return scores * 100.0

    def _per_reference(self, candidate: str, rows: slice) -> np.ndarray:
        """pycocoevalcap's per-reference CIDEr-D term (mean over n-gram orders, length penalty) for `rows`."""
        counts = _ngram_counts(candidate, self.n)
        known = [(self.column[g], tf) for g, tf in counts.items() if g in self.column]
        hyp_norm = np.zeros(self.n)
        for gram, tf in counts.items():
            j = self.column.get(gram)
            hyp_norm[len(gram) - 1] += (tf * (self.idf[j] if j is not None else self.log_num_clips)) ** 2
        hyp_norm = np.sqrt(hyp_norm)
        hyp_length = sum(tf for g, tf in counts.items() if len(g) == 2)
        ref_norm, ref_length = self.ref_norm[rows], self.ref_length[rows]  # (R, n), (R,)
        overlap = np.zeros((len(ref_length), self.n))  # (R, n)
        if known:
            cols = np.array([j for j, _ in known])
            hyp = np.array([tf for _, tf in known]) * self.idf[cols]  # (k,)
            weights = self.ref_weights if rows == slice(None) else self._ref_rows[rows]
            ref = weights[:, cols].toarray()  # (R, k)
            clipped = np.minimum(hyp[None, :], ref) * ref  # (R, k)
            for order in range(self.n):
                overlap[:, order] = clipped[:, self.gram_order[cols] == order].sum(axis=1)
        denominator = hyp_norm[None, :] * ref_norm  # (R, n)
        similarity = np.where(denominator != 0, overlap / np.where(denominator != 0, denominator, 1.0), overlap)
        penalty = np.exp(-((hyp_length - ref_length) ** 2) / (2 * self.sigma**2))  # (R,)
        return similarity.mean(axis=1) * penalty  # (R,)


def _ngram_counts(sentence: str, n: int) -> dict[tuple[str, ...], int]:
    words = sentence.split()
    counts: dict[tuple[str, ...], int] = {}
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            gram = tuple(words[i:i + k])
            counts[gram] = counts.get(gram, 0) + 1
    return counts
