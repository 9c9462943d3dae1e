"""Run the numbered notebooks in order through papermill: `python -m qvidcap.runtime.study`.

This is what `./run_all.sh` calls locally and what the Kaggle kernel calls on a GPU. Each notebook is
written, executed, next to the outputs; the run stops at the first failing notebook and names it. The
notebooks skip work already done (extracted clips, finished epochs), so a study cut off by a session
limit continues where it stopped when it is started again.

With `--deadline-hours H` the study ends before a session limit instead of being killed by it: the
deadline goes into the environment the notebook kernels inherit, every long loop stops at it and
records what it stopped with, and the runner then ends with exit code 0 and one sentence saying what
is done, what is left and the command that continues.
"""
from __future__ import annotations

import argparse
import json
import logging
import resource
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from qvidcap.runtime.deadline import Deadline, clear_stop, read_stop

logger = logging.getLogger(__name__)

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"  # qvidcap/runtime/study.py -> the checkout
# the kernel's own start-up warnings (e.g. "running over TCP without encryption", once per notebook) are noise
# in the study's log; the notebooks' own warnings and errors still reach their outputs
QUIET_KERNEL = ["--IPKernelApp.log_level=ERROR"]


@dataclass
class NotebookRun:
    name: str
    seconds: float
    ok: bool


@dataclass
class StudyRun:
    """What one call of the runner did: the notebooks run and, when it stopped early, why and what is left."""

    runs: list[NotebookRun] = field(default_factory=list)
    stopped: str = ""  # "" = every notebook ran; else the sentence printed at the stop
    left: list[str] = field(default_factory=list)  # notebooks not finished, in order

    def __iter__(self):
        return iter(self.runs)

    def __len__(self) -> int:
        return len(self.runs)

    def __getitem__(self, index: int) -> NotebookRun:
        return self.runs[index]


class NotebookFailed(RuntimeError):
    """A notebook of the study raised; the executed copy holds the traceback."""


def resolve_output_dir(profile: str, overrides: str) -> Path:
    """The output folder the notebooks will use for this profile and overrides (as `setup_notebook` finds it)."""
    from qvidcap.config import load_config
    from qvidcap.runtime.env import detect_environment

    config = load_config(profile, overrides)
    if config.paths.output_dir:
        return Path(config.paths.output_dir)
    config.device = "cpu"  # only the folders are wanted here: do not insist on a GPU
    return detect_environment(config).output_dir


def continue_command(profile: str, overrides: str, start_from: str, *, end_at: str = "", executed_dir: Path | None = None,
                     output_dir: Path | None = None, kernel_name: str = "", deadline_hours: float | None = None,
                     notebook_dir: Path | None = None) -> str:
    """The command line that runs the study again from notebook `start_from`."""
    parts = ["python", "-m", "qvidcap.runtime.study", "--profile", profile]
    if notebook_dir is not None and Path(notebook_dir) != NOTEBOOK_DIR:
        parts += ["--notebook-dir", str(notebook_dir)]
    for item in overrides.split():
        parts += ["--set", item]
    parts += ["--from", start_from] + (["--to", end_at] if end_at else [])
    if executed_dir is not None:
        parts += ["--executed-dir", str(executed_dir)]
    if output_dir is not None:
        parts += ["--output-dir", str(output_dir)]
    if kernel_name:
        parts += ["--kernel", kernel_name]
    if deadline_hours:
        parts += ["--deadline-hours", f"{deadline_hours:g}"]
    return shlex.join(parts)


def run_study(profile: str = "smoke", overrides: str = "", *, notebook_dir: Path = NOTEBOOK_DIR,
              executed_dir: Path = Path("outputs"), start_from: str = "00", end_at: str = "99",
              kernel_name: str = "qvidcap", output_dir: Path | None = None, deadline_hours: float | None = None,
              started_at: float | None = None, log=print) -> StudyRun:
    """Run notebooks `start_from`..`end_at` (by number); stop cleanly at the deadline.

    `output_dir` is passed to the notebooks as `paths.output_dir` (default: the one they resolve
    themselves). `deadline_hours` counts from `started_at` (default now); without it a deadline
    already in the environment (QVIDCAP_DEADLINE) is kept.
    """
    import os

    import papermill

    os.environ["QVIDCAP_HEADLESS"] = "1"  # the kernels inherit it: text progress bars, see qvidcap.runtime.progress
    if deadline_hours is not None:
        Deadline.in_hours(deadline_hours, started_at).export()
    deadline = Deadline.from_env()
    user_overrides = overrides
    if output_dir is not None:
        overrides = f"{overrides} paths.output_dir={output_dir}".strip()
    outputs = Path(output_dir) if output_dir is not None else resolve_output_dir(profile, overrides)
    outputs.mkdir(parents=True, exist_ok=True)
    clear_stop(outputs)  # a stop note of an earlier run says nothing about this one
    executed_dir.mkdir(parents=True, exist_ok=True)
    result = StudyRun()
    notebooks = [p for p in sorted(notebook_dir.glob("[0-9][0-9]_*.ipynb")) if start_from <= p.name[:2] <= end_at]
    total = time.perf_counter()
    for index, path in enumerate(notebooks):
        if deadline.reached():
            result.left = [p.name for p in notebooks[index:]]
            result.stopped = f"The deadline was reached before {path.name}."
            break
        start = time.perf_counter()
        try:
            papermill.execute_notebook(str(path), str(executed_dir / path.name), kernel_name=kernel_name,
                                       cwd=str(notebook_dir), parameters={"profile": profile, "overrides": overrides},
                                       progress_bar=False, log_output=False,
                                       extra_arguments=QUIET_KERNEL)
        except Exception as e:
            result.runs.append(NotebookRun(path.name, time.perf_counter() - start, False))
            log(f"== {path.name:<28} FAILED after {result.runs[-1].seconds:.0f} s")
            raise NotebookFailed(f"notebook {path.name} failed; the executed copy with the error is "
                                 f"{executed_dir / path.name}") from e
        result.runs.append(NotebookRun(path.name, time.perf_counter() - start, True))
        log(f"== {path.name:<28} {result.runs[-1].seconds:6.1f} s")
        stop = read_stop(outputs)
        if stop is not None:  # a long loop in this notebook stopped at the deadline: it is not finished
            result.left = [p.name for p in notebooks[index:]]
            result.stopped = stop.sentence()
            break
    seconds = time.perf_counter() - total
    peak_kernel_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if result.stopped:
        done = ", ".join(r.name[:2] for r in result.runs if r.name not in result.left) or "none"
        command = continue_command(profile, user_overrides, result.left[0][:2], end_at=end_at if end_at != "99" else "",
                                   executed_dir=executed_dir, output_dir=output_dir,
                                   kernel_name=kernel_name if kernel_name != "qvidcap" else "",
                                   deadline_hours=deadline_hours, notebook_dir=notebook_dir)
        result.stopped = (f"{result.stopped} Notebooks finished: {done}; left: {', '.join(n[:2] for n in result.left)}; "
                          f"continue in a new session with `{command}` (the same command as before also "
                          "continues: finished work is skipped).")
        log(result.stopped)
    else:
        log(f"== study finished in {seconds:.0f} s; largest kernel peak memory {peak_kernel_mb:.0f} MB; "
            f"executed notebooks in {executed_dir}/")
    (executed_dir / "study_run.json").write_text(json.dumps(
        {"profile": profile, "overrides": overrides, "seconds": seconds, "peak_kernel_mb": peak_kernel_mb,
         "notebooks": [asdict(r) for r in result.runs], "stopped": result.stopped, "left": result.left}, indent=2))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qvidcap.runtime.study", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--from", dest="start_from", default="00", help="first notebook number to run, e.g. 05")
    parser.add_argument("--to", dest="end_at", default="99", help="last notebook number to run, e.g. 02")
    parser.add_argument("--executed-dir", default="outputs", help="where executed notebooks are written")
    parser.add_argument("--notebook-dir", default=str(NOTEBOOK_DIR), help="the numbered notebooks to run")
    parser.add_argument("--output-dir", default=None,
                        help="the notebooks' output folder (paths.output_dir; default: the environment's)")
    parser.add_argument("--kernel", default="qvidcap", help="Jupyter kernel name (python3 on Colab/Kaggle)")
    parser.add_argument("--deadline-hours", type=float, default=None,
                        help="stop cleanly this many hours after --started-at (e.g. below a 12-hour session limit)")
    parser.add_argument("--started-at", type=float, default=None,
                        help="when the session started, in seconds since the epoch (default: now)")
    args = parser.parse_args(argv)
    try:
        run_study(args.profile, " ".join(args.overrides), notebook_dir=Path(args.notebook_dir),
                  executed_dir=Path(args.executed_dir),
                  start_from=args.start_from, end_at=args.end_at, kernel_name=args.kernel,
                  output_dir=Path(args.output_dir) if args.output_dir else None,
                  deadline_hours=args.deadline_hours, started_at=args.started_at)
    except NotebookFailed as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
