"""Finding attached sources and earlier outputs in every Kaggle input layout, on fake /kaggle/input trees."""
import json

import pytest

from qvidcap.runtime import kaggle_inputs
from qvidcap.runtime.deadline import STOP_FILE
from qvidcap.runtime.kaggle_inputs import (
    InputNotFoundError,
    find_named,
    find_outputs,
    restore_previous_outputs,
    source_roots,
)

LAYOUTS = {  # layout -> where the source "vatex0110" of owner "alice" is mounted
    "old": "vatex0110",
    "datasets": "datasets/alice/vatex0110",
    "notebooks": "notebooks/alice/vatex0110",
}


@pytest.fixture()
def kaggle_input(tmp_path, monkeypatch):
    base = tmp_path / "input"
    base.mkdir()
    monkeypatch.setattr("qvidcap.runtime.env.KAGGLE_INPUT", base)
    return base


def test_source_roots_list_every_layout(kaggle_input):
    for where in LAYOUTS.values():
        (kaggle_input / where).mkdir(parents=True)
    (kaggle_input / "datasets" / "bob" / "other").mkdir(parents=True)
    assert source_roots() == [kaggle_input / "datasets/alice/vatex0110", kaggle_input / "datasets/bob/other",
                              kaggle_input / "notebooks/alice/vatex0110", kaggle_input / "vatex0110"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_file_five_levels_down_is_found_in_every_layout(kaggle_input, layout):
    deep = kaggle_input / LAYOUTS[layout] / "vatex" / "json" / "train" / "x"
    deep.mkdir(parents=True)
    (deep / "state.json").write_text("{}")
    assert find_named(source_roots(), {"state.json"}) == [deep / "state.json"]


def test_the_search_is_bounded_in_depth_and_in_folders(kaggle_input, monkeypatch):
    too_deep = kaggle_input / "slug" / "a" / "b" / "c" / "d" / "e" / "f"
    too_deep.mkdir(parents=True)
    (too_deep / "state.json").write_text("{}")
    assert find_named(source_roots(), {"state.json"}) == []
    assert find_named(source_roots(), {"state.json"}, max_depth=6) == [too_deep / "state.json"]
    monkeypatch.setattr(kaggle_inputs, "MAX_DIRS", 3)
    assert find_named(source_roots(), {"state.json"}, max_depth=6) == []


def outputs_tree(root):
    """An earlier version's /kaggle/working: outputs/ with features, a checkpoint and a deadline note."""
    out = root / "outputs"
    (out / "features" / "vatex" / "shards").mkdir(parents=True)
    (out / "features" / "vatex" / "shards" / "w00-00000.json").write_text('{"video_ids": ["a"]}')
    (out / "checkpoints" / "default" / "last").mkdir(parents=True)
    (out / "checkpoints" / "default" / "last" / "config.json").write_text("{}")
    (out / STOP_FILE).write_text(json.dumps({"stage": "training", "done": "", "left": "", "when": 0}))
    return out


@pytest.mark.parametrize("where", ["qvidcap-vatex-study", "notebooks/alice/qvidcap-vatex-study"])
def test_restore_finds_the_previous_version_in_both_layouts(kaggle_input, tmp_path, where):
    source = outputs_tree(kaggle_input / where)
    (kaggle_input / "datasets" / "alice" / "vatex0110").mkdir(parents=True)  # an unrelated attached dataset
    target = tmp_path / "working" / "outputs"
    (target / "features" / "vatex" / "shards").mkdir(parents=True)
    (target / "features" / "vatex" / "shards" / "w00-00000.json").write_text("newer")
    restored = restore_previous_outputs("alice/qvidcap-vatex-study", target)
    assert restored.source == source and (restored.copied, restored.kept) == (1, 1)
    assert (target / "checkpoints" / "default" / "last" / "config.json").read_text() == "{}"
    assert (target / "features" / "vatex" / "shards" / "w00-00000.json").read_text() == "newer"  # never overwritten
    assert not (target / STOP_FILE).exists()  # the new version starts without the old deadline note


def test_restore_fails_loudly_naming_what_it_searched(kaggle_input, tmp_path):
    (kaggle_input / "notebooks" / "alice" / "qvidcap-vatex-study" / "empty").mkdir(parents=True)
    (kaggle_input / "datasets" / "alice" / "vatex0110").mkdir(parents=True)
    with pytest.raises(InputNotFoundError) as info:
        restore_previous_outputs("alice/qvidcap-vatex-study", tmp_path / "out")
    message = str(info.value)
    for part in (str(kaggle_input / "notebooks/alice/qvidcap-vatex-study"), str(kaggle_input / "qvidcap-vatex-study"),
                 "study_run.json", "features", "checkpoints", str(kaggle_input / "datasets/alice/vatex0110"),
                 "--resume-from alice/qvidcap-vatex-study"):
        assert part in message
    assert not (tmp_path / "out").exists()


def test_a_failed_copy_is_not_swallowed(kaggle_input, tmp_path, monkeypatch):
    outputs_tree(kaggle_input / "qvidcap-vatex-study")

    def broken_copy(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(kaggle_inputs.shutil, "copy2", broken_copy)
    with pytest.raises(OSError, match="No space left"):
        restore_previous_outputs("alice/qvidcap-vatex-study", tmp_path / "out")


def test_find_outputs_prefers_the_outputs_folder(tmp_path):
    root = tmp_path / "k"
    (root / "outputs" / "notebooks").mkdir(parents=True)
    (root / "outputs" / "notebooks" / "study_run.json").write_text("{}")
    (root / "outputs" / "features").mkdir()
    assert find_outputs([root]) == root / "outputs"
    assert find_outputs([tmp_path / "nothing"]) is None
