"""Caption a split from stored features with a trained checkpoint, score it, and score the baselines beside it.

Everything lands in `<output>/eval/<train.run_name>/<split>/`:

    metrics.json          the comparison: every system's scores ×100 and distinct-caption share (collapse),
                          the scored set, the blind caption, generation settings, checkpoint, clips left
                          out (no features)
    clip_ids.txt          the exact clips scored (the same set for every system)
    trained/              predictions.json ([{"videoID", "caption"}]), scores.json, per_clip.csv, clip_ids.txt
    blind/, untrained/    the same for the two baselines (see qvidcap.evaluation.baselines)
    scst/                 the same for the self-critical checkpoint `<train.run_name>-scst/best`, when one
                          exists (`qvidcap train-scst`): scored on the same clips, in its own row, and
                          tested against the cross-entropy checkpoint ("scst - trained" in metrics.json)

The scored set is the split's clips that have features in the store and at least one reference
(the first `eval.max_clips` of them when that is set); clips without features are listed in
metrics.json, never silently dropped.

Long runs: captioning checks the study's deadline (`QVIDCAP_DEADLINE`) between batches and saves what it
has in `<system>/predictions.partial.rankR.json`; a rerun continues from those files. Under
`accelerate launch` / torchrun (RANK, WORLD_SIZE) each rank captions a disjoint shard
(`video_ids[rank::world]`) into `<system>/predictions.rankR-of-W.json`; rank 0 waits for the others'
files, merges them and scores; the other ranks return None.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd

from qvidcap.evaluation.analysis import diversity
from qvidcap.evaluation.baselines import BlindBaseline, blind_baseline, untrained_captioner
from qvidcap.config import GenerationConfig, StudyConfig
from qvidcap.runtime.deadline import Deadline, record_stop
from qvidcap.runtime.env import Environment
from qvidcap.evaluation.metrics import CaptionScores, ScoringError, score_captions
from qvidcap.runtime.progress import progress

logger = logging.getLogger(__name__)

SYSTEMS = ("trained", "blind", "untrained", "scst")
SCST_SYSTEM = "scst"  # the CIDEr-optimised checkpoint, reported apart from the cross-entropy one
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


def scst_checkpoint(config: StudyConfig, env: Environment) -> Path | None:
    """The best checkpoint of the self-critical run `<train.run_name><scst.run_suffix>`; None when there is none."""
    from qvidcap.training.scst import scst_run_dir

    best = scst_run_dir(config, env.output_dir) / "best"
    return best if (best / "config.json").is_file() else None


def scst_note(config: StudyConfig, env: Environment, ce_checkpoint: str | Path) -> str:
    """One sentence (Markdown): which SCST checkpoint is scored and what it was fine-tuned from, or that
    there is none and the command that makes it."""
    from qvidcap.training.scst import scst_run_dir

    path = scst_checkpoint(config, env)
    if path is None:
        return (f"No self-critical (SCST) checkpoint exists at `{scst_run_dir(config, env.output_dir) / 'best'}`, so only "
                f"the cross-entropy model is scored; `qvidcap train-scst` (or notebook 05 with "
                f"`overrides=\"scst.enabled=true\"`) makes it from `{ce_checkpoint}`, and this notebook then scores it here.")
    state_file = path / "trainer_state.json"
    state = json.loads(state_file.read_text()) if state_file.is_file() else {}
    source = state.get("init_checkpoint", "")
    same = bool(source) and Path(source).resolve() == Path(ce_checkpoint).resolve()
    origin = (f"fine-tuned from the cross-entropy checkpoint scored above (`{source}`)" if same else
              f"fine-tuned from `{source or 'an unrecorded checkpoint'}`, **not** the cross-entropy checkpoint scored "
              f"above (`{ce_checkpoint}`), so the paired test compares two unrelated runs")
    return f"The SCST checkpoint `{path}` ({state.get('epoch', '?')} SCST epochs) is scored too, {origin}."


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
    if config.eval.max_clips > 0:
        records = records[: config.eval.max_clips]
    if not records:
        raise RuntimeError(f"no {split} clip has both references and stored features in {store.root}; "
                           "extract features first (qvidcap extract)")
    return SplitClips(clip_set.source, split, {r.video_id: list(r.captions) for r in records},
                      missing, records)


def generate_captions(model, store, video_ids: Sequence[str], generation: GenerationConfig, device: str = "cpu",
                      desc: str = "captioning") -> dict[str, str]:
    """videoID -> caption for `video_ids`, read from the feature store and generated in batches of
    `generation.batch_size` clips (beam search with `generation.num_beams`, greedy when 1)."""
    return caption_clips(model, store, video_ids, generation, device, desc).predictions


@dataclass
class CaptionRun:
    predictions: dict[str, str]  # videoID -> caption, in the order asked (those captioned so far)
    complete: bool  # False when the deadline stopped it; the rest is in the partial file's rerun


def caption_clips(model, store, video_ids: Sequence[str], generation: GenerationConfig, device: str = "cpu",
                  desc: str = "captioning", *, partial: Path | None = None, resume: dict[str, str] | None = None,
                  meta: dict | None = None, deadline: Deadline | None = None) -> CaptionRun:
    """Caption `video_ids` in batches of `generation.batch_size`; those in `resume` are kept, not redone.

    With `partial`, what is captioned so far is saved there after every batch (with `meta`, which a rerun
    checks); with `deadline`, it stops between batches once the deadline is reached."""
    from qvidcap.features.clip_features import collate_features

    batch_size = max(1, generation.batch_size)
    done = {v: resume[v] for v in video_ids if resume and v in resume}
    todo = [v for v in video_ids if v not in done]
    model.eval()
    complete = True
    with progress(total=len(video_ids), desc=desc, initial=len(done)) as bar:
        for first in range(0, len(todo), batch_size):
            if deadline is not None and deadline.reached():
                complete = False
                break
            batch = collate_features([store.get(v) for v in todo[first:first + batch_size]])
            texts = model.generate(
                temporal=batch["temporal"].to(device), context=batch["context"].to(device),
                objects=batch["objects"].to(device), object_mask=batch["object_mask"].to(device),
                num_beams=generation.num_beams, max_new_tokens=generation.max_new_tokens,
            )
            done.update(zip(batch["video_ids"], texts))
            bar.update(len(texts))
            if partial is not None:
                _write_json(partial, {**(meta or {}), "predictions": done})
    return CaptionRun({v: done[v] for v in video_ids if v in done}, complete)


def shard_of(video_ids: Sequence[str], rank: int, world: int) -> list[str]:
    """Rank `rank`'s disjoint share of `video_ids` (every world-th clip, so shards differ by at most one)."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in 0..{world - 1} (world size {world})")
    return list(video_ids[rank::world])


def launcher_rank() -> tuple[int, int]:
    """(rank, world size) under `accelerate launch` / torchrun (RANK, WORLD_SIZE), else (0, 1)."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    return 0, 1


def _write_json(path: Path, value) -> None:
    """Write through a temporary file and rename: a reader (or a kill) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value))
    tmp.replace(path)


def _partial_predictions(directory: Path, meta: dict) -> dict[str, str]:
    """Every partial or shard file of an earlier run in `directory` made with the same `meta` (checkpoint,
    generation settings), merged: a rerun continues from them whatever the earlier world size was."""
    found: dict[str, str] = {}
    for path in sorted(directory.glob("predictions.partial.rank*.json")) + sorted(directory.glob("predictions.rank*-of-*.json")):
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError):
            logger.warning("ignoring unreadable %s", path)
            continue
        if {k: saved.get(k) for k in meta} != meta:
            logger.warning("ignoring %s: made with %s, not %s", path, {k: saved.get(k) for k in meta}, meta)
            continue
        found.update(saved["predictions"])
    return found


def generation_meta(config: StudyConfig, checkpoint: str | Path) -> dict:
    """What partial and shard files must match to be reused: the checkpoint and the generation settings."""
    g = config.generation
    return {"checkpoint": str(checkpoint), "num_beams": g.num_beams, "max_new_tokens": g.max_new_tokens}


def caption_split(model, store, video_ids: Sequence[str], directory: Path, generation: GenerationConfig,
                  meta: dict, device: str = "cpu", rank: int = 0, world: int = 1,
                  deadline: Deadline | None = None, desc: str = "captioning") -> CaptionRun:
    """This rank's shard of `video_ids` captioned into `directory` (one system's folder), continuing from
    earlier partial files made with the same `meta` and stopping at `deadline`. A finished shard is
    saved as `predictions.rankR-of-W.json`, its partial file removed."""
    mine = shard_of(video_ids, rank, world)
    resume = _partial_predictions(directory, meta)
    if resume:
        logger.info("%s: continuing from %d saved captions", directory, len(set(resume) & set(mine)))
    partial = directory / f"predictions.partial.rank{rank}.json"
    run = caption_clips(model, store, mine, generation, device, desc, partial=partial, resume=resume, meta=meta,
                        deadline=deadline)
    if run.complete:
        _write_json(directory / f"predictions.rank{rank}-of-{world}.json", {**meta, "predictions": run.predictions})
        partial.unlink(missing_ok=True)
    return run


def merge_shards(directory: Path, video_ids: Sequence[str], world: int, meta: dict, wait_s: float = 0.0,
                 deadline: Deadline | None = None, poll_s: float = 5.0) -> dict[str, str] | None:
    """videoID -> caption from every rank's shard file, in the order of `video_ids`.

    Waits up to `wait_s` (and not past `deadline`) for the other ranks' files; returns None when one is
    still missing then. A file made with other `meta`, or one that does not cover its shard, is an error."""
    paths = [directory / f"predictions.rank{r}-of-{world}.json" for r in range(world)]
    until = time.time() + wait_s
    while not all(p.is_file() for p in paths):
        if time.time() >= until or (deadline is not None and deadline.reached()):
            logger.warning("%s: no shard file %s yet", directory, ", ".join(p.name for p in paths if not p.is_file()))
            return None
        time.sleep(poll_s)
    merged: dict[str, str] = {}
    for rank, path in enumerate(paths):
        saved = json.loads(path.read_text())
        made_with = {k: saved.get(k) for k in meta}
        if made_with != meta:
            raise RuntimeError(f"{path} was made with {made_with}, not {meta}; delete it and caption that shard again")
        shard = shard_of(video_ids, rank, world)
        lacking = [v for v in shard if v not in saved["predictions"]]
        if lacking:
            raise RuntimeError(f"{path} lacks {len(lacking)} of its {len(shard)} clips (e.g. {lacking[0]}); "
                               "delete it and caption that shard again")
        merged.update({v: saved["predictions"][v] for v in shard})
    return {v: merged[v] for v in video_ids}


def _clear_shards(directory: Path) -> None:
    for path in [*directory.glob("predictions.partial.rank*.json"), *directory.glob("predictions.rank*-of-*.json")]:
        path.unlink(missing_ok=True)


def save_predictions(predictions: dict[str, str], path: str | Path) -> Path:
    """Predictions in the VATEX-style list form `[{"videoID": ..., "caption": ...}]`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([{"videoID": v, "caption": c} for v, c in predictions.items()], indent=1))
    return path


def load_predictions(path: str | Path) -> dict[str, str]:
    return {item["videoID"]: item["caption"] for item in json.loads(Path(path).read_text())}


def evaluate(config: StudyConfig, env: Environment, *, checkpoint: str | Path | None = None, split: str | None = None,
             baselines: bool = True, scst: bool = True, rank: int | None = None, world: int | None = None,
             shard_wait_s: float = 6 * 3600.0) -> EvaluationReport | None:
    """Caption `split` (default `eval.split`) with the checkpoint (default: `eval.checkpoint`, else the
    best of `train.run_name`), score it, and score the blind and untrained baselines on the same clips;
    with `scst`, also the self-critical checkpoint (`scst_checkpoint`) when one exists.

    Returns None when the deadline stopped it (what is captioned is saved; the same call continues) and
    on every rank but 0 of a multi-process run (`rank`, `world`: default from the launcher's variables)."""
    from qvidcap.model.checkpoint import find_checkpoint, load_captioner

    split = split or config.eval.split
    if rank is None or world is None:
        rank, world = launcher_rank()
    deadline = Deadline.from_env()
    path = Path(checkpoint) if checkpoint else find_checkpoint(config, env.output_dir)
    model, model_config, tokenizer = load_captioner(path, env.device)
    store = open_feature_store(config, env)
    clips = split_clips(config, env, split, store)
    video_ids = list(clips.references)
    directory = eval_dir(config, env, split)
    meta = generation_meta(config, path)
    names = ["trained", "untrained"] if baselines else ["trained"]
    scst_path = scst_checkpoint(config, env) if scst else None
    if scst_path is not None:
        names.append(SCST_SYSTEM)
    metas = {name: {**(generation_meta(config, scst_path) if name == SCST_SYSTEM else meta), "system": name}
             for name in names}
    runs: dict[str, CaptionRun] = {}
    for name in names:
        if name in ("untrained", SCST_SYSTEM):
            del model  # one model in memory at a time (a pretrained decoder is large)
            _free_accelerator_memory(env.device)
            model = (untrained_captioner(model_config, tokenizer, config.eval.seed, env.device) if name == "untrained"
                     else load_captioner(scst_path, env.device)[0])
        runs[name] = caption_split(model, store, video_ids, directory / name, config.generation,
                                   metas[name], env.device, rank, world, deadline,
                                   desc=f"captioning {split} ({name}, rank {rank} of {world})")
        if not runs[name].complete:
            done = ", ".join(f"{n} {len(r.predictions):,}" for n, r in runs.items())
            stop = record_stop(env.output_dir, "evaluation",
                               f"{split} captions saved for rank {rank}'s shard: {done} (of {len(video_ids):,} clips "
                               f"over {world} rank(s))", f"the rest of the {name} captions and the scoring")
            logger.warning(stop.sentence())
            return None
    del model
    if rank != 0:
        return None
    predictions: dict[str, dict[str, str]] = {}
    for name in names:
        merged = merge_shards(directory / name, video_ids, world, metas[name],
                              wait_s=shard_wait_s if world > 1 else 0.0, deadline=deadline)
        if merged is None:
            record_stop(env.output_dir, "evaluation", f"rank 0's share of the {split} captions",
                        f"the other ranks' {name} shards, then the scoring; run the evaluation again to merge")
            return None
        predictions[name] = merged
    blind = None
    if baselines:
        blind = blind_baseline(train_references(config, env), config.eval.blind_candidates,
                               config.eval.blind_pool_clips, config.eval.seed)
        predictions = {"trained": predictions["trained"], "blind": blind.predictions(video_ids),
                       **{name: predictions[name] for name in names if name != "trained"}}
    scores = {name: score_captions(system_predictions, clips.references, spice=config.eval.spice,
                                   dataset=clips.dataset, split=split)
              for name, system_predictions in predictions.items()}
    report = EvaluationReport(clips.dataset, split, directory, str(path), scores, predictions,
                              blind, clips.missing_features)
    save_report(report, config)
    for name in names:
        _clear_shards(directory / name)
    return report


# ---------------------------------------------------------------- SCST beside cross-entropy, and the summary

FLUENCY_REPEAT_SLACK = 0.02  # SCST may repeat a bigram in this much larger a share of captions and stay "fluent"
FLUENCY_LENGTH_RATIO = 0.25  # ... and differ in mean length by at most this fraction of the CE length
FLUENCY_DISTINCT_RATIO = 0.8  # ... and keep at least this share of the CE model's distinct captions


def fluency(predictions: dict[str, str]) -> dict[str, float]:
    """Distinct captions (count), share of captions that repeat a bigram, mean length in words."""
    from qvidcap.training.scst import caption_stats

    stats = caption_stats(list(predictions.values()))
    return {"distinct captions": diversity(predictions)["distinct_captions"],
            "repeated n-grams (share)": round(stats["repeated_bigrams"], 3), "mean length (words)": round(stats["mean_length"], 2)}


def scst_comparison(report: EvaluationReport, uncertainty: dict) -> pd.DataFrame:
    """The cross-entropy and SCST checkpoints on the same clips, one row each: scores, CIDEr's 95% interval,
    and the fluency guards. Empty when the report has no SCST system."""
    if SCST_SYSTEM not in report.scores:
        return pd.DataFrame()
    rows = {}
    for label, name in (("cross-entropy", "trained"), ("SCST", SCST_SYSTEM)):
        corpus, cider = report.scores[name].corpus, uncertainty["intervals"][name]["CIDEr"]
        rows[label] = {**{m: round(corpus[m], 2) for m in ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr")},
                       "CIDEr low": round(cider["low"], 2), "CIDEr high": round(cider["high"], 2),
                       **fluency(report.predictions[name])}
    return pd.DataFrame.from_dict(rows, orient="index")


def scst_verdict(report: EvaluationReport, uncertainty: dict) -> str:
    """Markdown: what SCST did to CIDEr (the paired test) and to the captions (the fluency guards), in words
    chosen by the numbers; without an SCST system, "" (the note from `scst_note` says why)."""
    table = scst_comparison(report, uncertainty)
    if table.empty:
        return ""
    test = uncertainty["paired_tests"][f"{SCST_SYSTEM} - trained"]
    ce, rl = table.loc["cross-entropy"], table.loc["SCST"]
    span = f"{test['difference']:+.1f} CIDEr (paired 95% interval {test['low']:+.1f} to {test['high']:+.1f}, p = {test['p_value']:.3g})"
    if test["low"] > 0:
        cider = f"SCST **raises** CIDEr over the cross-entropy checkpoint on the same {test['clips']} clips: {span}."
    elif test["high"] < 0:
        cider = f"SCST **lowers** CIDEr below the cross-entropy checkpoint on the same {test['clips']} clips: {span}."
    else:
        cider = f"SCST shows **no detectable difference** in CIDEr from the cross-entropy checkpoint: {span}."
    problems = []
    if rl["repeated n-grams (share)"] > ce["repeated n-grams (share)"] + FLUENCY_REPEAT_SLACK:
        problems.append(f"more captions repeat a bigram ({ce['repeated n-grams (share)']:.0%} → {rl['repeated n-grams (share)']:.0%})")
    if abs(rl["mean length (words)"] - ce["mean length (words)"]) > FLUENCY_LENGTH_RATIO * ce["mean length (words)"]:
        problems.append(f"the mean length moved from {ce['mean length (words)']:.1f} to {rl['mean length (words)']:.1f} words")
    if rl["distinct captions"] < FLUENCY_DISTINCT_RATIO * ce["distinct captions"]:
        problems.append(f"distinct captions fell from {int(ce['distinct captions'])} to {int(rl['distinct captions'])}")
    guards = (f"{int(ce['distinct captions'])} → {int(rl['distinct captions'])} distinct captions, "
              f"{ce['repeated n-grams (share)']:.0%} → {rl['repeated n-grams (share)']:.0%} of captions repeating a bigram, "
              f"mean length {ce['mean length (words)']:.1f} → {rl['mean length (words)']:.1f} words")
    fluent = (f"The captions stay fluent by the three guards ({guards})." if not problems else
              f"The captions **degrade**: {'; '.join(problems)} ({guards}); a CIDEr gain bought this way is reward hacking, "
              "not better captions.")
    caveat = (" This is the mini dataset with small random backbones: a gain here shows the stage working, not what it "
              "would buy on VATEX." if report.dataset == "mini" else "")
    return f"{cider} {fluent}{caveat}"


def evaluation_summary(report: EvaluationReport, uncertainty: dict) -> str:
    """Markdown for notebook 06's summary: the scored set, each system's CIDEr with its interval, the paired
    verdicts against the trained model, its distinct captions, and the SCST verdict when there is one."""
    first = report.scores["trained"]
    lines = [f"- Scored set: {first.scored_set.describe()}."]
    for name, scores in report.scores.items():
        bounds = uncertainty["intervals"][name]["CIDEr"]
        lines.append(f"- **{name}**: CIDEr {scores.corpus['CIDEr']:.1f} (95% interval {bounds['low']:.1f}-{bounds['high']:.1f}), "
                     f"BLEU-4 {scores.corpus['BLEU-4']:.1f}, METEOR {scores.corpus['METEOR']:.1f}, "
                     f"ROUGE-L {scores.corpus['ROUGE-L']:.1f}.")
    for key, test in uncertainty["paired_tests"].items():
        lines.append(f"- {test['sentence']}.")
    d = diversity(report.predictions["trained"])
    lines.append(f"- The trained model gives {d['distinct_captions']} distinct captions over {d['clips']} clips"
                 f"{' (collapsed)' if d['collapsed'] else ''}.")
    verdict = scst_verdict(report, uncertainty)
    if verdict:
        lines.append(f"- {verdict}")
    return "\n".join(lines)


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
    if first.scored_set.num_clips >= 2:  # 95% bootstrap intervals, and the trained model against each baseline
        from qvidcap.evaluation.intervals import report_intervals

        summary["uncertainty"] = report_intervals(report.scores, seed=config.eval.seed)
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
    if report is None:  # stopped at the deadline, or a rank other than 0 whose shard is saved
        print("captions saved; scoring left to rank 0 or to a rerun (see deadline_stop.json if the deadline stopped it)")
        return 0
    first = next(iter(report.scores.values()))
    print(f"scored set: {first.scored_set.describe()}")
    print(report.table().to_string())
    for note in first.notes:
        print(f"note: {note}")
    print(f"written: {report.metrics_path}")
    return 0
