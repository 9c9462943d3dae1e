"""The object boxes: DETR on keyframes, with the model's own pre- and post-processing, on batched tensors."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from qvidcap.config import FeatureConfig
from qvidcap.features.loading import from_pretrained_checked, load_pretrained, state_digest

logger = logging.getLogger(__name__)


@dataclass
class Detections:
    """The boxes kept on one keyframe, best score first."""

    boxes: torch.Tensor  # (p, 4) xyxy in pixels of the keyframe, clamped inside it
    scores: torch.Tensor  # (p,)
    labels: torch.Tensor  # (p,) int64 class ids of the detector


def detr_config(features: FeatureConfig):
    """A random DETR: small (ResNet with 4 basic stages, narrow transformer) or DETR-R50's architecture.

    The backbone is transformers' own ResNet (no timm, no ImageNet weights fetched): an explicit
    `backbone_config` is how transformers 5 spells use_timm_backbone=False, use_pretrained_backbone=False.
    """
    from transformers import DetrConfig, ResNetConfig

    if features.random_size == "base":
        backbone = ResNetConfig(out_features=["stage4"])  # ResNet-50
        return DetrConfig(backbone_config=backbone, num_labels=91)
    width = features.small_hidden_size
    backbone = ResNetConfig(embedding_size=16, hidden_sizes=[16, 32, width, width], depths=[1, 1, 1, 1],
                            layer_type="basic", out_features=["stage4"])
    return DetrConfig(backbone_config=backbone, d_model=width, encoder_layers=1, decoder_layers=features.small_layers,
                      encoder_attention_heads=features.small_heads, decoder_attention_heads=features.small_heads,
                      encoder_ffn_dim=2 * width, decoder_ffn_dim=2 * width, num_queries=2 * features.max_objects + 4,
                      num_labels=16, init_std=0.2)  # a wider init spreads the random boxes apart


def explicit_timm_backbone(values: dict) -> dict:
    """A DETR `config.json` (as a dict) with its timm backbone written out as `backbone_config`.

    The published DETR configs say `use_timm_backbone: true, backbone: "resnet50",
    use_pretrained_backbone: true`. Left to transformers, a config that also carries `backbone_kwargs`
    asks the Hub whether "resnet50" is a repository (an offline failure, or a needless call), and a
    pretrained backbone would make timm download ImageNet weights: a second download, overwritten
    anyway by the DETR checkpoint, which holds the backbone's weights. Spelled out here: never pretrained.
    """
    values = dict(values)
    values["use_pretrained_backbone"] = False
    if values.get("backbone_config") is None and values.pop("use_timm_backbone", True):
        kwargs = dict(values.pop("backbone_kwargs", None) or {})
        backbone = {"model_type": "timm_backbone", "backbone": values.pop("backbone", None) or "resnet50",
                    "num_channels": kwargs.get("in_chans", kwargs.get("num_channels", values.get("num_channels", 3))),
                    "features_only": kwargs.get("features_only", True), "use_pretrained_backbone": False,
                    "out_indices": list(kwargs.get("out_indices", [1, 2, 3, 4]))}
        if values.get("dilation"):
            backbone["output_stride"] = kwargs.get("output_stride", 16)
        values["backbone_config"] = backbone
    return values


def pretrained_detr_config(name: str):
    """The `DetrConfig` of a checkpoint by name or path, read from its config.json, timm backbone made explicit."""
    from transformers import DetrConfig

    values, _ = DetrConfig.get_config_dict(name)
    return DetrConfig.from_dict(explicit_timm_backbone(values))


class ObjectDetector:
    """DETR over keyframes -> per keyframe the boxes over the threshold, top `max_objects`, big enough to crop."""

    def __init__(self, model, processor, name: str, device: str, dtype: torch.dtype, features: FeatureConfig):
        self.model = model.to(device=device, dtype=dtype).eval()
        self.processor = processor
        self.name = name
        self.device, self.dtype = device, dtype
        self.threshold = features.detection_threshold
        self.max_objects = features.max_objects
        self.min_box_pixels = features.min_box_pixels
        self.digest = "" if name else state_digest(model)

    @classmethod
    def build(cls, features: FeatureConfig, device: str, dtype: torch.dtype,
              weights_dir: Path | None = None) -> "ObjectDetector":
        from transformers import DetrForObjectDetection, DetrImageProcessor

        if weights_dir is not None and (weights_dir / "config.json").is_file():
            model = DetrForObjectDetection.from_pretrained(weights_dir)
            processor = DetrImageProcessor.from_pretrained(weights_dir)
            name = ""
        elif features.detector_model:
            name = features.detector_model
            model = load_pretrained(name, lambda: from_pretrained_checked(
                DetrForObjectDetection, name, config=pretrained_detr_config(name)))
            processor = load_pretrained(name, lambda: DetrImageProcessor.from_pretrained(name))
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                model = DetrForObjectDetection(detr_config(features))
            processor, name = DetrImageProcessor(), ""
        return cls(model, processor, name, device, dtype, features)

    @torch.inference_mode()
    def __call__(self, frames: list[torch.Tensor], batch_size: int = 16) -> list[Detections]:
        """Keyframes as (H, W, 3) uint8 tensors (sizes may differ) -> one Detections per keyframe.

        Frames are already at `sampling.keyframe_size` (resized at decode), so the processor only
        rescales, normalises and pads them into a batch with a pixel mask. Frames are batched by size,
        so clips of different aspect ratios waste little work on padding.
        """
        order = sorted(range(len(frames)), key=lambda i: tuple(frames[i].shape))
        results: list[Detections | None] = [None] * len(frames)
        for start in range(0, len(order), batch_size):
            positions = order[start:start + batch_size]
            chunk = [frames[i].to(self.device).permute(2, 0, 1) for i in positions]  # (3, H, W) each
            inputs = self.processor(images=chunk, do_resize=False, return_tensors="pt")
            pixel_values = inputs["pixel_values"].to(self.device, self.dtype)  # (b, 3, H_max, W_max)
            outputs = self.model(pixel_values=pixel_values, pixel_mask=inputs["pixel_mask"].to(self.device))
            outputs.logits, outputs.pred_boxes = outputs.logits.float(), outputs.pred_boxes.float()
            sizes = [tuple(f.shape[1:]) for f in chunk]
            found = self.processor.post_process_object_detection(outputs, threshold=self.threshold, target_sizes=sizes)
            for i, d, size in zip(positions, found, sizes):
                results[i] = self._select(d, size)
        return results

    def _select(self, found: dict, size: tuple[int, int]) -> Detections:
        """Clamp boxes inside the frame (no wrap-around), drop those too small to crop, keep the best few."""
        height, width = size
        boxes = found["boxes"].float().cpu()
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
        sides = torch.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        keep = sides >= self.min_box_pixels
        scores, labels, boxes = found["scores"].float().cpu()[keep], found["labels"].cpu()[keep], boxes[keep]
        order = scores.argsort(descending=True)[: self.max_objects]
        return Detections(boxes[order], scores[order], labels[order].long())

    def save(self, directory: Path) -> None:
        if not self.name:
            self.model.save_pretrained(directory)
            self.processor.save_pretrained(directory)

    def describe(self) -> dict:
        config = self.model.config
        return {"class": "DetrForObjectDetection", "name": self.name, "weights": self.digest or "pretrained",
                "d_model": config.d_model, "num_queries": config.num_queries, "num_labels": config.num_labels,
                "threshold": self.threshold, "max_objects": self.max_objects, "min_box_pixels": self.min_box_pixels}

    def label_name(self, label: int) -> str:
        return self.model.config.id2label.get(int(label), str(int(label)))
