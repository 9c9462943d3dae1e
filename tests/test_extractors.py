"""The three extractors on tiny random backbones: shapes, dtypes, selection rules, exact save/load."""
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from qvidcap.config import load_config
from qvidcap.features.clip_image import square_regions
from qvidcap.features.detector import ObjectDetector
from qvidcap.features.extractors import build_extractors, load_extractors
from qvidcap.video import sample_clip, write_video


def tiny_config(**overrides):
    base = {"sampling.temporal_size": 32, "sampling.keyframe_size": 48, "sampling.temporal_frames": 4,
            "sampling.num_keyframes": 2, "features.small_hidden_size": 32, "features.small_layers": 1,
            "features.small_heads": 2, "features.max_objects": 2}
    return load_config("smoke", {**base, **overrides})


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    rng = np.random.default_rng(0)
    config = tiny_config()
    paths = [write_video(folder / "a.mp4", rng.integers(0, 255, (8, 48, 64, 3), dtype=np.uint8)),
             write_video(folder / "b.mp4", rng.integers(0, 255, (5, 61, 37, 3), dtype=np.uint8))]
    return [sample_clip(p, config.sampling) for p in paths]


@pytest.fixture(scope="module")
def extractors():
    return build_extractors(tiny_config())


def test_feature_shapes_and_dtypes(extractors, clips):
    features = extractors.extract(clips)
    assert [f.video_id for f in features] == ["a", "b"]
    assert extractors.feature_dims == {"temporal": 32, "object": 32, "context": 32}
    for f in features:
        assert f.temporal.shape == (2, 32) and f.temporal.dtype == torch.float16  # 4 frames / tubelet 2
        assert f.context.shape == (2, 32) and f.context.dtype == torch.float16
        torch.testing.assert_close(f.context.float().norm(dim=-1), torch.ones(2), atol=1e-2, rtol=0)
        p = f.num_objects
        assert 0 < p <= 2 * 2  # max_objects per keyframe x keyframes
        assert f.objects.shape == (p, 32) and f.boxes.shape == (p, 4)
        assert f.scores.shape == f.labels.shape == f.object_keyframe.shape == (p,)
        assert f.labels.dtype == f.object_keyframe.dtype == torch.int64
        torch.testing.assert_close(f.objects.float().norm(dim=-1), torch.ones(p), atol=1e-2, rtol=0)


def test_boxes_are_clamped_and_big_enough(extractors, clips):
    for clip, f in zip(clips, extractors.extract(clips)):
        height, width = clip.keyframes.shape[1:3]
        assert (f.boxes[:, 0::2] >= 0).all() and (f.boxes[:, 0::2] <= width).all()
        assert (f.boxes[:, 1::2] >= 0).all() and (f.boxes[:, 1::2] <= height).all()
        sides = torch.minimum(f.boxes[:, 2] - f.boxes[:, 0], f.boxes[:, 3] - f.boxes[:, 1])
        assert (sides >= extractors.features.min_box_pixels).all()


def test_detector_batches_by_size_but_keeps_the_order(extractors):
    g = torch.Generator().manual_seed(0)
    small = [torch.randint(0, 255, (48, 64, 3), generator=g, dtype=torch.uint8) for _ in range(2)]
    wide = torch.randint(0, 255, (48, 96, 3), generator=g, dtype=torch.uint8)
    mixed = extractors.detector([small[0], wide, small[1]], batch_size=2)
    alone = extractors.detector(small, batch_size=2) + extractors.detector([wide])
    for got, want in zip(mixed, [alone[0], alone[2], alone[1]]):
        torch.testing.assert_close(got.boxes, want.boxes)


def test_detector_selection_rules():
    detector = ObjectDetector.__new__(ObjectDetector)
    detector.threshold, detector.max_objects, detector.min_box_pixels = 0.0, 2, 7
    found = {"boxes": torch.tensor([[-5.0, -5, 20, 20], [0, 0, 3, 40], [10, 10, 90, 30], [1, 1, 30, 30]]),
             "scores": torch.tensor([0.9, 0.99, 0.5, 0.7]), "labels": torch.tensor([1, 2, 3, 4])}
    kept = detector._select(found, (32, 64))
    assert kept.labels.tolist() == [1, 4]  # the 3-pixel-wide box is dropped, then best two by score
    assert kept.boxes[0].tolist() == [0, 0, 20, 20]  # clamped, not wrapped around


def test_square_regions_are_centred_squares():
    squares = square_regions(torch.tensor([[0.0, 0, 40, 20]]))
    assert squares.tolist() == [[10.0, 0.0, 30.0, 20.0]]


def test_one_window_per_keyframe_gives_one_step_per_keyframe(tmp_path):
    config = tiny_config(**{"sampling.temporal_windows": 2})
    path = write_video(tmp_path / "c.mp4", np.zeros((8, 32, 32, 3), np.uint8))
    features = build_extractors(config).extract([sample_clip(path, config.sampling)])
    assert features[0].temporal.shape == (2, 32)


def test_the_motion_grid_keeps_where_things_are_and_averages_to_the_one_vector_of_all_space():
    """Each of the g x g cells is the mean of its own patch tokens, so the mean of the cells is the mean over all
    of space (the original's pooling); a bright square in the top-left corner shows in the top-left cell only."""
    from qvidcap.features.temporal import TemporalExtractor

    frames = np.zeros((1, 4, 32, 32, 3), np.uint8)
    frames[:, :, :8, :8] = 255  # top-left patch of the 4 x 4 grid of 8-pixel patches, every frame
    windows = torch.from_numpy(frames)
    config = tiny_config(**{"sampling.temporal_frames": 4, "sampling.temporal_size": 32, "features.small_patch_size": 8,
                            "features.temporal_grid": 2})
    grid = TemporalExtractor.build(config.features, config.sampling, "cpu", torch.float32)
    whole = TemporalExtractor.build(dataclasses.replace(config.features, temporal_grid=1), config.sampling, "cpu", torch.float32)
    cells = grid(windows).view(1, 2, 2, 2, 32)  # (K, T, g, g, H)
    torch.testing.assert_close(cells.mean(dim=(2, 3)), whole(windows), rtol=1e-4, atol=1e-4)
    blank = grid(torch.zeros_like(windows)).view(1, 2, 2, 2, 32)
    moved = (cells - blank).norm(dim=-1)[0, 0]  # (g, g): how far each cell moved from the blank clip
    assert moved[0, 0] > 3 * moved[1, 1], moved
    with pytest.raises(ValueError, match="must divide"):
        TemporalExtractor.build(dataclasses.replace(config.features, temporal_grid=3), config.sampling, "cpu", torch.float32)


def test_save_and_load_rebuild_the_same_extractors(extractors, clips, tmp_path):
    extractors.save(tmp_path / "saved")
    manifest = json.loads((tmp_path / "saved" / "extractors.json").read_text())
    assert manifest["temporal"]["weights"] == extractors.temporal.digest
    assert (tmp_path / "saved" / "clip" / "open_clip_model.safetensors").is_file()
    again = load_extractors(tmp_path / "saved")
    assert again.describe() == extractors.describe()
    for a, b in zip(extractors.extract(clips), again.extract(clips)):
        assert torch.equal(a.temporal, b.temporal) and torch.equal(a.context, b.context)
        assert torch.equal(a.objects, b.objects) and torch.equal(a.boxes, b.boxes)


def test_sampling_that_does_not_fit_the_temporal_model_is_refused(extractors, tmp_path):
    extractors.save(tmp_path / "saved")
    config = tiny_config(**{"sampling.temporal_frames": 8})
    with pytest.raises(ValueError, match="temporal_frames=4"):
        build_extractors(config, weights_dir=tmp_path / "saved")


def test_unknown_options_are_refused():
    with pytest.raises(ValueError, match="random_size"):
        build_extractors(tiny_config(**{"features.random_size": "huge"}))
    with pytest.raises(ValueError, match="features.dtype"):
        build_extractors(tiny_config(**{"features.dtype": "int8"}))


def test_pretrained_name_offline_gives_one_clear_error(tmp_path):
    script = (
        "from qvidcap.config import load_config\n"
        "from qvidcap.features.extractors import build_extractors\n"
        "from qvidcap.features.loading import ModelNotAvailableError\n"
        "for key, value in [('features.temporal_model', 'MCG-NJU/videomae-base'),\n"
        "                   ('features.detector_model', 'facebook/detr-resnet-50'),\n"
        "                   ('features.clip_pretrained', 'openai')]:\n"
        "    extra = {'features.clip_model': 'ViT-B-32'} if key == 'features.clip_pretrained' else {}\n"
        "    try:\n"
        "        build_extractors(load_config('smoke', {key: value, **extra}))\n"
        "    except ModelNotAvailableError as e:\n"
        "        print('CLEAR', e)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    lines = [line for line in result.stdout.splitlines() if line.startswith("CLEAR")]
    assert len(lines) == 3, result.stdout + result.stderr
    for line, name in zip(lines, ["MCG-NJU/videomae-base", "facebook/detr-resnet-50", "ViT-B-32/openai"]):
        assert repr(name) in line and "local folder" in line


def test_models_named_by_a_local_folder_load_through_the_pretrained_path(extractors, clips, tmp_path):
    extractors.save(tmp_path / "saved")
    config = tiny_config(**{"features.temporal_model": str(tmp_path / "saved" / "temporal"),
                            "features.detector_model": str(tmp_path / "saved" / "detector")})
    named = build_extractors(config)
    assert named.describe()["temporal"]["name"] == str(tmp_path / "saved" / "temporal")
    assert named.describe()["detector"]["weights"] == "pretrained"
    for a, b in zip(extractors.extract(clips), named.extract(clips)):
        assert torch.equal(a.temporal, b.temporal) and torch.equal(a.boxes, b.boxes)
