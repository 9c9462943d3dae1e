"""The learning-signal benchmark's verdicts: ratio, interval separation, the summary sentence, the overrides handed on."""
from __future__ import annotations

import json

import pytest

from qvidcap.bench.signal import _config_overrides, read_rows, run_name, signal_summary, signal_table
from qvidcap.config import load_config


def _row(seed, threads, trained, low, blind=40.0, blind_high=46.0):
    return {"tag": "", "seed": seed, "threads": threads, "trained": trained, "trained_low": low,
            "trained_high": trained + 10, "blind": blind, "blind_low": blind - 6, "blind_high": blind_high}


def test_a_run_clears_the_bar_only_with_twice_the_blind_score_and_separated_intervals():
    table = signal_table([_row(0, 1, 100.0, 85.0), _row(1, 1, 79.0, 70.0), _row(2, 2, 100.0, 45.0)])
    assert table["ratio"].tolist() == pytest.approx([2.5, 1.975, 2.5])
    assert table["clears"].tolist() == [True, False, False]  # under 2x; interval overlaps blind's upper end


def test_the_summary_names_the_median_the_worst_run_and_the_misses():
    table = signal_table([_row(0, 1, 100.0, 85.0), _row(1, 4, 79.0, 70.0), _row(2, 2, 120.0, 100.0)])
    text = signal_summary(table)
    assert "median 2.50" in text and "lowest 1.98 (seed 1, 4 threads)" in text and "1 of 3 runs miss" in text
    assert "every run clears" in signal_summary(signal_table([_row(0, 1, 100.0, 85.0)]))


def test_finished_runs_are_read_back_by_tag(tmp_path):
    path = tmp_path / "signal.jsonl"
    path.write_text("\n".join(json.dumps({**_row(s, 1, 90.0, 80.0), "tag": t}) for s, t in ((0, ""), (1, "wd"))))
    assert [r["seed"] for r in read_rows(path, "wd")] == [1]
    assert read_rows(tmp_path / "missing.jsonl", "") == []
    assert run_name("wd", 3, 2) == "signal-wd-s3-t2" and run_name("", 0, 1) == "signal-s0-t1"


def test_each_run_gets_exactly_the_settings_that_differ_from_the_defaults():
    config = load_config("smoke", "train.epochs=3 decoder.word_dropout=0.5 data.kaggle_datasets=a/b,c/d")
    assert _config_overrides(config) == {"train.epochs": 3, "decoder.word_dropout": 0.5, "data.kaggle_datasets": "a/b,c/d"}
    assert _config_overrides(load_config("smoke")) == {}


def test_a_failed_run_says_why_and_keeps_the_rows_already_written(tmp_path, monkeypatch):
    import argparse
    import subprocess

    from qvidcap.bench import signal

    config = load_config("smoke", {"paths.output_dir": str(tmp_path), "paths.data_dir": str(tmp_path / "data")})
    rows = tmp_path / "bench" / "signal.jsonl"
    rows.parent.mkdir(parents=True)
    rows.write_text(json.dumps(_row(0, 1, 90.0, 80.0)) + "\n")
    calls = []

    def failing(command, **kwargs):
        calls.append(command)
        return subprocess.CompletedProcess(command, 1, stdout="", stderr="loading\nOSError: the cache vanished\n")

    monkeypatch.setattr(signal.subprocess, "run", failing)
    args = argparse.Namespace(one=None, tag="", seeds="0,1", threads="1")
    with pytest.raises(RuntimeError, match=r"seed 1 with 1 threads failed \(exit 1\)[\s\S]*OSError: the cache vanished"):
        signal.main(args, config)
    assert len(calls) == 1 and calls[0][-2:] == ["1", "1"]  # seed 0 was already done
    assert read_rows(rows, "") == [_row(0, 1, 90.0, 80.0)]
