"""Finding things under Kaggle's `/kaggle/input`, whichever layout it mounts them in.

Kaggle has mounted attached sources in three ways: the older `/kaggle/input/<slug>`, and now
datasets at `/kaggle/input/datasets/<owner>/<slug>` and notebook outputs at
`/kaggle/input/notebooks/<user>/<slug>`. A fixed depth or a one-level glob finds nothing in one of
them, so every search here is a bounded recursive walk (a depth limit and a cap on folders visited,
so a huge attached dataset cannot stall a session) for known file and folder names, and a search
that finds nothing raises one sentence naming the roots searched and the names looked for.

The earlier version's outputs (`--resume-from OWNER/KERNEL`) are restored with
`restore_previous_outputs`, which the generated Kaggle kernel calls in one line.
"""
from __future__ import annotations

import logging
import os
import shutil
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from qvidcap.runtime import env as env_module
from qvidcap.runtime.deadline import STOP_FILE

logger = logging.getLogger(__name__)

MAX_DEPTH = 5  # folders below a source root: e.g. <slug>/vatex/json/train/state.json is 3 deep
MAX_DIRS = 5000  # folders listed per search at most
CONTAINERS = {"datasets": 2, "notebooks": 2}  # /kaggle/input/<container>/<owner>/<slug>: levels down to a source
SKIP_DIRS = {"videos", "__pycache__", "node_modules", "site-packages"}  # never listed (thousands of files)
OUTPUT_MARKERS = ("study_run.json", "features", "checkpoints")  # an earlier kit output folder holds one


class InputNotFoundError(FileNotFoundError):
    """Nothing with the names looked for under the roots searched."""


def input_dir() -> Path:
    """`/kaggle/input` (read when called, so tests can point `qvidcap.runtime.env.KAGGLE_INPUT` elsewhere)."""
    return env_module.KAGGLE_INPUT


def source_roots(base: Path | None = None) -> list[Path]:
    """One root per attached source, in every layout: `<slug>`, `datasets/<owner>/<slug>`, `notebooks/<user>/<slug>`."""
    base = input_dir() if base is None else Path(base)
    roots: list[Path] = []
    for child in _subdirs(base):
        levels = CONTAINERS.get(child.name)
        if levels is None:
            roots.append(child)
            continue
        layer = [child]
        for _ in range(levels):
            layer = [d for folder in layer for d in _subdirs(folder)]
        roots += layer
    return roots


def notebook_output_roots(kernel: str, base: Path | None = None) -> list[Path]:
    """Where the outputs of kernel `OWNER/SLUG` (or `SLUG`) are mounted, in both layouts, existing or not."""
    base = input_dir() if base is None else Path(base)
    owner, _, slug = kernel.strip("/").rpartition("/")
    roots = [base / "notebooks" / owner / slug] if owner else []
    if not owner:
        roots += sorted((base / "notebooks").glob(f"*/{slug}"))
    return roots + [base / slug]


def walk(root: Path, max_depth: int = MAX_DEPTH, budget: list[int] | None = None,
         skip: Iterable[str] = SKIP_DIRS) -> Iterator[tuple[Path, list[str], list[str]]]:
    """(folder, subfolders, files) breadth first, at most `max_depth` below `root`, hidden and `skip` folders
    not entered; `budget` ([folders left]) is shared by the walks of one search and stops them all when spent."""
    budget = [MAX_DIRS] if budget is None else budget
    skip = set(skip)
    queue = deque([(Path(root), 0)])
    while queue:
        if budget[0] <= 0:
            logger.warning("stopped searching under %s after visiting the maximum of %d folders", root, MAX_DIRS)
            return
        folder, depth = queue.popleft()
        budget[0] -= 1
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue
        dirs = [e.name for e in entries if _is_dir(e) and not e.name.startswith(".")]
        files = [e.name for e in entries if not _is_dir(e)]
        yield folder, dirs, files
        if depth < max_depth:
            queue.extend((folder / d, depth + 1) for d in dirs if d not in skip)


def find_named(roots: Sequence[Path], names: Iterable[str], *, dirs: bool = False,
               max_depth: int = MAX_DEPTH) -> list[Path]:
    """Every file (or folder, with `dirs`) called one of `names` under `roots`, nearest first per root."""
    names = set(names)
    budget = [MAX_DIRS]
    found: list[Path] = []
    for root in roots:
        for folder, subdirs, files in walk(root, max_depth, budget, skip=SKIP_DIRS - names):
            found += [folder / n for n in (subdirs if dirs else files) if n in names]
    return found


def not_found_message(what: str, roots: Sequence[Path], names: Iterable[str], hint: str = "") -> str:
    searched = ", ".join(str(r) for r in roots) or "no folders (nothing is attached)"
    return (f"No {what} found: searched {searched} (up to {MAX_DEPTH} folders deep) for "
            f"{', '.join(sorted(set(names)))}" + (f"; {hint}" if hint else "") + ".")


# ---------------------------------------------------------------- earlier outputs of the kit


def is_output_dir(folder: Path) -> bool:
    """A kit output folder: it holds features/, checkpoints/ or a study_run.json."""
    return folder.is_dir() and any((folder / m).exists() for m in OUTPUT_MARKERS)


def find_outputs(roots: Sequence[Path]) -> Path | None:
    """The first kit output folder under `roots` (an `outputs/` folder preferred to any other that qualifies)."""
    budget = [MAX_DIRS]
    for root in roots:
        folders = walk(root, MAX_DEPTH, budget, skip=SKIP_DIRS | {"features", "checkpoints"})  # not into the bulk
        candidates = [folder for folder, subdirs, files in folders if any(m in subdirs or m in files for m in OUTPUT_MARKERS)]
        named = [c for c in candidates if c.name == "outputs"]
        if named or candidates:
            return (named or candidates)[0]
    return None


@dataclass(frozen=True)
class Restored:
    source: Path  # the earlier version's output folder
    target: Path
    copied: int  # files copied
    kept: int  # files already in target, left as they were

    def sentence(self) -> str:
        return (f"Restored {self.copied} files of the previous version's outputs from {self.source} into "
                f"{self.target} ({self.kept} already there were kept).")


def copy_outputs(source: Path, target: Path | str) -> Restored:
    """Copy a kit output folder into `target` without overwriting anything there; a failed copy raises.
    The earlier run's deadline note stays behind: the new run starts without it."""
    target = Path(target)
    copied = kept = 0
    for folder, _, files in os.walk(source):
        destination = target / Path(folder).relative_to(source)
        destination.mkdir(parents=True, exist_ok=True)
        for name in files:
            if Path(folder) == source and name == STOP_FILE:
                continue
            if (destination / name).exists():
                kept += 1
                continue
            shutil.copy2(Path(folder) / name, destination / name)
            copied += 1
    return Restored(Path(source), target, copied, kept)


def restore_previous_outputs(kernel: str, target: Path | str = "/kaggle/working/outputs",
                             base: Path | None = None) -> Restored:
    """Copy the outputs of the earlier version of kernel `OWNER/SLUG` into `target`, without overwriting.

    Looks where Kaggle mounts notebook outputs in either layout; raises InputNotFoundError naming the
    paths searched when none holds kit outputs, and lets any failed copy raise. The earlier version's
    deadline note is not restored: the new version starts without it.
    """
    roots = notebook_output_roots(kernel, base)
    source = find_outputs([r for r in roots if r.is_dir()])
    if source is None:
        others = [r for r in source_roots(base) if r not in roots]
        raise InputNotFoundError(not_found_message(
            f"outputs of the earlier version of {kernel}", roots, OUTPUT_MARKERS,
            f"attached sources seen: {', '.join(str(r) for r in others) or 'none'}; attach the kernel's output "
            f"(kernel_sources, `qvidcap kaggle push --resume-from {kernel}`) or push without --resume-from"))
    restored = copy_outputs(source, target)  # raises on a failed copy
    logger.info(restored.sentence())
    return restored


def _subdirs(folder: Path) -> list[Path]:
    try:
        return sorted(Path(e.path) for e in os.scandir(folder) if _is_dir(e) and not e.name.startswith("."))
    except OSError:
        return []


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False
