"""The study runner: notebooks in order, and a clean stop at the deadline that says what is left."""
import json
import time

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from qvidcap.runtime.deadline import ENV_VAR, STOP_FILE
from qvidcap.runtime.study import main, run_study

PARAMETERS = 'profile = "smoke"\noverrides = ""'
OUTPUT_DIR = "from qvidcap.config import load_config\nout = load_config(profile, overrides).paths.output_dir\n"


def write_notebooks(folder, bodies):
    """Tiny notebooks NN_name.ipynb: a papermill parameters cell, then `body`."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in bodies.items():
        parameters = new_code_cell(PARAMETERS, metadata={"tags": ["parameters"]})
        notebook = new_notebook(cells=[parameters, new_code_cell(OUTPUT_DIR + body)])
        notebook.metadata["kernelspec"] = {"name": "qvidcap", "display_name": "qvidcap", "language": "python"}
        nbformat.write(notebook, folder / f"{name}.ipynb")
    return folder


def marker(name):
    return (f"import os, pathlib\npathlib.Path(out, '{name}.ran').write_text(os.environ.get('{ENV_VAR}', ''))\n")


@pytest.fixture(autouse=True)
def no_inherited_deadline(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)


def test_a_stage_stopped_at_the_deadline_ends_the_study_with_what_is_left(tmp_path, capsys):
    notebooks = write_notebooks(tmp_path / "nb", {
        "00_setup": marker("00"),
        "01_train": marker("01") + "from qvidcap.runtime.deadline import record_stop\n"
                                   "record_stop(out, 'training', 'epoch 2 of 5 saved', 'epochs 3-5')\n",
        "02_evaluate": marker("02"),
    })
    out = tmp_path / "out"
    out.mkdir()
    (out / STOP_FILE).write_text(json.dumps({"stage": "stale", "done": "", "left": "", "when": 0}))  # an old run's note
    before = time.time()
    code = main(["--output-dir", str(out), "--executed-dir", str(tmp_path / "executed"), "--deadline-hours", "2",
                 "--notebook-dir", str(notebooks)])
    printed = capsys.readouterr().out
    assert code == 0
    assert (out / "00.ran").is_file() and (out / "01.ran").is_file() and not (out / "02.ran").exists()
    deadline = float((out / "00.ran").read_text())  # the kernels inherit the deadline
    assert before + 2 * 3600 <= deadline <= time.time() + 2 * 3600
    sentence = printed.strip().splitlines()[-1]
    assert "during training: epoch 2 of 5 saved; left: epochs 3-5" in sentence and "stale" not in sentence
    assert "Notebooks finished: 00; left: 01, 02" in sentence
    assert "--from 01" in sentence and f"--output-dir {out}" in sentence and "--deadline-hours 2" in sentence
    record = json.loads((tmp_path / "executed" / "study_run.json").read_text())
    assert record["left"] == ["01_train.ipynb", "02_evaluate.ipynb"] and [r["name"] for r in record["notebooks"]] == [
        "00_setup.ipynb", "01_train.ipynb"]



def test_a_deadline_already_past_runs_nothing_and_names_every_notebook(tmp_path):
    notebooks = write_notebooks(tmp_path / "nb", {"00_setup": marker("00"), "01_train": marker("01")})
    lines = []
    result = run_study(notebook_dir=notebooks, executed_dir=tmp_path / "executed", output_dir=tmp_path / "out",
                       deadline_hours=1, started_at=time.time() - 3601, log=lines.append)
    assert result.runs == [] and result.left == ["00_setup.ipynb", "01_train.ipynb"]
    assert lines[-1].startswith("The deadline was reached before 00_setup.ipynb. Notebooks finished: none; left: 00, 01")
    assert "--from 00" in lines[-1] and not (tmp_path / "out" / "00.ran").exists()


def test_from_and_to_select_the_notebooks(tmp_path):
    notebooks = write_notebooks(tmp_path / "nb", {"00_a": marker("00"), "01_b": marker("01"), "02_c": marker("02")})
    result = run_study(notebook_dir=notebooks, executed_dir=tmp_path / "executed", output_dir=tmp_path / "out",
                       start_from="01", end_at="01", log=lambda line: None)
    assert [r.name for r in result] == ["01_b.ipynb"] and not result.stopped
    assert sorted(p.name for p in (tmp_path / "out").glob("*.ran")) == ["01.ran"]
