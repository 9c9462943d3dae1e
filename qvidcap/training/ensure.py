"""What the notebooks after 05 need from it: a trained checkpoint of `train.run_name`.

On the default profile a missing checkpoint is trained on the spot (features first, if they are
missing too); on a GPU profile the error says that notebook 05 makes it.
"""
from __future__ import annotations

from pathlib import Path

from qvidcap.config import StudyConfig
from qvidcap.features.ensure import ensure_features
from qvidcap.model.checkpoint import CheckpointError, checkpoint_root, find_checkpoint
from qvidcap.runtime.bootstrap import make_or_explain
from qvidcap.runtime.env import Environment


def ensure_checkpoint(config: StudyConfig, env: Environment, which: str = "best") -> Path:
    """The `best` (or `last`) checkpoint of the configured run, trained here first on the default profile."""
    try:
        return find_checkpoint(config, env.output_dir, which)
    except CheckpointError:
        pass

    def train_now() -> Path:
        from qvidcap.training.train import train

        ensure_features(config, env)
        train(config, env)
        return find_checkpoint(config, env.output_dir, which)

    where = checkpoint_root(config, env.output_dir) / which
    return make_or_explain(config, f"a trained checkpoint ({where})", "notebook 05 (or `qvidcap train`)", train_now)
