"""One wall-clock deadline for the whole study, honoured by every long loop.

A Kaggle session is killed at 12 hours with no warning; work that is not saved by then is lost. The
study runner (`python -m qvidcap.runtime.study --deadline-hours H`) turns H into an absolute time and
puts it in the environment (`QVIDCAP_DEADLINE`, seconds since the epoch), so the notebook kernels and
the processes `accelerate launch` starts all see the same moment. Each long loop (extraction, text
targets, training, evaluation) asks `reached()` between units of work, saves what it has, and records
what it stopped with `record_stop`; the runner then ends the study with one sentence and exit code 0.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ENV_VAR = "QVIDCAP_DEADLINE"
STOP_FILE = "deadline_stop.json"  # under the output folder: which stage stopped early, and what is left


@dataclass(frozen=True)
class Deadline:
    at: float | None = None  # seconds since the epoch; None = no deadline

    @classmethod
    def from_env(cls) -> "Deadline":
        value = os.environ.get(ENV_VAR, "").strip()
        if not value:
            return cls(None)
        try:
            return cls(float(value))
        except ValueError:
            raise ValueError(f"{ENV_VAR}={value!r} is not a time in seconds since the epoch; "
                             "set it through `python -m qvidcap.runtime.study --deadline-hours H`") from None

    @classmethod
    def in_hours(cls, hours: float | None, start: float | None = None) -> "Deadline":
        """`hours` from `start` (now by default); None or a non-positive value means no deadline."""
        if hours is None or hours <= 0:
            return cls(None)
        return cls((time.time() if start is None else start) + hours * 3600.0)

    def reached(self) -> bool:
        return self.at is not None and time.time() >= self.at

    def remaining_s(self) -> float:
        return float("inf") if self.at is None else self.at - time.time()

    def export(self) -> None:
        """Put the deadline in the environment, where kernels and launched processes inherit it."""
        if self.at is None:
            os.environ.pop(ENV_VAR, None)
        else:
            os.environ[ENV_VAR] = repr(self.at)


@dataclass
class DeadlineStop:
    stage: str  # "extraction", "text targets", "training", "evaluation"
    done: str  # what was finished and saved, in words
    left: str  # what is left, in words
    when: float = 0.0

    def sentence(self) -> str:
        return (f"Stopped at the deadline during {self.stage}: {self.done}; left: {self.left}. "
                "Run the same command again to continue from what is saved.")


def record_stop(output_dir: str | Path, stage: str, done: str, left: str) -> DeadlineStop:
    """Note that `stage` stopped at the deadline (the study runner reads it after each notebook)."""
    stop = DeadlineStop(stage, done, left, time.time())
    path = Path(output_dir) / STOP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(stop), indent=2))
    return stop


def read_stop(output_dir: str | Path) -> DeadlineStop | None:
    path = Path(output_dir) / STOP_FILE
    if not path.is_file():
        return None
    return DeadlineStop(**json.loads(path.read_text()))


def clear_stop(output_dir: str | Path) -> None:
    """A new run of the study starts without the previous run's stop note."""
    (Path(output_dir) / STOP_FILE).unlink(missing_ok=True)
