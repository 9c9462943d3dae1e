"""Each notebook opened alone from its badge: a fresh runtime without the kit, a fresh output folder, Colab or Kaggle.

The notebook's own first cell installs the kit (from this checkout, as it would from GitHub), the
bootstrap finds or restores what earlier notebooks wrote, and on the default profile a notebook makes
its missing inputs itself. The fast tests take one path through each faked runtime; `-m slow` runs every
notebook alone on every runtime (the bootstrap's
restore is unit-tested on both Kaggle layouts in tests/test_bootstrap.py). Sizes are the smallest that still run each stage (`TINY`).
"""
from __future__ import annotations

import json

import pytest

from hosted_runtime import FreshPython, HostedRuntime, cell_text, execute_alone

pytestmark = pytest.mark.notebooks

TINY = ("data.mini_train_clips=16 data.mini_validation_clips=4 data.mini_test_clips=10 train.epochs=1 "
        "train.batch_size=8 train.eval_clips=4 eval.blind_pool_clips=16 eval.blind_candidates=16")
EXTRA = {"04_build_heads.ipynb": {"fit_steps": 5, "batch_size": 4}, "08_demo.ipynb": {"num_clips": 2}}
NOTEBOOKS = ["00_setup.ipynb", "01_download_vatex.ipynb", "02_explore_data.ipynb", "03_extract_features.ipynb",
             "04_build_heads.ipynb", "05_train.ipynb", "06_evaluate.ipynb", "07_error_analysis.ipynb", "08_demo.ipynb"]


@pytest.fixture(scope="module")
def python(tmp_path_factory):
    return FreshPython(tmp_path_factory.mktemp("fresh-python"))


def run(name, runtime, python, tmp_path, monkeypatch, **parameters):
    parameters = {"profile": "smoke", "overrides": TINY, **EXTRA.get(name, {}), **parameters}
    return execute_alone(name, runtime, python, tmp_path / "executed" / runtime.kind, monkeypatch, parameters)


def test_colab_00_installs_the_kit_mounts_drive_and_the_next_notebook_takes_its_choice(python, tmp_path, monkeypatch):
    python.remove_kit()
    assert not python.has_kit()
    colab = HostedRuntime.make("colab", tmp_path / "colab")
    run("00_setup.ipynb", colab, python, tmp_path, monkeypatch, mount_drive=True)
    assert python.has_kit(), "the first cell should have installed the kit"
    assert (colab.root / "content" / "mount_calls.txt").read_text().split() == [str(colab.root / "content" / "drive")]
    setup = json.loads((colab.outputs / "setup.json").read_text())
    assert colab.outputs.parent.parent.name == "MyDrive" and setup["environment"] == "colab"
    assert setup["profile"] == "smoke" and setup["overrides"] == TINY

    # a later notebook opened alone, with its profile left empty: notebook 00's choice, from Drive
    executed = run("02_explore_data.ipynb", colab, python, tmp_path, monkeypatch, profile="", overrides="",
                   mount_drive=True)
    assert "from " + str(colab.outputs / "setup.json") in cell_text(executed)
    train = json.loads((colab.outputs.parent / "data" / "mini" / "vatex_training_v1.0.json").read_text())
    assert len(train) == 16, "the tiny override from notebook 00 should have sized the mini dataset"


@pytest.mark.parametrize("layout", ["kaggle", pytest.param("kaggle-old", marks=pytest.mark.slow)])
def test_kaggle_05_alone_restores_an_earlier_versions_features_and_trains(layout, python, tmp_path, monkeypatch):
    earlier = HostedRuntime.make(layout, tmp_path / "earlier")
    run("03_extract_features.ipynb", earlier, python, tmp_path / "v1", monkeypatch)
    stored = sorted(p.name for p in (earlier.outputs / "features" / "mini").rglob("shards/*"))
    assert stored, "notebook 03 should have written feature shards"

    kaggle = HostedRuntime.make(layout, tmp_path / "now")
    kaggle.attach_earlier_version(earlier.outputs)
    (earlier.outputs.parent / "data").rename(kaggle.root / "kaggle" / "working" / "data")  # the mini dataset, regenerated otherwise
    executed = run("05_train.ipynb", kaggle, python, tmp_path / "v2", monkeypatch)
    text = cell_text(executed)
    assert "restored" in text and "earlier version" in text
    assert sorted(p.name for p in (kaggle.outputs / "features" / "mini").rglob("shards/*")) == stored
    assert "features of" not in text, "the restored store is complete: nothing should be extracted again"
    assert (kaggle.outputs / "checkpoints" / "qvidcap" / "best" / "config.json").is_file()


def test_kaggle_08_alone_makes_its_inputs_on_the_default_profile(python, tmp_path, monkeypatch):
    kaggle = HostedRuntime.make("kaggle-old", tmp_path / "kaggle")
    executed = run("08_demo.ipynb", kaggle, python, tmp_path, monkeypatch)
    text = cell_text(executed)
    assert "a trained checkpoint" in text and "missing, so this notebook makes it now" in text
    assert (kaggle.outputs / "checkpoints" / "qvidcap" / "best" / "config.json").is_file()
    uploads = kaggle.outputs / "uploads"
    assert not uploads.exists() or not any(uploads.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["colab", "kaggle", "kaggle-old"])
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_every_notebook_runs_alone(name, kind, python, tmp_path, monkeypatch):
    runtime = HostedRuntime.make(kind, tmp_path / kind)
    executed = run(name, runtime, python, tmp_path, monkeypatch)
    assert executed.is_file() and python.has_kit()
