"""The motion stream: VideoMAE over the sampled frame windows, pooled over space to T time steps."""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from qvidcap.config import FeatureConfig, SamplingConfig
from qvidcap.features.loading import from_pretrained_checked, load_pretrained, state_digest

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # VideoMAE's own preprocessing (VideoMAEImageProcessor)
IMAGENET_STD = (0.229, 0.224, 0.225)


def videomae_config(features: FeatureConfig, sampling: SamplingConfig):
    """The architecture of a random VideoMAE: small, or VideoMAE-base's (`features.random_size`)."""
    from transformers import VideoMAEConfig

    if features.random_size == "base":
        return VideoMAEConfig(image_size=sampling.temporal_size, num_frames=sampling.temporal_frames)
    return VideoMAEConfig(
        image_size=sampling.temporal_size, patch_size=features.small_patch_size, num_frames=sampling.temporal_frames, tubelet_size=2,
        hidden_size=features.small_hidden_size, num_hidden_layers=features.small_layers,
        num_attention_heads=features.small_heads, intermediate_size=4 * features.small_hidden_size,
    )


def _processor_normalisation(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The checkpoint's own image_mean / image_std (its preprocessor_config.json); ImageNet's where it has none."""
    from transformers import VideoMAEImageProcessor

    try:
        processor = VideoMAEImageProcessor.from_pretrained(name)
    except OSError:  # no preprocessor_config.json in that checkpoint
        logger.info("%s has no preprocessor config; normalising with ImageNet's mean and std", name)
        return IMAGENET_MEAN, IMAGENET_STD
    return tuple(processor.image_mean), tuple(processor.image_std)


class TemporalExtractor:
    """VideoMAE (no masking) over (K, F, S, S, 3) uint8 windows -> (K, T, Dt), T = F / tubelet size."""

    def __init__(self, model, name: str, device: str, dtype: torch.dtype,
                 mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD, grid: int = 1):
        self.model = model.to(device=device, dtype=dtype).eval()
        self.name = name  # pretrained name or local path; "" = random weights
        self.device, self.dtype = device, dtype
        config = model.config
        self.num_frames, self.image_size = config.num_frames, config.image_size
        self.tubelet_size, self.patch_size = config.tubelet_size, config.patch_size
        self.mean_values, self.std_values = tuple(map(float, mean)), tuple(map(float, std))
        self.mean = torch.tensor(self.mean_values, device=device, dtype=dtype).view(1, 1, 3, 1, 1)
        self.std = torch.tensor(self.std_values, device=device, dtype=dtype).view(1, 1, 3, 1, 1)
        self.digest = "" if name else state_digest(model)
        side = self.image_size // self.patch_size
        if grid < 1 or side % grid:
            raise ValueError(f"features.temporal_grid must divide the {side}x{side} patch grid, got {grid}")
        self.grid = grid  # tokens are averaged over g x g cells of the patch grid, not all of space

    @classmethod
    def build(cls, features: FeatureConfig, sampling: SamplingConfig, device: str, dtype: torch.dtype,
              weights_dir: Path | None = None) -> "TemporalExtractor":
        from transformers import VideoMAEModel

        mean, std = IMAGENET_MEAN, IMAGENET_STD
        if weights_dir is not None and (weights_dir / "config.json").is_file():
            model = VideoMAEModel.from_pretrained(weights_dir)
            name = ""
        elif features.temporal_model:
            name = features.temporal_model
            # a pre-training checkpoint (VideoMAEForPreTraining) loads too: decoder skipped, encoder whole
            model = load_pretrained(name, lambda: from_pretrained_checked(VideoMAEModel, name))
            mean, std = _processor_normalisation(name)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                model = VideoMAEModel(videomae_config(features, sampling))
            name = ""
        extractor = cls(model, name, device, dtype, mean, std, features.temporal_grid)
        extractor.check_sampling(sampling)
        return extractor

    def check_sampling(self, sampling: SamplingConfig) -> None:
        if (sampling.temporal_frames, sampling.temporal_size) != (self.num_frames, self.image_size):
            raise ValueError(
                f"the temporal model takes {self.num_frames} frames of {self.image_size}x{self.image_size}, but "
                f"sampling asks for {sampling.temporal_frames} of {sampling.temporal_size}; set "
                f"sampling.temporal_frames={self.num_frames} sampling.temporal_size={self.image_size}")

    @property
    def dim(self) -> int:
        """Dt: the hidden size times the g x g cells kept side by side."""
        return int(self.model.config.hidden_size) * self.grid ** 2

    @property
    def steps(self) -> int:
        """T: time steps one window yields (frames / tubelet size)."""
        return self.num_frames // self.tubelet_size

    @torch.inference_mode()
    def __call__(self, windows: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
        """(K, F, S, S, 3) uint8 windows -> (K, T, Dt) float32 (tokens averaged over each of g x g cells of space)."""
        outputs = []
        for chunk in windows.split(batch_size):
            x = chunk.to(self.device, non_blocking=True).permute(0, 1, 4, 2, 3).to(self.dtype) / 255  # (k, F, 3, S, S)
            x = (x - self.mean) / self.std
            hidden = self.model(pixel_values=x).last_hidden_state  # (k, T * h * w, H)
            k, _, dim = hidden.shape
            side, g = self.image_size // self.patch_size, self.grid
            hidden = hidden.view(k, self.steps, g, side // g, g, side // g, dim).mean(dim=(3, 5))  # (k, T, g, g, H)
            hidden = hidden.flatten(2)  # (k, T, Dt) with Dt = g * g * H
            outputs.append(hidden.float().cpu())
        return torch.cat(outputs)

    def save(self, directory: Path) -> None:
        """Random weights only: a pretrained model is rebuilt from its name."""
        if not self.name:
            self.model.save_pretrained(directory)

    def describe(self) -> dict:
        config = self.model.config
        return {"class": "VideoMAEModel", "name": self.name, "dim": self.dim, "weights": self.digest or "pretrained",
                "num_frames": self.num_frames, "image_size": self.image_size, "tubelet_size": self.tubelet_size,
                "hidden_size": config.hidden_size, "layers": config.num_hidden_layers, "grid": self.grid,
                "mean": list(self.mean_values), "std": list(self.std_values)}
