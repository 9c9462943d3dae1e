import dataclasses
import json

import numpy as np
import pytest

from qvidcap.config import DataConfig
from qvidcap.data import minidata
from qvidcap.data.minidata import (
    ANNOTATION_FILES,
    COMPLETE_FILE,
    META_FILE,
    canonical_caption,
    caption_scene,
    generate_mini_dataset,
    plan_split,
    read_mini_meta,
    render_scene,
)
from qvidcap.data.records import parse_video_id
from qvidcap.data.vatex import read_annotation_file

TINY = DataConfig(mini_train_clips=4, mini_validation_clips=2, mini_test_clips=2, mini_frame_size=32,
                  mini_fps=6, mini_seconds=1.0)


def decode_all(path):
    import decord

    reader = decord.VideoReader(str(path))
    return reader.get_batch(list(range(len(reader)))).asnumpy(), reader.get_avg_fps()


def annotation_bytes(root):
    return {name: (root / name).read_bytes() for name in (*ANNOTATION_FILES.values(), META_FILE)}


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    return generate_mini_dataset(TINY, tmp_path_factory.mktemp("mini") / "mini")


def test_files_are_in_the_official_vatex_format(tiny_root):
    for split, name in ANNOTATION_FILES.items():
        rows = json.loads((tiny_root / name).read_text(encoding="utf-8"))
        assert len(rows) == minidata.split_sizes(TINY)[split]
        for row in rows:
            assert list(row) == ["videoID", "enCap", "chCap"]
            youtube_id, start, end = parse_video_id(row["videoID"])
            assert len(youtube_id) == 11 and end - start == 1
            assert len(row["enCap"]) == 10 and len(set(row["enCap"])) == 10
            assert len(row["chCap"]) == (0 if split == "public_test" else 10)
            assert (tiny_root / "videos" / f"{row['videoID']}.mp4").is_file()
        clips = read_annotation_file(tiny_root / name, split, tiny_root / "videos", lenient=False)
        assert len(clips) == clips.num_with_video == len(rows)


def test_videos_decode_as_h264_with_the_configured_size_and_rate(tiny_root):
    import av

    video = next((tiny_root / "videos").iterdir())
    frames, fps = decode_all(video)
    assert frames.shape == (6, 32, 32, 3) and frames.dtype == np.uint8 and fps == 6
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"


def test_same_seed_gives_the_same_json_bytes_and_pictures(tiny_root, tmp_path):
    again = generate_mini_dataset(TINY, tmp_path / "again")
    assert annotation_bytes(again) == annotation_bytes(tiny_root)
    scenes = {s.video_id: s for split, n in minidata.split_sizes(TINY).items() for s in plan_split(TINY, split, n)}
    for video_id, scene in scenes.items():
        np.testing.assert_array_equal(render_scene(scene, 32, 6), render_scene(scene, 32, 6))
        first, second = (decode_all(root / "videos" / f"{video_id}.mp4")[0].astype(int) for root in (tiny_root, again))
        # x264 is not always bit-exact between encodes of the same frames (a mean difference of 0.06 levels when
        # seen), while the same clip shifted by one frame differs by 1.8 to 5 levels on average
        assert np.abs(first - second).mean() < 1.0, video_id


def test_another_seed_gives_other_clips(tiny_root, tmp_path):
    other = generate_mini_dataset(dataclasses.replace(TINY, mini_seed=1), tmp_path / "other")
    ids = {p.name for p in (tiny_root / "videos").iterdir()}
    assert ids.isdisjoint(p.name for p in (other / "videos").iterdir())
    assert annotation_bytes(other) != annotation_bytes(tiny_root)


def test_a_complete_dataset_is_kept_and_a_config_change_regenerates(tmp_path):
    root = generate_mini_dataset(TINY, tmp_path / "mini")
    video = next((root / "videos").iterdir())
    stamp = video.stat().st_mtime_ns
    generate_mini_dataset(TINY, root)
    assert video.stat().st_mtime_ns == stamp
    changed = dataclasses.replace(TINY, mini_seed=7)
    generate_mini_dataset(changed, root)
    assert not video.exists()  # the old clips go with the old config
    assert len(list((root / "videos").iterdir())) == sum(minidata.split_sizes(changed).values())
    assert json.loads((root / COMPLETE_FILE).read_text())["config_hash"] == minidata.mini_config_hash(changed)


def test_an_interrupted_dataset_is_redone(tmp_path):
    root = generate_mini_dataset(TINY, tmp_path / "mini")
    victim = next((root / "videos").iterdir())
    victim.unlink()  # as if the run had stopped before this clip
    assert not minidata.is_complete(TINY, root)
    generate_mini_dataset(TINY, root)
    assert victim.is_file() and minidata.is_complete(TINY, root)


def test_bad_sizes_are_refused_with_the_value(tmp_path):
    with pytest.raises(ValueError, match="mini_frame_size=15"):
        generate_mini_dataset(dataclasses.replace(TINY, mini_frame_size=15), tmp_path)


def test_meta_holds_the_ground_truth_of_every_clip(tiny_root):
    meta = read_mini_meta(tiny_root)
    assert len(meta) == sum(minidata.split_sizes(TINY).values())
    for clip in meta:
        assert clip["colour"] in minidata.COLOURS and clip["shape"] in minidata.SHAPES
        assert clip["motion"] in minidata.MOTIONS and clip["size"] in minidata.SIZES and 1 <= clip["count"] <= 3


def test_captions_name_what_is_visible():
    for scene in plan_split(DataConfig(), "train", 60):
        english, _ = caption_scene(scene, np.random.default_rng(0))
        for caption in english:
            assert any(w in caption for w in minidata.COLOUR_WORDS[scene.colour]), caption
            assert any(s in caption for s, _ in minidata.SHAPE_WORDS[scene.shape]), caption
            assert any(v[0] in caption or v[1] in caption or v[2] in caption
                       for v in minidata.MOTION_WORDS[scene.motion]), caption


def test_a_caption_blind_baseline_scores_far_below_reading_the_pixels():
    from pycocoevalcap.cider.cider import Cider

    scenes = plan_split(DataConfig(), "public_test", 60)
    references = {s.video_id: caption_scene(s, np.random.default_rng([9, i]))[0] for i, s in enumerate(scenes)}
    blind = max(Cider().compute_score(references, {k: [canonical_caption(s)] for k in references})[0] for s in scenes[:10])
    sighted = Cider().compute_score(references, {s.video_id: [canonical_caption(s)] for s in scenes})[0]
    assert sighted > 1.0 and blind < sighted / 3


def foreground(frames, scene):
    return np.abs(frames.astype(int) - np.array(minidata.BACKGROUNDS[scene.background])).sum(-1) > 60  # (T, H, W)


@pytest.mark.parametrize("motion", ["left", "right", "up", "down", "grow", "shrink", "appear", "still", "bounce"])
def test_rendered_frames_show_the_motion(motion):
    scene = dataclasses.replace(plan_split(DataConfig(), "train", 1)[0], motion=motion, textured=False, count=1,
                                size="small", anchor=(0.5, 0.5) if motion not in ("bounce",) else (0.5, 0.8))
    if motion in ("left", "right", "up", "down"):
        shift = {"left": (0.2, 0), "right": (-0.2, 0), "up": (0, 0.2), "down": (0, -0.2)}[motion]
        scene = dataclasses.replace(scene, anchor=(0.5 + shift[0], 0.5 + shift[1]))
    frames = render_scene(scene, 64, 12)
    assert frames.shape == (12, 64, 64, 3)
    mask = foreground(frames, scene)
    area = mask.sum(axis=(1, 2))
    ys, xs = np.indices((64, 64))
    cx = [(xs * m).sum() / max(1, m.sum()) for m in mask]
    cy = [(ys * m).sum() / max(1, m.sum()) for m in mask]
    if motion == "left":
        assert cx[-1] < cx[0] - 20
    elif motion == "right":
        assert cx[-1] > cx[0] + 20
    elif motion == "up":
        assert cy[-1] < cy[0] - 20
    elif motion == "down":
        assert cy[-1] > cy[0] + 20
    elif motion == "grow":
        assert area[-1] > 3 * area[0]
    elif motion == "shrink":
        assert area[0] > 3 * area[-1]
    elif motion == "appear":
        assert area[0] == 0 and area[-1] > 0
    elif motion == "still":
        assert np.array_equal(frames[0], frames[-1])
    elif motion == "bounce":
        assert min(cy) < cy[0] - 10 and abs(cy[-1] - cy[0]) < 2


def test_frame_strip_draws_one_row_per_clip(tiny_root):
    from qvidcap.data.explore import frame_strip

    clips = read_annotation_file(tiny_root / ANNOTATION_FILES["train"], "train", tiny_root / "videos", lenient=False)
    figure = frame_strip(clips.records[:2], num_frames=3, size=32)
    assert len(figure.axes) == 6 and clips[0].video_id in figure.axes[0].texts[0].get_text()


def test_one_background_by_default_and_the_others_on_request():
    assert {s.background for s in plan_split(DataConfig(), "train", 60)} == {"black"}
    varied = dataclasses.replace(DataConfig(), mini_backgrounds=("black", "dark_gray", "light_gray"))
    scenes = plan_split(varied, "train", 150)
    assert {s.background for s in scenes} == set(minidata.BACKGROUNDS)
    assert not any(s.colour == "yellow" and s.background == "light gray" for s in scenes)  # too little contrast
    with pytest.raises(ValueError, match="black, dark_gray, light_gray; got grey"):
        plan_split(dataclasses.replace(DataConfig(), mini_backgrounds=("grey",)), "train", 1)
