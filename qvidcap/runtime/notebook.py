"""The two lines every notebook starts with: resolve the config, find the environment, set up display.

A notebook shows WARNING and above from the package's loggers (the CLI and a terminal run log at INFO when
asked): what a cell wants a reader to see it displays itself, as a table or a sentence.
"""
from __future__ import annotations

import logging
import os

import pandas as pd

from qvidcap.config import StudyConfig, load_config
from qvidcap.runtime.env import Environment, detect_environment


def setup_notebook(profile: str = "smoke", overrides: str | dict | None = None) -> tuple[StudyConfig, Environment]:
    """Config and environment for a notebook's `parameters`; plots inline, logs at WARNING, seaborn's look,
    tables that show whole captions, and (headless) no download or weight-loading bars."""
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
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", force=True)
    for noisy in ("httpx", "urllib3", "filelock", "huggingface_hub", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    set_display_options()
    config = load_config(profile, overrides)
    env = detect_environment(config)
    env.data_dir.mkdir(parents=True, exist_ok=True)
    env.output_dir.mkdir(parents=True, exist_ok=True)
    return config, env


def set_display_options() -> None:
    """Tables as a reader needs them: captions never cut, all columns, floats at 4 significant digits; and in a
    headless run (papermill) no Hugging Face download or weight-loading bars, which would be frozen text there."""
    pd.set_option("display.max_colwidth", None)
    pd.set_option("display.max_columns", 50)
    pd.set_option("display.width", 200)
    pd.set_option("display.precision", 4)
    from qvidcap.runtime.progress import headless

    if headless():
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
        try:
            from huggingface_hub.utils import disable_progress_bars

            disable_progress_bars()
        except ImportError:
            pass
        import sys

        if "transformers" in sys.modules:  # read the hub's setting at import; tell it if it came first
            sys.modules["transformers"].utils.logging.disable_progress_bar()


def setup_summary(config: StudyConfig, env: Environment, missing: list[str], credentials: str) -> str:
    """The Summary cell of notebook 00 (Markdown): where the study runs, on what, and what is still missing."""
    import torch

    lines = [
        f"- Runtime **{env.kind}**, device **{env.device}**"
        + (f" ({env.gpu_name} x{env.num_gpus})" if env.num_gpus else "") + f", torch {torch.__version__}.",
        f"- Profile **{config.profile}**: data from `{config.data.source}`, "
        + ("small random backbones and decoder (its numbers check the pipeline; they are not VATEX results)."
           if not config.features.temporal_model else f"pretrained backbones and the `{config.decoder.name}` decoder."),
        f"- Outputs go to `{env.output_dir}`; the choice is kept in `setup.json` for the notebooks after this one.",
        "- Nothing the study needs is missing." if not missing else f"- Still missing: {len(missing)} item(s), listed above.",
        f"- Kaggle: {credentials}.",
    ]
    return "\n".join(lines)


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
