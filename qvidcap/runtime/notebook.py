"""The two lines every notebook starts with: resolve the config, find the environment, set up display."""
from __future__ import annotations

import logging

import pandas as pd

from qvidcap.config import StudyConfig, load_config
from qvidcap.runtime.env import Environment, detect_environment


def setup_notebook(profile: str = "smoke", overrides: str | dict | None = None) -> tuple[StudyConfig, Environment]:
    """Config and environment for a notebook's `parameters`; plots inline, logs at INFO, seaborn's look."""
    import matplotlib
    import seaborn as sns

    if matplotlib.get_backend().lower() == "agg":  # papermill with MPLBACKEND=Agg would drop every figure
        try:
            from IPython import get_ipython

            shell = get_ipython()
            if shell is not None:
                shell.run_line_magic("matplotlib", "inline")
        except ImportError:
            pass
    sns.set_theme(style="whitegrid", context="notebook")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", force=True)
    for noisy in ("httpx", "urllib3", "filelock", "huggingface_hub", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    config = load_config(profile, overrides)
    env = detect_environment(config)
    env.data_dir.mkdir(parents=True, exist_ok=True)
    env.output_dir.mkdir(parents=True, exist_ok=True)
    return config, env


def describe(config: StudyConfig, env: Environment) -> pd.DataFrame:
    """A one-glance table of where this run is and what it will use."""
    rows = {
        "environment": env.kind,
        "device": env.device + (f" ({env.gpu_name} x{env.num_gpus})" if env.num_gpus else ""),
        "profile": config.profile,
        "data source": config.data.source,
        "data dir": str(env.data_dir),
        "output dir": str(env.output_dir),
        "temporal model": config.features.temporal_model or "small random VideoMAE",
        "detector": config.features.detector_model or "small random DETR",
        "CLIP": f"{config.features.clip_model}/{config.features.clip_pretrained}" if config.features.clip_model else "small random ViT",
        "decoder": config.decoder.name or f"small random DeepSeek-MoE ({config.decoder.kind})",
    }
    return pd.DataFrame({"value": rows})
