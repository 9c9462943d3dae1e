"""What notebook 00 checks and, on Colab or Kaggle, installs.

On a hosted GPU runtime torch, CUDA and most of the scientific stack are already there and must be
kept as they are: installing the kit never names torch, so pip leaves the preinstalled build alone.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

from qvidcap.config import StudyConfig
from qvidcap.runtime.env import Environment

logger = logging.getLogger(__name__)

CHECKED_PACKAGES = ("torch", "torchvision", "transformers", "accelerate", "peft", "open_clip_torch", "decord",
                    "av", "pycocoevalcap", "sentence-transformers", "pandas", "seaborn", "papermill", "flask")


def versions_table() -> pd.DataFrame:
    """Python, the main packages, Java and the GPU, each with its version or 'missing'."""
    rows = {"python": platform.python_version()}
    for name in CHECKED_PACKAGES:
        try:
            rows[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            rows[name] = "missing"
    rows["java (for METEOR, PTB tokenizer)"] = java_version() or "missing"
    import torch

    rows["CUDA"] = torch.version.cuda or "none (CPU build)"
    rows["GPUs"] = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())) or "none"
    return pd.DataFrame({"version": rows})


def java_version() -> str | None:
    java = shutil.which("java")
    if java is None:
        return None
    result = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    first = (result.stderr or result.stdout).splitlines()
    return first[0].strip() if first else "unknown"


def spacy_model_available(name: str) -> bool:
    try:
        import spacy.util
    except ImportError:
        return False
    return spacy.util.is_package(name)


def cloud_install_steps(config: StudyConfig, env: Environment) -> list[list[str]]:
    """The pip commands a hosted runtime still needs (none locally: run_all.sh set everything up)."""
    if env.kind == "local":
        return []
    steps = []
    if shutil.which("java") is None:
        logger.warning("Java is missing: METEOR and the PTB tokenizer will not run (apt-get install openjdk-17-jre)")
    if config.text.pos_model.startswith("en_core_web") and not spacy_model_available(config.text.pos_model):
        steps.append([sys.executable, "-m", "spacy", "download", config.text.pos_model])
    return steps


def run_steps(steps: list[list[str]]) -> None:
    for step in steps:
        logger.info("running %s", " ".join(step))
        subprocess.run(step, check=True)


def kaggle_credentials_status() -> str:
    """Which credential source the kaggle client would use, never the secret itself."""
    config_dir = Path(os.environ.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle"))
    if os.environ.get("KAGGLE_API_TOKEN"):
        return "KAGGLE_API_TOKEN is set"
    if (config_dir / "access_token").is_file():
        return f"{config_dir / 'access_token'} found"
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return "KAGGLE_USERNAME and KAGGLE_KEY are set"
    if (config_dir / "kaggle.json").is_file():
        return f"{config_dir / 'kaggle.json'} found"
    if Path("/kaggle/input").is_dir():
        return "inside a Kaggle notebook: attach the VATEX datasets instead of using credentials"
    return "no Kaggle credentials (the mini dataset will be used where the profile allows it)"
