"""Run the numbered notebooks in order through papermill: `python -m qvidcap.runtime.study`.

This is what `./run_all.sh` calls locally and what the Kaggle kernel calls on a GPU. Each notebook is
written, executed, next to the outputs; the run stops at the first failing notebook and names it. The
notebooks skip work already done (extracted clips, finished epochs), so a study cut off by a session
limit continues where it stopped when it is started again.
"""
from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"


@dataclass
class NotebookRun:
    name: str
    seconds: float
    ok: bool


class NotebookFailed(RuntimeError):
    """A notebook of the study raised; the executed copy holds the traceback."""


def run_study(profile: str = "smoke", overrides: str = "", *, notebook_dir: Path = NOTEBOOK_DIR,
              executed_dir: Path = Path("outputs"), start_from: str = "00", kernel_name: str = "qvidcap",
              log=print) -> list[NotebookRun]:
    import os

    import papermill

    os.environ["QVIDCAP_HEADLESS"] = "1"  # the kernels inherit it: text progress bars, see qvidcap.runtime.progress
    executed_dir.mkdir(parents=True, exist_ok=True)
    runs: list[NotebookRun] = []
    notebooks = [p for p in sorted(notebook_dir.glob("[0-9][0-9]_*.ipynb")) if p.name[:2] >= start_from]
    total = time.perf_counter()
    for path in notebooks:
        start = time.perf_counter()
        try:
            papermill.execute_notebook(str(path), str(executed_dir / path.name), kernel_name=kernel_name,
                                       cwd=str(notebook_dir), parameters={"profile": profile, "overrides": overrides},
                                       progress_bar=False, log_output=False)
        except Exception as e:
            runs.append(NotebookRun(path.name, time.perf_counter() - start, False))
            log(f"== {path.name:<28} FAILED after {runs[-1].seconds:.0f} s")
            raise NotebookFailed(f"notebook {path.name} failed; the executed copy with the error is "
                                 f"{executed_dir / path.name}") from e
        runs.append(NotebookRun(path.name, time.perf_counter() - start, True))
        log(f"== {path.name:<28} {runs[-1].seconds:6.1f} s")
    seconds = time.perf_counter() - total
    peak_kernel_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    log(f"== study finished in {seconds:.0f} s; largest kernel peak memory {peak_kernel_mb:.0f} MB; "
        f"executed notebooks in {executed_dir}/")
    (executed_dir / "study_run.json").write_text(json.dumps(
        {"profile": profile, "overrides": overrides, "seconds": seconds, "peak_kernel_mb": peak_kernel_mb,
         "notebooks": [asdict(r) for r in runs]}, indent=2))
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qvidcap.runtime.study", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--from", dest="start_from", default="00", help="first notebook number to run, e.g. 05")
    parser.add_argument("--executed-dir", default="outputs", help="where executed notebooks are written")
    parser.add_argument("--kernel", default="qvidcap", help="Jupyter kernel name (python3 on Colab/Kaggle)")
    args = parser.parse_args(argv)
    try:
        run_study(args.profile, " ".join(args.overrides), executed_dir=Path(args.executed_dir),
                  start_from=args.start_from, kernel_name=args.kernel)
    except NotebookFailed as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
