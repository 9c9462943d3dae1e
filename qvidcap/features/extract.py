"""The extraction step: every clip of a split through the extractors into the feature store.

Decoding runs on a thread pool ahead of the models; clips already in the store are skipped (a re-run
costs nothing, an interrupted one continues); clips that cannot be decoded are recorded in the store's
`failures.jsonl` and skipped. With several workers (one per GPU), worker i takes every num_workers-th
clip and writes its own shards, holding a lock on its worker index so two processes never write the
same shard names. `qvidcap extract` runs it from a terminal, and under `accelerate launch` each
process takes its rank as its worker index (no process group is needed: the ranks never wait on one
another). Between batches the study's deadline is checked: at the deadline the shards written so far
are kept, the stop is recorded (clips done and left) and the call returns; the next call continues.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from qvidcap.config import StudyConfig
from qvidcap.data.records import ClipRecord
from qvidcap.runtime.env import Environment
from qvidcap.features.extractors import Extractors, build_extractors
from qvidcap.features.store import FeatureStore, FeatureStoreError
from qvidcap.runtime.deadline import STOP_FILE, Deadline, read_stop, record_stop
from qvidcap.runtime.progress import progress
from qvidcap.video import VideoDecodeError, sample_clips

logger = logging.getLogger(__name__)

STAGE = "extraction"  # the stage name in the deadline note
DEFAULT_SPLITS = ("train", "validation", "public_test")


@dataclass
class ExtractionReport:
    """What one extraction call did."""

    split: str
    store: Path
    worker_index: int
    num_workers: int
    clips: int  # clips of the split in this worker's slice
    already_stored: int  # skipped because the store had them
    extracted: int
    failed: int
    seconds: float
    failures: list[dict] = field(default_factory=list)  # this run's: video_id, reason, path
    stopped: bool = False  # the deadline was reached before this worker's slice was done
    extractors: Extractors | None = field(default=None, repr=False)  # reuse them for the next split

    @property
    def clips_per_second(self) -> float:
        return self.extracted / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> dict:
        """One row for a table of splits."""
        return {"split": self.split, "clips": self.clips, "already stored": self.already_stored,
                "extracted": self.extracted, "failed": self.failed, "seconds": round(self.seconds, 1),
                "clips/s": round(self.clips_per_second, 1)}


def store_root(env: Environment, dataset: str) -> Path:
    """`<output_dir>/features/<dataset>`: one store per dataset, all splits in it."""
    return env.output_dir / "features" / dataset


def dataset_stamp(config: StudyConfig, dataset: str) -> str:
    """What a store's features depend on besides the extractors: the mini dataset's pictures (it is
    regenerated whenever its config or generator changes, under the same videoIDs); "" for VATEX."""
    if dataset != "mini":
        return ""
    from qvidcap.data.minidata import pictures_hash

    return pictures_hash(config.data)


def drop_stale_features(config: StudyConfig, store: FeatureStore, dataset: str) -> None:
    """Empty a mini-dataset store whose features were made from other pictures (a VATEX store is never touched:
    its videos do not change, and its features cost hours)."""
    stamp = dataset_stamp(config, dataset)
    if stamp and store.meta and store.dataset_stamp != stamp:
        logger.info("the mini dataset changed since the features in %s were made; extracting them again", store.root)
        store.clear()


def open_store_for(config: StudyConfig, env: Environment, dataset: str, device: str,
                   extractors: Extractors | None = None) -> tuple[FeatureStore, Extractors]:
    """The dataset's store and the extractors that fill it: the store's own saved ones when it has them."""
    store = FeatureStore(store_root(env, dataset))
    if extractors is None:
        saved = store.extractors_dir
        if (saved / "extractors.json").is_file():
            extractors = build_extractors(config, device, weights_dir=saved)
        else:
            extractors = build_extractors(config, device)
    store.initialise(extractors.describe(), dataset_stamp(config, dataset))  # refuses other extractors
    if not (store.extractors_dir / "extractors.json").is_file():
        _save_once(extractors, store.extractors_dir)
    return store, extractors


def _save_once(extractors: Extractors, directory: Path) -> None:
    """Save into a private folder, then rename it into place: concurrent workers never mix files."""
    tmp = directory.with_name(f"{directory.name}.tmp{os.getpid()}")
    extractors.save(tmp)
    try:
        os.rename(tmp, directory)
    except OSError:  # another worker got there first with the same extractors
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


def extract_features(config: StudyConfig, env: Environment, split: str, *, worker_index: int = 0,
                     num_workers: int = 1, clips: list[ClipRecord] | None = None,
                     extractors: Extractors | None = None, dataset: str | None = None) -> ExtractionReport:
    """Extract this worker's slice of a split into `<output_dir>/features/<dataset>`.

    `clips` defaults to `qvidcap.data.load_clips(config, env, split).records`; `extractors` to the
    store's saved ones (or new ones from the config); `dataset` to the clips' source ("mini", "vatex").
    """
    if not 0 <= worker_index < num_workers:
        raise ValueError(f"worker_index must be in 0..{num_workers - 1}, got {worker_index}")
    if clips is None:
        from qvidcap.data import load_clips
        from qvidcap.data.vatex import OPTIONAL_SPLITS

        clip_set = load_clips(config, env, split, missing_ok=split in OPTIONAL_SPLITS)
        clips, dataset = clip_set.records, dataset or clip_set.source
    dataset = dataset or config.data.source
    deadline = Deadline.from_env()
    mine = sorted(clips, key=lambda r: r.video_id)[worker_index::num_workers]
    stored = FeatureStore(store_root(env, dataset))
    drop_stale_features(config, stored, dataset)
    todo = [r for r in mine if r.video_id not in stored]
    report = ExtractionReport(split, stored.root, worker_index, num_workers, len(mine), len(mine) - len(todo), 0, 0, 0.0,
                              extractors=extractors)
    if not todo:  # nothing to do: not even the models are loaded
        logger.info("%s: all %d clips already in %s", split, len(mine), stored.root)
        return report
    if deadline.reached():
        report.stopped = True
        _note_stop(env, stored, split, clips, deadline)
        return report
    store, extractors = open_store_for(config, env, dataset, env.device, extractors)
    report.extractors = extractors
    start = time.perf_counter()
    batch, waiting = [], {}  # waiting: videoID -> video file to delete once its features are in a shard
    with _worker_lock(store, worker_index), store.writer(worker_index, config.features.shard_clips) as writer:
        decoded = sample_clips(((r.video_id, r.video_path) for r in todo if r.video_path is not None),
                               config.sampling, config.features.num_workers,
                               prefetch=2 * config.features.batch_clips)
        for record in todo:
            if record.video_path is None:
                _fail(store, report, record.video_id, "no video file for this videoID", None)
        try:
            for video_id, result in progress(decoded, desc=f"extract {split}",
                                             total=sum(r.video_path is not None for r in todo)):
                if isinstance(result, VideoDecodeError):
                    _fail(store, report, video_id, result.reason, result.path)
                    continue
                batch.append(result)
                if len(batch) >= config.features.batch_clips:
                    report.extracted += _extract_batch(extractors, batch, writer, store, report)
                    if config.features.delete_videos:
                        waiting.update({clip.video_id: clip.path for clip in batch})
                        _delete_stored_videos(store, waiting)
                    batch = []
                    if deadline.reached():  # between batches: what is extracted is flushed below
                        report.stopped = True
                        break
        finally:
            decoded.close()  # stops the decoding threads when the loop ends early
        if not report.stopped:
            report.extracted += _extract_batch(extractors, batch, writer, store, report)
        waiting.update({clip.video_id: clip.path for clip in batch} if config.features.delete_videos else {})
    if waiting:  # the writer has flushed its last shard
        _delete_stored_videos(store, waiting)
    report.seconds = time.perf_counter() - start
    if report.stopped:
        _note_stop(env, store, split, clips, deadline)
    logger.info("%s: %d clips extracted (%.1f clips/s), %d already stored, %d failed%s -> %s", split,
                report.extracted, report.clips_per_second, report.already_stored, report.failed,
                ", stopped at the deadline" if report.stopped else "", store.root)
    return report


@contextlib.contextmanager
def _worker_lock(store: FeatureStore, worker_index: int):
    """Hold `shards/.wNN.lock` while writing: a second process with the same worker index fails at once.

    flock is released by the kernel when the holder dies, so a killed run never leaves a stale lock.
    """
    try:
        import fcntl
    except ImportError:  # no flock (Windows): one writer per worker index is then the caller's care
        yield
        return
    store.shard_dir.mkdir(parents=True, exist_ok=True)
    path = store.shard_dir / f".w{worker_index:02d}.lock"
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise FeatureStoreError(
                f"worker {worker_index} of the feature store {str(store.root)!r} is being written by another "
                f"process (pid {handle.read().strip() or '?'}); give each process its own --worker-index "
                "(accelerate launch does) or wait for it to finish") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _note_stop(env: Environment, store: FeatureStore, split: str, clips: list[ClipRecord],
               deadline: Deadline) -> None:
    """Record (or extend) this run's deadline note: per split, clips in the store and clips left."""
    store.refresh()
    failed = {f["video_id"] for f in store.failures}
    ids = {r.video_id for r in clips}
    done = len(ids & set(store.video_ids))
    left = len(ids) - done - len(ids & failed)
    parts = {split: (f"{split}: {done} of {len(ids)} clips stored", f"{split}: {left} clips")}
    previous = read_stop(env.output_dir)
    if previous is not None and previous.stage == STAGE and deadline.at is not None and previous.when >= deadline.at:
        earlier = dict(zip([p.split(":")[0] for p in previous.done.split(", ")],
                           zip(previous.done.split(", "), previous.left.split(", "))))
        parts = {**earlier, **parts}  # this run's earlier splits, then this one (fresh numbers)
    done_text = ", ".join(d for d, _ in parts.values())
    left_text = ", ".join(l for _, l in parts.values())
    # written whole, then renamed: several ranks may note their stop at the same moment
    env.output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=env.output_dir, prefix=".stop") as tmp:
        record_stop(tmp, STAGE, done_text, left_text)
        os.replace(Path(tmp) / STOP_FILE, env.output_dir / STOP_FILE)
    logger.warning("deadline reached during extraction: %s stored; left: %s", done_text, left_text)


def _extract_batch(extractors: Extractors, batch: list, writer, store: FeatureStore, report: ExtractionReport) -> int:
    """Extract a batch; if the models fail on it, retry clip by clip so only the clip at fault is skipped."""
    try:
        results = extractors.extract(batch)
    except Exception as e:  # e.g. out of memory on one huge frame, or a frame size a model rejects
        if len(batch) == 1:
            _fail(store, report, batch[0].video_id, f"feature extraction failed: {type(e).__name__}: {e}", batch[0].path)
            return 0
        logger.warning("batch of %d clips failed (%s); retrying them one by one", len(batch), type(e).__name__)
        return sum(_extract_batch(extractors, [clip], writer, store, report) for clip in batch)
    for features in results:
        writer.add(features)
    return len(batch)


def _delete_stored_videos(store: FeatureStore, waiting: dict[str, str]) -> None:
    """`features.delete_videos` (Colab's small disk): a video goes only once its clip is in a written shard,
    so a crash never loses a clip's video before its features are safe."""
    store.refresh()
    for video_id in [v for v in waiting if v in store]:
        Path(waiting.pop(video_id)).unlink(missing_ok=True)


def _fail(store: FeatureStore, report: ExtractionReport, video_id: str, reason: str, path: str | None) -> None:
    logger.warning("skipping %s: %s", video_id, reason)
    store.record_failure(video_id, reason, path)
    report.failed += 1
    report.failures.append({"video_id": video_id, "reason": reason, "path": path})


def launcher_rank() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) when started by `accelerate launch` / torchrun, else None."""
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        return None
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--split", action="append", default=None,
                        help="split to extract (repeatable; default: train, validation and public_test)")
    parser.add_argument("--worker-index", type=int, default=None,
                        help="this worker's slice of the clips (default: the process index under accelerate launch, else 0)")
    parser.add_argument("--num-workers", type=int, default=None,
                        help="how many workers share the clips (default: the process count under accelerate launch, else 1)")


def main(args: argparse.Namespace, config: StudyConfig) -> int:
    from qvidcap.runtime.env import detect_environment

    launched = launcher_rank()
    worker_index = args.worker_index if args.worker_index is not None else (launched[0] if launched else 0)
    num_workers = args.num_workers if args.num_workers is not None else (launched[1] if launched else 1)
    if launched and config.device in ("auto", "cuda"):
        import torch

        if torch.cuda.is_available():
            config.device = f"cuda:{launched[2]}"  # one GPU per process
    env = detect_environment(config)
    extractors = None
    stopped = False
    for split in args.split or DEFAULT_SPLITS:  # after the deadline each split only adds itself to the note
        report = extract_features(config, env, split, worker_index=worker_index, num_workers=num_workers,
                                  extractors=extractors)
        extractors, stopped = report.extractors, stopped or report.stopped
        print(f"{split}: {report.summary()}")
        for failure in report.failures:
            print(f"  failed {failure['video_id']}: {failure['reason']}")
    stop = read_stop(env.output_dir) if stopped else None
    if stop is not None:
        print(stop.sentence())
    return 0
