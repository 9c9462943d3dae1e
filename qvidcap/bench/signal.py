"""Is the default profile's learning signal robust? Trained against caption-blind CIDEr over seeds and CPU threads.

    qvidcap bench signal [--seeds 0,1,2,3,4] [--threads 1,2,4] [--set KEY=VALUE ...]

On the default profile the backbones are random, so the only evidence that the pipeline learns is the
distance between the trained model and the caption-blind baseline (the one training caption that scores
best on every clip). One run is one draw: the seed sets the initialisation and the batch order, and the
CPU thread count changes the order of floating-point sums, which a long training run amplifies. Each
(seed, threads) run here trains from the stored features in its own process (fresh thread pools), captions
the public test and scores it with the official protocol; the table says, per run, whether it clears the
study's bar: trained at least twice the blind CIDEr and the lower end of its 95% interval above the upper
end of the blind baseline's. Results go to `<output>/bench/signal.jsonl`; finished runs are not redone.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from qvidcap.config import StudyConfig, apply_overrides

RATIO_BAR = 2.0  # the study's bar: trained CIDEr at least this many times the blind baseline's


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seeds", default="0,1,2,3,4", help="train.seed values, comma-separated")
    parser.add_argument("--threads", default="1,2,4", help="torch CPU thread counts, comma-separated")
    parser.add_argument("--tag", default="", help="a name for this configuration (kept with its rows)")
    parser.add_argument("--one", nargs=2, type=int, metavar=("SEED", "THREADS"), help=argparse.SUPPRESS)


def run_name(tag: str, seed: int, threads: int) -> str:
    return f"signal{'-' + tag if tag else ''}-s{seed}-t{threads}"


def measure_one(config: StudyConfig, seed: int, threads: int, tag: str = "") -> dict:
    """Train one (seed, threads) run from the stored features, caption the public test, score it and the blind baseline."""
    import torch

    from qvidcap.evaluation.baselines import blind_baseline
    from qvidcap.evaluation.evaluate import generate_captions, open_feature_store, split_clips, train_references
    from qvidcap.evaluation.intervals import bootstrap_intervals
    from qvidcap.evaluation.metrics import score_captions
    from qvidcap.model.checkpoint import load_captioner
    from qvidcap.runtime.env import detect_environment
    from qvidcap.training.train import train

    torch.set_num_threads(threads)
    config = apply_overrides(config, {"train.seed": seed, "train.run_name": run_name(tag, seed, threads)})
    env = detect_environment(config)
    start = time.perf_counter()
    result = train(config, env, resume=False)
    seconds = time.perf_counter() - start
    model, _, _ = load_captioner(result.best or result.last, env.device)
    store = open_feature_store(config, env)
    clips = split_clips(config, env, "public_test", store)
    video_ids = list(clips.references)
    trained = generate_captions(model, store, video_ids, config.generation, env.device)
    blind = blind_baseline(train_references(config, env), config.eval.blind_candidates, config.eval.blind_pool_clips,
                           config.eval.seed)
    row = {"tag": tag, "seed": seed, "threads": threads, "train_s": round(seconds, 1),
           "distinct_captions": len(set(trained.values())), "clips": len(video_ids)}
    for name, predictions in (("trained", trained), ("blind", blind.predictions(video_ids))):
        scores = score_captions(predictions, clips.references, dataset=clips.dataset, split="public_test")
        cider = next(i for i in bootstrap_intervals(scores.per_clip, scores.corpus) if i.metric == "CIDEr")
        row.update({name: cider.estimate, f"{name}_low": cider.low, f"{name}_high": cider.high})
    return row


def signal_table(rows: list[dict]) -> pd.DataFrame:
    """One row per run: CIDEr of trained and blind with intervals, their ratio, and whether the run clears the bar."""
    table = pd.DataFrame(rows)
    table["ratio"] = table["trained"] / table["blind"]
    table["clears"] = (table["ratio"] >= RATIO_BAR) & (table["trained_low"] > table["blind_high"])
    return table


def signal_summary(table: pd.DataFrame) -> str:
    """One sentence over all runs: median and worst ratio, how many clear the bar."""
    worst = table.loc[table["ratio"].idxmin()]
    cleared = int(table["clears"].sum())
    verdict = ("every run clears the bar" if cleared == len(table)
               else f"{len(table) - cleared} of {len(table)} runs miss the bar")
    return (f"{len(table)} runs: trained/blind CIDEr ratio median {table['ratio'].median():.2f}, "
            f"lowest {worst['ratio']:.2f} (seed {int(worst['seed'])}, {int(worst['threads'])} threads); "
            f"{verdict} (ratio >= {RATIO_BAR:g} and trained interval above blind's).")


def read_rows(path: Path, tag: str) -> list[dict]:
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("tag", "") == tag]


def main(args: argparse.Namespace, config: StudyConfig) -> int:
    from qvidcap.runtime.env import detect_environment

    if args.one:
        print(json.dumps(measure_one(config, *args.one, tag=args.tag)))
        return 0
    path = Path(detect_environment(config).output_dir) / "bench" / "signal.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    done = {(r["seed"], r["threads"]) for r in read_rows(path, args.tag)}
    overrides = [f"--set={k}={v}" for k, v in _config_overrides(config).items()]
    for threads in (int(t) for t in args.threads.split(",")):
        for seed in (int(s) for s in args.seeds.split(",")):
            if (seed, threads) in done:
                continue
            env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
            done_run = subprocess.run([sys.executable, "-m", "qvidcap.cli", "bench", *overrides, "signal",
                                       "--tag", args.tag, "--one", str(seed), str(threads)],
                                      env=env, capture_output=True, text=True)
            if done_run.returncode != 0:  # say why, and keep the runs already written
                tail = "\n".join(done_run.stderr.strip().splitlines()[-15:])
                raise RuntimeError(f"the run of seed {seed} with {threads} threads failed (exit {done_run.returncode}); "
                                   f"the rows already in {path} are kept and a rerun skips them. Its last lines:\n{tail}")
            out = done_run.stdout
            row = json.loads(out.strip().splitlines()[-1])
            with path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"seed {seed}, {threads} threads: trained {row['trained']:.1f}, blind {row['blind']:.1f} "
                  f"({row['train_s']:.0f} s)", flush=True)
    table = signal_table(read_rows(path, args.tag))
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(table.round(2).to_string(index=False))
    print(signal_summary(table))
    return 0


def _config_overrides(config: StudyConfig) -> dict:
    """The settings of `config` that differ from the defaults, to hand to each run's process."""
    from qvidcap.config import changed_settings

    return {k: (",".join(map(str, v)) if isinstance(v, (list, tuple)) else v) for k, v in changed_settings(config).items()}
