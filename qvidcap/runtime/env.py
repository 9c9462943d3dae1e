"""Where the study runs: local machine, Colab or Kaggle; which device; where data and outputs go.

Kaggle is checked first: its image is built from Colab's and looks like Colab from the inside.
"""
from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from qvidcap.config import StudyConfig

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]  # the checkout: qvidcap/runtime/env.py -> the folder above qvidcap/
# Colab's disk; QVIDCAP_COLAB_CONTENT moves it, so tests can fake a Colab runtime in a temporary folder
COLAB_CONTENT = Path(os.environ.get("QVIDCAP_COLAB_CONTENT", "/content"))
# Kaggle's disk; QVIDCAP_KAGGLE_ROOT moves it (tests fake a Kaggle runtime, with either input layout)
KAGGLE_ROOT = Path(os.environ.get("QVIDCAP_KAGGLE_ROOT", "/kaggle"))
KAGGLE_INPUT = KAGGLE_ROOT / "input"
KAGGLE_WORKING = KAGGLE_ROOT / "working"


@dataclass(frozen=True)
class Environment:
    kind: str  # "local", "colab" or "kaggle"
    device: str  # "cpu", "cuda", "cuda:1", ...
    num_gpus: int
    gpu_name: str  # "" on CPU
    data_dir: Path  # writable: datasets downloaded or generated here
    output_dir: Path  # writable: features, checkpoints, metrics; survives the session where possible
    input_dir: Path | None  # read-only attached datasets (/kaggle/input), None elsewhere


def detect_kind() -> str:
    if os.environ.get("KAGGLE_KERNEL_RUN_TYPE") or KAGGLE_INPUT.is_dir():
        return "kaggle"
    if "google.colab" in sys.modules:
        return "colab"
    return "local"


def resolve_device(requested: str = "auto") -> str:
    """`auto` picks CUDA when there is a GPU; asking for CUDA without one is an error, not a silent CPU run."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {requested!r} was asked for but torch sees no GPU; use device=cpu or auto")
    if requested != "cpu" and not requested.startswith("cuda"):
        raise ValueError(f"unknown device {requested!r}; expected auto, cpu, cuda or cuda:N")
    return requested


def detect_environment(config: StudyConfig | None = None) -> Environment:
    import torch

    config = config or StudyConfig()
    kind = detect_kind()
    if kind == "kaggle":
        base, input_dir = KAGGLE_WORKING, KAGGLE_INPUT
    elif kind == "colab":
        drive = COLAB_CONTENT / "drive" / "MyDrive"
        base, input_dir = (drive / "qvidcap" if drive.is_dir() else COLAB_CONTENT / "qvidcap"), None
    else:
        base, input_dir = REPO_ROOT, None
    data_dir = Path(config.paths.data_dir) if config.paths.data_dir else base / "data"
    output_dir = Path(config.paths.output_dir) if config.paths.output_dir else base / "outputs"
    num_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    device = resolve_device(config.device)
    gpu_name = torch.cuda.get_device_name(0) if num_gpus else ""
    return Environment(kind, device, num_gpus, gpu_name, data_dir, output_dir, input_dir)


def supports_bf16(device: str = "cuda") -> bool:
    """Native bf16 on `device` (compute capability >= 8.0); a T4's emulated bf16 does not count."""
    import torch

    from qvidcap.runtime.precision import half_dtype

    return half_dtype(device) == torch.bfloat16
