"""Caption a split from stored features with a trained checkpoint, score it, and score the baselines beside it.

Everything lands in `<output>/eval/<train.run_name>/<split>/`:

    metrics.json          the comparison: every system's scores ×100 and distinct-caption share (collapse),
                          the scored set, the blind caption, generation settings, checkpoint, clips left
                          out (no features)
    clip_ids.txt          the exact clips scored (the same set for every system)
    trained/              predictions.json ([{"videoID", "caption"}]), scores.json, per_clip.csv, clip_ids.txt
    blind/, untrained/    the same for the two baselines (see qvidcap.evaluation.baselines)

The scored set is the split's clips that have features in the store and at least one reference;
clips without features are listed in metrics.json, never silently dropped.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd

from qvidcap.evaluation.analysis import diversity
from qvidcap.evaluation.baselines import BlindBaseline, blind_baseline, untrained_captioner
from qvidcap.config import GenerationConfig, StudyConfig
from qvidcap.runtime.env import Environment
from qvidcap.evaluation.metrics import CaptionScores, ScoringError, score_captions
from qvidcap.runtime.progress import progress

logger = logging.getLogger(__name__)

SYSTEMS = ("trained", "blind", "untrained")
COLUMNS = ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "SPICE"]


@dataclass
class SplitClips:
    """The clips of a split that can be scored: references of those with features, and those left out."""

    dataset: str  # "mini" or "vatex"
    split: str
    references: dict[str, list[str]]  # videoID -> reference captions, in the split's order
    missing_features: list[str] = field(default_factory=list)
    records: list = field(default_factory=list, repr=False)  # the ClipRecords of the scored clips


@dataclass
class EvaluationReport:
    dataset: str
    split: str
    directory: Path  # <output>/eval/<run_name>/<split>
    checkpoint: str
    scores: dict[str, CaptionScores]  # system -> scores, same scored set for all
    predictions: dict[str, dict[str, str]]  # system -> videoID -> caption
    blind: BlindBaseline | None = None
    missing_features: list[str] = field(default_factory=list)

    def table(self) -> pd.DataFrame:
        """Systems as rows, metrics ×100 as columns (SPICE only where it ran)."""
        rows = {name: s.corpus for name, s in self.scores.items()}
        table = pd.DataFrame.from_dict(rows, orient="index")
        return table[[c for c in COLUMNS if c in table.columns]].round(2)

    @property
    def metrics_path(self) -> Path:
        return self.directory / "metrics.json"


def eval_dir(config: StudyConfig, env: Environment, split: str) -> Path:
    return Path(env.output_dir) / "eval" / config.train.run_name / split


def split_clips(config: StudyConfig, env: Environment, split: str, store) -> SplitClips:
    """The split's clips with references and stored features; the rest are named, not dropped silently."""
    from qvidcap.data.vatex import load_clips

    clip_set = load_clips(config, env, split)
    stored = set(store.video_ids)
    records = [r for r in clip_set.records if any(c.strip() for c in r.captions)]
    if clip_set.records and not records:
        raise ScoringError(f"the {split} split has no reference captions (VATEX's private test has none), "
                           "so it cannot be scored; evaluate validation or public_test")
    missing = [r.video_id for r in records if r.video_id not in stored]
    if missing:
        logger.warning("%d of %d %s clips have no stored features and are left out of the scored set",
                       len(missing), len(records), split)
    records = [r for r in records if r.video_id in stored]
    if not records:
        raise RuntimeError(f"no {split} clip has both references and stored features in {store.root}; "
                           "extract features first (qvidcap extract)")
    return SplitClips(clip_set.source, split, {r.video_id: list(r.captions) for r in records},
                      missing, records)


def generate_captions(model, store, video_ids: Sequence[str], generation: GenerationConfig, device: str = "cpu",
                      desc: str = "captioning") -> dict[str, str]:
    """videoID -> caption for `video_ids`, read from the feature store and generated in batches of
    `generation.batch_size` clips (beam search with `generation.num_beams`, greedy when 1)."""
    from qvidcap.features.clip_features import collate_features

    batch_size = max(1, generation.batch_size)
    captions: dict[str, str] = {}
    model.eval()
    with progress(total=len(video_ids), desc=desc) as bar:
        for first in range(0, len(video_ids), batch_size):
            batch = collate_features([store.get(v) for v in video_ids[first:first + batch_size]])
            texts = model.generate(
                temporal=batch["temporal"].to(device), context=batch["context"].to(device),
                objects=batch["objects"].to(device), object_mask=batch["object_mask"].to(device),
                num_beams=generation.num_beams, max_new_tokens=generation.max_new_tokens,
            )
            captions.update(zip(batch["video_ids"], texts))
            bar.update(len(texts))
    return captions


def save_predictions(predictions: dict[str, str], path: str | Path) -> Path:
    """Predictions in the VATEX-style list form `[{"videoID": ..., "caption": ...}]`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([{"videoID": v, "caption": c} for v, c in predictions.items()], indent=1))
    return path


def load_predictions(path: str | Path) -> dict[str, str]:
    return {item["videoID"]: item["caption"] for item in json.loads(Path(path).read_text())}


def evaluate(config: StudyConfig, env: Environment, *, checkpoint: str | Path | None = None, split: str | None = None,
             baselines: bool = True) -> EvaluationReport:
    """Caption `split` (default `eval.split`) with the checkpoint (default: `eval.checkpoint`, else the
    best of `train.run_name`), score it, and score the blind and untrained baselines on the same clips."""
    from qvidcap.model.checkpoint import find_checkpoint, load_captioner

    split = split or config.eval.split
    path = Path(checkpoint) if checkpoint else find_checkpoint(config, env.output_dir)
    model, model_config, tokenizer = load_captioner(path, env.device)
    store = open_feature_store(config, env)
    clips = split_clips(config, env, split, store)
    video_ids = list(clips.references)
    predictions = {"trained": generate_captions(model, store, video_ids, config.generation, env.device,
                                                desc=f"captioning {split}")}
    blind = None
    if baselines:
        blind = blind_baseline(train_references(config, env), config.eval.blind_candidates,
                               config.eval.blind_pool_clips, config.eval.seed)
        predictions["blind"] = blind.predictions(video_ids)
        del model  # one model in memory at a time (a pretrained decoder is large)
        _free_accelerator_memory(env.device)
        untrained = untrained_captioner(model_config, tokenizer, config.eval.seed).to(env.device)
        predictions["untrained"] = generate_captions(untrained, store, video_ids, config.generation, env.device,
                                                     desc="captioning (untrained)")
    scores = {name: score_captions(system_predictions, clips.references, spice=config.eval.spice,
                                   dataset=clips.dataset, split=split)
              for name, system_predictions in predictions.items()}
    report = EvaluationReport(clips.dataset, split, eval_dir(config, env, split), str(path), scores, predictions,
                              blind, clips.missing_features)
    save_report(report, config)
    return report


def save_report(report: EvaluationReport, config: StudyConfig) -> Path:
    """Every system's predictions and scores in its folder, then `metrics.json`; returns its path.
    Folders of systems this report lacks (from an earlier run with baselines) are removed."""
    for name in SYSTEMS:
        if name not in report.scores and (report.directory / name).is_dir():
            shutil.rmtree(report.directory / name)
    for name, scores in report.scores.items():
        save_predictions(report.predictions[name], report.directory / name / "predictions.json")
        scores.save(report.directory / name)
    return write_metrics(report, config)


def load_report(config: StudyConfig, env: Environment, split: str | None = None) -> EvaluationReport:
    """The evaluation of `split` saved by `evaluate` (notebook 06 or `qvidcap evaluate`), read back."""
    split = split or config.eval.split
    directory = eval_dir(config, env, split)
    if not (directory / "metrics.json").is_file():
        raise FileNotFoundError(f"no evaluation of {split!r} at {directory}; run notebook 06 or "
                                f"`qvidcap evaluate --split {split}` first")
    metrics = json.loads((directory / "metrics.json").read_text())
    scores = {name: CaptionScores.load(directory / name) for name in metrics["systems"]}
    predictions = {name: load_predictions(directory / name / "predictions.json") for name in metrics["systems"]}
    return EvaluationReport(metrics["dataset"], split, directory, metrics["checkpoint"], scores, predictions,
                            None, metrics.get("missing_features", []))


def open_feature_store(config: StudyConfig, env: Environment):
    """The store of the configured dataset (`<output>/features/<mini|vatex>`, after any fallback to mini)."""
    from qvidcap.data.vatex import resolve_dataset
    from qvidcap.features.store import FeatureStore

    return FeatureStore(Path(env.output_dir) / "features" / resolve_dataset(config, env).name)


def write_metrics(report: EvaluationReport, config: StudyConfig) -> Path:
    """`metrics.json`: the one file a test or a reader checks (and `clip_ids.txt` beside it)."""
    first = next(iter(report.scores.values()))
    report.directory.mkdir(parents=True, exist_ok=True)
    (report.directory / "clip_ids.txt").write_text("\n".join(first.scored_set.video_ids) + "\n")
    summary = {
        "dataset": report.dataset,
        "split": report.split,
        "scored_set": first.to_dict()["scored_set"],
        "clip_ids_file": "clip_ids.txt",
        "systems": {name: s.corpus for name, s in report.scores.items()},
        "diversity": {name: diversity(p) for name, p in report.predictions.items()},  # collapse shows here
        "skipped": {name: s.skipped for name, s in report.scores.items() if s.skipped},
        "notes": first.notes,
        "checkpoint": report.checkpoint,
        "generation": {"num_beams": config.generation.num_beams, "max_new_tokens": config.generation.max_new_tokens},
        "blind_caption": report.blind.caption if report.blind else None,
        "missing_features": report.missing_features,
    }
    report.metrics_path.write_text(json.dumps(summary, indent=2))
    logger.info("wrote %s", report.metrics_path)
    return report.metrics_path


def _free_accelerator_memory(device: str) -> None:
    import gc

    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def train_references(config: StudyConfig, env: Environment) -> dict[str, list[str]]:
    """videoID -> captions of the training split: what the blind baseline chooses its caption from."""
    from qvidcap.data.vatex import load_clips

    return {r.video_id: list(r.captions) for r in load_clips(config, env, "train").records}


# ---------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", default=None, help="checkpoint directory (default: eval.checkpoint, "
                        "else <output>/checkpoints/<train.run_name>/best)")
    parser.add_argument("--split", default=None, help="split to caption and score (default: eval.split)")
    parser.add_argument("--no-baselines", action="store_true", help="score the checkpoint only")


def main(args: argparse.Namespace, config: StudyConfig) -> int:
    from qvidcap.runtime.env import detect_environment

    env = detect_environment(config)
    report = evaluate(config, env, checkpoint=args.checkpoint, split=args.split, baselines=not args.no_baselines)
    first = next(iter(report.scores.values()))
    print(f"scored set: {first.scored_set.describe()}")
    print(report.table().to_string())
    for note in first.notes:
        print(f"note: {note}")
    print(f"written: {report.metrics_path}")
    return 0
