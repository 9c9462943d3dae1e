"""The float16 overflow guard of a pretrained decoder, and its safe mode.

DeepSeek-VL2's language model was trained in bfloat16; a T4 has no native bf16, so there it runs in
float16, whose largest value is 65,504. Activations of a bf16-trained model can pass it, and then
training or captioning goes on with inf/NaN in the residual stream. The guard watches the first
`decoder.finite_check_steps` forwards: after every decoder layer, the final norm and the LM head it
asks `torch.isfinite(output).all()`.

Safe mode: when stage k (a layer, the final norm or the LM head) is the first with a non-finite
output, stage k and every stage after it are cast to float32 and run with autocast off (the residual
stream is float32 from there on), one WARNING names those stages, and the same forward is recomputed
at once (a KV cache it was given is first rewound), so the step trains on the finite result. The earlier stages stay float16. If the recomputed
output is still not finite the guard logs an ERROR and returns it (the trainer then skips a step with a
non-finite loss). After the checked forwards the per-stage hooks are removed: they cost one device
sync per stage.
"""
from __future__ import annotations

import functools
import logging
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)


def decoder_stages(model: nn.Module) -> list[tuple[str, nn.Module]] | None:
    """`[(name, module)]` in forward order: every decoder layer, the final norm, the LM head; None when
    the model is not laid out as `model.layers`, `model.norm`, output embeddings (DeepSeek, LLaMA, Qwen)."""
    inner = getattr(model, "model", None)
    layers, norm = getattr(inner, "layers", None), getattr(inner, "norm", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if not isinstance(layers, nn.ModuleList) or norm is None or head is None:
        return None
    return [(f"model.layers.{i}", layer) for i, layer in enumerate(layers)] + [("model.norm", norm), ("lm_head", head)]


def _first_tensor(output: Any) -> torch.Tensor | None:
    if torch.is_tensor(output):
        return output
    if isinstance(output, (tuple, list)) and output and torch.is_tensor(output[0]):
        return output[0]
    if isinstance(output, dict) and output:
        first = next(iter(output.values()))
        return first if torch.is_tensor(first) else None
    return None


def _to_float32(value: Any) -> Any:
    if torch.is_tensor(value):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, tuple):
        return tuple(_to_float32(v) for v in value)
    if isinstance(value, list):
        return [_to_float32(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_float32(v) for k, v in value.items()}
    return value


def run_in_float32(module: nn.Module) -> None:
    """Cast `module` to float32 and make it run in float32: inputs cast, autocast off."""
    module.float()
    if getattr(module, "_qvidcap_float32", False):
        return
    forward = module.forward
    device_type = next((p.device.type for p in module.parameters()), "cpu")

    @functools.wraps(forward)
    def forward_in_float32(*args, **kwargs):
        args, kwargs = _to_float32(args), _to_float32(kwargs)
        with torch.autocast(device_type=device_type, enabled=False):
            return forward(*args, **kwargs)

    module.forward = forward_in_float32
    module._qvidcap_float32 = True


class FiniteGuard:
    """Checks the first `steps` forwards of `model` stage by stage and switches to the safe mode on overflow."""

    def __init__(self, model: nn.Module, stages: list[tuple[str, nn.Module]], steps: int):
        self.model, self.stages, self.steps_left = model, stages, steps
        self.first_bad: int | None = None  # stage index of the first non-finite output in the current forward
        self.float32_from: int | None = None  # stages[float32_from:] run in float32
        self.switched: list[str] = []  # names of the stages switched to float32
        self.active = True
        self._rerunning = False
        self._stage_handles = [module.register_forward_hook(self._checker(i)) for i, (_, module) in enumerate(stages)]
        self._cache_lengths: list[tuple[Any, int]] = []  # KV caches given to the current forward, their lengths
        self._pre_handle = model.register_forward_pre_hook(self._start, with_kwargs=True)
        # removing a forward hook from inside the forward hooks' loop is not allowed: this one stays, as a no-op
        model.register_forward_hook(self._finish, with_kwargs=True)

    def _checker(self, index: int):
        def check(module, args, output):
            tensor = _first_tensor(output)
            if self.first_bad is None and tensor is not None and not bool(torch.isfinite(tensor).all()):
                self.first_bad = index
        return check

    def _start(self, module, args, kwargs):
        self.first_bad = None
        if not self._rerunning:
            self._cache_lengths = [(v, v.get_seq_length()) for v in kwargs.values()
                                   if hasattr(v, "crop") and hasattr(v, "get_seq_length")]
        return None

    def _rewind_caches(self) -> None:
        """The failed forward already appended its (non-finite) keys and values to the KV cache: drop them."""
        for cache, length in self._cache_lengths:
            added = cache.get_seq_length() - length
            if added > 0:
                cache.crop(-added)  # a negative count removes that many positions (every transformers version)

    def _switch(self, start: int, reason: str) -> None:
        names = [name for name, _ in self.stages[start:]]
        for _, module in self.stages[start:]:
            run_in_float32(module)
        self.float32_from = start
        self.switched = names
        logger.warning("float16 overflow in the decoder: %s gave %s; safe mode: %s now run in float32 "
                       "(autocast off there, the earlier stages stay float16) and this forward is recomputed",
                       self.stages[start][0], reason, ", ".join(names))

    def _finish(self, module, args, kwargs, output):
        if not self.active or self._rerunning:
            return None
        bad = self.first_bad
        if bad is not None and (self.float32_from is None or bad < self.float32_from):
            self._switch(bad, "inf/NaN")
            self._rewind_caches()
            self._rerunning = True
            try:
                output = module(*args, **kwargs)
            finally:
                self._rerunning = False
            bad = self.first_bad
        if bad is not None:
            logger.error("the decoder's %s output is not finite even in float32 (stages from %s run in float32); "
                         "this batch's loss will be non-finite and the step skipped", self.stages[bad][0],
                         self.stages[self.float32_from][0] if self.float32_from is not None else "none")
        self.steps_left -= 1
        if self.steps_left <= 0:
            self.remove()
        return output

    def remove(self) -> None:
        """Stop checking (the float32 stages stay float32)."""
        self.active = False
        for handle in self._stage_handles:
            handle.remove()
        self._stage_handles = []
        self._pre_handle.remove()


def install_finite_guard(model: nn.Module, steps: int) -> FiniteGuard | None:
    """Watch `model`'s first `steps` forwards for inf/NaN (see the module docstring); None when it cannot."""
    if steps <= 0:
        return None
    stages = decoder_stages(model)
    if stages is None:
        logger.warning("the float16 decoder %s is not laid out as model.layers/model.norm/lm_head: no overflow "
                       "guard; watch for a non-finite loss, or set decoder.dtype=float32", type(model).__name__)
        return None
    guard = FiniteGuard(model, stages, steps)
    model.finite_guard = guard
    return guard
