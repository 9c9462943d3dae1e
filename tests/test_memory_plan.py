"""The memory plan: the meters count what they should, the plan adds up, the batch search halves correctly."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from qvidcap.planning import memory_plan
from qvidcap.config import load_config
from qvidcap.planning.dry_run import decoder_parameter_count
from qvidcap.planning.memory_plan import (GIB, LiveMemoryMeter, SavedTensorMeter, StepMeasurement, component,
                                 plan_from_measurement)


def test_tiny_decoder_has_the_published_parameter_count():
    # deepseek-vl2.md: 2,934,734,080 with lm_head, from the language_config sizes
    assert decoder_parameter_count() == 2_934_734_080


def test_saved_tensor_meter_counts_activations_once_and_skips_weights():
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU())
    x = torch.randn(4, 8, requires_grad=True)
    with SavedTensorMeter(model, exclude=[x]) as meter:
        y = model(x)  # Linear saves x (excluded) and its weight; ReLU saves its output
        z = (y * y).sum()  # saves y again: the same storage, not counted twice
    assert meter.by_module == {"1": 4 * 16 * 4}
    z.backward()  # the hooks were removed: the graph is still whole


def test_saved_tensor_meter_leaves_module_outputs_alone():
    model = nn.Linear(3, 2)
    with SavedTensorMeter(model):
        out = model(torch.randn(1, 3))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 2)


def test_live_memory_meter_follows_creation_and_release():
    base = torch.zeros(1000)  # existed before: not counted
    with LiveMemoryMeter(exclude=[base]) as meter:
        a = base + 1  # 4000 bytes live
        b = a * 2  # 8000
        view = b[:10]  # a view shares b's storage: still 8000
        del a  # 4000
        c = b + 1  # 8000
        del b, c  # the view keeps b's storage: 4000
        assert meter.current == 4000
        del view
    assert meter.peak == 8000 and meter.current == 0


def test_component_names():
    assert component("decoder.model.layers.3.mlp.experts") == "decoder layer 3"
    assert component("decoder.lm_head") == "lm_head logits"
    assert component("decoder.model.embed_tokens") == "decoder embeddings + final norm"
    assert component("qformer.blocks.0") == "heads + Q-Former"
    assert component("") .startswith("caption loss")
    assert component("<outside>") == "auxiliary losses"


def _step(batch: int, per_sample_gib: float = 0.5, layers: int = 2) -> StepMeasurement:
    per_sample = int(per_sample_gib * GIB)
    saved = {"heads + Q-Former": per_sample * batch // 4, "decoder layer 0": per_sample * batch // 8,
             "decoder layer 1": per_sample * batch // 16, "lm_head logits": per_sample * batch // 4}
    return StepMeasurement(batch, layers, saved, peak=2 * sum(saved.values()), moe_layer=saved["decoder layer 1"],
                           trainable_parameters=90_000_000)


def test_plan_rows_scale_to_twelve_layers():
    step = _step(16)
    plan = plan_from_measurement("colab", step, grad_accum_steps=1)
    moe = step.saved["decoder layer 1"]
    assert step.saved_full == sum(step.saved.values()) + 10 * moe
    assert plan.rows["activations saved for backward (measured, 12 layers)"] == pytest.approx(step.saved_full / GIB)
    assert plan.rows["decoder weights (fp16, frozen, 12 layers)"] == pytest.approx(2_934_734_080 * 2 / GIB)
    assert plan.rows["trainable weights fp32 + grads fp32 + Adam m, v"] == pytest.approx(90_000_000 * 16 / GIB)
    assert "DDP gradient buckets (2 GPUs)" not in plan.rows
    assert "DDP gradient buckets (2 GPUs)" in plan_from_measurement("kaggle", step, 1, processes=2).rows
    assert plan.table().loc["total", "GiB"] == pytest.approx(plan.total_gib, abs=0.01)
    scaled = sum(plan.saved_by_component.values())
    assert scaled == pytest.approx(step.saved_full / GIB)


def test_plan_memory_halves_the_batch_and_keeps_the_effective_batch(monkeypatch):
    tried = []

    def fake_measure(config, batch_size, decoder_layers=2, dtype=None):
        tried.append(batch_size)
        return _step(batch_size, per_sample_gib=0.6)

    monkeypatch.setattr(memory_plan, "measure_training_step", fake_measure)
    plan = memory_plan.plan_memory("colab", batch_size=16, effective_batch=16, with_extractors=False)
    assert tried[0] == 16 and all(b == a // 2 for a, b in zip(tried, tried[1:]))
    assert plan.fits and plan.batch_size == tried[-1] < 16
    assert plan.batch_size * plan.grad_accum_steps == 16
    assert "fits" in plan.verdict()


@pytest.mark.parametrize("profile", ["kaggle", "colab"])
def test_gpu_profiles_keep_an_effective_batch_of_at_least_sixteen(profile):
    train = load_config(profile).train
    assert train.batch_size * train.grad_accum_steps >= 16


@pytest.mark.slow
def test_measured_step_at_real_width_has_the_logits_term():
    from qvidcap.planning.dry_run import real_size_config

    config = real_size_config("colab")
    step = memory_plan.measure_training_step(config, batch_size=2, decoder_layers=2)
    vocab = 129_280
    # cross-entropy keeps its fp32 log-softmax over the caption positions: B x 30 x V x 4 bytes at least
    assert step.saved["caption loss (logits slice, fp32 copy, cross-entropy)"] >= 2 * 30 * vocab * 4
    assert step.moe_layer > 0 and step.saved["heads + Q-Former"] > 0
    assert step.peak >= sum(step.saved.values())
    assert step.trainable_parameters > 50_000_000  # heads and Q-Former at width 1024
