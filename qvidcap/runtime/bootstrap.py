"""The first code cell of every notebook: whatever runtime it was opened in, make it whole.

A badge opens a notebook in a fresh Colab or Kaggle runtime that has never seen notebook 00. So every
notebook starts with the same call, `bootstrap(profile, overrides, mount_drive=...)`, which

1. mounts Google Drive on Colab when asked (outputs kept there survive the runtime);
2. takes the profile and overrides that notebook 00 remembered in `setup.json` when the notebook's own
   `profile` is left empty, so the choice is made once;
3. on Kaggle, brings back the outputs of an earlier version attached as input when this session has none;
4. installs what a hosted runtime lacks (Java for the scorers, spaCy's pipeline, the offline sentence
   model of the default profile), never torch, jupyterlab or a notebook server;
5. sets up the notebook (logging at WARNING, plots, table display, folders) and returns the config and
   environment.

What a notebook needs from the ones before it is checked by the stage that makes it (for instance
`qvidcap.features.extract.ensure_features`), through `make_or_explain` below.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, TypeVar

from qvidcap.config import StudyConfig, load_config
from qvidcap.runtime import env as env_module
from qvidcap.runtime.env import Environment, detect_environment, detect_kind

logger = logging.getLogger(__name__)

SETUP_FILE = "setup.json"
DEFAULT_PROFILE = "smoke"  # the offline profile: the only one that may make missing inputs by itself
T = TypeVar("T")


class MissingInputError(FileNotFoundError):
    """A notebook's input that an earlier notebook makes is not there (and this profile will not make it here)."""


def bootstrap(profile: str = "", overrides: str = "", *, mount_drive: bool = False, remember: bool = False,
              install: bool = True) -> tuple[StudyConfig, Environment]:
    """Config and environment for a notebook opened anywhere; see the module docstring for the steps.

    `profile=""` means "as chosen in notebook 00" (its `setup.json`), else the default profile.
    `remember` (notebook 00) writes this choice to `setup.json` for the notebooks after it.
    """
    from qvidcap.runtime.notebook import setup_notebook

    kind = detect_kind()
    if mount_drive:
        mount_google_drive(kind)
    given = profile
    profile, overrides = resolve_choice(profile, overrides)
    config, env = setup_notebook(profile, overrides)  # logging is set up from here on
    if not given and (env.output_dir / SETUP_FILE).is_file():
        # warnings, like the two below: a notebook shows WARNING and above, and these say where its inputs come from
        logger.warning("profile %r and overrides %r from %s (notebook 00)", profile, overrides, env.output_dir / SETUP_FILE)
    if kind == "kaggle":
        restore_earlier_outputs(env)
    if install and kind != "local":
        install_missing(config, env)
    if remember:
        remember_choice(config, env, overrides)
    if kind == "colab" and not mount_drive and not str(env.output_dir).startswith(str(env_module.COLAB_CONTENT / "drive")):
        logger.warning("outputs go to %s and end with this runtime; set mount_drive = True to keep them on Google Drive",
                    env.output_dir)
    return config, env


def mount_google_drive(kind: str) -> Path | None:
    """Mount Drive at `<content>/drive` on Colab (interactive the first time); elsewhere say it does nothing."""
    if kind != "colab":
        logger.warning("mount_drive only applies on Colab; this runtime is %s", kind)
        return None
    from google.colab import drive

    mountpoint = env_module.COLAB_CONTENT / "drive"
    drive.mount(str(mountpoint))
    return mountpoint


# ---------------------------------------------------------------------------------------------
# the choice made once in notebook 00


def setup_file(config: StudyConfig | None = None) -> Path:
    """Where notebook 00 keeps its choice: the output folder of this environment (Drive, /kaggle/working, outputs/)."""
    return detect_environment(config or StudyConfig()).output_dir / SETUP_FILE


def resolve_choice(profile: str, overrides: str) -> tuple[str, str]:
    """The notebook's own profile when it names one; else notebook 00's, with this notebook's overrides last."""
    if profile:
        return profile, overrides
    path = setup_file(load_config(DEFAULT_PROFILE, overrides) if overrides else None)
    if not path.is_file():
        return DEFAULT_PROFILE, overrides
    try:
        saved = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not readable JSON ({e}); run notebook 00 again or set profile here") from e
    combined = " ".join(part for part in (saved.get("overrides", ""), overrides) if part)
    return saved.get("profile") or DEFAULT_PROFILE, combined


def remember_choice(config: StudyConfig, env: Environment, overrides: str) -> Path:
    import torch

    setup = {"environment": env.kind, "device": env.device, "profile": config.profile, "overrides": overrides,
             "torch": torch.__version__, "output_dir": str(env.output_dir), "data_dir": str(env.data_dir)}
    path = env.output_dir / SETUP_FILE
    path.write_text(json.dumps(setup, indent=2))
    return path


# ---------------------------------------------------------------------------------------------
# what earlier notebooks made


def make_or_explain(config: StudyConfig, what: str, how: str, make: Callable[[], T]) -> T:
    """Make a missing input on the default profile (it runs offline in minutes); elsewhere say what to run.

    `what` names the missing thing in a few words, `how` the one call (or notebook) that makes it.
    """
    if config.profile == DEFAULT_PROFILE:
        logger.warning("%s: missing, so this notebook makes it now (%s)", what, how)
        return make()
    raise MissingInputError(f"{what} is missing: run {how} first (on this runtime, or attach its outputs)")


def restore_earlier_outputs(env: Environment) -> int:
    """On Kaggle, copy an attached earlier version's outputs into this session's output folder.

    Runs when this session has no outputs of its own yet (no `setup.json`, no features, no checkpoints);
    files already there are never overwritten, and a failed copy raises. Returns the files copied.
    """
    from qvidcap.runtime.kaggle_inputs import copy_outputs, find_outputs, is_output_dir, source_roots

    if is_output_dir(env.output_dir) or (env.output_dir / SETUP_FILE).is_file():
        return 0
    earlier = find_outputs([r for r in source_roots() if r.is_dir()])
    if earlier is None:
        return 0
    restored = copy_outputs(earlier, env.output_dir)
    logger.warning("restored %d files of an earlier version's outputs from %s", restored.copied, earlier)
    return restored.copied


# ---------------------------------------------------------------------------------------------
# what a hosted runtime lacks


def install_missing(config: StudyConfig, env: Environment) -> list[str]:
    """Install, on Colab or Kaggle, the few things the kit needs beyond Python packages that pip resolved."""
    from qvidcap.runtime.install import install_java, missing_python_extras, spacy_model_available

    done = []
    if shutil.which("java") is None:
        done += install_java()
    if config.text.pos_model.startswith("en_core_web") and not spacy_model_available(config.text.pos_model):
        _run([sys.executable, "-m", "spacy", "download", config.text.pos_model])
        done.append(config.text.pos_model)
    for package in missing_python_extras(config):
        _run([sys.executable, "-m", "pip", "install", "-q", package])
        done.append(package)
    importlib.invalidate_caches()
    return done


def _run(command: list[str]) -> None:
    logger.info("installing: %s", " ".join(command))
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"`{' '.join(command)}` failed: {' / '.join(tail)}")
