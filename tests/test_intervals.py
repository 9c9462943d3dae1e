"""Bootstrap intervals cover what they should, and the paired test tells a real difference from noise."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from qvidcap.evaluation.intervals import bootstrap_intervals, intervals_table, paired_test


def _per_clip(values, name="CIDEr"):
    return pd.DataFrame({name: values}, index=pd.Index([f"clip{i}" for i in range(len(values))], name="videoID"))


def test_the_interval_of_a_mean_matches_the_normal_approximation():
    rng = np.random.default_rng(1)
    values = rng.gamma(2.0, 30.0, size=400)  # skewed, like per-clip CIDEr
    per_clip = _per_clip(values)
    (interval,) = bootstrap_intervals(per_clip, {"CIDEr": values.mean()}, resamples=4000, seed=0)
    half = 1.96 * values.std(ddof=1) / np.sqrt(len(values))
    assert interval.low < values.mean() < interval.high
    assert (interval.high - interval.low) / 2 == pytest.approx(half, rel=0.1)  # bootstrap ≈ normal at n = 400


def test_intervals_cover_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(2)
    trials, hits = 200, 0
    for t in range(trials):
        values = rng.exponential(50.0, size=60)  # true mean 50
        (interval,) = bootstrap_intervals(_per_clip(values), {"CIDEr": values.mean()}, resamples=1000, seed=t)
        hits += interval.low <= 50.0 <= interval.high
    # binomial(200, ~0.94): a percentile bootstrap at n = 60 under-covers a little; 4 sd below 0.95 is 0.89
    assert 0.86 * trials <= hits <= trials


def test_approximate_metrics_are_centred_on_the_corpus_score():
    values = np.linspace(0.0, 40.0, 50)
    per_clip = pd.DataFrame({"BLEU-4": values, "CIDEr": values}, index=[f"c{i}" for i in range(50)])
    intervals = {i.metric: i for i in bootstrap_intervals(per_clip, {"BLEU-4": 30.0, "CIDEr": 20.0}, seed=0)}
    bleu, cider = intervals["BLEU-4"], intervals["CIDEr"]
    assert bleu.low < 30.0 < bleu.high and "approximate" in bleu.method
    assert bleu.high - bleu.low == pytest.approx(cider.high - cider.low)  # same spread, shifted to the corpus score
    assert "exact" in cider.method
    table = intervals_table({"trained": list(intervals.values())})
    assert table.loc[("trained", "CIDEr"), "estimate"] == 20.0


def test_a_real_paired_difference_is_detected_and_noise_is_not():
    rng = np.random.default_rng(3)
    base = pd.Series(rng.gamma(2.0, 30.0, size=120), index=[f"c{i}" for i in range(120)])
    better = base + 10.0 + rng.normal(0, 5.0, size=120)  # +10 on every clip, small noise
    test = paired_test(better, base)
    assert test.p_value < 0.001 and test.low < 10.0 < test.high
    same = base + rng.normal(0, 5.0, size=120)  # no effect
    null = paired_test(same, base, seed=1)
    assert null.p_value > 0.01 and null.low < 0.0 < null.high
    assert "no detectable difference" in null.sentence("a", "b")


def test_the_paired_test_needs_the_same_clips():
    a = pd.Series([1.0, 2.0], index=["x", "y"])
    with pytest.raises(ValueError, match="same clips"):
        paired_test(a, pd.Series([1.0, 2.0], index=["x", "z"]))
    with pytest.raises(ValueError, match="at least 2"):
        bootstrap_intervals(_per_clip([1.0]), {"CIDEr": 1.0})


def test_report_intervals_for_metrics_json_are_serialisable_and_paired_against_the_trained_model():
    import json
    from types import SimpleNamespace

    rng = np.random.default_rng(4)
    ids = [f"c{i}" for i in range(40)]

    def system(mean):
        per_clip = pd.DataFrame({"CIDEr": rng.gamma(2.0, mean / 2, 40), "ROUGE-L": rng.uniform(20, 60, 40)}, index=ids)
        return SimpleNamespace(per_clip=per_clip, corpus={"CIDEr": per_clip["CIDEr"].mean(), "ROUGE-L": per_clip["ROUGE-L"].mean()})

    from qvidcap.evaluation.intervals import report_intervals

    out = report_intervals({"trained": system(80.0), "blind": system(20.0)}, resamples=500)
    json.dumps(out)
    assert set(out["intervals"]) == {"trained", "blind"} and set(out["intervals"]["trained"]) == {"CIDEr", "ROUGE-L"}
    test = out["paired_tests"]["trained - blind"]
    assert test["difference"] > 0 and test["p_value"] < 0.01 and "detectable difference" in test["sentence"]


def test_the_scst_checkpoint_is_tested_as_a_gain_over_the_trained_model():
    from types import SimpleNamespace

    from qvidcap.evaluation.intervals import report_intervals

    ids = [f"c{i}" for i in range(30)]
    base = np.random.default_rng(5).uniform(20, 80, 30)

    def system(values):
        per_clip = pd.DataFrame({"CIDEr": values}, index=ids)
        return SimpleNamespace(per_clip=per_clip, corpus={"CIDEr": float(values.mean())})

    out = report_intervals({"trained": system(base), "blind": system(base - 30), "scst": system(base + 10)}, resamples=500)
    assert set(out["paired_tests"]) == {"trained - blind", "scst - trained"}
    gain = out["paired_tests"]["scst - trained"]
    assert gain["difference"] == pytest.approx(10.0) and gain["low"] > 0 and gain["sentence"].startswith("scst − trained")
