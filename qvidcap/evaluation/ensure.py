"""What notebook 07 needs from 06: the saved evaluation of a split (predictions and per-clip scores).

On the default profile a missing evaluation is made on the spot (and a missing checkpoint trained
first); on a GPU profile the error says that notebook 06 makes it.
"""
from __future__ import annotations

from qvidcap.config import StudyConfig
from qvidcap.evaluation.evaluate import EvaluationReport, eval_dir, evaluate, load_report
from qvidcap.features.ensure import ensure_features
from qvidcap.runtime.bootstrap import MissingInputError, make_or_explain
from qvidcap.runtime.env import Environment
from qvidcap.training.ensure import ensure_checkpoint


def ensure_evaluation(config: StudyConfig, env: Environment, split: str) -> EvaluationReport:
    """The evaluation of `split` that notebook 06 saves, made here first on the default profile."""
    if (eval_dir(config, env, split) / "metrics.json").is_file():
        return load_report(config, env, split)

    def evaluate_now() -> EvaluationReport:
        ensure_checkpoint(config, env)
        ensure_features(config, env, [split])
        if evaluate(config, env, split=split) is None:  # stopped at the study's deadline, predictions saved
            raise MissingInputError(f"the evaluation of {split!r} stopped at the deadline; run this notebook "
                                    "again to continue from the saved captions")
        return load_report(config, env, split)

    what = f"the evaluation of {split!r} ({eval_dir(config, env, split)})"
    return make_or_explain(config, what, f"notebook 06 (or `qvidcap evaluate --split {split}`)", evaluate_now)
