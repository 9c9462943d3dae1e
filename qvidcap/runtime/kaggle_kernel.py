"""The study as a Kaggle notebook: `qvidcap kaggle write|push --username NAME`.

`write` makes a folder holding `kernel-metadata.json` (two T4s, internet on, the VATEX datasets
attached) and one notebook that installs the kit and runs the study on the `kaggle` profile, writing
everything under /kaggle/working: notebooks 00-02, then extraction and training as two-process
`accelerate launch` steps (one per T4), then notebooks 03-09, which find that work stored and skip it.
Every step honours one deadline, 11.25 h after the notebook's first cell, so the version ends
normally and its outputs are kept. `push` hands the folder to `kaggle kernels push`; pushed with
`--resume-from OWNER/KERNEL`, the new version attaches the earlier one's outputs, finds them in
either Kaggle input layout and continues from them (or fails naming where it looked).
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from qvidcap.config import StudyConfig
from qvidcap.runtime import links
from qvidcap.runtime.deadline import Deadline, read_stop

logger = logging.getLogger(__name__)

CODE_FILE = "qvidcap_study.ipynb"
MACHINE_SHAPE = "NvidiaTeslaT4"  # two T4s; enable_gpu alone gives a P100, which the current image's torch rejects
SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{4,49}$")


def kernel_metadata(username: str, config: StudyConfig, *, slug: str = "qvidcap-vatex-study",
                    resume_from: str = "") -> dict:
    if not re.fullmatch(r"[A-Za-z0-9_-]+", username or ""):
        raise ValueError(f"Kaggle username {username!r} is not valid; pass --username with your Kaggle user name")
    if not SLUG.match(slug):
        raise ValueError(f"kernel slug {slug!r} must be 5-50 lowercase letters, digits or dashes")
    return {
        "id": f"{username}/{slug}",
        "title": slug.replace("-", " "),
        "code_file": CODE_FILE,
        "language": "python",
        "kernel_type": "notebook",
        "is_private": True,
        "enable_gpu": True,
        "enable_internet": True,  # pip install of the kit and the pretrained weights
        "machine_shape": MACHINE_SHAPE,
        "dataset_sources": list(config.data.kaggle_datasets),
        "competition_sources": [],
        "kernel_sources": [resume_from] if resume_from else [],
        "model_sources": [],
    }


SOURCE_DIR = "/tmp/qvidcap-src"  # the notebooks, cloned outside /kaggle/working so they are not saved as output
WORKING_OUTPUTS = Path("/kaggle/working/outputs")
DEADLINE_HOURS = 11.25  # of the 12-hour session, counted from the kernel's first cell: time to save and end normally
SESSION_VAR = "QVIDCAP_SESSION_START"
TWO_GPUS = "accelerate launch --num_processes 2 --multi_gpu -m qvidcap.cli"  # one process per T4


def study_command(first: str, last: str) -> str:
    """The study runner for notebooks `first`..`last`, stopping at the deadline counted from the session start."""
    return (f"python -m qvidcap.runtime.study --profile kaggle --kernel python3 --notebook-dir {SOURCE_DIR}/notebooks "
            f"--executed-dir {WORKING_OUTPUTS}/notebooks --from {first} --to {last} "
            "--deadline-hours {DEADLINE_HOURS} --started-at {SESSION_START}")


def kernel_steps() -> list[str]:
    """The study as the kernel runs it: set-up and data in notebooks, then extraction and training on both
    GPUs, then the remaining notebooks, which find that work stored (extracted clips, a finished `last/`)
    and go on to evaluation and the demo."""
    return [study_command("00", "02"),
            f"{TWO_GPUS} extract --profile kaggle",
            f"{TWO_GPUS} train --profile kaggle",
            study_command("03", "09")]


def study_notebook(resume_from: str = "", kernel_id: str = "") -> nbformat.NotebookNode:
    """The one notebook Kaggle runs: note the session start, install the kit (torch untouched), restore the
    previous version's outputs when resuming, then run the steps; every failure raises, nothing is ignored."""
    clone = f"https://github.com/{links.GITHUB_REPO}"
    cells = [
        new_markdown_cell(f"# QVidCap on VATEX (Kaggle, 2x T4)\n\n{links.badges('00_setup.ipynb')}\n\n"
                          "Installs the kit without touching Kaggle's torch, then runs notebooks 00-02, extraction "
                          "and training on both GPUs (`accelerate launch --num_processes 2`), and notebooks 03-09 "
                          f"on the `kaggle` profile. Everything stops cleanly {DEADLINE_HOURS} h after this "
                          "notebook starts; outputs land in `/kaggle/working/outputs`."),
        new_code_cell(f"import os, subprocess, sys, time\n"
                      f"os.environ.setdefault({SESSION_VAR!r}, repr(time.time()))  # the 12-hour limit counts from here\n"
                      f"SESSION_START = float(os.environ[{SESSION_VAR!r}])\nDEADLINE_HOURS = {DEADLINE_HOURS}"),
        new_code_cell(f'subprocess.run([sys.executable, "-m", "pip", "install", "-q", "{links.install_spec()}"], check=True)\n'
                      f"if not os.path.isdir({SOURCE_DIR!r}):\n"
                      f'    subprocess.run(["git", "clone", "-q", "--depth", "1", "--branch", "{links.BRANCH}", '
                      f'"{clone}", {SOURCE_DIR!r}], check=True)'),
        new_code_cell("from qvidcap.runtime.kaggle_kernel import start_deadline, step, finish\n"
                      "start_deadline(DEADLINE_HOURS, SESSION_START)  # every process started from here inherits it"),
    ]
    if resume_from:
        cells.append(new_code_cell(
            "from qvidcap.runtime.kaggle_inputs import restore_previous_outputs\n"
            f"print(restore_previous_outputs({resume_from!r}, {str(WORKING_OUTPUTS)!r}).sentence())"))
    cells += [new_code_cell(f'step(f"{command}")' if "{" in command else f"step({command!r})")
              for command in kernel_steps()]
    cells.append(new_code_cell(f"finish({kernel_id!r})"))
    notebook = new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.validate(notebook)
    return notebook


# ---------------------------------------------------------------- what the kernel's cells call


@dataclass
class KernelRun:
    """The steps of this session: finished, and left once a deadline stop was seen."""

    done: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)
    stopped: str = ""


RUN = KernelRun()


def start_deadline(hours: float, session_start: float) -> Deadline:
    """Export the study's deadline, `hours` after the session started, for every step to inherit."""
    deadline = Deadline.in_hours(hours, session_start)
    deadline.export()
    logger.info("deadline in %.2f h (%.2f h after the session started)", deadline.remaining_s() / 3600, hours)
    return deadline


def step(command: str, output_dir: Path | str = WORKING_OUTPUTS, run: KernelRun | None = None) -> bool:
    """Run one step of the study, its output shown in the cell; False (and nothing run) once a step stopped.

    A step that fails raises CalledProcessError (the kernel fails, loudly); a step that stopped at the
    deadline exits 0 with a note in `output_dir`, after which the remaining steps are only listed.
    """
    run = RUN if run is None else run
    if not run.stopped and Deadline.from_env().reached():
        run.stopped = f"The deadline was reached before `{command}`."
    if run.stopped:
        run.left.append(command)
        print(f"skipped (deadline): {command}")
        return False
    print(f"$ {command}", flush=True)
    with subprocess.Popen(shlex.split(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          bufsize=1) as process:
        for line in process.stdout:
            print(line, end="", flush=True)
    if process.returncode != 0:
        raise subprocess.CalledProcessError(process.returncode, command)
    stop = read_stop(output_dir)
    if stop is not None:
        run.stopped = stop.sentence()
        run.left.append(command)
        return False
    run.done.append(command)
    return True


def finish(kernel_id: str = "", run: KernelRun | None = None) -> str:
    """The session's one closing sentence: done, left, and how to continue."""
    run = RUN if run is None else run
    if not run.stopped:
        sentence = f"The study finished: all {len(run.done)} steps ran; outputs are in {WORKING_OUTPUTS}."
    else:
        again = (f"qvidcap kaggle push --username {kernel_id.split('/')[0]} --slug {kernel_id.split('/')[-1]} "
                 f"--resume-from {kernel_id}") if kernel_id else "qvidcap kaggle push --resume-from OWNER/KERNEL"
        sentence = (f"{run.stopped} Steps finished: {len(run.done)}; left: {'; '.join(run.left)}. To continue, let this "
                    f"version end, then push a new one that starts from its outputs: `{again}`.")
    print(sentence)
    return sentence


def write_kernel(folder: Path, username: str, config: StudyConfig, *, slug: str = "qvidcap-vatex-study",
                 resume_from: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    metadata = kernel_metadata(username, config, slug=slug, resume_from=resume_from)
    (folder / "kernel-metadata.json").write_text(json.dumps(metadata, indent=2))
    nbformat.write(study_notebook(resume_from, metadata["id"]), folder / CODE_FILE)
    return folder


def push_kernel(folder: Path) -> None:
    """`kaggle kernels push -p FOLDER`; needs Kaggle credentials (see notebook 00)."""
    from qvidcap.runtime.install import kaggle_credentials_status

    status = kaggle_credentials_status()
    if status.startswith("no Kaggle credentials"):
        raise RuntimeError("pushing needs Kaggle credentials: set KAGGLE_API_TOKEN or put kaggle.json in ~/.kaggle")
    subprocess.run(["kaggle", "kernels", "push", "-p", str(folder), "--accelerator", MACHINE_SHAPE], check=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["write", "push"], help="write the kernel folder, or write and push it")
    parser.add_argument("--username", required=True, help="your Kaggle user name")
    parser.add_argument("--folder", default="outputs/kaggle_kernel")
    parser.add_argument("--slug", default="qvidcap-vatex-study")
    parser.add_argument("--resume-from", default="", help="OWNER/KERNEL whose outputs the run continues from")


def main(args: argparse.Namespace, config: StudyConfig) -> int:
    folder = write_kernel(Path(args.folder), args.username, config, slug=args.slug, resume_from=args.resume_from)
    print(f"wrote {folder / 'kernel-metadata.json'} and {folder / CODE_FILE}")
    if args.action == "push":
        push_kernel(folder)
    return 0
