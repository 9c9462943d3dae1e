"""Loading pretrained backbones by name, with one clear error when they cannot be had offline."""
from __future__ import annotations

import hashlib
from typing import Callable, TypeVar

import torch

T = TypeVar("T")


class ModelNotAvailableError(RuntimeError):
    """A pretrained model that is neither cached locally nor downloadable right now."""

    def __init__(self, name: str, reason: str):
        self.name = name
        super().__init__(
            f"pretrained model {name!r} is not available: {reason}. Connect to the network (and unset "
            f"HF_HUB_OFFLINE) so it can be downloaded once into the Hugging Face cache, or pass a local "
            f"folder holding its files instead of the name (e.g. --set features.temporal_model=/path/to/videomae), "
            f"or leave the model name empty for the small random stand-in."
        )


class PretrainedMismatchError(RuntimeError):
    """A pretrained checkpoint whose weights do not fill the model built from its config (some left random)."""

    def __init__(self, name: str, missing: list[str], mismatched: list[str]):
        self.name, self.missing, self.mismatched = name, missing, mismatched
        super().__init__(
            f"pretrained model {name!r} left {len(missing)} weights missing {missing[:8]} and {len(mismatched)} of the "
            f"wrong shape {mismatched[:8]}: those would stay random. The checkpoint does not match the class or "
            f"config it was loaded with; check the name, or the transformers version that wrote its config.json")


def from_pretrained_checked(model_class, name: str, **kwargs):
    """`model_class.from_pretrained(name)`, refusing to return a model whose weights were partly left random
    (transformers only logs that, e.g. when a DETR backbone config resolves to a different backbone class)."""
    model, info = model_class.from_pretrained(name, output_loading_info=True, **kwargs)
    missing = sorted(info.get("missing_keys") or [])
    mismatched = sorted(str(k[0] if isinstance(k, tuple) else k) for k in info.get("mismatched_keys") or [])
    if missing or mismatched:
        raise PretrainedMismatchError(name, missing, mismatched)
    return model


def load_pretrained(name: str, loader: Callable[[], T]) -> T:
    """Run `loader()` (a `from_pretrained` or `open_clip.create_model` call) and turn hub failures into one sentence."""
    try:
        return loader()
    except (OSError, RuntimeError, ValueError, ImportError) as e:
        if isinstance(e, (ModelNotAvailableError, PretrainedMismatchError, torch.cuda.OutOfMemoryError)):
            raise
        reason = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise ModelNotAvailableError(name, reason) from e


def compute_dtype(name: str, device: str | torch.device) -> torch.dtype:
    """`features.dtype`: "auto" = float16 on GPU, float32 on CPU; or "float16"/"bfloat16"/"float32"."""
    if name == "auto":
        return torch.float16 if str(device).startswith("cuda") else torch.float32
    dtypes = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
    if name not in dtypes:
        raise ValueError(f"features.dtype must be auto, float16, bfloat16 or float32, got {name!r}")
    return dtypes[name]


def state_digest(module: torch.nn.Module) -> str:
    """Short sha256 of a module's weights: stores filled by different random weights differ here.

    Weights are rounded to float16 first, so the same weights held in float32 (CPU) or float16 (GPU) agree.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float16).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
