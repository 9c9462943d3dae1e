"""`./run_all.sh gpu-check`: the measured figures feed the budget's plan; without a GPU it runs tiny on the CPU."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from qvidcap.planning import budget, gpu_check
from qvidcap.planning.dry_run import real_size_config

ROOT = Path(__file__).resolve().parent.parent


def _gpu_report(**changes) -> dict:
    report = {
        "measured_on_gpu": True, "device": "Tesla T4",
        "extraction": {"decode_cpu_s_per_10s_clip": {"a": 0.9, "b": 0.4}, "models_clips_per_s": 20.0},
        "training": {"batch": 16},
        "twelve_layers": {"train_step_s_fp16": 0.5, "forward_s": 0.2, "beam_batch_s": 3.2, "greedy_batch_s": 1.6},
        "two_gpus": {"ddp_step_s_2_layers": 0.30, "single_step_s_2_layers": 0.22},
    }
    report.update(changes)
    return report


def test_twelve_layers_are_extrapolated_from_two_and_three():
    low, high = {"layers": 2, "t": 1.0}, {"layers": 3, "t": 1.5}
    assert gpu_check.extrapolate(low, high, "t") == pytest.approx(1.0 + 0.5 * 10)
    assert gpu_check.extrapolate(low, {"layers": 3, "t": 0.9}, "t") == 1.0  # noise, not a negative layer


def test_measured_figures_replace_the_estimates_in_the_plan():
    rates = gpu_check.measured_rates(_gpu_report(), "kaggle")
    assert (rates.decode_core_s, rates.extract_gpu_s, rates.train_step_s) == (0.9, 0.05, 0.5)
    assert rates.beam_clip_s == pytest.approx(3.2 / 16) and rates.allreduce_s == pytest.approx(0.08)
    assert rates.how["train_step_s"] == "measured: gpu_check on Tesla T4"
    assert rates.how["caption_embed_gpu_s"].startswith("estimated")  # not measured by the check
    config = real_size_config("kaggle")
    stages = {s.name: s for s in budget.plan_stages(config, rates, budget.PLATFORMS["kaggle"])}
    training = next(s for n, s in stages.items() if n.startswith("training: 10 epochs"))
    steps = -(-25_991 * 3 // 32) * 10
    assert training.hours == pytest.approx((steps * 0.5 + steps * 0.08) / 3600)
    assert "measured" in training.how


def test_a_cpu_report_leaves_the_estimate():
    measured = gpu_check.measured_rates(_gpu_report(measured_on_gpu=False), "kaggle")
    config = real_size_config("kaggle")
    estimate = budget.estimate_rates(budget.recorded_measurements(config), config, budget.PLATFORMS["kaggle"])
    assert measured == estimate


def test_run_all_has_the_gpu_check_command():
    script = (ROOT / "run_all.sh").read_text()
    assert 'gpu-check) shift; setup; exec "$PY" -m qvidcap.planning.gpu_check "$@"' in script


@pytest.mark.slow
def test_gpu_check_without_a_gpu_runs_tiny_and_says_so(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--out", str(out), "--repeats", "1"]) == 0
    printed = capsys.readouterr().out
    assert "no GPU here" in printed and "estimated: nothing measured on a GPU" in printed and "**total**" in printed
    report = json.loads(out.read_text())
    assert report["measured_on_gpu"] is False and report["sizes"].startswith("tiny")
    assert report["training"]["samples_per_s_fp16"] > 0 and report["generation"]["greedy_clips_per_s"] > 0
    assert report["extraction"]["models_clips_per_s"] > 0 and report["two_gpus"].startswith("skipped")
    experts = report["layers"][0]["experts"]
    assert experts["eager"]["ops"] > 0 and ("ops" in experts["grouped_mm"] or "error" in experts["grouped_mm"])
