import sys
from pathlib import Path

import pytest

from qvidcap.runtime import env as env_module
from qvidcap.config import load_config
from qvidcap.runtime.env import detect_environment, detect_kind, resolve_device


def test_local_defaults_live_in_the_repository(monkeypatch):
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    monkeypatch.setattr(env_module, "KAGGLE_INPUT", Path("/nonexistent/kaggle/input"))
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    environment = detect_environment(load_config())
    assert environment.kind == "local"
    assert environment.data_dir == env_module.REPO_ROOT / "data"
    assert environment.output_dir == env_module.REPO_ROOT / "outputs"
    assert environment.device == "cpu"
    assert environment.input_dir is None


def test_kaggle_is_detected_before_colab_and_writes_to_working(monkeypatch):
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    monkeypatch.setitem(sys.modules, "google.colab", object())  # Kaggle's image looks like Colab too
    assert detect_kind() == "kaggle"
    environment = detect_environment(load_config())
    assert environment.output_dir == Path("/kaggle/working/outputs")
    assert environment.input_dir == Path("/kaggle/input")


def test_colab_is_detected_from_its_module(monkeypatch):
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    monkeypatch.setattr(env_module, "KAGGLE_INPUT", Path("/nonexistent/kaggle/input"))
    monkeypatch.setitem(sys.modules, "google.colab", object())
    assert detect_kind() == "colab"


def test_paths_from_config_win(tmp_path):
    config = load_config("smoke", f"paths.data_dir={tmp_path}/d paths.output_dir={tmp_path}/o")
    environment = detect_environment(config)
    assert environment.data_dir == tmp_path / "d" and environment.output_dir == tmp_path / "o"


def test_asking_for_cuda_without_a_gpu_is_an_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(RuntimeError, match="no GPU"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        resolve_device("tpu")
