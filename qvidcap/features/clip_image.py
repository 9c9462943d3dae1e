"""CLIP image embeddings of keyframes (context) and of box crops (objects), from one batched crop step.

A keyframe and a box are both regions of a decoded keyframe: CLIP's own preprocessing (resize the
short side, centre crop) is the centre square of the region resized to CLIP's input, which
`torchvision.ops.roi_align` does for every region of a batch of frames in one call.
"""
from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

import torch

from qvidcap.config import FeatureConfig, SamplingConfig
from qvidcap.features.loading import load_pretrained, state_digest

logger = logging.getLogger(__name__)

CONFIG_FILE = "open_clip_config.json"  # open_clip's own local-dir layout
WEIGHTS_FILE = "open_clip_model.safetensors"


def small_clip_config(features: FeatureConfig, sampling: SamplingConfig) -> dict:
    """open_clip model config of a small random ViT (its text tower is a token stub: only images are encoded)."""
    width = features.small_hidden_size
    return {
        "embed_dim": width,
        "vision_cfg": {"image_size": sampling.temporal_size, "patch_size": features.small_patch_size, "width": width,
                       "layers": features.small_layers, "head_width": width // features.small_heads},
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
    }


@contextlib.contextmanager
def _quiet_root_logger():
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        root.setLevel(level)


def square_regions(boxes: torch.Tensor) -> torch.Tensor:
    """(R, 4) xyxy boxes -> (R, 4) the centred square of side min(w, h) inside each: CLIP's centre crop."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2  # (R, 2)
    half = torch.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]).unsqueeze(1) / 2  # (R, 1)
    return torch.cat([centre - half, centre + half], dim=1)


class ClipImageEncoder:
    """open_clip image tower: regions of uint8 frames -> (R, D) L2-normalised embeddings."""

    def __init__(self, model, name: str, model_config: dict | None, device: str, dtype: torch.dtype):
        import open_clip

        self.model = model.to(device=device, dtype=dtype).eval()
        self.name = name  # "ViT-B-32/openai", a local dir, or "" for random weights
        self.model_config = model_config  # set for random weights (saved with them)
        self.device, self.dtype = device, dtype
        preprocess = open_clip.get_model_preprocess_cfg(model)
        size = preprocess.get("size", 224)
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.mean = torch.tensor(preprocess.get("mean", open_clip.OPENAI_DATASET_MEAN), device=device, dtype=dtype).view(1, 3, 1, 1)
        self.std = torch.tensor(preprocess.get("std", open_clip.OPENAI_DATASET_STD), device=device, dtype=dtype).view(1, 3, 1, 1)
        self.digest = "" if name else state_digest(model)

    @classmethod
    def build(cls, features: FeatureConfig, sampling: SamplingConfig, device: str, dtype: torch.dtype,
              weights_dir: Path | None = None) -> "ClipImageEncoder":
        import open_clip

        if weights_dir is not None and (weights_dir / CONFIG_FILE).is_file():
            with _quiet_root_logger():  # open_clip logs every loading step on the root logger
                model = open_clip.create_model(f"local-dir:{weights_dir}")
            return cls(model, "", json.loads((weights_dir / CONFIG_FILE).read_text())["model_cfg"], device, dtype)
        if features.clip_model and features.clip_pretrained:
            name = f"{features.clip_model}/{features.clip_pretrained}"
            # OpenAI's weights were trained with QuickGELU; open_clip only warns when the architecture differs
            tag = open_clip.get_pretrained_cfg(features.clip_model, features.clip_pretrained) or {}
            with _quiet_root_logger():
                model = load_pretrained(name, lambda: open_clip.create_model(
                    features.clip_model, pretrained=features.clip_pretrained,
                    force_quick_gelu=bool(tag.get("quick_gelu", False))))
            return cls(model, name, None, device, dtype)
        if features.clip_model or features.random_size == "base":  # an open_clip architecture, random weights
            arch = features.clip_model or "ViT-B-32"
            model_config = open_clip.get_model_config(arch)
            if model_config is None:
                raise ValueError(f"unknown open_clip architecture {arch!r}; known: {', '.join(open_clip.list_models()[:20])}, ...")
        else:
            model_config = small_clip_config(features, sampling)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = open_clip.model.CLIP(**model_config)
        open_clip.set_model_preprocess_cfg(model, {"size": model_config["vision_cfg"]["image_size"],
                                                   "mean": open_clip.OPENAI_DATASET_MEAN, "std": open_clip.OPENAI_DATASET_STD})
        return cls(model, "", model_config, device, dtype)

    @property
    def dim(self) -> int:
        return int(self.model.visual.output_dim)

    def crop(self, frames: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
        """Frames (K, H, W, 3) uint8 and regions (R, 5) = (frame index, x1, y1, x2, y2) -> (R, 3, S, S) in 0..1.

        Each region's centre square is resized to CLIP's input size (averaging several samples per
        output pixel when shrinking, so it does not alias).
        """
        from torchvision.ops import roi_align

        images = frames.to(self.device).permute(0, 3, 1, 2).float()  # (K, 3, H, W)
        squares = torch.cat([regions[:, :1], square_regions(regions[:, 1:])], dim=1).to(self.device)  # (R, 5)
        crops = roi_align(images, squares.float(), output_size=self.image_size, spatial_scale=1.0,
                          sampling_ratio=-1, aligned=True)  # (R, 3, S, S)
        return (crops / 255).clamp(0, 1)

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """(R, 3, S, S) images in 0..1 -> (R, D) L2-normalised float32 embeddings."""
        outputs = []
        for chunk in images.split(batch_size):
            x = (chunk.to(self.device, self.dtype) - self.mean) / self.std
            outputs.append(self.model.encode_image(x, normalize=True).float().cpu())
        if not outputs:
            return torch.zeros(0, self.dim)
        return torch.cat(outputs)

    def save(self, directory: Path) -> None:
        """Random weights in open_clip's local-dir layout (`open_clip.create_model("local-dir:<dir>")` reads it)."""
        if self.name:
            return
        import open_clip
        from safetensors.torch import save_model

        directory.mkdir(parents=True, exist_ok=True)
        preprocess = {k: list(v) if isinstance(v, tuple) else v for k, v in open_clip.get_model_preprocess_cfg(self.model).items()}
        (directory / CONFIG_FILE).write_text(json.dumps({"model_cfg": self.model_config, "preprocess_cfg": preprocess}, indent=2))
        save_model(self.model, str(directory / WEIGHTS_FILE))

    def describe(self) -> dict:
        return {"class": "open_clip", "name": self.name, "dim": self.dim, "weights": self.digest or "pretrained",
                "image_size": self.image_size, "model_cfg": self.model_config}
