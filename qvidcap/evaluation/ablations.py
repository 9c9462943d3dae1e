"""Ablations (notebook 09): what each part of the model is worth, with intervals, over several seeds.

A **variant** is the full model with one named set of config overrides (`VARIANTS`): a head switched off
(its definition is in `qvidcap.model.captioner`), the auxiliary losses weighted out, the original's single
cross-attention layer in place of the Q-Former blocks, fewer prefix queries, and on the GPU profiles a
frozen or a LoRA decoder. Every variant is trained by the study's own trainer (`qvidcap.training.train`)
as its own run (`<train.run_name>-<ablation.run_prefix>-<variant>-seed<s>`), on the same stored features,
with the same seed and the same schedule (`ablation.epochs`, `ablation.captions_per_epoch`, `ablation.lr`),
then captions the same clips of `ablation.split` with the same generation settings and is scored by
`qvidcap.evaluation.metrics.score_captions`. The full model is also trained once per seed of
`ablation.seeds`; the other variants use the first seed.

Each run's captions, scores (`per_clip.csv`, `scores.json`) and timings land in
`<output>/ablations/<train.run_name>/<split>/<variant>-seed<s>/`, and a rerun skips every run whose saved
result was made with the same settings; an unfinished training resumes. The study's deadline is honoured
between runs, inside training and between caption batches.

`results.json` beside them is what notebook 09 shows: per variant its CIDEr with a 95% bootstrap interval
over clips, its paired difference from the full model (paired bootstrap interval and sign-flip p-value,
`qvidcap.evaluation.intervals`) and a sentence computed from those numbers; the seeds' mean, standard
deviation and range; and the study's main result (notebook 06) as one draw beside them.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from qvidcap.config import StudyConfig, apply_overrides
from qvidcap.evaluation.analysis import diversity
from qvidcap.evaluation.evaluate import (EvaluationReport, caption_clips, load_predictions, open_feature_store,
                                         save_predictions, split_clips)
from qvidcap.evaluation.intervals import bootstrap_intervals, paired_test
from qvidcap.evaluation.metrics import CaptionScores, require_java, score_captions
from qvidcap.runtime.deadline import Deadline, record_stop
from qvidcap.runtime.env import Environment

logger = logging.getLogger(__name__)

REFERENCE = "full"
RESULTS = "results.json"
RUN_FILE = "run.json"


@dataclass(frozen=True)
class Variant:
    name: str
    label: str  # how tables and figures name it
    change: str  # what it changes, as the subject of a sentence ("removing the ObjectHead")
    overrides: Callable[[StudyConfig], dict[str, Any]]  # the config overrides, given the study's config
    gpu_only: bool = False  # listed and selectable everywhere; in the default list of the GPU profiles only


VARIANTS: dict[str, Variant] = {v.name: v for v in [
    Variant("full", "full model", "the full model", lambda c: {}),
    Variant("no_object_head", "without ObjectHead", "removing the ObjectHead",
            lambda c: {"heads.object_head": False, "train.object_weight": 0.0}),
    Variant("no_action_head", "without ActionHead", "removing the ActionHead",
            lambda c: {"heads.action_head": False, "train.action_weight": 0.0}),
    Variant("no_global_head", "without GlobalHead", "removing the GlobalHead",
            lambda c: {"heads.global_head": False, "train.global_weight": 0.0}),
    Variant("no_aux_losses", "without auxiliary losses", "dropping the three auxiliary losses",
            lambda c: {"train.object_weight": 0.0, "train.action_weight": 0.0, "train.global_weight": 0.0}),
    Variant("cross_attention", "one cross-attention layer", "the original's single cross-attention layer in place of "
            "the Q-Former blocks", lambda c: {"qformer.kind": "cross_attention"}),
    Variant("fewer_queries", "fewer prefix queries", "fewer prefix queries",
            lambda c: {"qformer.num_queries": c.ablation.fewer_queries}),
    Variant("frozen_decoder", "frozen decoder", "a frozen decoder", lambda c: {"decoder.train_mode": "frozen"},
            gpu_only=True),
    Variant("lora_decoder", "LoRA decoder", "a LoRA-adapted decoder", lambda c: {"decoder.train_mode": "lora"},
            gpu_only=True),
]}


def variant_label(config: StudyConfig, name: str) -> str:
    if name == "fewer_queries":
        return f"{config.ablation.fewer_queries} prefix queries (not {config.qformer.num_queries})"
    return VARIANTS[name].label


# ---------------------------------------------------------------- what runs


@dataclass(frozen=True)
class PlannedRun:
    variant: str
    seed: int

    @property
    def key(self) -> str:
        return f"{self.variant}-seed{self.seed}"


def check_variants(names: Sequence[str]) -> list[str]:
    """`names` in order, "full" first (the reference is always run); unknown names raise, listing the known ones."""
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown ablation variant(s) {unknown}; expected names from {list(VARIANTS)}")
    return [REFERENCE] + [n for n in dict.fromkeys(names) if n != REFERENCE]


def planned_runs(config: StudyConfig, variants: Sequence[str] | None = None,
                 seeds: Sequence[int] | None = None) -> list[PlannedRun]:
    """The full model at every seed, then each other variant at the first seed (default: the config's lists).

    A variant that changes nothing on this profile (a frozen decoder where the decoder is frozen already)
    is the full model: it is left out, with a log line."""
    names = check_variants(config.ablation.variants if variants is None else variants)
    seeds = list(config.ablation.seeds if seeds is None else seeds) or [config.train.seed]
    runs = [PlannedRun(REFERENCE, s) for s in dict.fromkeys(seeds)]
    for name in names[1:]:
        if same_as_full(config, name):
            logger.warning("ablation variant %r changes nothing on the %s profile: it is the full model, not run again",
                           name, config.profile)
        else:
            runs.append(PlannedRun(name, seeds[0]))
    return runs


def choose_runs(config: StudyConfig, variants: str = "", seeds: str = "") -> StudyConfig:
    """`config` with `ablation.variants` and `ablation.seeds` replaced by comma-separated lists, where given."""
    chosen = {"ablation.variants": variants} if variants else {}
    chosen.update({"ablation.seeds": seeds} if seeds else {})
    config = apply_overrides(config, chosen)
    check_variants(config.ablation.variants)
    return config


def same_as_full(config: StudyConfig, variant: str) -> bool:
    """True when `variant`'s overrides leave the full model's config as it is."""
    from qvidcap.training.train import resume_differences

    full = variant_config(config, REFERENCE, config.train.seed)
    return not resume_differences(full, variant_config(config, variant, config.train.seed))


def variant_config(config: StudyConfig, variant: str, seed: int) -> StudyConfig:
    """The study's config with the ablation schedule, `seed`, the variant's own run name and its overrides."""
    a = config.ablation
    schedule: dict[str, Any] = {"train.seed": seed, "train.eval_clips": a.eval_clips, "train.val_clips": a.val_clips,
                                "train.run_name": f"{config.train.run_name}-{a.run_prefix}-{variant}-seed{seed}",
                                "eval.checkpoint": ""}
    if a.epochs > 0:
        schedule["train.epochs"] = a.epochs
    if a.captions_per_epoch > 0:
        schedule["train.captions_per_epoch"] = a.captions_per_epoch
    if a.lr > 0:
        schedule["train.lr"] = a.lr
    return apply_overrides(config, {**schedule, **VARIANTS[variant].overrides(config)})


def schedule_of(config: StudyConfig) -> dict[str, Any]:
    """The training schedule that matters for comparing runs, in words a table can show."""
    t = config.train
    return {"epochs": t.epochs, "captions_per_epoch": t.captions_per_epoch or "all", "captions_per_clip": t.captions_per_clip,
            "lr": t.lr, "batch_size": t.batch_size}


def schedules_table(config: StudyConfig) -> pd.DataFrame:
    """The variants' schedule beside the main run's (notebook 05), as a reader compares them."""
    table = {"variants (ablation section)": schedule_of(variant_config(config, REFERENCE, config.train.seed)),
             "main run (train section)": schedule_of(config)}
    table["variants (ablation section)"]["checkpoint scored"] = config.ablation.checkpoint
    table["main run (train section)"]["checkpoint scored"] = "best (by quick CIDEr)"
    return pd.DataFrame(table).astype(str)


def ablation_dir(config: StudyConfig, env: Environment, split: str) -> Path:
    return Path(env.output_dir) / "ablations" / config.train.run_name / split


def ablation_split(config: StudyConfig) -> str:
    return config.ablation.split or config.eval.split


def run_signature(run_config: StudyConfig, split: str, checkpoint: str) -> dict:
    """What a saved result must have been made with to be reused: every setting that changes the weights
    (the trainer's resume check), what is scored and how it is captioned."""
    from qvidcap.training.train import HARMLESS_KEYS, RESUME_DATA_KEYS, RESUME_SECTIONS

    values = {f"{s}.{f.name}": getattr(getattr(run_config, s), f.name)
              for s in (*RESUME_SECTIONS, "generation") for f in dataclasses.fields(getattr(run_config, s))}
    values.update({k: getattr(getattr(run_config, k.split(".")[0]), k.split(".")[1]) for k in RESUME_DATA_KEYS})
    kept = {"train.run_name", "train.eval_clips", "train.val_clips"}  # harmless to weights, not to which is "best"
    values = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items() if k not in HARMLESS_KEYS or k in kept}
    return {**values, "split": split, "checkpoint": checkpoint, "eval.max_clips": run_config.eval.max_clips}


def plan_table(config: StudyConfig, env: Environment, variants: Sequence[str] | None = None,
               seeds: Sequence[int] | None = None) -> pd.DataFrame:
    """One row per planned run: the variant, its seed, the overrides that make it, and whether a result made
    with the same settings is already saved (it will be read back, not run again)."""
    directory = ablation_dir(config, env, ablation_split(config))
    rows = []
    for run in planned_runs(config, variants, seeds):
        run_config = variant_config(config, run.variant, run.seed)
        saved = (directory / run.key / RUN_FILE).is_file()
        rows.append({"run": run.key, "variant": variant_label(config, run.variant), "seed": run.seed,
                     "overrides": " ".join(f"{k}={v}" for k, v in VARIANTS[run.variant].overrides(config).items()) or "-",
                     "run name": run_config.train.run_name, "saved": saved})
    return pd.DataFrame(rows).set_index("run")


def variants_table(config: StudyConfig) -> pd.DataFrame:
    """Every variant the kit knows, with its overrides, and whether this profile's list runs it by default."""
    return pd.DataFrame([{"variant": name, "what": variant_label(config, name),
                          "overrides": " ".join(f"{k}={v}" for k, v in v.overrides(config).items()) or "-",
                          "in ablation.variants": name in config.ablation.variants,
                          "GPU profiles only": v.gpu_only} for name, v in VARIANTS.items()]).set_index("variant")


def main_evaluation(config: StudyConfig, env: Environment, split: str) -> EvaluationReport | None:
    """Notebook 06's evaluation of `split`: the main result and the caption-blind baseline. Made here on the
    default profile when it is missing; on a GPU profile where 06 has not run, None (and a warning): the
    variants are still compared with each other."""
    from qvidcap.evaluation.ensure import ensure_evaluation
    from qvidcap.runtime.bootstrap import MissingInputError

    try:
        return ensure_evaluation(config, env, split)
    except MissingInputError as e:
        logger.warning("%s; the main result and the caption-blind baseline are left out of the ablation", e)
        return None


# ---------------------------------------------------------------- running them


@dataclass
class RunResult:
    run: PlannedRun
    run_name: str
    checkpoint: str
    scores: CaptionScores
    predictions: dict[str, str]
    seconds: dict[str, float]  # train, caption, score (of the session that made it)
    schedule: dict[str, Any]
    reused: bool = False  # read back from an earlier run, not made by this call

    @property
    def cider(self) -> float:
        return float(self.scores.corpus["CIDEr"])


@dataclass
class AblationStudy:
    config: StudyConfig
    directory: Path
    split: str
    planned: list[PlannedRun]
    results: dict[str, RunResult] = field(default_factory=dict)  # PlannedRun.key -> result
    stopped: str = ""  # "" = every planned run is done; else why not

    @property
    def left(self) -> list[str]:
        return [r.key for r in self.planned if r.key not in self.results]


def run_ablations(config: StudyConfig, env: Environment, variants: Sequence[str] | None = None,
                  seeds: Sequence[int] | None = None) -> AblationStudy:
    """Train, caption and score every planned run not already done; stop cleanly at the study's deadline."""
    split = ablation_split(config)
    store = open_feature_store(config, env)
    clips = split_clips(config, env, split, store)
    study = AblationStudy(config, ablation_dir(config, env, split), split, planned_runs(config, variants, seeds))
    meteor = _SharedMeteor()
    try:
        _run_all(study, config, env, store, clips, meteor)
    finally:
        meteor.close()
    if study.stopped:
        done = ", ".join(study.results) or "none"
        stop = record_stop(env.output_dir, "ablations", f"runs finished and saved: {done}",
                           f"{', '.join(study.left)}; {study.stopped}")
        logger.warning(stop.sentence())
    return study


class _SharedMeteor:
    """One METEOR process for every run (loading it is most of a scoring's time), started before the first run
    that needs scoring trains, so that it loads meanwhile."""

    def __init__(self):
        self.scorer = None

    def start(self):
        if self.scorer is None:
            require_java()
            from pycocoevalcap.meteor.meteor import Meteor

            self.scorer = Meteor()
        return self.scorer

    def close(self) -> None:
        self.scorer = None  # the last reference: pycocoevalcap's Meteor ends its process when collected


def _run_all(study: AblationStudy, config: StudyConfig, env: Environment, store, clips, meteor) -> None:
    from qvidcap.model.checkpoint import find_checkpoint, load_captioner
    from qvidcap.training.train import ResumeMismatchError, prepare_training_data, train

    split, video_ids = study.split, list(clips.references)
    deadline, data = Deadline.from_env(), None
    for run in study.planned:
        run_config = variant_config(config, run.variant, run.seed)
        run_config, reuse_main = _main_run_if_same(config, run_config, env)
        directory = study.directory / run.key
        signature = run_signature(run_config, split, config.ablation.checkpoint)
        saved = load_run(directory, run, signature)
        if saved is not None:
            study.results[run.key] = saved
            continue
        if deadline.reached():
            study.stopped = f"the deadline came before {run.key}"
            return
        seconds = {}
        meteor.start()
        start = time.perf_counter()
        if not reuse_main:
            data = data or prepare_training_data(config, env)
            try:
                trained = train(run_config, env, resume=True, data=data)
            except ResumeMismatchError as e:
                logger.warning("%s: %s; training it afresh", run.key, e)
                trained = train(run_config, env, resume=False, data=data)
            if trained.stopped == "deadline":
                study.stopped = f"the deadline came while training {run.key} (its last checkpoint is saved)"
                return
        seconds["train"] = round(time.perf_counter() - start, 2)
        path = find_checkpoint(run_config, env.output_dir, config.ablation.checkpoint)
        model, _, _ = load_captioner(path, env.device)
        start = time.perf_counter()
        captioned = caption_clips(model, store, video_ids, config.generation, env.device,
                                  desc=f"captioning {split} ({run.key})", deadline=deadline)
        del model
        seconds["caption"] = round(time.perf_counter() - start, 2)
        if not captioned.complete:
            study.stopped = f"the deadline came while captioning {split} with {run.key}"
            return
        start = time.perf_counter()
        scores = score_captions(captioned.predictions, clips.references, dataset=clips.dataset, split=split,
                                meteor_scorer=meteor.scorer)
        seconds["score"] = round(time.perf_counter() - start, 2)
        result = RunResult(run, run_config.train.run_name, str(path), scores, captioned.predictions, seconds,
                           schedule_of(run_config))
        save_run(directory, result, signature)
        study.results[run.key] = result
        logger.info("%s: CIDEr %.1f (%s s)", run.key, result.cider, seconds)


def _main_run_if_same(config: StudyConfig, run_config: StudyConfig, env: Environment) -> tuple[StudyConfig, bool]:
    """When a run would train exactly what the study's main run trained (same schedule and seed, the full model)
    and that run has finished, score the main run's checkpoint instead of training it again."""
    from qvidcap.model.checkpoint import checkpoint_root
    from qvidcap.training.train import resume_differences

    if resume_differences(config, run_config):
        return run_config, False
    state = checkpoint_root(config, env.output_dir) / "last" / "trainer_state.json"
    if not state.is_file() or json.loads(state.read_text()).get("epoch", 0) < config.train.epochs:
        return run_config, False
    return apply_overrides(run_config, {"train.run_name": config.train.run_name}), True


def save_run(directory: Path, result: RunResult, signature: dict) -> None:
    """Predictions, scores and `run.json` (written last: a run without it is not done)."""
    directory.mkdir(parents=True, exist_ok=True)
    save_predictions(result.predictions, directory / "predictions.json")
    result.scores.save(directory)
    record = {"variant": result.run.variant, "seed": result.run.seed, "run_name": result.run_name,
              "checkpoint": result.checkpoint, "seconds": result.seconds, "schedule": result.schedule,
              "signature": signature}
    tmp = directory / (RUN_FILE + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str))
    tmp.replace(directory / RUN_FILE)


def load_run(directory: Path, run: PlannedRun, signature: dict | None = None) -> RunResult | None:
    """The saved result of `run`, or None when there is none or it was made with other settings."""
    path = directory / RUN_FILE
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    if signature is not None and record.get("signature") != json.loads(json.dumps(signature, default=str)):
        changed = sorted(k for k in set(signature) | set(record.get("signature", {}))
                         if record.get("signature", {}).get(k) != signature.get(k))
        logger.warning("%s was made with other settings (%s): running it again", directory, ", ".join(changed[:5]))
        return None
    return RunResult(run, record["run_name"], record["checkpoint"], CaptionScores.load(directory),
                     load_predictions(directory / "predictions.json"), record["seconds"], record["schedule"], True)


# ---------------------------------------------------------------- what the numbers say


def verdict(test: dict) -> str:
    """"lower" or "higher" when the paired interval excludes 0 and p < 0.05 (the variant against the full model),
    else "none"."""
    if test["low"] <= 0 <= test["high"] or test["p_value"] >= 0.05:
        return "none"
    return "lower" if test["high"] < 0 else "higher"


def effect_sentence(change: str, test: dict, variant_cider: float, full_cider: float, *,
                    collapsed: bool = False, full_collapsed: bool = False, random_features: bool = False) -> str:
    """One sentence on what the data support about `change`, from the paired test against the full model
    (`difference`, `low`, `high`, `p_value`, `clips`): an effect only when the paired interval excludes 0
    and the permutation test agrees (p < 0.05); "no detectable effect" when the interval contains 0."""
    d, low, high, p, n = test["difference"], test["low"], test["high"], test["p_value"], test["clips"]
    subject = change[0].upper() + change[1:]
    numbers = (f"CIDEr {variant_cider:.1f} against the full model's {full_cider:.1f}, difference {d:+.1f} "
               f"(95% interval {low:+.1f} to {high:+.1f}, p = {p:.2g}, {n} clips)")
    if low <= 0.0 <= high:
        sentence = f"{subject}: no detectable effect ({numbers})"
        if random_features:
            sentence += "; the features come from random backbones, which may carry nothing for this part to use"
    elif p >= 0.05:
        sentence = (f"{subject}: weak evidence at most ({numbers}): the interval excludes 0 but the permutation "
                    "test does not reject chance")
    elif high < 0:
        sentence = f"{subject} lowers the score ({numbers}): on these data the full model does better"
    else:
        sentence = f"{subject} raises the score ({numbers}): on these data the variant does better than the full model"
    if collapsed or full_collapsed:
        whose = "both models'" if collapsed and full_collapsed else ("its" if collapsed else "the full model's")
        sentence += (f"; but {whose} captions collapsed to nearly one sentence, so the difference is between fixed "
                     "sentences, not evidence about what the part does (the schedule is too short to tell)")
    return sentence + "."


def compare_variants(per_clip: dict[str, pd.Series], changes: dict[str, str] | None = None, *,
                     reference: str = REFERENCE, collapsed: dict[str, bool] | None = None,
                     random_features: bool = False, seed: int = 0) -> dict[str, dict]:
    """Per variant: CIDEr (the mean of its per-clip CIDEr, which is the corpus CIDEr-D), its 95% bootstrap
    interval, and for every variant but `reference` the paired test against it with the sentence.

    `per_clip` maps a variant to its per-clip CIDEr (indexed by videoID, the same clips for all)."""
    full = per_clip[reference]
    rows = {}
    for name, scores in per_clip.items():
        interval = bootstrap_intervals(scores.to_frame("CIDEr"), {"CIDEr": float(scores.mean())}, seed=seed)[0]
        row = {"CIDEr": interval.estimate, "interval": {"low": interval.low, "high": interval.high}}
        if name == reference:
            row["reference"] = True
        else:
            test = dataclasses.asdict(paired_test(scores, full, "CIDEr", seed=seed))
            row["paired_test"] = test
            row["sentence"] = effect_sentence((changes or {}).get(name, name), test, interval.estimate,
                                              float(full.mean()), collapsed=(collapsed or {}).get(name, False),
                                              full_collapsed=(collapsed or {}).get(reference, False),
                                              random_features=random_features)
        rows[name] = row
    return rows


def seed_summary(cider_by_seed: dict[int, float], main: dict | None = None, same_schedule: bool = False) -> dict:
    """Mean, standard deviation (n − 1) and range of the full model's CIDEr over seeds, and the study's main
    result (`{"CIDEr", "low", "high"}` or None) as one draw beside them, with a sentence."""
    values = np.array(list(cider_by_seed.values()), dtype=float)
    summary = {"runs": {str(k): v for k, v in cider_by_seed.items()}, "count": len(values),
               "mean": float(values.mean()), "sd": float(values.std(ddof=1)) if len(values) > 1 else None,
               "min": float(values.min()), "max": float(values.max())}
    spread = (f"mean {summary['mean']:.1f} ± {summary['sd']:.1f} (sd), range {summary['min']:.1f} to {summary['max']:.1f}"
              if summary["sd"] is not None else f"{summary['mean']:.1f} (one seed: no spread to read)")
    sentence = f"Full model over {len(values)} seed(s): CIDEr {spread}."
    if main is not None:
        inside = summary["min"] <= main["CIDEr"] <= summary["max"]
        sentence += (f" The study's main result, CIDEr {main['CIDEr']:.1f} (95% interval {main['low']:.1f} to "
                     f"{main['high']:.1f} over clips), is one draw of such a distribution")
        if same_schedule:
            sentence += f"; it lies {'inside' if inside else 'outside'} the seeds' range."
        else:
            sentence += ("; but it was trained on another schedule than the seeds here (see the schedules), so they "
                         "are not draws of one distribution: compare the spread, not the level.")
    return {**summary, "sentence": sentence}


def schedule_sentence(schedule: dict, main_schedule: dict | None, full: dict, blind: dict | None) -> str:
    """What the variants' schedule is, against the main run's, and whether the full model trained on it beats the
    caption-blind baseline (paired test `full["vs_blind"]`): if not, the variants' differences say little."""
    text = f"The variants train for {_epochs(schedule)} on {_captions(schedule)} per clip per epoch at lr {schedule['lr']:g}"
    if main_schedule is not None and main_schedule != schedule:
        text += (f"; the main run trained for {_epochs(main_schedule)} on {_captions(main_schedule)} at lr "
                 f"{main_schedule['lr']:g}, a different schedule")
    elif main_schedule is not None:
        text += ", the main run's schedule"
    text += f". On it the full model scores CIDEr {full['CIDEr']:.1f}"
    if blind is None or "vs_blind" not in full:
        return text + " (the caption-blind baseline has not been scored here: run notebook 06)."
    test = full["vs_blind"]
    text += (f" against the caption-blind baseline's {blind['CIDEr']:.1f} (difference {test['difference']:+.1f}, "
             f"95% interval {test['low']:+.1f} to {test['high']:+.1f})")
    if test["low"] > 0:
        return text + ": it has learnt to use the video, so its variants can be compared."
    return (text + ": it does not beat the baseline detectably, so this schedule is too short for the variants' "
            "differences to mean much; raise ablation.epochs.")


def _epochs(schedule: dict) -> str:
    return f"{schedule['epochs']} epoch" + ("s" if schedule["epochs"] != 1 else "")


def _captions(schedule: dict) -> str:
    n = schedule["captions_per_epoch"]
    return "all captions" if n == "all" else f"{n} caption" + ("s" if n != 1 else "")


def summarise(study: AblationStudy, main: EvaluationReport | None = None,
              main_config: StudyConfig | None = None) -> dict:
    """`results.json`'s content: the variants against the full model, the seeds, the main result (notebook
    06's evaluation `main` of the same split, if any) and the caption-blind baseline, the timings."""
    config, seed = study.config, study.config.eval.seed
    full = [r for r in study.planned if r.variant == REFERENCE]
    reference = study.results.get(full[0].key) if full else None
    done = {r.variant: study.results[r.key] for r in study.planned
            if r.key in study.results and (r.variant != REFERENCE or r == full[0])}
    out: dict[str, Any] = {"split": study.split, "complete": not study.left, "left": study.left,
                           "stopped": study.stopped, "variants": {}, "runs": {}}
    for key, result in study.results.items():
        out["runs"][key] = {"variant": result.run.variant, "seed": result.run.seed, "CIDEr": result.cider,
                            "corpus": result.scores.corpus, "seconds": result.seconds, "schedule": result.schedule,
                            "run_name": result.run_name, "diversity": diversity(result.predictions)}
    if reference is None:
        return out
    out["scored_set"] = {"description": reference.scores.scored_set.describe(),
                         "num_clips": reference.scores.scored_set.num_clips}
    out["schedule"] = reference.schedule
    collapsed = {name: out["runs"][r.run.key]["diversity"]["collapsed"] for name, r in done.items()}
    random_features = not (config.features.detector_model and config.features.clip_pretrained)
    rows = compare_variants({name: r.scores.per_clip["CIDEr"] for name, r in done.items()},
                            {name: VARIANTS[name].change for name in done}, collapsed=collapsed,
                            random_features=random_features, seed=seed)
    for name, row in rows.items():
        out["variants"][name] = {"label": variant_label(config, name), "seed": done[name].run.seed,
                                 "seconds": done[name].seconds, **row}
    main_result = blind = None
    if main is not None:
        main_result = _cider_of(main.scores["trained"], seed)
        if "blind" in main.scores:
            blind = _cider_of(main.scores["blind"], seed)
            ours, theirs = reference.scores.per_clip["CIDEr"], main.scores["blind"].per_clip["CIDEr"]
            if set(ours.index) == set(theirs.index):
                out["variants"][REFERENCE]["vs_blind"] = dataclasses.asdict(paired_test(ours, theirs, seed=seed))
    main_schedule = schedule_of(main_config) if main_config is not None else None
    same = main_schedule == reference.schedule and config.ablation.checkpoint == "best"
    out["seeds"] = seed_summary({r.seed: study.results[r.key].cider for r in full if r.key in study.results},
                                main_result, same)
    out["main_result"] = {**main_result, "schedule": main_schedule, "checkpoint": "best"} if main_result else None
    out["blind"] = blind
    out["schedule_sentence"] = schedule_sentence(reference.schedule, main_schedule, out["variants"][REFERENCE], blind)
    return out


def _cider_of(scores: CaptionScores, seed: int) -> dict:
    """CIDEr and its 95% bootstrap interval over clips, as metrics.json computes them."""
    interval = next(i for i in bootstrap_intervals(scores.per_clip, scores.corpus, seed=seed) if i.metric == "CIDEr")
    return {"CIDEr": interval.estimate, "low": interval.low, "high": interval.high}


def write_results(study: AblationStudy, main: EvaluationReport | None = None,
                  main_config: StudyConfig | None = None) -> dict:
    """`results.json` in the study's folder (see `summarise`); returns what it holds."""
    results = summarise(study, main, main_config)
    study.directory.mkdir(parents=True, exist_ok=True)
    (study.directory / RESULTS).write_text(json.dumps(results, indent=2, default=str))
    return results


def read_results(config: StudyConfig, env: Environment, split: str | None = None) -> dict:
    """The `results.json` that `write_results` saved for `split` (default `ablation.split`)."""
    path = ablation_dir(config, env, split or ablation_split(config)) / RESULTS
    if not path.is_file():
        raise FileNotFoundError(f"no ablation results at {path}; run notebook 09 (qvidcap.evaluation.ablations)")
    return json.loads(path.read_text())


def results_table(results: dict) -> pd.DataFrame:
    """One row per variant: CIDEr and its interval, the difference from the full model with its interval and
    p-value, the seed and the seconds it took."""
    rows = []
    for name, row in results["variants"].items():
        test = row.get("paired_test") or {}
        rows.append({"variant": row["label"], "CIDEr": row["CIDEr"], "low": row["interval"]["low"],
                     "high": row["interval"]["high"], "difference": test.get("difference", 0.0),
                     "diff low": test.get("low"), "diff high": test.get("high"), "p": test.get("p_value"),
                     "seconds": sum(row["seconds"].values())})
    return pd.DataFrame(rows).set_index("variant").round(2)


def sentences(results: dict) -> list[str]:
    return [row["sentence"] for row in results["variants"].values() if "sentence" in row]


def chapter_summary(results: dict) -> str:
    """Notebook 09's summary as Markdown bullets, from this run's own numbers."""
    variants = {k: v for k, v in results["variants"].items() if "paired_test" in v}
    groups = {kind: [row["label"] for row in variants.values() if verdict(row["paired_test"]) == kind]
              for kind in ("lower", "higher", "none")}
    seconds = [sum(r["seconds"].values()) for r in results["runs"].values()]
    lines = [f"- {results.get('schedule_sentence', 'The full model has not been scored.')}",
             f"- Of {len(variants)} variants against the full model ({results['scored_set']['description']}): "
             f"lower CIDEr detected for {_listed(groups['lower'])}, higher for {_listed(groups['higher'])}, "
             f"no detectable effect for {_listed(groups['none'])}.",
             f"- {results['seeds']['sentence']}",
             f"- {len(seconds)} runs, {sum(seconds):.0f} s in all here (median {np.median(seconds):.0f} s per run: "
             "training, captioning and scoring)."]
    if results["left"]:
        lines.append(f"- Not done yet: {', '.join(results['left'])} ({results['stopped']}); run the notebook again to "
                     "continue.")
    return "\n".join(lines)


def _listed(names: list[str]) -> str:
    return ", ".join(names) if names else "none"


# ---------------------------------------------------------------- what it costs


def cost_estimate(config: StudyConfig, env: Environment, results: dict | None = None) -> dict:
    """Seconds per variant: measured on the runs already done when there are some, else estimated from the
    main run's measured epochs (its log), scaled by the variants' epochs and captions per clip per epoch."""
    from qvidcap.model.checkpoint import checkpoint_root
    from qvidcap.training.train import read_log

    runs = list((results or {}).get("runs", {}).values())
    if not runs:  # the runs saved by an earlier call of this notebook, if any
        directory = ablation_dir(config, env, ablation_split(config))
        runs = [json.loads(p.read_text()) for p in sorted(directory.glob(f"*/{RUN_FILE}"))]
    measured = [sum(r["seconds"].values()) for r in runs if r["seconds"].get("train", 0) > 0]
    if measured:
        return {"seconds": float(np.median(measured)), "how": f"measured: median of {len(measured)} runs done here"}
    _, history = read_log(checkpoint_root(config, env.output_dir) / "log.jsonl")
    if history.empty or "seconds" not in history:
        return {"seconds": None, "how": "unknown: neither a variant nor the main run (notebook 05) has run here"}
    variant = variant_config(config, REFERENCE, config.train.seed)
    per_epoch = float(history["seconds"].median())
    ratio = (variant.train.epochs * _captions_per_epoch(variant)) / _captions_per_epoch(config)
    return {"seconds": per_epoch * ratio, "how": (f"estimated from the main run's epochs ({per_epoch:.0f} s each, "
                                                  f"validation included) x {ratio:.2f}; captioning and scoring not included")}


def _captions_per_epoch(config: StudyConfig) -> float:
    """Captions of each clip trained on per epoch (VATEX has 10 per clip when every caption is drawn)."""
    t = config.train
    return float(t.captions_per_epoch or t.captions_per_clip or 10)
