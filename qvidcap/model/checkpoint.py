"""A checkpoint is a directory that rebuilds the captioner from itself alone.

    <checkpoint>/
      model.safetensors     trainable weights only (a frozen pretrained decoder is named in config.json, not copied)
      config.json           the resolved StudyConfig, widths linked
      tokenizer/            the tokenizer the model was trained with
      feature_stats.safetensors  per-dimension mean/std the model standardises its inputs with (qvidcap.model.normalization)
      extractors/           the feature extractors' saved state (copied from the feature store), so that
                            inference extracts features exactly as training saw them
      training_state.pt     optimizer, scheduler, RNG states (torch.load(..., weights_only=True) loads it)
      trainer_state.json    step, epoch, position in the epoch, metrics

It is written into a temporary sibling and renamed into place, so a run cut while saving leaves the
previous checkpoint whole.
"""
from __future__ import annotations

import json
import logging
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from qvidcap.config import StudyConfig
from qvidcap.model.normalization import attach_feature_stats, feature_stats_of

logger = logging.getLogger(__name__)

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
TOKENIZER = "tokenizer"
EXTRACTORS = "extractors"
TRAINING_STATE = "training_state.pt"
TRAINER_STATE = "trainer_state.json"
FEATURE_STATS = "feature_stats.safetensors"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, incomplete, or does not fit the model its config builds."""


def checkpoint_root(config: StudyConfig, output_dir: str | Path) -> Path:
    """`<output>/checkpoints/<train.run_name>/`: holds `last/`, `best/` and `log.jsonl`."""
    return Path(output_dir) / "checkpoints" / config.train.run_name


def find_checkpoint(config: StudyConfig, output_dir: str | Path, which: str = "best") -> Path:
    """The `best` or `last` checkpoint of `train.run_name`, or an explicit path in `eval.checkpoint`."""
    if which not in {"best", "last"}:
        raise ValueError(f"which={which!r}; expected 'best' or 'last'")
    path = Path(config.eval.checkpoint) if config.eval.checkpoint else checkpoint_root(config, output_dir) / which
    if not (path / CONFIG).is_file():
        old = path.with_name(f".{path.name}.old")  # a save cut between its two renames
        if (old / CONFIG).is_file():
            return old
        raise CheckpointError(f"no checkpoint at {path}; train first (qvidcap train) or set eval.checkpoint to a checkpoint directory")
    return path


def save_checkpoint(path: str | Path, model, config: StudyConfig, tokenizer, *, extractors_dir: str | Path | None = None,
                    optimizer=None, scheduler=None, trainer_state: dict[str, Any] | None = None) -> Path:
    """Write the checkpoint directory `path` atomically; `model` is the unwrapped QVidCap."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    weights = {k: v.detach().cpu().contiguous().clone() for k, v in model.trainable_state_dict().items()}
    save_file(weights, str(tmp / WEIGHTS), metadata={"format": "qvidcap-1"})
    stats = feature_stats_of(model)
    if stats is not None:
        save_file({k: v.contiguous() for k, v in stats.items()}, str(tmp / FEATURE_STATS))
    config.to_json(tmp / CONFIG)
    save_tokenizer(tokenizer, tmp / TOKENIZER)
    if extractors_dir is not None and Path(extractors_dir).is_dir():
        shutil.copytree(extractors_dir, tmp / EXTRACTORS)
    if optimizer is not None or scheduler is not None:
        torch.save({"optimizer": optimizer.state_dict() if optimizer is not None else None,
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "rng": rng_state()}, tmp / TRAINING_STATE)
    state = dict(trainer_state or {})
    if config.decoder.train_mode == "frozen" and config.decoder.name:
        state["frozen_decoder"] = config.decoder.name  # loaded by name, not stored here
    (tmp / TRAINER_STATE).write_text(json.dumps(state, indent=2, default=str))
    _replace_dir(tmp, path)
    return path


def copy_checkpoint(source: str | Path, target: str | Path) -> Path:
    """Copy a checkpoint directory (e.g. `last` to `best`), atomically."""
    source, target = Path(source), Path(target)
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    _replace_dir(tmp, target)
    return target


def load_captioner(path: str | Path, device: str = "cpu", strict: bool = True):
    """`(model, config, tokenizer)` rebuilt from a checkpoint directory, in eval mode on `device`; the
    decoder is built directly in `device`'s dtype (a GPU's half dtype: the 3B decoder in fp32 is 11.7 GB).

    With `strict`, a trainable weight the checkpoint lacks, or a weight the model does not have, raises
    CheckpointError naming them; otherwise they are logged.
    """
    from qvidcap.model import build_captioner
    from qvidcap.model.tokenizer import load_tokenizer

    path = Path(path)
    for name in (WEIGHTS, CONFIG, TOKENIZER):
        if not (path / name).exists():
            raise CheckpointError(f"{path} is not a complete checkpoint: {name} is missing")
    config = StudyConfig.from_json(path / CONFIG)
    tokenizer = load_tokenizer(path / TOKENIZER)
    model = build_captioner(config, tokenizer, device)
    load_trainable_weights(model, load_file(str(path / WEIGHTS)), strict=strict, source=path)
    if (path / FEATURE_STATS).is_file():
        attach_feature_stats(model, load_file(str(path / FEATURE_STATS)))
    return model.to(device).eval(), config, tokenizer


def load_trainable_weights(model, weights: dict[str, torch.Tensor], strict: bool = True, source: Any = "") -> None:
    """Load saved trainable weights into `model`, reporting missing and unexpected keys."""
    expected = set(model.trainable_state_dict())
    result = model.load_state_dict(weights, strict=False)
    missing = sorted(expected - set(weights))
    unexpected = sorted(result.unexpected_keys)
    if missing or unexpected:
        message = (f"checkpoint {source} does not fit the model its config builds: "
                   f"{len(missing)} missing trainable weights {missing[:5]}, {len(unexpected)} unexpected {unexpected[:5]}")
        if strict:
            raise CheckpointError(message + "; was it written by another version of qvidcap?")
        logger.warning(message)


def load_training_state(path: str | Path) -> dict[str, Any]:
    """Optimizer, scheduler and RNG states, plus `trainer_state.json`, of a checkpoint (weights_only loading)."""
    path = Path(path)
    state = torch.load(path / TRAINING_STATE, map_location="cpu", weights_only=True) if (path / TRAINING_STATE).is_file() else {}
    state["trainer"] = json.loads((path / TRAINER_STATE).read_text()) if (path / TRAINER_STATE).is_file() else {}
    return state


def save_tokenizer(tokenizer, directory: Path) -> None:
    from qvidcap.model import tokenizer as tokenizer_module

    if hasattr(tokenizer_module, "save_tokenizer"):
        tokenizer_module.save_tokenizer(tokenizer, directory)
    else:
        tokenizer.save_pretrained(str(directory))


def rng_state() -> dict[str, Any]:
    """Every RNG a training step may draw from, in types `torch.load(weights_only=True)` accepts."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
            "python": random.getstate()}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def _replace_dir(tmp: Path, path: Path) -> None:
    """Move `tmp` to `path`; the old `path` is renamed aside first and removed last."""
    old = path.with_name(f".{path.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)
