"""Self-critical sequence training (SCST): the optional CIDEr-optimised stage after cross-entropy.

    qvidcap train-scst                              # from the best CE checkpoint of train.run_name
    accelerate launch --num_processes 2 -m qvidcap.cli train-scst --profile kaggle

Per optimizer step, each process takes `scst.batch_clips` training clips, samples `scst.num_samples` (k)
captions per clip (`qvidcap.model.sampling`), rewards each with its CIDEr-D against its own clip's
references (document frequencies from all the training references, `ConsensusCider`), and subtracts a
baseline: the mean reward of the clip's other k − 1 samples (`mean_others`) or the reward of its greedy
caption (`greedy`). The loss is −(reward − baseline) · log p(sampled caption), the log-probability summed
over the caption's tokens up to its EOS, rewards in CIDEr-D units (the ×100 scores / 100); gradients
reach whatever the CE run trained (with a frozen decoder: heads, Q-Former and prefix projection).

The stage writes its own run, `<output>/checkpoints/<train.run_name><scst.run_suffix>/` (`last/`, `best/`,
`log.jsonl`), so the CE checkpoints stay as they were and the two are scored apart. Before the first step
it captions the validation clips with the CE model (the `initial` row of the log); each epoch ends with
the same greedy captions from the SCST model: quick CIDEr (which picks `best/`), distinct captions,
the share of captions that repeat a bigram, and mean length, the signs of reward hacking. It resumes
from `last/` and stops at the study deadline like the CE trainer.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from qvidcap.config import StudyConfig
from qvidcap.features.clip_features import collate_features
from qvidcap.model.checkpoint import (copy_checkpoint, find_checkpoint, load_captioner, load_training_state,
                                      save_checkpoint, set_rng_state)
from qvidcap.model.sampling import greedy_captions, sample_captions
from qvidcap.runtime.deadline import Deadline, record_stop
from qvidcap.runtime.env import Environment
from qvidcap.runtime.progress import progress
from qvidcap.training.cider import ConsensusCider, quick_cider, simple_tokenize
from qvidcap.training.dataset import EpochSampler
from qvidcap.training.train import (ResumeMismatchError, TrainingData, append_log, prepare_training_data, read_log,
                                    resolve_mixed_precision, truncate_log)

logger = logging.getLogger(__name__)

BASELINES = ("mean_others", "greedy")
# scst settings a resumed run may change: they do not change the weights it ends with (or only extend the run)
HARMLESS_KEYS = frozenset({"enabled", "epochs", "init_checkpoint"})


class ScstConfigError(ValueError):
    """An `scst.*` setting the stage cannot run with."""


@dataclass
class ScstResult:
    run_dir: Path  # <output>/checkpoints/<run_name><run_suffix>
    last: Path
    best: Path | None
    init_checkpoint: Path  # the CE checkpoint the stage started from
    steps: pd.DataFrame  # one row per optimizer step: loss, reward, baseline, sample statistics
    history: pd.DataFrame  # one row per epoch: validation quick CIDEr, distinct captions, repeats, length
    initial: dict  # the same validation metrics of the CE checkpoint, on the same clips
    step: int
    stopped: str  # "finished", "max_steps" or "deadline"


# ---------------------------------------------------------------------------------------------
# rewards, baselines, the loss, fluency statistics


def scst_baseline(rewards: torch.Tensor, num_samples: int, greedy_rewards: torch.Tensor | None = None) -> torch.Tensor:
    """Baseline per sample (B*k,): the mean reward of the clip's other k − 1 samples, or its greedy reward (B,)."""
    per_clip = rewards.view(-1, num_samples)  # (B, k)
    if greedy_rewards is not None:
        return greedy_rewards.repeat_interleave(num_samples)
    if num_samples < 2:
        raise ScstConfigError("the mean_others baseline needs scst.num_samples >= 2; raise it or use scst.baseline=greedy")
    others = (per_clip.sum(dim=1, keepdim=True) - per_clip) / (num_samples - 1)  # (B, k)
    return others.reshape(-1)


def scst_loss(log_probs: torch.Tensor, rewards: torch.Tensor, baseline: torch.Tensor) -> torch.Tensor:
    """−(reward − baseline) · log p, averaged over the samples; rewards and baseline carry no gradient."""
    advantage = (rewards - baseline).detach().to(log_probs.dtype)
    return -(advantage * log_probs).mean()


def caption_stats(captions: list[str]) -> dict[str, float]:
    """Fluency guards: share of distinct captions, share with a bigram said twice, mean length in words."""
    words = [simple_tokenize(c).split() for c in captions]
    repeated = [len(set(zip(w, w[1:]))) < len(w) - 1 for w in words]
    count = max(1, len(captions))
    return {"distinct": len(set(" ".join(w) for w in words)) / count, "repeated_bigrams": sum(repeated) / count,
            "mean_length": sum(map(len, words)) / count}


class _Clips(Dataset):
    """The training clips' features, one item per clip."""

    def __init__(self, video_ids: list[str], features: dict):
        self.video_ids, self.features = video_ids, features

    def __len__(self) -> int:
        return len(self.video_ids)

    def __getitem__(self, index: int):
        return self.features[self.video_ids[index]]


# ---------------------------------------------------------------------------------------------
# the stage


def scst_run_dir(config: StudyConfig, output_dir: str | Path) -> Path:
    """`<output>/checkpoints/<train.run_name><scst.run_suffix>/`."""
    return Path(output_dir) / "checkpoints" / f"{config.train.run_name}{config.scst.run_suffix}"


def resolve_init_checkpoint(config: StudyConfig, output_dir: str | Path, init_checkpoint: str | Path | None = None) -> Path:
    """The CE checkpoint to start from: the argument, `scst.init_checkpoint`, or the best of `train.run_name`."""
    chosen = init_checkpoint or config.scst.init_checkpoint
    if chosen:
        return find_checkpoint(dataclasses.replace(config, eval=dataclasses.replace(config.eval, checkpoint=str(chosen))),
                               output_dir)
    return find_checkpoint(dataclasses.replace(config, eval=dataclasses.replace(config.eval, checkpoint="")), output_dir)


def check_scst_config(config: StudyConfig) -> None:
    sc = config.scst
    if sc.baseline not in BASELINES:
        raise ScstConfigError(f"scst.baseline={sc.baseline!r}; expected one of {BASELINES}")
    if sc.num_samples < 1 or (sc.baseline == "mean_others" and sc.num_samples < 2):
        raise ScstConfigError(f"scst.num_samples={sc.num_samples!r}; the {sc.baseline} baseline needs at least "
                              f"{2 if sc.baseline == 'mean_others' else 1}")
    if sc.batch_clips < 1 or sc.epochs < 0 or sc.lr <= 0 or sc.temperature <= 0:
        raise ScstConfigError(f"scst.batch_clips={sc.batch_clips}, epochs={sc.epochs}, lr={sc.lr}, temperature="
                              f"{sc.temperature}; expected batch_clips >= 1, epochs >= 0, lr > 0, temperature > 0")


def train_scst(config: StudyConfig, env: Environment, *, init_checkpoint: str | Path | None = None,
               max_steps: int | None = None, data: TrainingData | None = None, resume: bool = True) -> ScstResult:
    """Fine-tune a CE checkpoint with SCST; with `resume`, continue from the stage's own `last/`.

    `init_checkpoint` overrides `scst.init_checkpoint` (default: the best CE checkpoint of `train.run_name`);
    `max_steps` stops (and checkpoints) after that many optimizer steps in all; `data` reuses loaded
    `TrainingData` (its tokenizer must be the checkpoint's).
    """
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, set_seed

    check_scst_config(config)
    sc = config.scst
    accelerator = Accelerator(mixed_precision=resolve_mixed_precision(config, env.device), cpu=env.device == "cpu",
                              rng_types=[], kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    run_dir = scst_run_dir(config, env.output_dir)
    last_dir, best_dir, log_path = run_dir / "last", run_dir / "best", run_dir / "log.jsonl"
    resuming = resume and (last_dir / "config.json").is_file()
    deadline = Deadline.from_env()
    set_seed(config.train.seed)

    # 1. the model: the CE checkpoint, or the stage's own last/ when resuming
    if resuming:
        saved_state = load_training_state(last_dir)
        source = Path(saved_state["trainer"]["init_checkpoint"])
        _check_resumable(last_dir, config)
    else:
        source = resolve_init_checkpoint(config, env.output_dir, init_checkpoint)
    model, model_config, tokenizer = load_captioner(last_dir if resuming else source, device=str(accelerator.device))
    run_config = dataclasses.replace(model_config, scst=sc, train=dataclasses.replace(
        model_config.train, run_name=run_dir.name))  # what the SCST checkpoints carry
    with accelerator.main_process_first():
        data = data or prepare_training_data(config, env, tokenizer, device=str(accelerator.device))
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(_parameter_groups(trainable, config.train.weight_decay), lr=sc.lr)
    video_ids = list(dict.fromkeys(video_id for video_id, _ in data.train.samples))
    references: dict[str, list[str]] = {}
    for video_id, caption in data.train.samples:
        references.setdefault(video_id, []).append(simple_tokenize(caption))
    reward = ConsensusCider(references)  # document frequencies of the whole training pool, once
    steps_per_epoch = -(-len(video_ids) // (sc.batch_clips * accelerator.num_processes))
    total_steps = steps_per_epoch * sc.epochs
    max_new_tokens = sc.max_new_tokens or config.generation.max_new_tokens
    state = {"epoch": 0, "step": 0, "position": 0, "best_cider": None, "init_checkpoint": str(source), "initial": {}}
    if resuming:
        optimizer.load_state_dict(saved_state["optimizer"])
        state.update({k: v for k, v in saved_state["trainer"].items() if k in state})
        if accelerator.is_main_process:
            truncate_log(log_path, state["step"], state["epoch"])
        logger.info("resuming SCST %s at epoch %d, step %d", last_dir, state["epoch"], state["step"])
    else:
        if accelerator.is_main_process:
            for old in (last_dir, best_dir):
                shutil.rmtree(old, ignore_errors=True)
            run_dir.mkdir(parents=True, exist_ok=True)
            log_path.write_text("")
        state["initial"] = validation_metrics(model, data, config, accelerator.device, max_new_tokens, accelerator)
        if accelerator.is_main_process:
            append_log(log_path, {"kind": "initial", "checkpoint": str(source), **state["initial"]})
            logger.info("CE checkpoint %s on the validation clips: %s", source, _rounded(state["initial"]))
    accelerator.wait_for_everyone()
    policy, optimizer = accelerator.prepare(model, optimizer)
    model = accelerator.unwrap_model(policy)
    if resuming:
        set_rng_state(saved_state["rng"])

    def checkpoint(epoch_done: bool, metrics: dict | None = None) -> None:
        if accelerator.is_main_process:
            save_checkpoint(last_dir, model, run_config, tokenizer, extractors_dir=_extractors_of(source, data),
                            optimizer=optimizer, trainer_state={**state, "metrics": metrics or {}, "epoch_done": epoch_done})
        accelerator.wait_for_everyone()

    # 2. the loop
    bar = progress(total=total_steps, desc="scst", initial=state["step"]) if accelerator.is_main_process else None
    stopped = "finished"
    while state["epoch"] < sc.epochs and stopped == "finished":
        epoch, epoch_start = state["epoch"], time.perf_counter()
        sampler = EpochSampler(len(video_ids), config.train.seed, epoch, start=state["position"])
        loader = accelerator.prepare(DataLoader(_Clips(video_ids, data.train.features), batch_size=sc.batch_clips,
                                                sampler=sampler, collate_fn=collate_features,
                                                generator=torch.Generator().manual_seed(config.train.seed)))
        epoch_rows = []
        for clips in loader:
            row = _scst_step(model, policy, optimizer, accelerator, clips, reward, config, max_new_tokens, trainable)
            state["position"] += sc.batch_clips * accelerator.num_processes
            state["step"] += 1
            epoch_rows.append(row)
            if accelerator.is_main_process:
                append_log(log_path, {"kind": "step", "epoch": epoch, "step": state["step"], **row})
                bar.update(1)
                bar.set_postfix({"reward": f"{row['reward']:.1f}", "loss": f"{row['loss']:.3f}"}, refresh=False)
            if max_steps is not None and state["step"] >= max_steps:
                stopped = "max_steps"
                break
            if _any_process(accelerator, deadline.reached()):
                stopped = "deadline"
                break
            if config.train.save_every_steps and state["step"] % config.train.save_every_steps == 0:
                checkpoint(epoch_done=False)
        if stopped != "finished" and state["position"] < len(video_ids):  # mid-epoch: resume continues from here
            checkpoint(epoch_done=False)
            break
        # 3. end of epoch: the same greedy validation captions as the initial row, checkpoints
        state["epoch"], state["position"] = epoch + 1, 0
        means = pd.DataFrame(epoch_rows).mean().to_dict() if epoch_rows else {}
        metrics = {"kind": "epoch", "epoch": epoch, "step": state["step"], **{f"train_{k}": v for k, v in means.items()}}
        metrics.update(validation_metrics(model, data, config, accelerator.device, max_new_tokens, accelerator))
        metrics["seconds"] = round(time.perf_counter() - epoch_start, 2)
        improved = "quick_cider" in metrics and (state["best_cider"] is None or metrics["quick_cider"] > state["best_cider"])
        if improved:
            state["best_cider"] = metrics["quick_cider"]
        if accelerator.is_main_process:
            append_log(log_path, metrics)
            logger.info("SCST epoch %d: %s", epoch, _rounded(metrics))
        checkpoint(epoch_done=True, metrics=metrics)
        if accelerator.is_main_process and (improved or "quick_cider" not in metrics):
            copy_checkpoint(last_dir, best_dir)
        accelerator.wait_for_everyone()
    if bar is not None:
        bar.close()
    if state["epoch"] >= sc.epochs and not (last_dir / "config.json").is_file():
        checkpoint(epoch_done=True)  # scst.epochs=0: the CE weights, as the stage's last/
    if stopped == "deadline" and state["epoch"] >= sc.epochs:
        stopped = "finished"
    if stopped == "deadline" and accelerator.is_main_process:
        stop = record_stop(env.output_dir, "self-critical training",
                           done=f"{state['epoch']} of {sc.epochs} epochs and {state['step']} of {total_steps} SCST steps, "
                                f"saved in {last_dir}",
                           left=f"{total_steps - state['step']} SCST steps, to the end of epoch {sc.epochs}")
        logger.warning(stop.sentence())
    steps, history = read_log(log_path)
    return ScstResult(run_dir, last_dir, best_dir if (best_dir / "config.json").is_file() else None, source, steps,
                      history, state["initial"], state["step"], stopped)


def _scst_step(model, policy, optimizer, accelerator, clips: dict, reward: ConsensusCider, config: StudyConfig,
               max_new_tokens: int, trainable: list) -> dict[str, float]:
    """One optimizer step on one batch of clips; returns its statistics, averaged over the processes."""
    sc = config.scst
    device = accelerator.device
    clips = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in clips.items()}
    k = sc.num_samples
    # 1. k sampled captions per clip, their log-probabilities (with grad) and rewards (×100)
    sampled = sample_captions(model, clips, k, max_new_tokens, sc.temperature, policy=policy)
    sample_ids = [v for v in clips["video_ids"] for _ in range(k)]
    rewards = torch.as_tensor(reward.score_pairs([simple_tokenize(c) for c in sampled.captions], sample_ids),
                              dtype=torch.float32, device=device)  # (B*k,)
    greedy = None
    if sc.baseline == "greedy":
        captions = greedy_captions(model, clips, max_new_tokens)
        greedy = torch.as_tensor(reward.score_pairs([simple_tokenize(c) for c in captions], clips["video_ids"]),
                                 dtype=torch.float32, device=device)  # (B,)
    baseline = scst_baseline(rewards, k, greedy)
    # 2. the policy-gradient step, rewards in CIDEr-D units
    loss = scst_loss(sampled.log_probs, rewards / 100.0, baseline / 100.0)
    accelerator.backward(loss)
    if config.train.max_grad_norm > 0:
        accelerator.clip_grad_norm_(trainable, config.train.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    # 3. statistics
    stats = caption_stats(sampled.captions)
    distinct_per_clip = sum(len(set(sampled.captions[i:i + k])) for i in range(0, len(sampled.captions), k))
    values = torch.tensor([float(loss.detach()), float(rewards.mean()), float(baseline.mean()),
                           float(sampled.mask.sum(1).float().mean()), distinct_per_clip / len(clips["video_ids"]),
                           stats["repeated_bigrams"], stats["mean_length"]], device=device)
    values = accelerator.reduce(values, "mean") if accelerator.num_processes > 1 else values
    names = ("loss", "reward", "baseline", "sample_tokens", "distinct_per_clip", "sample_repeated_bigrams",
             "sample_length")
    return dict(zip(names, values.cpu().tolist()))


@torch.no_grad()
def validation_metrics(model, data: TrainingData, config: StudyConfig, device, max_new_tokens: int,
                       accelerator=None) -> dict[str, float]:
    """Greedy captions of the first `train.eval_clips` validation clips: quick CIDEr and the fluency guards.

    The same clips and decoding as the CE trainer's quick CIDEr; with several processes each captions
    every n-th clip and the captions are gathered, so every process returns the same metrics.
    """
    video_ids = list(data.validation_references)[: config.train.eval_clips]
    if data.validation is None or not video_ids:
        return {}
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator is not None else (0, 1)
    predictions = {}
    mine = video_ids[rank::world]
    for start in range(0, len(mine), config.generation.batch_size):
        chunk = mine[start: start + config.generation.batch_size]
        clips = collate_features([data.validation.features[v] for v in chunk])
        clips = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in clips.items()}
        predictions.update(zip(chunk, greedy_captions(model, clips, max_new_tokens)))
    if world > 1:
        from accelerate.utils import gather_object

        predictions = {k: v for part in gather_object([predictions]) for k, v in part.items()}
    captions = [predictions[v] for v in video_ids]
    stats = caption_stats(captions)
    return {"quick_cider": quick_cider(dict(zip(video_ids, captions)), {v: data.validation_references[v] for v in video_ids}),
            "distinct_captions": len(set(captions)), "repeated_bigrams": stats["repeated_bigrams"],
            "mean_length": stats["mean_length"]}


# ---------------------------------------------------------------------------------------------
# helpers


def _check_resumable(last_dir: Path, config: StudyConfig) -> None:
    """Raise ResumeMismatchError when `last_dir` was written with other `scst.*` settings."""
    saved = StudyConfig.from_json(last_dir / "config.json").scst
    differences = {f.name: (getattr(saved, f.name), getattr(config.scst, f.name)) for f in dataclasses.fields(saved)
                   if f.name not in HARMLESS_KEYS and getattr(saved, f.name) != getattr(config.scst, f.name)}
    if differences:
        listed = "; ".join(f"scst.{k}: {old!r} -> {new!r}" for k, (old, new) in differences.items())
        raise ResumeMismatchError(f"cannot resume from {last_dir}: it was trained with different settings ({listed}); "
                                  f"set scst.run_suffix=<new suffix> for a new run, or resume=False (`qvidcap train-scst "
                                  "--fresh`) to start it over")


def _extractors_of(source: Path, data: TrainingData) -> Path | None:
    """The feature extractors' state to copy into the SCST checkpoints: the CE checkpoint's, else the store's."""
    for candidate in (source / "extractors", data.store_dir / "extractors"):
        if candidate.is_dir():
            return candidate
    return None


def _parameter_groups(params: list, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only, as the CE trainer does."""
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


def _any_process(accelerator, flag: bool) -> bool:
    if accelerator.num_processes == 1:
        return flag
    return bool(accelerator.reduce(torch.tensor([float(flag)], device=accelerator.device), "sum").item() > 0)


def _rounded(metrics: dict) -> dict:
    return {k: round(v, 3) for k, v in metrics.items() if isinstance(v, float)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fresh", action="store_true", help="start over instead of resuming from <run>-scst/last")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many SCST steps")
    parser.add_argument("--init-checkpoint", default=None, help="CE checkpoint to start from (default: best of train.run_name)")


def main(args: argparse.Namespace, config: StudyConfig) -> int:
    from qvidcap.runtime.env import detect_environment

    env = detect_environment(config)
    result = train_scst(config, env, init_checkpoint=args.init_checkpoint, max_steps=args.max_steps, resume=not args.fresh)
    print(f"SCST from {result.init_checkpoint}: {result.step} steps ({result.stopped}); last: {result.last}; best: {result.best}")
    if result.initial:
        print("CE checkpoint:", {k: round(v, 3) for k, v in result.initial.items()})
    if not result.history.empty:
        print(result.history.round(4).to_string(index=False))
    return 0
