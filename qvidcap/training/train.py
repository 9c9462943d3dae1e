"""Train the captioner on stored features: one code path for the CPU, one GPU or two (Accelerate).

    qvidcap train                                   # smoke profile, CPU
    accelerate launch --num_processes 2 -m qvidcap.cli train --profile kaggle

Each optimizer step logs its losses to `<output>/checkpoints/<run_name>/log.jsonl`; each epoch ends
with a validation loss, a quick CIDEr on `train.eval_clips` validation clips (greedy captions), and a
checkpoint in `last/` (copied to `best/` when the quick CIDEr is the best so far). `train(...,
resume=True)` continues from `last/`: same next batches, same losses, as if never stopped (on one
process; with several, each process's dropout RNG is not restored); it refuses a `last/` written by a
different run (`ResumeMismatchError`). A non-finite loss skips its optimizer step; more than
`train.max_nonfinite_steps` such steps stop the run, leaving the last checkpoint as it was. At the study
deadline (`QVIDCAP_DEADLINE`) the run saves `last/` after the current step and returns.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
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
from qvidcap.config import ConfigError, StudyConfig
from qvidcap.training.dataset import CaptionDataset, EpochSampler, collate_samples
from qvidcap.runtime.env import Environment
from qvidcap.features.clip_features import collate_features
from qvidcap.training.losses import compute_losses
from qvidcap.model.normalization import attach_feature_stats, compute_feature_stats
from qvidcap.runtime.deadline import Deadline, record_stop
from qvidcap.runtime.progress import progress
from qvidcap.training.text_targets import TextTargets, build_text_targets

logger = logging.getLogger(__name__)

LOSS_NAMES = ("loss", "caption", "object", "action", "global")


class NonFiniteLossError(FloatingPointError):
    """More than `train.max_nonfinite_steps` steps had a NaN or infinite loss; no checkpoint was written since."""


class ResumeMismatchError(ValueError):
    """`resume` found a `last/` checkpoint written by a run with a different schedule, model or features."""


# Settings that may change between a run and its resumption: they change how fast or where it runs, or
# what is watched, not the weights it ends with. Every other key of these sections must match.
RESUME_SECTIONS = ("train", "heads", "qformer", "decoder", "features", "sampling", "text")
RESUME_DATA_KEYS = ("data.source", "data.max_clips_per_split", "data.mini_seed", "data.mini_train_clips")
HARMLESS_KEYS = frozenset({
    "train.num_workers", "train.eval_clips", "train.val_clips", "train.save_every_steps", "train.run_name",
    "train.max_nonfinite_steps", "train.mixed_precision",  # "auto" resolves per machine; a resume may move machines
    "features.num_workers", "features.batch_clips", "features.detector_batch_frames", "features.shard_clips",
    "features.delete_videos", "text.batch_size", "decoder.finite_check_steps",
    "heads.temporal_dim", "heads.object_dim", "heads.context_dim", "heads.text_embed_dim",  # filled from the features
})


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
    stopped: str  # "finished", "max_steps" or "deadline"
    text_backends: dict  # which sentence model and part-of-speech backend made the targets
    skipped_steps: int = 0  # optimizer steps skipped for a non-finite loss, over the whole run (resumes included)


def resolve_mixed_precision(config: StudyConfig, device: str) -> str:
    """`train.mixed_precision` made concrete: "auto" is bf16 on compute capability >= 8.0, fp16 on older GPUs
    (a T4's bf16 is emulated: slow), no on CPU."""
    from qvidcap.runtime.precision import mixed_precision

    choice = config.train.mixed_precision
    if choice not in {"auto", "no", "fp16", "bf16"}:
        raise ValueError(f"train.mixed_precision={choice!r}; expected auto, no, fp16 or bf16")
    if device == "cpu":
        return "no"
    if choice == "auto":
        return mixed_precision(device)
    return choice


def prepare_training_data(config: StudyConfig, env: Environment, tokenizer=None, device: str = "cpu") -> TrainingData:
    """Records, features (into memory), tokenizer and text targets for the train and validation splits."""
    from qvidcap.data import load_clips
    from qvidcap.features.extract import store_root
    from qvidcap.features.store import FeatureStore
    from qvidcap.model.tokenizer import build_tokenizer

    train_clips = load_clips(config, env, "train")
    train_records = train_clips.records
    validation_records = load_clips(config, env, "validation", missing_ok=True).records
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
    without = sum(r.video_id not in features for r in train_records)
    if without:
        logger.warning("%d train clips have no stored features and are left out", without)
    train_records, validation_with_features = hold_out_clips(
        [r for r in train_records if r.video_id in features], [r for r in validation_records if r.video_id in features],
        config.train.holdout_clips)
    if config.text.center_targets:  # the mean of the captions the model trains on, held-out clips' left out
        targets = targets.centred([c for r in train_records for c in r.captions])
    return assemble_training_data(config, train_records, validation_with_features, features, targets, tokenizer,
                                  dict(store.feature_dims), store_dir)


def hold_out_clips(train_records: list, validation_records: list, holdout_clips: int = 0) -> tuple[list, list]:
    """`(train, validation)` records: as given, or with some train clips moved to validation (see `train.holdout_clips`).

    The best checkpoint needs clips the model did not train on. `holdout_clips > 0` holds out that many
    train clips; 0 holds out 5% of them (at least 1) only when `validation_records` is empty. Which clips
    is a function of their ids alone (sorted by hash), so every run and every process picks the same.
    """
    count = holdout_clips if holdout_clips > 0 else (0 if validation_records else max(1, round(0.05 * len(train_records))))
    if count == 0:
        return train_records, validation_records
    if count >= len(train_records):
        raise ValueError(f"train.holdout_clips={holdout_clips} would hold out {count} of the {len(train_records)} train "
                         "clips with features, leaving none to train on; lower train.holdout_clips")
    order = sorted(train_records, key=lambda r: hashlib.sha256(r.video_id.encode()).hexdigest())
    held = {r.video_id for r in order[:count]}
    reason = (f"train.holdout_clips={holdout_clips}" if holdout_clips > 0 else "the validation split has no clips with features")
    logger.warning("%s: holding out %d of %d train clips, not trained on, to validate and pick the best checkpoint",
                   reason, count, len(train_records))
    return [r for r in train_records if r.video_id not in held], [r for r in train_records if r.video_id in held]


def assemble_training_data(config: StudyConfig, train_records: list, validation_records: list, features: dict,
                           targets: TextTargets, tokenizer, feature_dims: dict[str, int], store_dir: Path) -> TrainingData:
    """`TrainingData` from records whose clips all have features (validation may be empty)."""
    k = config.train.captions_per_clip
    train_set = CaptionDataset(train_records, features, targets, k)
    validation_set = CaptionDataset(validation_records, features, targets, k) if validation_records else None
    references = {r.video_id: [c for c in r.captions if c.strip()] for r in validation_records}
    return TrainingData(train_set, validation_set, references, targets, tokenizer, feature_dims, store_dir)


def resume_differences(saved: StudyConfig, config: StudyConfig) -> dict[str, tuple]:
    """`{key: (saved value, new value)}` for every setting that differs and would change the run's weights."""
    keys = [f"{section}.{f.name}" for section in RESUME_SECTIONS for f in dataclasses.fields(getattr(config, section))]
    differences = {}
    for key in keys + list(RESUME_DATA_KEYS):
        if key in HARMLESS_KEYS:
            continue
        section, name = key.split(".")
        old, new = getattr(getattr(saved, section), name), getattr(getattr(config, section), name)
        if old != new:
            differences[key] = (old, new)
    return differences


def check_resumable(last_dir: Path, config: StudyConfig) -> None:
    """Raise ResumeMismatchError when `last_dir` was written by a run that differs from `config`'s."""
    way_out = (f"set train.run_name=<new name> to train this config as a new run, or resume=False (`qvidcap train "
               f"--fresh`) to start {last_dir.parent.name!r} over")
    try:
        saved = StudyConfig.from_json(last_dir / "config.json")
    except (ConfigError, ValueError, TypeError) as e:
        raise ResumeMismatchError(f"cannot resume from {last_dir}: its config.json does not load ({e}); {way_out}") from e
    differences = resume_differences(saved, config)
    if differences:
        listed = "; ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in differences.items())
        raise ResumeMismatchError(f"cannot resume from {last_dir}: it was trained with different settings ({listed}); "
                                  f"{way_out}")


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
    if resuming:
        check_resumable(last_dir, config)
    deadline = Deadline.from_env()
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
    epoch_size = data.train.epoch_size(tc.captions_per_epoch)  # samples per epoch
    groups = data.train.clip_groups if tc.captions_per_epoch > 0 else None
    batches_per_epoch = math.ceil(epoch_size / (tc.batch_size * accelerator.num_processes))
    steps_per_epoch = math.ceil(batches_per_epoch / tc.grad_accum_steps)
    total_steps = steps_per_epoch * tc.epochs
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=round(tc.warmup_ratio * total_steps),
                              num_training_steps=total_steps)
    state = {"epoch": 0, "step": 0, "position": 0, "best_cider": None, "best_val_loss": None, "skipped_steps": 0}
    if resuming:
        saved = load_training_state(last_dir)
        from safetensors.torch import load_file

        load_trainable_weights(model, load_file(str(last_dir / "model.safetensors")), source=last_dir)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        state.update(saved["trainer"])
        if accelerator.is_main_process:
            truncate_log(log_path, state["step"], state["epoch"])
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
        sampler = EpochSampler(len(data.train), tc.seed, epoch, start=state["position"],
                               groups=groups, per_clip=tc.captions_per_epoch)
        loader = accelerator.prepare(DataLoader(data.train, batch_size=tc.batch_size, sampler=sampler, collate_fn=collate,
                                                num_workers=tc.num_workers, generator=torch.Generator().manual_seed(tc.seed)))
        model.train()
        sums, count, epoch_sums, epoch_count = torch.zeros(len(LOSS_NAMES)), 0, torch.zeros(len(LOSS_NAMES)), 0
        window_finite = True  # every micro-batch of this optimizer step had a finite loss
        for batch in loader:
            with accelerator.accumulate(model):
                output = model(**_model_inputs(batch))
                losses = compute_losses(output, batch, tc)
                values = accelerator.reduce(torch.stack([losses.total.detach(), losses.caption, losses.object,
                                                         losses.action, losses.global_]).float(), "mean")
                finite = bool(torch.isfinite(values).all())  # the same on every process: `values` is reduced
                window_finite = window_finite and finite
                accelerator.backward(losses.total)  # even when not finite: every process runs the same collectives
                if accelerator.sync_gradients:
                    if window_finite:
                        if tc.max_grad_norm > 0:
                            accelerator.clip_grad_norm_(trainable, tc.max_grad_norm)
                        optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
            if finite:
                sums, count = sums + values.cpu(), count + 1
            state["position"] += tc.batch_size * accelerator.num_processes
            if not accelerator.sync_gradients:
                continue
            applied, window_finite = window_finite, True
            if applied:
                scheduler.step()
                state["step"] += 1
                means = dict(zip(LOSS_NAMES, (sums / count).tolist()))
                epoch_sums, epoch_count = epoch_sums + sums / count, epoch_count + 1
                if accelerator.is_main_process:
                    append_log(log_path, {"kind": "step", "epoch": epoch, "step": state["step"],
                                           "lr": scheduler.get_last_lr()[0], **means,
                                           "skipped_steps": state["skipped_steps"]})
                bar.update(1)
                bar.set_postfix({k: f"{v:.3f}" for k, v in means.items()}, refresh=False)
            else:
                state["skipped_steps"] += 1
                logger.warning("non-finite loss at epoch %d after step %d (%s): step skipped, %d skipped so far "
                               "(train.max_nonfinite_steps=%d)", epoch, state["step"],
                               {k: round(v, 4) for k, v in zip(LOSS_NAMES, values.tolist())}, state["skipped_steps"],
                               tc.max_nonfinite_steps)
                if state["skipped_steps"] > tc.max_nonfinite_steps:
                    raise NonFiniteLossError(
                        f"{state['skipped_steps']} optimizer steps had a non-finite loss, more than "
                        f"train.max_nonfinite_steps={tc.max_nonfinite_steps} (the last at epoch {epoch}, after step "
                        f"{state['step']}: {dict(zip(LOSS_NAMES, values.tolist()))}); {last_dir} is the last good "
                        "checkpoint; lower train.lr or use train.mixed_precision=no, then resume")
            sums, count = torch.zeros(len(LOSS_NAMES)), 0
            if max_steps is not None and state["step"] >= max_steps:
                stopped = "max_steps"
                break
            if _any_process(accelerator, deadline.reached()):
                stopped = "deadline"
                break
            if applied and tc.save_every_steps and state["step"] % tc.save_every_steps == 0:
                checkpoint(epoch_done=False)
        if stopped != "finished" and state["position"] < epoch_size:  # mid-epoch: resume continues from here
            checkpoint(epoch_done=False)
            break
        # 4. end of epoch: validation loss, quick CIDEr, checkpoints
        state["epoch"], state["position"] = epoch + 1, 0
        metrics = {"kind": "epoch", "epoch": epoch, "step": state["step"],
                   **{f"train_{k}": v for k, v in zip(LOSS_NAMES, (epoch_sums / max(1, epoch_count)).tolist())}}
        metrics.update(evaluate_epoch(accelerator.unwrap_model(model), data, config, accelerator.device, collate,
                                      accelerator))  # every process captions its share of the clips
        metrics["seconds"] = round(time.perf_counter() - epoch_start, 2)
        improved = _is_better(metrics, state)  # the same metrics, so the same state, on every process
        if accelerator.is_main_process:
            append_log(log_path, metrics)
            logger.info("epoch %d: %s", epoch, {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)})
        checkpoint(epoch_done=True, metrics=metrics)
        if accelerator.is_main_process and improved:
            copy_checkpoint(last_dir, best_dir)
        accelerator.wait_for_everyone()
    bar.close()
    if stopped == "deadline" and state["epoch"] >= tc.epochs:
        stopped = "finished"  # the deadline came with the last step
    if stopped == "deadline" and accelerator.is_main_process:
        stop = record_stop(env.output_dir, "training",
                           done=f"{state['epoch']} of {tc.epochs} epochs and {state['step']} of {total_steps} optimizer "
                                f"steps, saved in {last_dir}",
                           left=f"{total_steps - state['step']} optimizer steps, to step {total_steps} at the end of "
                                f"epoch {tc.epochs}")
        logger.warning(stop.sentence())
    if state["skipped_steps"]:
        logger.warning("%d optimizer steps were skipped for a non-finite loss", state["skipped_steps"])
    steps, history = read_log(log_path)
    return TrainResult(run_dir, last_dir, best_dir if (best_dir / "config.json").is_file() else None, steps, history,
                       state["step"], stopped, {"sentence_model": data.text_targets.meta["sentence_model"],
                                                "pos_backend": data.text_targets.meta["pos_backend"]},
                       state["skipped_steps"])


@torch.no_grad()
def evaluate_epoch(model, data: TrainingData, config: StudyConfig, device, collate, accelerator=None) -> dict[str, float]:
    """Validation losses over the validation samples (of `train.val_clips` clips) and quick CIDEr of greedy
    captions on `train.eval_clips` clips.

    With an `accelerator` of several processes, each takes every n-th batch and clip and the sums and
    captions are gathered, so no process waits in a barrier (NCCL ends a wait after 10 minutes) while
    one captions everything; every process returns the same metrics.
    """
    from qvidcap.training.cider import quick_cider

    if data.validation is None:
        return {}
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator is not None else (0, 1)
    was_training = model.training
    model.eval()
    sums = torch.zeros(len(LOSS_NAMES) + 1, dtype=torch.float64)  # loss sums weighted by samples, then the count
    indices = validation_samples(data.validation, config.train.val_clips, config.train.seed)
    size = config.train.batch_size  # whole batches go round the processes: each batch, so each mean, as on one
    batches = [indices[i: i + size] for i in range(0, len(indices), size)]
    loader = DataLoader(data.validation, batch_sampler=batches[rank::world], collate_fn=collate)
    for batch in loader:
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        losses = compute_losses(model(**_model_inputs(batch)), batch, config.train)
        n = len(batch["captions"])
        sums += torch.tensor([n * float(losses.total), n * float(losses.caption), n * float(losses.object),
                              n * float(losses.action), n * float(losses.global_), n], dtype=torch.float64)
    if world > 1:
        sums = accelerator.reduce(sums.to(accelerator.device), "sum").cpu()
    metrics = {f"val_{k}": v for k, v in zip(LOSS_NAMES, (sums[:-1] / max(1.0, float(sums[-1]))).tolist())}
    video_ids = list(data.validation_references)[: config.train.eval_clips]
    if video_ids:
        predictions = {}
        my_ids = video_ids[rank::world]
        for start in range(0, len(my_ids), config.generation.batch_size):
            chunk = my_ids[start: start + config.generation.batch_size]
            clips = collate_features([data.validation.features[v] for v in chunk])
            captions = model.generate(clips["temporal"].to(device), clips["context"].to(device), clips["objects"].to(device),
                                      clips["object_mask"].to(device), num_beams=1,
                                      max_new_tokens=config.generation.max_new_tokens)
            predictions.update(zip(chunk, captions))
        if world > 1:
            from accelerate.utils import gather_object

            predictions = {k: v for part in gather_object([predictions]) for k, v in part.items()}
        predictions = {v: predictions[v] for v in video_ids}  # the same order on every process
        metrics["quick_cider"] = quick_cider(predictions, {v: data.validation_references[v] for v in video_ids})
        metrics["distinct_captions"] = len(set(predictions.values()))
    model.train(was_training)
    return metrics


def validation_samples(dataset: CaptionDataset, val_clips: int, seed: int) -> list[int]:
    """Indices of the samples of `val_clips` validation clips, a fixed draw by `seed` (all when 0 or more than there are)."""
    groups = dataset.clip_groups
    if val_clips <= 0 or val_clips >= len(groups):
        return list(range(len(dataset)))
    chosen = sorted(torch.randperm(len(groups), generator=torch.Generator().manual_seed(seed))[:val_clips].tolist())
    return [i for g in chosen for i in groups[g]]


def collapse_story(history: pd.DataFrame) -> str:
    """What the per-epoch table says about collapse, in one sentence: when (if ever) the greedy captions stopped
    being one caption for every clip, and where the quick CIDEr went from there."""
    if history.empty or "distinct_captions" not in history:
        return "no validation clips were captioned, so collapse cannot be read from this run"
    distinct = history["distinct_captions"].tolist()
    cider = history["quick_cider"].round(1).tolist()
    collapsed = [e for e, d in zip(history["epoch"], distinct) if d <= 1]
    if not collapsed:
        return (f"never collapsed: {min(distinct)} to {max(distinct)} distinct captions per epoch; "
                f"quick CIDEr {cider[0]} -> {cider[-1]} (best {max(cider)})")
    if distinct[-1] <= 1:
        return (f"still collapsed after {len(distinct)} epochs: one caption for every clip, quick CIDEr "
                f"{min(cider)} to {max(cider)} as that caption changed; train longer or check the learning rate")
    escaped = next(e for e, d in zip(history["epoch"], distinct) if e > collapsed[-1])
    while_collapsed = [c for c, d in zip(cider, distinct) if d <= 1]
    return (f"one caption for every clip until epoch {collapsed[-1]} (quick CIDEr {min(while_collapsed)} to "
            f"{max(while_collapsed)} meanwhile), {distinct[-1]} distinct captions from epoch {escaped} on; "
            f"quick CIDEr {cider[-1]} at the end (best {max(cider)})")


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


def _any_process(accelerator, flag: bool) -> bool:
    """True on every process when `flag` is true on any (clocks differ by a little; all must stop together)."""
    if accelerator.num_processes == 1:
        return flag
    return bool(accelerator.reduce(torch.tensor([float(flag)], device=accelerator.device), "sum").item() > 0)


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


def append_log(path: Path, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def truncate_log(path: Path, step: int, epoch: int) -> None:
    """Drop log lines written after the checkpoint being resumed (a run cut between two saves); an "initial"
    row (the starting point of a second stage, such as SCST's) is always kept."""
    if not path.is_file():
        return
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    kept = [r for r in rows if r.get("kind") == "initial"
            or (r.get("step", 0) <= step and not (r.get("kind") == "epoch" and r["epoch"] >= epoch))]
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
