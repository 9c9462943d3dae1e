import json

import nbformat
import pytest

from qvidcap.runtime import links
from qvidcap.cli import main as cli_main
from qvidcap.config import load_config
from qvidcap.runtime.kaggle_kernel import CODE_FILE, kernel_metadata, write_kernel


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
    assert "pip install" in source and "torch" not in source.split("pip install", 1)[1].split("\n")[0]


def test_cli_writes_the_folder(tmp_path, capsys):
    assert cli_main(["kaggle", "write", "--username", "student", "--folder", str(tmp_path / "k")]) == 0
    assert (tmp_path / "k" / "kernel-metadata.json").is_file()
