"""The study itself as a test: every numbered notebook, in order, through papermill on the default profile.

The notebooks share one temporary data and output folder, as they share `data/` and `outputs/` in a real
run; each later notebook reads what the earlier ones wrote. What a notebook records (metrics, stores,
checkpoints) is asserted here, so a broken pipeline shows up as a number.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from qvidcap.runtime import links

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
NAMES = [p.name for p in NOTEBOOKS]
KERNEL = "qvidcap"


def _code_cells(notebook):
    return [c for c in notebook.cells if c.cell_type == "code"]


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_clean_and_narrated(name):
    notebook = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    nbformat.validate(notebook)
    assert notebook.metadata.kernelspec.name == "python3"  # Kaggle and Colab need a kernelspec name
    code = _code_cells(notebook)
    assert any("parameters" in c.metadata.get("tags", []) for c in code), "papermill needs a cell tagged parameters"
    assert not any(c.outputs or c.execution_count for c in code), "commit notebooks without outputs"
    too_long = [i for i, c in enumerate(code) if len(c.source.splitlines()) > 10]
    assert not too_long, f"code cells {too_long} are over ten lines: move the logic into qvidcap"
    assert not any(line.lstrip().startswith("def ") for c in code for line in c.source.splitlines())
    markdown = [c for c in notebook.cells if c.cell_type == "markdown"]
    assert len(markdown) >= len(code) - 1, "about one paragraph of narration per code cell"
    assert links.badges(name) in notebook.cells[0].source, "the first cell carries the Colab and Kaggle badges"


@pytest.mark.parametrize("name", NAMES)
def test_every_notebook_starts_with_the_bootstrap_cell(name):
    """The cell that makes a notebook opened alone whole, made from the one repository constant."""
    notebook = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    code = _code_cells(notebook)
    assert "parameters" in code[0].metadata.get("tags", [])
    assert code[1].source == links.bootstrap_cell_source(remember=name.startswith("00"))
    assert links.install_spec() in code[1].source
    params = code[0].source
    for name_ in ("profile", "overrides", "mount_drive", "kit_source"):
        assert f"\n{name_} = " in "\n" + params, f"{name} lacks the {name_} parameter the bootstrap cell reads"
    assert not any("setup_notebook(" in c.source for c in code), "notebooks start with bootstrap(), not setup_notebook()"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """One shared folder for the whole chain, and the kernel papermill runs it in."""
    from jupyter_client.kernelspec import find_kernel_specs

    if KERNEL not in find_kernel_specs():
        subprocess.run([sys.executable, "-m", "ipykernel", "install", "--sys-prefix", "--name", KERNEL], check=True)
    base = tmp_path_factory.mktemp("study")
    return {"base": base, "overrides": f"paths.data_dir={base / 'data'} paths.output_dir={base / 'outputs'}",
            "failed": None}


@pytest.mark.notebooks
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs(name, study, monkeypatch):
    import papermill

    monkeypatch.setenv("QVIDCAP_HEADLESS", "1")  # text progress bars in the kernel

    if study["failed"]:
        pytest.skip(f"{study['failed']} failed earlier in the chain")
    output = study["base"] / "executed" / name
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        papermill.execute_notebook(
            str(ROOT / "notebooks" / name), str(output), kernel_name=KERNEL, cwd=str(ROOT / "notebooks"),
            parameters={"profile": "smoke", "overrides": study["overrides"]}, progress_bar=False,
            execution_timeout=900,
        )
    except Exception:
        study["failed"] = name
        raise
    logged = info_log_lines(nbformat.read(output, as_version=4))
    assert not logged, f"{name} shows INFO log lines (notebooks log at WARNING): {logged[:3]}"
    CHECKS.get(name[:2], lambda base: None)(study["base"])


def _check_setup(base: Path) -> None:
    setup = json.loads((base / "outputs" / "setup.json").read_text())
    assert setup["profile"] == "smoke" and setup["device"] == "cpu"


def _check_data(base: Path) -> None:
    summary = {row["split"]: row for row in json.loads((base / "outputs" / "data_summary.json").read_text())}
    assert set(summary) >= {"train", "validation", "public_test"}
    for row in summary.values():
        assert row["usable"] == row["referenced"] == row["with video"] > 0
    assert len(list((base / "data" / "mini" / "videos").glob("*.mp4"))) == sum(r["referenced"] for r in summary.values())


def _check_features(base: Path) -> None:
    from qvidcap.features.store import FeatureStore

    store = FeatureStore(base / "outputs" / "features" / "mini")
    summary = json.loads((base / "outputs" / "data_summary.json").read_text())
    assert len(store) == sum(row["referenced"] for row in summary) and not store.failures
    clip = store.get(store.video_ids[0])
    assert clip.temporal.dtype == clip.context.dtype == clip.objects.dtype == __import__("torch").float16


def _check_training(base: Path) -> None:
    from qvidcap.training.train import read_log

    run = base / "outputs" / "checkpoints" / "qvidcap"
    assert (run / "best" / "config.json").is_file() and (run / "last" / "config.json").is_file()
    steps, epochs = read_log(run / "log.jsonl")
    first, last = steps["caption"].head(20).mean(), steps["caption"].tail(20).mean()
    assert last < 0.5 * first, f"caption loss fell only from {first:.2f} to {last:.2f}"
    assert epochs["val_caption"].iloc[-1] < epochs["val_caption"].iloc[0]


def _check_evaluation(base: Path) -> None:
    metrics = json.loads((base / "outputs" / "eval" / "qvidcap" / "public_test" / "metrics.json").read_text())
    cider = {name: scores["CIDEr"] for name, scores in metrics["systems"].items()}
    assert metrics["scored_set"]["num_clips"] == 60 and metrics["scored_set"]["refs_per_clip_min"] == 10
    # a statistical margin, not a fixed ratio: the paired bootstrap interval of trained - blind lies above zero
    tests = metrics["uncertainty"]["paired_tests"]
    assert tests["trained - blind"]["low"] > 0 and tests["trained - blind"]["p_value"] < 0.01, (cider, tests)
    assert tests["trained - untrained"]["low"] > 0, (cider, tests)
    for system, intervals in metrics["uncertainty"]["intervals"].items():
        assert intervals["CIDEr"]["low"] <= cider[system] <= intervals["CIDEr"]["high"], (system, intervals)
    assert not metrics["diversity"]["trained"]["collapsed"]


def _check_demo(base: Path) -> None:
    uploads = base / "outputs" / "uploads"
    assert not uploads.exists() or not any(uploads.iterdir()), "uploads must be removed after captioning"


def _check_ablations(base: Path) -> None:
    from qvidcap.config import load_config

    results = json.loads((base / "outputs" / "ablations" / "qvidcap" / "public_test" / "results.json").read_text())
    defaults = load_config("smoke").ablation
    assert results["complete"] and set(results["variants"]) == set(defaults.variants), results["left"]
    for name, row in results["variants"].items():
        assert row["interval"]["low"] <= row["CIDEr"] <= row["interval"]["high"], (name, row)
        if name != "full":
            test = row["paired_test"]
            assert test["low"] <= test["difference"] <= test["high"] and 0 < test["p_value"] <= 1, (name, test)
            assert row["sentence"], name
    assert results["seeds"]["count"] == len(defaults.seeds) and results["main_result"] is not None


CHECKS = {"00": _check_setup, "01": _check_data, "03": _check_features, "05": _check_training,
          "06": _check_evaluation, "08": _check_demo, "09": _check_ablations}


@pytest.mark.parametrize("name", NAMES)
def test_papermill_reads_every_parameter_line(name):
    """A comment papermill cannot parse (quotes or `=` in it) prints 'Unable to parse line' into the study log
    and hides the parameter from `papermill --help-notebook`."""
    from papermill.translators import PythonTranslator

    notebook = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    cell = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
    assigned = [line.split("=")[0].strip() for line in cell.source.splitlines() if "=" in line and not line.startswith("#")]
    assert [p.name for p in PythonTranslator.inspect(cell)] == assigned


INFO_LINE = re.compile(r"^INFO\b|^\S+ - INFO - | - INFO - ", re.MULTILINE)


def info_log_lines(notebook) -> list[str]:
    """Lines of an executed notebook's outputs (streams and plain-text results) that are INFO log records."""
    found = []
    for cell in _code_cells(notebook):
        for output in cell.get("outputs", []):
            text = output.get("text", "") if output.output_type == "stream" else output.get("data", {}).get("text/plain", "")
            found += [line for line in "".join(text).splitlines() if INFO_LINE.search(line)]
    return found


def test_the_info_line_check_finds_log_records_and_nothing_else():
    stream = nbformat.v4.new_output("stream", name="stderr", text="train: 50%|#####\nINFO qvidcap.data.vatex: 600 clips\n")
    plain = nbformat.v4.new_output("execute_result", data={"text/plain": "2026-01-01 12:00 - INFO - loaded"})
    quiet = nbformat.v4.new_output("stream", name="stdout", text="INFORMATION is not a log line; WARNING x: y\n")
    cell = nbformat.v4.new_code_cell("x", outputs=[stream, plain, quiet])
    assert info_log_lines(nbformat.v4.new_notebook(cells=[cell])) == [
        "INFO qvidcap.data.vatex: 600 clips", "2026-01-01 12:00 - INFO - loaded"]


def _section(text: str, heading: str) -> str:
    """The lines under `## heading` up to the next `## ` heading."""
    match = re.search(rf"^## {re.escape(heading)}\s*$(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    return match.group(1) if match else ""


@pytest.mark.parametrize("name", NAMES)
def test_every_notebook_is_a_chapter(name):
    """Running time at the top; a Summary heading followed by the code cell that computes it; a last markdown
    cell with 3-5 exercises, further reading with links, and the link to the next notebook (or the last words)."""
    notebook = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    cells = notebook.cells
    assert any(line.startswith("**Running time:**") for line in cells[0].source.splitlines()), \
        f"{name}: the first cell needs a line starting **Running time:**"
    summaries = [i for i, c in enumerate(cells) if c.cell_type == "markdown" and c.source.lstrip().startswith("## Summary")]
    assert summaries, f"{name}: no markdown cell starting with '## Summary'"
    assert summaries[-1] + 1 < len(cells) and cells[summaries[-1] + 1].cell_type == "code", \
        f"{name}: the Summary heading must be followed by the code cell that displays the run's numbers"
    last = cells[-1]
    assert last.cell_type == "markdown", f"{name}: the last cell must be markdown (exercises, reading, next)"
    exercises = [line for line in _section(last.source, "Exercises").splitlines() if re.match(r"^\s*[-*] ", line)]
    assert 3 <= len(exercises) <= 5, f"{name}: {len(exercises)} exercise bullets; expected 3 to 5"
    reading = _section(last.source, "Further reading")
    assert re.search(r"\[[^\]]+\]\(https?://", reading), f"{name}: '## Further reading' needs linked papers"
    final = last.source.strip().splitlines()[-1].strip()
    position = NAMES.index(name)
    if position + 1 < len(NAMES):
        following = NAMES[position + 1].removesuffix(".ipynb")
        assert final == f"Next: [{following}]({following}.ipynb)", f"{name}: last line {final!r} must link {following}"
    else:
        assert final == "This is the last notebook of the series.", f"{name}: last line {final!r}"
