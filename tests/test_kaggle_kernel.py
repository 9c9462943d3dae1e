import json

import nbformat
import pytest

from qvidcap.runtime import links
from qvidcap.cli import main as cli_main
from qvidcap.config import load_config
from qvidcap.runtime.kaggle_kernel import CODE_FILE, kernel_metadata, study_notebook, write_kernel


def test_metadata_asks_for_two_t4s_and_attaches_vatex():
    metadata = kernel_metadata("student", load_config("kaggle"))
    assert metadata["id"] == "student/qvidcap-vatex-study"
    assert metadata["machine_shape"] == "NvidiaTeslaT4" and metadata["enable_gpu"] is True
    assert metadata["enable_internet"] is True
    assert metadata["dataset_sources"] == ["khaledatef1/vatex0110", "khaledatef1/vatex011011", "khaledatef1/vatex01101"]
    assert (metadata["language"], metadata["kernel_type"], metadata["code_file"]) == ("python", "notebook", CODE_FILE)
    assert metadata["kernel_sources"] == []


def test_resume_attaches_the_previous_version():
    metadata = kernel_metadata("student", load_config("kaggle"), resume_from="student/qvidcap-vatex-study")
    assert metadata["kernel_sources"] == ["student/qvidcap-vatex-study"]


@pytest.mark.parametrize("username, slug", [("", "qvidcap-vatex-study"), ("a b", "qvidcap-vatex-study"), ("ok", "X")])
def test_bad_names_are_refused(username, slug):
    with pytest.raises(ValueError):
        kernel_metadata(username, load_config("kaggle"), slug=slug)


def test_written_folder_is_pushable(tmp_path):
    folder = write_kernel(tmp_path / "k", "student", load_config("kaggle"))
    metadata = json.loads((folder / "kernel-metadata.json").read_text())
    notebook = nbformat.read(folder / metadata["code_file"], as_version=4)
    nbformat.validate(notebook)
    assert notebook.metadata.kernelspec.name == "python3"  # pushed notebooks need a kernelspec name
    source = "\n".join(c.source for c in notebook.cells)
    assert links.install_spec() in source and "--profile kaggle" in source
    install = next(line for line in source.splitlines() if '"pip", "install"' in line)
    assert "torch" not in install.replace(links.install_spec(), "") and "check=True" in install


def test_cli_writes_the_folder(tmp_path, capsys):
    assert cli_main(["kaggle", "write", "--username", "student", "--folder", str(tmp_path / "k")]) == 0
    assert (tmp_path / "k" / "kernel-metadata.json").is_file()


# ------------------------------------------------------------ two GPUs, the deadline, resuming


def _code(notebook):
    return [c.source for c in notebook.cells if c.cell_type == "code"]


def test_the_kernel_runs_extraction_and_training_on_two_processes_under_a_deadline():
    cells = _code(study_notebook())
    source = "\n".join(cells)
    launches = [c for c in cells if "accelerate launch --num_processes 2" in c]
    assert [("extract" in c, "train" in c) for c in launches] == [(True, False), (False, True)]
    assert all("-m qvidcap.cli" in c and "--profile kaggle" in c for c in launches)
    studies = [c for c in cells if "qvidcap.runtime.study" in c]
    assert ["--from 00 --to 02" in studies[0], "--from 03 --to 09" in studies[1]] == [True, True]
    assert cells.index(studies[0]) < cells.index(launches[0]) < cells.index(launches[1]) < cells.index(studies[1])
    assert all("--deadline-hours {DEADLINE_HOURS} --started-at {SESSION_START}" in c for c in studies)
    assert cells[0].index("SESSION_START") < cells[0].index("DEADLINE_HOURS = 11.25")  # the first cell notes the start
    assert "|| true" not in source and "2>/dev/null" not in source
    assert not any(line.lstrip().startswith(("!", "%")) for line in source.splitlines())  # a failed ! line is ignored
    assert "restore_previous_outputs" not in source


@pytest.mark.parametrize("where", ["qvidcap-vatex-study", "notebooks/student/qvidcap-vatex-study"])
def test_the_restore_cell_finds_the_previous_outputs_in_both_layouts(tmp_path, monkeypatch, where):
    from qvidcap.runtime import kaggle_kernel

    monkeypatch.setattr("qvidcap.runtime.env.KAGGLE_INPUT", tmp_path / "input")
    monkeypatch.setattr(kaggle_kernel, "WORKING_OUTPUTS", tmp_path / "working" / "outputs")
    previous = tmp_path / "input" / where / "outputs" / "checkpoints" / "default" / "last"
    previous.mkdir(parents=True)
    (previous / "config.json").write_text("{}")
    (tmp_path / "input" / "datasets" / "khaledatef1" / "vatex0110").mkdir(parents=True)
    cell = next(c for c in _code(kaggle_kernel.study_notebook("student/qvidcap-vatex-study"))
                if "restore_previous_outputs" in c)
    exec(cell, {})
    assert (tmp_path / "working" / "outputs" / "checkpoints" / "default" / "last" / "config.json").read_text() == "{}"


def test_the_restore_cell_raises_naming_where_it_looked(tmp_path, monkeypatch):
    from qvidcap.runtime import kaggle_kernel
    from qvidcap.runtime.kaggle_inputs import InputNotFoundError

    monkeypatch.setattr("qvidcap.runtime.env.KAGGLE_INPUT", tmp_path / "input")
    monkeypatch.setattr(kaggle_kernel, "WORKING_OUTPUTS", tmp_path / "working" / "outputs")
    cell = next(c for c in _code(kaggle_kernel.study_notebook("student/qvidcap-vatex-study"))
                if "restore_previous_outputs" in c)
    with pytest.raises(InputNotFoundError, match="notebooks/student/qvidcap-vatex-study.*input/qvidcap-vatex-study"):
        exec(cell, {})


def _python(code):
    import shlex
    import sys

    return f"{shlex.quote(sys.executable)} -c {shlex.quote(code)}"


def test_steps_stop_after_a_deadline_note_and_the_session_says_how_to_continue(tmp_path, monkeypatch, capsys):
    from qvidcap.runtime.deadline import ENV_VAR, STOP_FILE
    from qvidcap.runtime.kaggle_kernel import KernelRun, finish, start_deadline, step

    monkeypatch.delenv(ENV_VAR, raising=False)
    start_deadline(11.25, 1000.0)
    import os

    assert float(os.environ[ENV_VAR]) == 1000.0 + 11.25 * 3600  # long past: reset below
    monkeypatch.delenv(ENV_VAR)
    run = KernelRun()
    note = {"stage": "extraction", "done": "train: 3 of 9 clips stored", "left": "train: 6 clips", "when": 1.0}
    first = _python("print('data ready')")
    second = _python(f"import json, pathlib; pathlib.Path({str(tmp_path)!r}, {STOP_FILE!r}).write_text(json.dumps({note!r}))")
    third = _python(f"open({str(tmp_path / 'ran')!r}, 'w')")
    assert [step(c, tmp_path, run) for c in (first, second, third)] == [True, False, False]
    assert not (tmp_path / "ran").exists() and "data ready" in capsys.readouterr().out
    sentence = finish("student/qvidcap-vatex-study", run)
    assert "during extraction: train: 3 of 9 clips stored; left: train: 6 clips" in sentence
    assert f"Steps finished: 1; left: {second}; {third}" in sentence
    assert "qvidcap kaggle push --username student --slug qvidcap-vatex-study --resume-from student/qvidcap-vatex-study" in sentence


def test_a_failing_step_raises_and_a_past_deadline_runs_nothing(tmp_path, monkeypatch):
    import subprocess
    import time

    from qvidcap.runtime.deadline import ENV_VAR
    from qvidcap.runtime.kaggle_kernel import KernelRun, finish, step

    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(subprocess.CalledProcessError):
        step(_python("raise SystemExit(3)"), tmp_path, KernelRun())
    monkeypatch.setenv(ENV_VAR, repr(time.time() - 1))
    run = KernelRun()
    assert step(_python(f"open({str(tmp_path / 'ran')!r}, 'w')"), tmp_path, run) is False
    assert not (tmp_path / "ran").exists() and "The deadline was reached before" in finish("", run)
    monkeypatch.delenv(ENV_VAR)
    assert "The study finished: all 1 steps" in finish("", KernelRun(done=["x"]))
