"""The built-in mini dataset: short H.264 clips of moving shapes, captioned in the VATEX format.

It exists so the whole study runs offline in minutes and still measures something: captions name
what is visible (how many shapes, their colour, shape, size and motion) in varied wording, so a
caption copied to every clip scores poorly under CIDEr while a model that reads the pixels can
score well. Everything is a function of `DataConfig.mini_seed` (each clip draws from its own
generator seeded by `(seed, split, index)`), so the same config gives the same JSON bytes, the same
rendered frames and videos that decode to them up to H.264's rounding (x264 is not always bit-exact
from one encode to the next: when seen, about 1% of the pixel values moved, by at most 14 levels).

Three steps, each a function: `plan_scene` (draw the attributes), `render_scene` (numpy frames)
with `caption_scene` (10 English + 10 Chinese captions), and `encode_mp4` (PyAV, libx264, yuv420p).
`generate_mini_dataset` runs them for every clip, skipping the work when a complete dataset of the
same config is already on disk.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qvidcap.config import DataConfig
from qvidcap.data.records import format_video_id
from qvidcap.runtime.progress import progress

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 2  # bump when the pictures or captions change, so old copies are regenerated

ANNOTATION_FILES = {
    "train": "vatex_training_v1.0.json",
    "validation": "vatex_validation_v1.0.json",
    "public_test": "vatex_public_test_english_v1.1.json",
}
META_FILE = "mini_meta.json"
COMPLETE_FILE = "mini_complete.json"  # written last: its presence with the right hash = a whole dataset
CAPTIONS_PER_CLIP = 10
SUPERSAMPLE = 2  # shapes are drawn at 2x and averaged down, for clean edges

COLOURS = {  # name -> RGB
    "red": (220, 40, 40),
    "green": (40, 180, 70),
    "blue": (50, 90, 235),
    "yellow": (240, 220, 40),
    "purple": (150, 60, 210),
    "orange": (250, 140, 30),
}
BACKGROUNDS = {"black": (12, 12, 12), "dark gray": (62, 62, 62), "light gray": (200, 200, 200)}
SHAPES = ("circle", "square", "triangle", "diamond")
SIZES = {"small": 0.14, "large": 0.28}  # shape width as a fraction of the frame side
MOTIONS = ("left", "right", "up", "down", "grow", "shrink", "bounce", "appear", "still")
GROW_RANGE = (0.11, 0.30)  # width of a growing (or, reversed, shrinking) shape from start to end
BOUNCE_HEIGHT = 0.4  # how high a bouncing shape rises, fraction of the frame side
TRAVEL = 0.42  # how far moving shapes go over the clip, fraction of the frame side
SPACING = 0.31  # distance between the centres of shapes in a group, fraction of the frame side


@dataclass(frozen=True)
class Scene:
    """What one clip shows: a group of 1-3 identical shapes doing one thing on a plain background."""

    video_id: str
    split: str
    count: int  # 1 to 3 shapes, all alike
    colour: str  # a key of COLOURS
    shape: str  # one of SHAPES
    size: str  # "small" or "large": the size at the start (grow starts small, shrink starts large)
    motion: str  # one of MOTIONS
    background: str  # a key of BACKGROUNDS
    textured: bool  # faint static noise and a gradient over the background
    anchor: tuple[float, float]  # (x, y) of the group's centre at the start, fraction of the frame side
    appear_at: float  # fraction of the clip after which an "appear" group becomes visible

    def attributes(self) -> dict:
        """The ground truth kept in mini_meta.json for error analysis."""
        values = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("anchor", "video_id")}
        return {"videoID": self.video_id, **values}


# ---------------------------------------------------------------- planning


def _youtube_like_id(rng: np.random.Generator) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return "".join(alphabet[i] for i in rng.integers(0, len(alphabet), size=11))


def _anchor_range(count: int, half_width: float, row: bool) -> tuple[tuple[float, float], tuple[float, float]]:
    """Where the centre of a row (or column) of shapes may be so all stay in the frame: ((x_lo, x_hi), (y_lo, y_hi))."""
    margin = half_width + 0.03
    spread = (count - 1) / 2 * SPACING  # from the group's centre to its outermost shape's centre
    along = (margin + spread, 1 - margin - spread)  # along the row or column
    across = (margin, 1 - margin)
    return (along, across) if row else (across, along)


def background_names(names: tuple[str, ...]) -> list[str]:
    """`data.mini_backgrounds` as keys of BACKGROUNDS ("dark_gray" names "dark gray": overrides split on spaces)."""
    keys = [name.replace("_", " ") for name in names]
    unknown = [name for name, key in zip(names, keys) if key not in BACKGROUNDS]
    if unknown or not keys:
        raise ValueError(f"data.mini_backgrounds must name some of {', '.join(b.replace(' ', '_') for b in BACKGROUNDS)}; "
                         f"got {', '.join(names) or 'none'}")
    return keys


def plan_scene(rng: np.random.Generator, video_id: str, split: str, backgrounds: tuple[str, ...] = tuple(BACKGROUNDS)) -> Scene:
    """Draw one clip's attributes and a start position that keeps every shape inside the frame."""
    count = int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2]))
    colour = str(rng.choice(list(COLOURS)))
    shape = str(rng.choice(SHAPES))
    motion = str(rng.choice(MOTIONS))
    size = {"grow": "small", "shrink": "large"}.get(motion) or str(rng.choice(list(SIZES)))
    allowed = [b for b in backgrounds if not (b == "light gray" and colour == "yellow")] or list(backgrounds)
    background = str(rng.choice(allowed))
    textured = bool(rng.random() < 0.5)
    half = GROW_RANGE[1] / 2 if motion in ("grow", "shrink") else SIZES[size] / 2
    # a group moving left/right is stacked in a column; every other group stands in a row
    column = motion in ("left", "right")
    (x_lo, x_hi), (y_lo, y_hi) = _anchor_range(count, half, row=not column)
    if motion == "left":
        x_lo = x_lo + TRAVEL
    elif motion == "right":
        x_hi = x_hi - TRAVEL
    elif motion == "up":
        y_lo = y_lo + TRAVEL
    elif motion == "down":
        y_hi = y_hi - TRAVEL
    elif motion == "bounce":
        y_lo = y_hi = 1 - half - 0.05  # the floor the group bounces on
    x = float(rng.uniform(x_lo, x_hi)) if x_hi > x_lo else (x_lo + x_hi) / 2
    y = float(rng.uniform(y_lo, y_hi)) if y_hi > y_lo else (y_lo + y_hi) / 2
    appear_at = float(rng.uniform(0.25, 0.5))
    return Scene(video_id, split, count, colour, shape, size, motion, background, textured, (x, y), appear_at)


def plan_split(data_cfg: DataConfig, split: str, num_clips: int) -> list[Scene]:
    """The scenes of one split; clip i of a split is the same whatever the other splits' sizes."""
    split_index = list(ANNOTATION_FILES).index(split)
    clip_seconds = max(1, round(data_cfg.mini_seconds))
    backgrounds = tuple(background_names(data_cfg.mini_backgrounds))
    scenes = []
    for i in range(num_clips):
        rng = np.random.default_rng([data_cfg.mini_seed, split_index, i])
        start = int(rng.integers(0, 600))
        video_id = format_video_id(_youtube_like_id(rng), start, start + clip_seconds)
        scenes.append(plan_scene(rng, video_id, split, backgrounds))
    return scenes


# ---------------------------------------------------------------- rendering


def _shape_mask(shape: str, cx: float, cy: float, width: float, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """Pixels (in frame-side units) covered by one shape of the given width centred at (cx, cy)."""
    dx, dy, r = xx - cx, yy - cy, width / 2
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        side = r * 0.88  # a square of the same width looks larger than a circle; even them out
        return (np.abs(dx) <= side) & (np.abs(dy) <= side)
    if shape == "triangle":  # pointing up: apex at cy - r, base at cy + 0.8 r with half-width r
        depth = (dy + r) / (1.8 * r)
        return (depth >= 0) & (depth <= 1) & (np.abs(dx) <= r * depth)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= r
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def _group_state(scene: Scene, t: float) -> tuple[list[tuple[float, float]], float, bool]:
    """Centres of the group's shapes, their width and whether they are visible at time t in [0, 1]."""
    x, y = scene.anchor
    width = SIZES[scene.size]
    visible = True
    if scene.motion == "left":
        x -= TRAVEL * t
    elif scene.motion == "right":
        x += TRAVEL * t
    elif scene.motion == "up":
        y -= TRAVEL * t
    elif scene.motion == "down":
        y += TRAVEL * t
    elif scene.motion == "grow":
        width = GROW_RANGE[0] + (GROW_RANGE[1] - GROW_RANGE[0]) * t
    elif scene.motion == "shrink":
        width = GROW_RANGE[1] - (GROW_RANGE[1] - GROW_RANGE[0]) * t
    elif scene.motion == "bounce":  # two bounces off the floor
        y -= BOUNCE_HEIGHT * abs(np.sin(2 * np.pi * t))
    elif scene.motion == "appear":
        visible = t >= scene.appear_at
    offsets = [(i - (scene.count - 1) / 2) * SPACING for i in range(scene.count)]
    if scene.motion in ("left", "right"):
        centres = [(x, y + o) for o in offsets]  # a column
    else:
        centres = [(x + o, y) for o in offsets]  # a row
    return centres, width, visible


def _background(scene: Scene, size: int, rng: np.random.Generator) -> np.ndarray:
    """(S, S, 3) float32 background: a plain colour, or with faint static noise and a gradient."""
    frame = np.empty((size, size, 3), np.float32)
    frame[:] = BACKGROUNDS[scene.background]
    if scene.textured:
        gradient = np.linspace(-10, 10, size, dtype=np.float32)[:, None, None]  # (S, 1, 1) top to bottom
        noise = rng.normal(0, 5, size=(size, size, 1)).astype(np.float32)  # (S, S, 1) grey speckle
        frame += gradient + noise
    return frame


def render_scene(scene: Scene, frame_size: int, num_frames: int) -> np.ndarray:
    """The clip's frames, (T, S, S, 3) uint8 RGB, S = frame_size."""
    big = frame_size * SUPERSAMPLE
    texture_rng = np.random.default_rng(int(hashlib.sha256(scene.video_id.encode()).hexdigest()[:8], 16))
    background = _background(scene, big, texture_rng)
    coords = (np.arange(big, dtype=np.float32) + 0.5) / big
    xx, yy = coords[None, :], coords[:, None]  # (1, S) and (S, 1), broadcast to (S, S)
    colour = np.array(COLOURS[scene.colour], np.float32)
    frames = np.empty((num_frames, frame_size, frame_size, 3), np.uint8)
    for f in range(num_frames):
        t = f / (num_frames - 1) if num_frames > 1 else 0.0
        centres, width, visible = _group_state(scene, t)
        frame = background.copy()
        for cx, cy in centres if visible else []:  # paint each shape inside its own bounding box only
            x0, x1 = max(0, int((cx - width) * big)), min(big, int((cx + width) * big) + 1)
            y0, y1 = max(0, int((cy - width) * big)), min(big, int((cy + width) * big) + 1)
            covered = _shape_mask(scene.shape, cx, cy, width, xx[:, x0:x1], yy[y0:y1])  # (h, w)
            frame[y0:y1, x0:x1][covered] = colour
        small = sum(frame[i::SUPERSAMPLE, j::SUPERSAMPLE] for i in range(SUPERSAMPLE) for j in range(SUPERSAMPLE))
        small /= SUPERSAMPLE * SUPERSAMPLE  # (S, S, 3): the mean of each SUPERSAMPLE x SUPERSAMPLE block
        frames[f] = np.clip(np.rint(small), 0, 255).astype(np.uint8)
    return frames


# ---------------------------------------------------------------- captions

COUNT_WORDS = {1: ["a", "one", "a single"], 2: ["two", "a pair of"], 3: ["three", "a group of three"]}
SIZE_WORDS = {"small": ["small", "little", "tiny"], "large": ["large", "big", "huge"]}
COLOUR_WORDS = {c: [c] for c in COLOURS} | {"purple": ["purple", "violet"]}
SHAPE_WORDS = {  # (singular, plural); the first is the most common
    "circle": [("circle", "circles"), ("ball", "balls"), ("disc", "discs")],
    "square": [("square", "squares"), ("box", "boxes"), ("block", "blocks")],
    "triangle": [("triangle", "triangles"), ("triangular shape", "triangular shapes")],
    "diamond": [("diamond", "diamonds"), ("rhombus", "rhombuses")],
}
BACKGROUND_WORDS = {
    "black": ["black", "dark"],
    "dark gray": ["dark gray", "dark grey", "charcoal"],
    "light gray": ["light gray", "light grey", "pale gray"],
}
BACKGROUND_PHRASES = ["on a {} background", "against a {} backdrop", "over a {} background"]
MOTION_WORDS = {  # (singular verb, plural verb, -ing form)
    "left": [("moves to the left", "move to the left", "moving to the left"), ("slides left", "slide left", "sliding left"),
             ("travels leftward", "travel leftward", "traveling leftward"), ("goes to the left", "go to the left", "going to the left")],
    "right": [("moves to the right", "move to the right", "moving to the right"), ("slides right", "slide right", "sliding right"),
              ("travels rightward", "travel rightward", "traveling rightward"), ("goes to the right", "go to the right", "going to the right")],
    "up": [("moves up", "move up", "moving up"), ("rises", "rise", "rising"), ("floats upward", "float upward", "floating upward"),
           ("goes up", "go up", "going up")],
    "down": [("moves down", "move down", "moving down"), ("falls", "fall", "falling"), ("drops downward", "drop downward", "dropping downward"),
             ("sinks", "sink", "sinking")],
    "grow": [("grows", "grow", "growing"), ("gets bigger", "get bigger", "getting bigger"), ("expands", "expand", "expanding"),
             ("grows larger", "grow larger", "growing larger")],
    "shrink": [("shrinks", "shrink", "shrinking"), ("gets smaller", "get smaller", "getting smaller"),
               ("becomes smaller", "become smaller", "becoming smaller"), ("contracts", "contract", "contracting")],
    "bounce": [("bounces", "bounce", "bouncing"), ("bounces up and down", "bounce up and down", "bouncing up and down"),
               ("hops up and down", "hop up and down", "hopping up and down"), ("jumps", "jump", "jumping")],
    "appear": [("appears", "appear", "appearing"), ("pops up", "pop up", "popping up"), ("shows up", "show up", "showing up"),
               ("comes into view", "come into view", "coming into view")],
    "still": [("stays still", "stay still", "staying still"), ("does not move", "do not move", "not moving"),
              ("remains in place", "remain in place", "remaining in place"), ("sits still", "sit still", "sitting still")],
}
# {np}: noun phrase, {vp}: verb phrase agreeing with it, {ving}: -ing form, {bg}: background phrase
TEMPLATES = [
    "{np} {vp}",
    "{np} {vp} {bg}",
    "{bg} , {np} {vp}",
    "there {be} {np} that {vp}",
    "the video shows {np} {ving}",
    "{np} can be seen {ving} {bg}",
    "we see {np} {ving}",
    "{np_colour_last} {vp}",
    "in this clip {np} {vp}",
]
ZH_COUNTS = {1: "一个", 2: "两个", 3: "三个"}
ZH_SIZES = {"small": "小", "large": "大"}
ZH_COLOURS = {"red": "红色", "green": "绿色", "blue": "蓝色", "yellow": "黄色", "purple": "紫色", "orange": "橙色"}
ZH_SHAPES = {"circle": "圆形", "square": "正方形", "triangle": "三角形", "diamond": "菱形"}
ZH_MOTIONS = {"left": "向左移动", "right": "向右移动", "up": "向上移动", "down": "向下移动", "grow": "逐渐变大",
              "shrink": "逐渐变小", "bounce": "上下弹跳", "appear": "突然出现", "still": "静止不动"}
ZH_TEMPLATES = ["{n}{s}的{c}{h}{m}", "画面中{n}{c}的{h}{m}", "{n}{c}{h}在画面里{m}", "视频里有{n}{s}{c}{h}{m}"]


def _pick(rng: np.random.Generator, options: list, first_weight: float = 0.5):
    """One option; the first (the plainest word) gets `first_weight` of the mass, the rest share the remainder."""
    if len(options) == 1:
        return options[0]
    weights = np.full(len(options), (1 - first_weight) / (len(options) - 1))
    weights[0] = first_weight
    return options[int(rng.choice(len(options), p=weights))]


def _english_caption(scene: Scene, rng: np.random.Generator) -> str:
    plural = scene.count > 1
    template = str(rng.choice(TEMPLATES))
    basic_count = template.startswith("there")  # "there is a group of three ..." would not agree
    count = COUNT_WORDS[scene.count][0 if basic_count else int(rng.integers(len(COUNT_WORDS[scene.count])))]
    if basic_count and count == "a" and rng.random() < 0.3:
        count = "one"
    # grow/shrink change size, so their captions leave size out; others sometimes omit it too
    size = None if scene.motion in ("grow", "shrink") or rng.random() < 0.15 else _pick(rng, SIZE_WORDS[scene.size])
    colour = _pick(rng, COLOUR_WORDS[scene.colour], 0.8)
    noun = _pick(rng, SHAPE_WORDS[scene.shape], 0.6)[1 if plural else 0]
    verbs = _pick(rng, MOTION_WORDS[scene.motion], 0.4)
    background = str(rng.choice(BACKGROUND_PHRASES)).format(_pick(rng, BACKGROUND_WORDS[scene.background], 0.6))
    adjectives = " ".join(w for w in (size, colour) if w)
    colour_last = f"{count} {size + ' ' if size else ''}{noun} in {colour}"
    text = template.format(
        np=f"{count} {adjectives} {noun}", np_colour_last=colour_last, vp=verbs[1 if plural else 0],
        ving=verbs[2], bg=background, be="are" if plural else "is",
    )
    text = text.replace(" ,", ",")
    words = text.split()
    for i in range(len(words) - 1):  # "a orange" -> "an orange"
        if words[i] == "a" and words[i + 1][0] in "aeiou":
            words[i] = "an"
    return " ".join(words)


def caption_scene(scene: Scene, rng: np.random.Generator, with_chinese: bool = True) -> tuple[list[str], list[str]]:
    """Ten distinct English captions of what the clip shows, and ten Chinese ones (or none)."""
    english: list[str] = []
    for _ in range(200):
        caption = _english_caption(scene, rng)
        if caption not in english:
            english.append(caption)
        if len(english) == CAPTIONS_PER_CLIP:
            break
    while len(english) < CAPTIONS_PER_CLIP:  # a scene with few wordings: repeat rather than fail
        english.append(english[len(english) % max(1, len(english))])
    chinese = []
    if with_chinese:
        for i in range(CAPTIONS_PER_CLIP):
            template = ZH_TEMPLATES[int(rng.integers(len(ZH_TEMPLATES)))]
            chinese.append(template.format(n=ZH_COUNTS[scene.count], s=ZH_SIZES[scene.size], c=ZH_COLOURS[scene.colour],
                                           h=ZH_SHAPES[scene.shape], m=ZH_MOTIONS[scene.motion]))
    return english, chinese


def canonical_caption(scene: Scene) -> str:
    """The plainest true caption of a scene: what a model that reads the pixels perfectly might say."""
    plural = scene.count > 1
    size = "" if scene.motion in ("grow", "shrink") else SIZE_WORDS[scene.size][0] + " "
    noun = SHAPE_WORDS[scene.shape][0][1 if plural else 0]
    verb = MOTION_WORDS[scene.motion][0][1 if plural else 0]
    count = COUNT_WORDS[scene.count][0]
    caption = f"{count} {size}{scene.colour} {noun} {verb}"
    return caption.replace("a orange", "an orange")


# ---------------------------------------------------------------- encoding


def encode_mp4(frames: np.ndarray, path: Path, fps: int) -> None:
    """Write (T, H, W, 3) uint8 RGB frames as H.264 (yuv420p) mp4, atomically: a partial file never has the final name."""
    import av

    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    num_frames, height, width, _ = frames.shape
    with av.open(str(partial), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        # one thread and fixed settings; even so x264 now and then writes other bytes for the same small frames
        # (seen at 32 and 64 px, one encode in tens), which decode to nearly the same picture
        stream.options = {"crf": "17", "preset": "fast", "threads": "1"}
        stream.codec_context.thread_count = 1
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(partial, path)


# ---------------------------------------------------------------- the whole dataset


def _settings_hash(data_cfg: DataConfig, with_sizes: bool) -> str:
    keys = {f.name: getattr(data_cfg, f.name) for f in dataclasses.fields(data_cfg)
            if f.name.startswith("mini_") and (with_sizes or not f.name.endswith("_clips"))}
    keys["generator_version"] = GENERATOR_VERSION
    return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:16]


def mini_config_hash(data_cfg: DataConfig) -> str:
    """A hash of everything the mini dataset depends on (and of the generator's version)."""
    return _settings_hash(data_cfg, with_sizes=True)


def pictures_hash(data_cfg: DataConfig) -> str:
    """`mini_config_hash` less the split sizes (clip i is the same whatever they are): what decides each clip's
    pictures, so features made from an older dataset can be told apart."""
    return _settings_hash(data_cfg, with_sizes=False)


def split_sizes(data_cfg: DataConfig) -> dict[str, int]:
    return {"train": data_cfg.mini_train_clips, "validation": data_cfg.mini_validation_clips,
            "public_test": data_cfg.mini_test_clips}


def is_complete(data_cfg: DataConfig, root: Path) -> bool:
    """True when `root` holds a whole mini dataset generated from this config."""
    marker = Path(root) / COMPLETE_FILE
    try:
        state = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    if state.get("config_hash") != mini_config_hash(data_cfg):
        return False
    names = [Path(root) / n for n in (*ANNOTATION_FILES.values(), META_FILE)]
    videos = [Path(root) / "videos" / f"{v}.mp4" for v in state.get("video_ids", [])]
    return len(videos) == sum(split_sizes(data_cfg).values()) and all(p.is_file() for p in names + videos)


def _write_atomic(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def _check_sizes(data_cfg: DataConfig) -> None:
    for split, n in split_sizes(data_cfg).items():
        if n < 0:
            raise ValueError(f"data.mini_* clip count for {split} is {n}; expected 0 or more")
    if data_cfg.mini_frame_size < 16 or data_cfg.mini_frame_size % 2:
        raise ValueError(f"data.mini_frame_size={data_cfg.mini_frame_size!r}; expected an even number of pixels >= 16")
    if data_cfg.mini_fps < 1 or data_cfg.mini_seconds <= 0:
        raise ValueError(f"data.mini_fps={data_cfg.mini_fps!r}, data.mini_seconds={data_cfg.mini_seconds!r}; "
                         "expected a frame rate >= 1 and a positive length")


def generate_mini_dataset(data_cfg: DataConfig, root: Path, force: bool = False) -> Path:
    """Write the mini dataset under `root` (videos/, the three VATEX JSON files, mini_meta.json).

    Nothing is done when `root` already holds a complete dataset of the same config (unless `force`);
    on a config change the old dataset is removed first. The completion marker is written last, so
    an interrupted run is redone, never taken for a whole dataset. Returns `root`.
    """
    root = Path(root)
    _check_sizes(data_cfg)
    if not force and is_complete(data_cfg, root):
        logger.debug("mini dataset already complete at %s", root)
        return root
    started = time.perf_counter()
    (root / COMPLETE_FILE).unlink(missing_ok=True)
    shutil.rmtree(root / "videos", ignore_errors=True)
    (root / "videos").mkdir(parents=True)
    num_frames = max(1, round(data_cfg.mini_fps * data_cfg.mini_seconds))
    scenes = {split: plan_split(data_cfg, split, n) for split, n in split_sizes(data_cfg).items()}
    all_ids = [s.video_id for split_scenes in scenes.values() for s in split_scenes]
    if len(set(all_ids)) != len(all_ids):  # 64**11 ids: would take a broken generator
        raise RuntimeError("the mini dataset drew the same videoID twice; change data.mini_seed")
    total = len(all_ids)
    bar = progress(total=total, desc="mini dataset")
    meta = []
    for split, split_scenes in scenes.items():
        annotations = []
        for i, scene in enumerate(split_scenes):
            rng = np.random.default_rng([data_cfg.mini_seed, list(ANNOTATION_FILES).index(split), i, 1])
            english, chinese = caption_scene(scene, rng, with_chinese=split != "public_test")
            annotations.append({"videoID": scene.video_id, "enCap": english, "chCap": chinese})
            meta.append(scene.attributes())
            frames = render_scene(scene, data_cfg.mini_frame_size, num_frames)  # (T, S, S, 3)
            encode_mp4(frames, root / "videos" / f"{scene.video_id}.mp4", data_cfg.mini_fps)
            bar.update(1)
        _write_atomic(root / ANNOTATION_FILES[split], json.dumps(annotations, ensure_ascii=False))
    bar.close()
    config = {f.name: getattr(data_cfg, f.name) for f in dataclasses.fields(data_cfg) if f.name.startswith("mini_")}
    _write_atomic(root / META_FILE, json.dumps({"generator_version": GENERATOR_VERSION, "config": config, "clips": meta},
                                               ensure_ascii=False, indent=1))
    marker = {"config_hash": mini_config_hash(data_cfg), "video_ids": all_ids}
    _write_atomic(root / COMPLETE_FILE, json.dumps(marker))
    logger.info("mini dataset: %d clips of %d frames written to %s in %.1f s", total, num_frames, root,
                time.perf_counter() - started)
    return root


def read_mini_meta(root: Path) -> list[dict]:
    """The ground-truth attributes of every clip (videoID, split, count, colour, shape, size, motion, ...)."""
    path = Path(root) / META_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))["clips"]
    except (OSError, ValueError, KeyError) as e:
        raise FileNotFoundError(f"no readable mini dataset metadata at {path}; run `qvidcap data` or "
                                "qvidcap.data.prepare_data first") from e
