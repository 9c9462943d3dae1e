"""bf16 only on compute capability >= 8.0 (a T4's bf16 is emulated), fp16 on older GPUs, fp32 on CPU."""
import dataclasses

import pytest
import torch

from fake_gpu import GPUS, fake_gpu
from qvidcap.config import load_config
from qvidcap.model.decoder import decoder_dtype
from qvidcap.runtime.env import supports_bf16
from qvidcap.runtime.precision import default_dtype, half_dtype, mixed_precision
from qvidcap.training.train import resolve_mixed_precision

EXPECTED = {"T4": (torch.float16, "fp16"), "A100": (torch.bfloat16, "bf16"), "H100": (torch.bfloat16, "bf16")}


@pytest.mark.parametrize("gpu", sorted(GPUS))
def test_half_dtype_follows_the_compute_capability_not_is_bf16_supported(monkeypatch, gpu):
    fake_gpu(monkeypatch, GPUS[gpu])
    dtype, accelerate = EXPECTED[gpu]
    assert half_dtype("cuda") == dtype and half_dtype("cuda:0") == dtype and half_dtype(torch.device("cuda")) == dtype
    assert mixed_precision("cuda") == accelerate
    assert supports_bf16() is (dtype == torch.bfloat16)
    assert resolve_mixed_precision(load_config("colab"), "cuda") == accelerate
    assert resolve_mixed_precision(load_config("colab", "train.mixed_precision=fp16"), "cuda") == "fp16"
    pretrained = load_config("colab").decoder
    assert decoder_dtype(pretrained, "cuda") == dtype
    assert decoder_dtype(pretrained, "cpu") == torch.float32
    # the small random decoder trains all its weights: fp32 masters under "auto"
    assert decoder_dtype(dataclasses.replace(pretrained, kind="deepseek_small"), "cuda") == torch.float32


def test_cpu_gets_float32_and_no_mixed_precision(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert half_dtype("cpu") == torch.float32 and half_dtype("cuda") == torch.float32
    assert mixed_precision("cpu") == "no" and not supports_bf16()
    assert resolve_mixed_precision(load_config("colab"), "cpu") == "no"


def test_default_dtype_creates_parameters_in_that_dtype_and_restores_the_default():
    with default_dtype(torch.float16):
        layer = torch.nn.Linear(4, 4)
    assert layer.weight.dtype == torch.float16
    assert torch.get_default_dtype() == torch.float32
    with pytest.raises(RuntimeError), default_dtype(torch.bfloat16):
        raise RuntimeError("boom")
    assert torch.get_default_dtype() == torch.float32
