"""The study as a Kaggle notebook: `qvidcap kaggle write|push --username NAME`.

`write` makes a folder holding `kernel-metadata.json` (two T4s, internet on, the VATEX datasets
attached) and one notebook that installs the kit and runs the numbered notebooks on the `kaggle`
profile, writing everything under /kaggle/working. `push` hands that folder to `kaggle kernels push`.
Pushed again after a 12-hour cut-off, the study picks up from the outputs of the previous version
when they are attached as the kernel's input (`--resume-from OWNER/KERNEL`).
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import subprocess
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from qvidcap.runtime import links
from qvidcap.config import StudyConfig

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


def study_notebook(resume_from: str = "") -> nbformat.NotebookNode:
    """The one notebook Kaggle runs: install the kit (torch untouched), then the study on the kaggle profile."""
    restore = ""
    if resume_from:
        previous = f"/kaggle/input/{resume_from.split('/')[-1]}/outputs"
        restore = f"!cp -rn {previous} /kaggle/working/ 2>/dev/null || true  # continue from the previous version\n"
    cells = [
        new_markdown_cell(f"# QVidCap on VATEX (Kaggle, 2x T4)\n\n{links.badges('00_setup.ipynb')}\n\n"
                          "Installs the kit without touching Kaggle's torch, then runs notebooks 00-08 on the "
                          "`kaggle` profile. Outputs land in `/kaggle/working/outputs`."),
        new_code_cell(f'!pip install -q "{links.install_spec()}"\n'
                      f"!git clone -q --depth 1 https://github.com/{links.GITHUB_REPO} /kaggle/working/qvidcap-src"),
        new_code_cell(restore + "!cd /kaggle/working/qvidcap-src && python -m qvidcap.runtime.study --profile kaggle "
                      "--kernel python3 --executed-dir /kaggle/working/outputs/notebooks"),
    ]
    notebook = new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.validate(notebook)
    return notebook


def write_kernel(folder: Path, username: str, config: StudyConfig, *, slug: str = "qvidcap-vatex-study",
                 resume_from: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    metadata = kernel_metadata(username, config, slug=slug, resume_from=resume_from)
    (folder / "kernel-metadata.json").write_text(json.dumps(metadata, indent=2))
    nbformat.write(study_notebook(resume_from), folder / CODE_FILE)
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
