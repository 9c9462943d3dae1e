import json
import logging
import re
from pathlib import Path

import pytest

from qvidcap.config import load_config
from qvidcap.data import explore
from qvidcap.data.vatex import (
    AnnotationError,
    DatasetNotFoundError,
    load_clips,
    read_annotation_file,
    read_annotations,
    read_saved_dataset,
    resolve_dataset,
)
from qvidcap.runtime.env import Environment

IDS = ["0wR5jVB-WPk_000417_000427", "8JW7yCjSyHg_000000_000010", "a_b-c_d-e_f_000012_000022"]
TINY_MINI = "data.mini_train_clips=3 data.mini_validation_clips=2 data.mini_test_clips=2 " \
            "data.mini_frame_size=32 data.mini_fps=4 data.mini_seconds=1"


def record(video_id, n=10, **extra):
    return {"videoID": video_id, "enCap": [f"caption {i} of {video_id}" for i in range(n)],
            "chCap": [f"中文 {i}" for i in range(n)], **extra}


def write_videos(folder: Path, ids) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for video_id in ids:
        (folder / f"{video_id}.mp4").write_bytes(b"\0")  # the loader only looks for the file
    return folder


def write_json(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, ensure_ascii=False))
    return path


def environment(tmp_path, input_dir=None) -> Environment:
    return Environment("local", "cpu", 0, "", tmp_path / "data", tmp_path / "outputs", input_dir)


def test_official_json_loads_into_records(tmp_path):
    videos = write_videos(tmp_path / "videos", IDS[:2])
    path = write_json(tmp_path / "vatex_training_v1.0.json", [record(i) for i in IDS])
    clips = read_annotation_file(path, "train", videos, lenient=True)
    assert clips.video_ids == IDS[:2]
    assert (clips.num_referenced, clips.num_with_video, len(clips.skipped)) == (3, 2, 1)
    first = clips[0]
    assert first.split == "train" and len(first.captions) == 10 and first.captions_zh[0] == "中文 0"
    assert first.video_path == videos / f"{IDS[0]}.mp4" and first.has_video
    assert clips.skipped[0].video_id == IDS[2] and "no video file" in clips.skipped[0].reason


def test_save_to_disk_copy_reads_like_the_json(tmp_path):
    import datasets

    rows = [record(i) for i in IDS]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "vatex" / "json" / "train"))
    videos = write_videos(tmp_path / "videos", IDS)
    from_disk = read_saved_dataset(tmp_path / "vatex" / "json" / "train", "train", videos, lenient=False)
    from_json = read_annotations(write_json(tmp_path / "a.json", rows), "train", videos, lenient=False)
    assert [r.to_annotation() for r in from_disk] == [r.to_annotation() for r in from_json] == rows


def test_a_saved_dataset_dict_is_read_by_split(tmp_path):
    import datasets

    datasets.DatasetDict({"train": datasets.Dataset.from_list([record(IDS[0])]),
                          "test": datasets.Dataset.from_list([record(IDS[1])])}).save_to_disk(str(tmp_path / "dd"))
    clips = read_saved_dataset(tmp_path / "dd", "public_test", None, lenient=False)
    assert clips.video_ids == [IDS[1]]


BAD_RECORDS = [
    ("not a dict", ["just", "a", "list"], "expected an object"),
    ("no videoID", {"enCap": ["x"]}, "has no videoID"),
    ("videoID not a string", {"videoID": 12, "enCap": ["x"]}, "videoID that is a int"),
    ("malformed videoID", record("0wR5jVB-WPk_417_427"), "malformed videoID"),
    ("duplicate", record(IDS[0]), "duplicates the videoID of record 0"),
    ("no enCap", {"videoID": IDS[1], "chCap": []}, "has no enCap"),
    ("enCap not a list", record(IDS[1], enCap="a caption"), "enCap is a str"),
    ("empty enCap", record(IDS[1], enCap=[]), "enCap is empty"),
    ("caption not a string", record(IDS[1], enCap=["ok", None]), r"enCap\[1\] is a NoneType"),
    ("empty caption", record(IDS[1], enCap=["ok", "  \r\n"]), r"enCap\[1\] is an empty caption"),
    ("bad chCap", record(IDS[1], chCap=[3]), r"chCap\[0\] is a int"),
    ("no video", record(IDS[2]), "has no video file"),
]


@pytest.mark.parametrize("name, bad, reason", BAD_RECORDS, ids=[b[0] for b in BAD_RECORDS])
def test_bad_records_raise_naming_the_record_when_strict(tmp_path, name, bad, reason):
    videos = write_videos(tmp_path / "videos", IDS[:2])
    path = write_json(tmp_path / "v.json", [record(IDS[0]), bad])
    with pytest.raises(AnnotationError, match=reason) as info:
        read_annotation_file(path, "train", videos, lenient=False)
    message = str(info.value)
    assert "record 1" in message and str(path) in message and "data.lenient=true" in message


@pytest.mark.parametrize("name, bad, reason", BAD_RECORDS, ids=[b[0] for b in BAD_RECORDS])
def test_bad_records_are_skipped_and_recorded_when_lenient(tmp_path, name, bad, reason):
    videos = write_videos(tmp_path / "videos", IDS[:2])
    path = write_json(tmp_path / "v.json", [record(IDS[0]), bad])
    clips = read_annotation_file(path, "train", videos, lenient=True)
    assert clips.video_ids == [IDS[0]] and clips.num_referenced == 2
    assert [s.index for s in clips.skipped] == [1]
    assert re.search(reason, clips.skipped[0].reason)


def test_private_test_records_need_only_an_id(tmp_path):
    videos = write_videos(tmp_path / "videos", IDS[1:2])
    path = write_json(tmp_path / "p.json", [{"videoID": IDS[1]}])
    clips = read_annotation_file(path, "private_test", videos, lenient=False)
    assert clips[0].captions == [] and clips[0].has_video


def test_captions_have_whitespace_collapsed_and_unicode_kept(tmp_path):
    path = write_json(tmp_path / "v.json", [record(IDS[0], enCap=["a café\r\n scene  ", "ok"])])
    clips = read_annotation_file(path, "validation", None, lenient=False)
    assert clips[0].captions == ["a café scene", "ok"] and clips.num_with_video == 0


def test_unreadable_files_give_typed_errors(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        read_annotation_file(tmp_path / "none.json", "train", None, lenient=True)
    (tmp_path / "broken.json").write_text("[{")
    with pytest.raises(AnnotationError, match="not readable JSON"):
        read_annotation_file(tmp_path / "broken.json", "train", None, lenient=True)
    write_json(tmp_path / "dict.json", {"videoID": IDS[0]})
    with pytest.raises(AnnotationError, match="holds a dict"):
        read_annotation_file(tmp_path / "dict.json", "train", None, lenient=True)
    with pytest.raises(ValueError, match="unknown split"):
        read_annotation_file(tmp_path / "dict.json", "dev", None, lenient=True)


# ------------------------------------------------------------ finding a copy


def kagglehub_copy(cache: Path, handle="khaledatef1/vatex0110") -> Path:
    """The kagglehub cache layout: versions/1/vatex/json/{train,public_test} and videos/."""
    import datasets

    root = cache / "datasets" / handle / "versions" / "1"
    for split, ids in (("train", IDS[:2]), ("public_test", IDS[2:])):
        datasets.Dataset.from_list([record(i) for i in ids]).save_to_disk(str(root / "vatex" / "json" / split))
    write_videos(root / "videos", IDS[:2])
    return root


def test_the_kagglehub_cache_layout_is_found(tmp_path, monkeypatch):
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "cache"))
    root = kagglehub_copy(tmp_path / "cache")
    config = load_config("smoke", "data.source=vatex data.fallback_to_mini=false")
    location = resolve_dataset(config, environment(tmp_path))
    assert location.name == "vatex" and location.root == root
    assert location.annotations == {"train": root / "vatex/json/train", "public_test": root / "vatex/json/public_test"}
    clips = load_clips(config, environment(tmp_path), "train", lenient=False)
    assert clips.video_ids == IDS[:2] and clips.source == "vatex"
    test = load_clips(config, environment(tmp_path), "public_test", lenient=True)
    assert (len(test), test.num_referenced, test.num_with_video) == (0, 1, 0)


def test_attached_kaggle_inputs_share_their_video_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "empty-cache"))
    inputs = tmp_path / "input"
    write_json(inputs / "vatex0110" / "json" / "vatex_training_v1.0.json", [record(i) for i in IDS])
    write_videos(inputs / "vatex0110" / "videos", IDS[:1])
    write_videos(inputs / "vatex011011" / "videos", IDS[1:])
    config = load_config("smoke", "data.source=vatex data.fallback_to_mini=false")
    clips = load_clips(config, environment(tmp_path, input_dir=inputs), "train", lenient=False)
    assert clips.video_ids == IDS and clips.num_with_video == 3


def test_paths_vatex_input_wins_and_must_exist(tmp_path, monkeypatch):
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "empty-cache"))
    copy = tmp_path / "mycopy"
    write_json(copy / "vatex_validation_v1.0.json", [record(IDS[0])])
    config = load_config("smoke", f"data.source=vatex paths.vatex_input={copy}")
    assert resolve_dataset(config, environment(tmp_path)).annotations == {"validation": copy / "vatex_validation_v1.0.json"}
    config = load_config("smoke", f"data.source=vatex paths.vatex_input={tmp_path / 'nowhere'}")
    with pytest.raises(DatasetNotFoundError, match="paths.vatex_input"):
        resolve_dataset(config, environment(tmp_path))


def test_no_copy_falls_back_to_mini_or_says_what_to_supply(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr("qvidcap.runtime.env.KAGGLE_INPUT", tmp_path / "no-kaggle-input")
    with caplog.at_level(logging.WARNING):
        location = resolve_dataset(load_config("smoke", "data.source=vatex"), environment(tmp_path))
    assert location.name == "mini" and "no VATEX copy found" in caplog.text
    with pytest.raises(DatasetNotFoundError, match="paths.vatex_input") as info:
        resolve_dataset(load_config("smoke", "data.source=vatex data.fallback_to_mini=false"), environment(tmp_path))
    assert "khaledatef1/vatex0110" in str(info.value)


def test_load_clips_generates_the_mini_dataset_and_caps_the_split(tmp_path):
    config = load_config("smoke", TINY_MINI + " data.max_clips_per_split=2")
    clips = load_clips(config, environment(tmp_path), "train")
    assert len(clips) == 2 and clips.num_referenced == 3 and clips.num_with_video == 3
    assert all(r.has_video and len(r.captions) == 10 for r in clips)
    with pytest.raises(ValueError, match="unknown split"):
        load_clips(config, environment(tmp_path), "test")
    with pytest.raises(DatasetNotFoundError, match="no annotations for split 'private_test'"):
        load_clips(config, environment(tmp_path), "private_test")


# ------------------------------------------------------------ exploring


def test_caption_statistics(tmp_path):
    rows = [record(IDS[0], enCap=["A red ball rolls.", "the red ball rolls away"]),
            record(IDS[1], enCap=["a man's dog runs"])]
    train = read_annotation_file(write_json(tmp_path / "t.json", rows), "train", None, lenient=False)
    test = read_annotation_file(write_json(tmp_path / "p.json", [record(IDS[2], enCap=["a blue ball"])]),
                                "public_test", None, lenient=False)
    table = explore.caption_table({"train": train, "public_test": test})
    assert table["words"].tolist() == [4, 5, 4, 3]
    assert explore.tokenize("A man's DOG, running!") == ["a", "man's", "dog", "running"]
    summary = explore.split_summary([train, test]).set_index("split")
    assert summary.loc["train", "captions"] == 3 and summary.loc["train", "captions per clip"] == 1.5
    assert summary.loc["train", "vocabulary"] == 9  # a red ball rolls the away man's dog runs
    top = explore.top_words(table, n=2)
    assert top["word"].tolist() == ["ball", "red"] and top["count"].tolist() == [3, 2]
    vocab = explore.vocabulary_table(table).set_index("split")
    assert vocab.loc["public_test", "words not in train"] == 1  # "blue"
    ax = explore.plot_caption_lengths(table)
    assert ax.get_xlabel() == "words per caption"
    assert explore.plot_top_words(table, n=3).get_title().startswith("Top 3")
    assert explore.sample_records(train, 5, seed=1) == train.records


# ------------------------------------------------------------ Kaggle's input layouts, a missing split


@pytest.mark.parametrize("mount", ["vatex0110", "datasets/khaledatef1/vatex0110", "notebooks/someone/vatex-copy"])
def test_a_save_to_disk_copy_is_found_in_every_kaggle_layout(tmp_path, monkeypatch, mount):
    import datasets

    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "empty-cache"))
    inputs = tmp_path / "input"
    root = inputs / mount / "versions" / "1"  # 5 levels below the source to the split folder
    datasets.Dataset.from_list([record(i) for i in IDS[:2]]).save_to_disk(str(root / "vatex" / "json" / "train"))
    write_videos(root / "videos", IDS[:1])
    write_videos(inputs / "datasets" / "khaledatef1" / "vatex011011" / "videos", IDS[1:2])  # another part's videos
    config = load_config("smoke", "data.source=vatex data.fallback_to_mini=false")
    location = resolve_dataset(config, environment(tmp_path, input_dir=inputs))
    assert location.root == inputs / mount and location.annotations == {"train": root / "vatex/json/train"}
    clips = load_clips(config, environment(tmp_path, input_dir=inputs), "train", lenient=False)
    assert clips.video_ids == IDS[:2] and clips.num_with_video == 2


def test_nothing_found_names_the_roots_and_the_files_looked_for(tmp_path, monkeypatch):
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "empty-cache"))
    inputs = tmp_path / "input"
    (inputs / "datasets" / "alice" / "unrelated" / "stuff").mkdir(parents=True)
    (inputs / "notebooks" / "bob" / "kernel").mkdir(parents=True)
    config = load_config("smoke", "data.source=vatex data.fallback_to_mini=false")
    with pytest.raises(DatasetNotFoundError) as info:
        resolve_dataset(config, environment(tmp_path, input_dir=inputs))
    message = str(info.value)
    for part in (str(inputs / "datasets/alice/unrelated"), str(inputs / "notebooks/bob/kernel"),
                 "vatex_training_v1.0.json", "vatex_validation_v1.0.json", "state.json", "videos/"):
        assert part in message


def test_a_copy_without_validation_still_loads_and_says_what_it_has(tmp_path, monkeypatch, caplog):
    from qvidcap.data.vatex import load_splits, split_report

    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "empty-cache"))
    copy = tmp_path / "copy"
    write_json(copy / "vatex_training_v1.0.json", [record(i) for i in IDS])
    write_json(copy / "vatex_public_test_english_v1.1.json", [record("zzzzzzzzzzz_000001_000011")])
    write_videos(copy / "videos", IDS[:2])
    config = load_config("smoke", f"data.source=vatex data.fallback_to_mini=false paths.vatex_input={copy}")
    env = environment(tmp_path)
    splits = load_splits(config, env, ["train", "validation", "public_test"])
    assert sorted(splits) == ["public_test", "train"] and len(splits["train"]) == 2
    empty = load_clips(config, env, "validation", missing_ok=True)
    assert (len(empty), empty.split) == (0, "validation")
    with pytest.raises(DatasetNotFoundError, match="no annotations for split 'validation'"):
        load_clips(config, env, "validation")
    with caplog.at_level(logging.INFO):
        rows = {r["split"]: r for r in split_report(config, env)}
    assert rows["train"] == {"split": "train", "annotations": str(copy / "vatex_training_v1.0.json"),
                             "records": 3, "videos present": 2}
    assert (rows["validation"]["annotations"], rows["validation"]["records"]) == ("none", 0)
    assert rows["public_test"]["records"] == 1 and rows["public_test"]["videos present"] == 0
    assert "no annotations for validation, private_test" in caplog.text
