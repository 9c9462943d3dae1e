"""Train the captioner on stored features: one code path for the CPU, one GPU or two (Accelerate).

    qvidcap train                                   # smoke profile, CPU
    accelerate launch --num_processes 2 -m qvidcap.cli train --profile kaggle

Each optimizer step logs its losses to `<output>/checkpoints/<run_name>/log.jsonl`; each epoch ends
with a validation loss, a quick CIDEr on `train.eval_clips` validation clips (greedy captions), and a
checkpoint in `last/` (copied to `best/` when the quick CIDEr is the best so far). `train(...,
resume=True)` continues from `last/`: same next batches, same losses, as if never stopped (on one
process; with several, each process's dropout RNG is not restored). A non-finite loss stops the run
before the step is applied, leaving the last checkpoint as it was.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import DataLoader

from qvidcap.model.checkpoint import (checkpoint_root, copy_checkpoint, load_trainable_weights, load_training_state,
                                save_checkpoint, set_rng_state)
from qvidcap.config import StudyConfig
from qvidcap.training.dataset import CaptionDataset, EpochSampler, collate_samples
from qvidcap.runtime.env import Environment, supports_bf16
from qvidcap.features.clip_features import collate_features
from qvidcap.training.losses import compute_losses
from qvidcap.model.normalization import attach_feature_stats, compute_feature_stats
from qvidcap.runtime.progress import progress
from qvidcap.training.text_targets import TextTargets, build_text_targets

logger = logging.getLogger(__name__)

LOSS_NAMES = ("loss", "caption", "object", "action", "global")


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; the step was not applied and no checkpoint was written."""


@dataclass
class TrainingData:
    """Everything the trainer reads, loaded once: datasets, targets, tokenizer and where the features live."""

    train: CaptionDataset
    validation: CaptionDataset | None
    validation_references: dict[str, list[str]]  # video_id -> captions, for the quick metric
    text_targets: TextTargets
    tokenizer: object
    feature_dims: dict[str, int]
    store_dir: Path


@dataclass
class TrainResult:
    run_dir: Path  # <output>/checkpoints/<run_name>
    last: Path
    best: Path | None
    steps: pd.DataFrame  # one row per optimizer step: epoch, step, lr, losses
    history: pd.DataFrame  # one row per epoch: train and validation losses, quick CIDEr, seconds
    step: int
    stopped: str  # "finished" or "max_steps"
    text_backends: dict  # which sentence model and part-of-speech backend made the targets


def resolve_mixed_precision(config: StudyConfig, device: str) -> str:
    """`train.mixed_precision` made concrete: "auto" is bf16 where supported, fp16 on other GPUs, no on CPU."""
    choice = config.train.mixed_precision
    if choice not in {"auto", "no", "fp16", "bf16"}:
        raise ValueError(f"train.mixed_precision={choice!r}; expected auto, no, fp16 or bf16")
    if device == "cpu":
        return "no"
    if choice == "auto":
        return "bf16" if supports_bf16() else "fp16"
    return choice


def prepare_training_data(config: StudyConfig, env: Environment, tokenizer=None, device: str = "cpu") -> TrainingData:
    """Records, features (into memory), tokenizer and text targets for the train and validation splits."""
    from qvidcap.data import load_clips
    from qvidcap.features.extract import store_root
    from qvidcap.features.store import FeatureStore
    from qvidcap.model.tokenizer import build_tokenizer

    train_clips = load_clips(config, env, "train")
    train_records = train_clips.records
    validation_records = load_clips(config, env, "validation").records
    store_dir = store_root(env, train_clips.source)
    store = FeatureStore(store_dir)
    stored = set(store.video_ids)
    if not stored:
        raise FileNotFoundError(f"the feature store {store_dir} holds no clips; run `qvidcap extract` (or notebook 03) first")
    wanted = [r.video_id for r in train_records + validation_records if r.video_id in stored]
    features = {video_id: store.get(video_id) for video_id in progress(wanted, desc="load features")}
    if tokenizer is None:
        tokenizer = build_tokenizer(config, [c for r in train_records for c in r.captions])
    captions = [c for r in train_records + validation_records if r.video_id in features for c in r.captions if c.strip()]
    targets = build_text_targets(captions, config, tokenizer, store_dir / "text_targets", device=device)
    train_set = CaptionDataset(train_records, features, targets, config.train.captions_per_clip)
    validation_with_features = [r for r in validation_records if r.video_id in features]
    validation_set = (CaptionDataset(validation_with_features, features, targets, config.train.captions_per_clip)
                      if validation_with_features else None)
    references = {r.video_id: [c for c in r.captions if c.strip()] for r in validation_with_features}
    return TrainingData(train_set, validation_set, references, targets, tokenizer, dict(store.feature_dims), store_dir)


def train(config: StudyConfig, env: Environment, *, resume: bool = True, max_steps: int | None = None,
          data: TrainingData | None = None) -> TrainResult:
    """Train `config`'s captioner; with `resume`, continue from `<run>/last` when it exists.

    `max_steps` stops (and checkpoints) after that many optimizer steps in all, for short demos and tests.
    `data` lets a caller reuse already loaded `TrainingData`.
    """
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, set_seed
    from transformers import get_scheduler

    from qvidcap.model import build_captioner, link_widths
    from qvidcap.model.tokenizer import load_tokenizer

    tc = config.train
    accelerator = Accelerator(
        mixed_precision=resolve_mixed_precision(config, env.device), gradient_accumulation_steps=tc.grad_accum_steps,
        cpu=env.device == "cpu", rng_types=[],
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],  # MoE experts may sit out a batch
    )
    run_dir = checkpoint_root(config, env.output_dir)
    last_dir, best_dir, log_path = run_dir / "last", run_dir / "best", run_dir / "log.jsonl"
    resuming = resume and (last_dir / "config.json").is_file()
    set_seed(tc.seed)

    # 1. data, tokenizer (the checkpoint's when resuming), text targets
    tokenizer = load_tokenizer(last_dir / "tokenizer") if resuming and data is None else None
    with accelerator.main_process_first():  # one process computes the text targets, the others read the cache
        data = data or prepare_training_data(config, env, tokenizer, device=str(accelerator.device))
    linked = link_widths(config, data.feature_dims, data.text_targets.embed_dim)

    # 2. model, optimizer, schedule
    model = build_captioner(linked, data.tokenizer, device=str(accelerator.device))
    if tc.standardize_features:
        train_ids = dict.fromkeys(video_id for video_id, _ in data.train.samples)
        attach_feature_stats(model, compute_feature_stats(data.train.features[v] for v in train_ids))
    optimizer = torch.optim.AdamW(_parameter_groups(model, tc.weight_decay), lr=tc.lr)
    batches_per_epoch = math.ceil(len(data.train) / (tc.batch_size * accelerator.num_processes))
    steps_per_epoch = math.ceil(batches_per_epoch / tc.grad_accum_steps)
    total_steps = steps_per_epoch * tc.epochs
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=round(tc.warmup_ratio * total_steps),
                              num_training_steps=total_steps)
    state = {"epoch": 0, "step": 0, "position": 0, "best_cider": None, "best_val_loss": None}
    if resuming:
        saved = load_training_state(last_dir)
        from safetensors.torch import load_file

        load_trainable_weights(model, load_file(str(last_dir / "model.safetensors")), source=last_dir)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        state.update(saved["trainer"])
        if accelerator.is_main_process:
            _truncate_log(log_path, state["step"], state["epoch"])
        logger.info("resuming %s at epoch %d, step %d", last_dir, state["epoch"], state["step"])
    elif accelerator.is_main_process:  # a fresh run: an older run's checkpoints and log under this name go
        for old in (last_dir, best_dir):
            shutil.rmtree(old, ignore_errors=True)
        run_dir.mkdir(parents=True, exist_ok=True)
        log_path.write_text("")
    accelerator.wait_for_everyone()
    model, optimizer = accelerator.prepare(model, optimizer)
    if resuming:
        set_rng_state(saved["rng"])  # after building: model init drew from the RNG too

    # 3. the loop
    pad_id = data.tokenizer.pad_token_id
    collate = partial(collate_samples, pad_token_id=pad_id)
    bar = progress(total=total_steps, desc="train", initial=state["step"]) if accelerator.is_main_process else _NoBar()
    stopped = "finished"
    trainable = [p for p in model.parameters() if p.requires_grad]

    def checkpoint(epoch_done: bool, metrics: dict | None = None) -> None:
        if accelerator.is_main_process:
            save_checkpoint(last_dir, accelerator.unwrap_model(model), linked, data.tokenizer,
                            extractors_dir=data.store_dir / "extractors", optimizer=optimizer, scheduler=scheduler,
                            trainer_state={**state, "metrics": metrics or {}, "epoch_done": epoch_done,
                                           "text_targets": data.text_targets.meta})
        accelerator.wait_for_everyone()

    while state["epoch"] < tc.epochs and stopped == "finished":
        epoch, epoch_start = state["epoch"], time.perf_counter()
        sampler = EpochSampler(len(data.train), tc.seed, epoch, start=state["position"])
        loader = accelerator.prepare(DataLoader(data.train, batch_size=tc.batch_size, sampler=sampler, collate_fn=collate,
                                                num_workers=tc.num_workers, generator=torch.Generator().manual_seed(tc.seed)))
        model.train()
        sums, count, epoch_sums, epoch_count = torch.zeros(len(LOSS_NAMES)), 0, torch.zeros(len(LOSS_NAMES)), 0
        for batch in loader:
            with accelerator.accumulate(model):
                output = model(**_model_inputs(batch))
                losses = compute_losses(output, batch, tc)
                values = accelerator.reduce(torch.stack([losses.total.detach(), losses.caption, losses.object,
                                                         losses.action, losses.global_]).float(), "mean")
                if not torch.isfinite(values).all():
                    raise NonFiniteLossError(
                        f"non-finite loss at epoch {epoch}, step {state['step'] + 1}: "
                        f"{dict(zip(LOSS_NAMES, values.tolist()))}; the step was not applied and {last_dir} is the "
                        "last good checkpoint; lower train.lr or use train.mixed_precision=no, then resume")
                accelerator.backward(losses.total)
                if accelerator.sync_gradients and tc.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(trainable, tc.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            sums, count = sums + values.cpu(), count + 1
            state["position"] += tc.batch_size * accelerator.num_processes
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            state["step"] += 1
            means = dict(zip(LOSS_NAMES, (sums / count).tolist()))
            epoch_sums, epoch_count = epoch_sums + sums / count, epoch_count + 1
            sums, count = torch.zeros(len(LOSS_NAMES)), 0
            if accelerator.is_main_process:
                _append_log(log_path, {"kind": "step", "epoch": epoch, "step": state["step"],
                                       "lr": scheduler.get_last_lr()[0], **means})
            bar.update(1)
            bar.set_postfix({k: f"{v:.3f}" for k, v in means.items()}, refresh=False)
            if max_steps is not None and state["step"] >= max_steps:
                stopped = "max_steps"
                break
            if tc.save_every_steps and state["step"] % tc.save_every_steps == 0:
                checkpoint(epoch_done=False)
        if stopped == "max_steps" and state["position"] < len(data.train):
            checkpoint(epoch_done=False)
            break
        # 4. end of epoch: validation loss, quick CIDEr, checkpoints
        state["epoch"], state["position"] = epoch + 1, 0
        metrics = {"kind": "epoch", "epoch": epoch, "step": state["step"],
                   **{f"train_{k}": v for k, v in zip(LOSS_NAMES, (epoch_sums / max(1, epoch_count)).tolist())}}
        improved = False
        if accelerator.is_main_process:
            metrics.update(evaluate_epoch(accelerator.unwrap_model(model), data, config, accelerator.device, collate))
            metrics["seconds"] = round(time.perf_counter() - epoch_start, 2)
            _append_log(log_path, metrics)
            logger.info("epoch %d: %s", epoch, {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)})
            improved = _is_better(metrics, state)
        checkpoint(epoch_done=True, metrics=metrics)
        if accelerator.is_main_process and improved:
            copy_checkpoint(last_dir, best_dir)
        accelerator.wait_for_everyone()
    bar.close()
    steps, history = read_log(log_path)
    return TrainResult(run_dir, last_dir, best_dir if (best_dir / "config.json").is_file() else None, steps, history,
                       state["step"], stopped, {"sentence_model": data.text_targets.meta["sentence_model"],
                                                "pos_backend": data.text_targets.meta["pos_backend"]})


@torch.no_grad()
def evaluate_epoch(model, data: TrainingData, config: StudyConfig, device, collate) -> dict[str, float]:
    """Validation losses over the validation samples and quick CIDEr of greedy captions on `train.eval_clips` clips."""
    from qvidcap.training.cider import quick_cider

    if data.validation is None:
        return {}
    was_training = model.training
    model.eval()
    sums, count = torch.zeros(len(LOSS_NAMES)), 0
    loader = DataLoader(data.validation, batch_size=config.train.batch_size, collate_fn=collate)
    for batch in loader:
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        losses = compute_losses(model(**_model_inputs(batch)), batch, config.train)
        n = len(batch["captions"])
        sums += n * torch.tensor([float(losses.total), float(losses.caption), float(losses.object),
                                  float(losses.action), float(losses.global_)])
        count += n
    metrics = {f"val_{k}": v for k, v in zip(LOSS_NAMES, (sums / max(1, count)).tolist())}
    video_ids = list(data.validation_references)[: config.train.eval_clips]
    if video_ids:
        predictions = {}
        for start in range(0, len(video_ids), config.generation.batch_size):
            chunk = video_ids[start: start + config.generation.batch_size]
            clips = collate_features([data.validation.features[v] for v in chunk])
            captions = model.generate(clips["temporal"].to(device), clips["context"].to(device), clips["objects"].to(device),
                                      clips["object_mask"].to(device), num_beams=1,
                                      max_new_tokens=config.generation.max_new_tokens)
            predictions.update(zip(chunk, captions))
        metrics["quick_cider"] = quick_cider(predictions, {v: data.validation_references[v] for v in video_ids})
        metrics["distinct_captions"] = len(set(predictions.values()))
    model.train(was_training)
    return metrics


def read_log(path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The loss log as two tables: per optimizer step, and per epoch."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()] if Path(path).is_file() else []
    steps = pd.DataFrame([r for r in rows if r.get("kind") == "step"])
    epochs = pd.DataFrame([r for r in rows if r.get("kind") == "epoch"])
    return steps.drop(columns="kind", errors="ignore"), epochs.drop(columns="kind", errors="ignore")


class _NoBar:
    """The bar of processes other than the main one."""

    def update(self, n: int = 1) -> None: ...
    def set_postfix(self, *args, **kwargs) -> None: ...
    def close(self) -> None: ...


def _model_inputs(batch: dict) -> dict[str, torch.Tensor]:
    keys = ("temporal", "context", "objects", "object_mask", "input_ids", "attention_mask")
    return {k: batch[k] for k in keys}


def _parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only; biases, norms and 1-d embeddings go without (as nanoGPT does)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


def _is_better(metrics: dict, state: dict) -> bool:
    """Best by quick CIDEr; by validation loss when there is no CIDEr. Updates `state`."""
    if "quick_cider" in metrics:
        if state["best_cider"] is None or metrics["quick_cider"] > state["best_cider"]:
            state["best_cider"] = metrics["quick_cider"]
            return True
        return False
    value = metrics.get("val_loss", metrics.get("train_loss"))
    if state["best_val_loss"] is None or value < state["best_val_loss"]:
        state["best_val_loss"] = value
        return True
    return False


def _append_log(path: Path, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def _truncate_log(path: Path, step: int, epoch: int) -> None:
    """Drop log lines written after the checkpoint being resumed (a run cut between two saves)."""
    if not path.is_file():
        return
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    kept = [r for r in rows if r.get("step", 0) <= step and not (r.get("kind") == "epoch" and r["epoch"] >= epoch)]
    path.write_text("".join(json.dumps(r) + "\n" for r in kept))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fresh", action="store_true", help="start over instead of resuming from <run>/last")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps")


def main(args: argparse.Namespace, config: StudyConfig) -> int:
    from qvidcap.runtime.env import detect_environment

    env = detect_environment(config)
    result = train(config, env, resume=not args.fresh, max_steps=args.max_steps)
    print(f"trained {result.step} steps ({result.stopped}); last checkpoint: {result.last}; best: {result.best}")
    if not result.history.empty:
        print(result.history.round(4).to_string(index=False))
    return 0
