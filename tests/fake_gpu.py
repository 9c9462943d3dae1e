"""Pretend torch sees one CUDA GPU of a given compute capability (no CUDA is allocated).

`is_bf16_supported` is faked to say True, as it does on a real T4 (emulated bf16): the precision
choice must not trust it.
"""
from __future__ import annotations

import torch

GPUS = {"T4": (7, 5), "A100": (8, 0), "H100": (9, 0)}


def fake_gpu(monkeypatch, capability: tuple[int, int]) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
