import json

import pytest
import torch

from qvidcap.model.checkpoint import CheckpointError, load_captioner
from qvidcap.model.sampling import sample_captions, sequence_log_probs
from qvidcap.runtime.env import Environment
from qvidcap.training.cider import simple_tokenize
from qvidcap.training.scst import (ScstConfigError, caption_stats, scst_baseline, scst_loss, scst_run_dir,
                                   train_scst)
from qvidcap.training.train import ResumeMismatchError, train
from synthetic_training import make_training_data, tiny_config
from test_sampling import built_model, clips_of

CIDER_GAIN = 1.1  # the slow default-profile test: SCST's best quick CIDEr over the CE checkpoint's
SCST = {"scst.batch_clips": 8, "scst.num_samples": 3, "scst.epochs": 2, "train.eval_clips": 4,
        "generation.max_new_tokens": 8}


def local_env(root):
    return Environment("local", "cpu", 0, "", root / "data", root / "outputs", None)


@pytest.fixture(scope="module")
def ce_run(tmp_path_factory):
    """A CE checkpoint trained by the normal trainer for one epoch on 16 synthetic clips, and its data."""
    root = tmp_path_factory.mktemp("scst")
    config = tiny_config(root, **{"train.epochs": 1, **SCST})
    data = make_training_data(config, root, num_train=16, num_validation=4)
    result = train(config, local_env(root), data=data)
    return root, config, data, result.best


def test_mean_others_baseline_leaves_each_sample_out():
    rewards = torch.tensor([1.0, 2.0, 3.0, 6.0, 0.0, 0.0, 0.0, 4.0])  # two clips, k = 4
    assert torch.allclose(scst_baseline(rewards, 4), torch.tensor([11 / 3, 10 / 3, 3.0, 2.0, 4 / 3, 4 / 3, 4 / 3, 0.0]))
    assert scst_baseline(rewards, 4, greedy_rewards=torch.tensor([5.0, 1.0])).tolist() == [5.0] * 4 + [1.0] * 4
    with pytest.raises(ScstConfigError, match="num_samples >= 2"):
        scst_baseline(rewards, 1)


def test_caption_stats_count_distinct_captions_repeated_bigrams_and_length():
    stats = caption_stats(["a man plays a man plays", "A dog runs.", "a dog runs"])
    assert stats == {"distinct": 2 / 3, "repeated_bigrams": 1 / 3, "mean_length": 12 / 3}


@pytest.mark.parametrize("rewarded", [0, 2])
def test_a_step_raises_the_log_prob_of_the_higher_reward_sample(rewarded):
    """One SGD step on the SCST loss: the rewarded sample of each clip becomes likelier, the others less likely."""
    model, tokenizer = built_model()
    clips = clips_of(tokenizer)
    torch.manual_seed(0)
    out = sample_captions(model, clips, num_samples=3, max_new_tokens=8)
    rewards = torch.zeros(9)
    rewards[rewarded::3] = 1.0
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05)
    scst_loss(out.log_probs, rewards, scst_baseline(rewards, 3)).backward()
    optimizer.step()
    model.eval()
    with torch.no_grad():
        logits = model(**{k: v.repeat_interleave(3, 0) for k, v in clips.items()}, input_ids=out.token_ids,
                       attention_mask=out.mask).logits
    change = (sequence_log_probs(logits, out.token_ids, out.mask) - out.log_probs.detach()).view(3, 3)  # (clip, sample)
    others = [i for i in range(3) if i != rewarded]
    assert bool((change[:, rewarded] > 0).all()) and bool((change[:, others] < change[:, [rewarded]]).all())


def test_the_stage_checkpoints_apart_and_resumes_as_if_never_stopped(ce_run, tmp_path):
    root, config, data, best = ce_run
    ce_weights = (best / "model.safetensors").read_bytes()
    straight = train_scst(config, local_env(root), data=data, resume=False)
    assert straight.stopped == "finished" and straight.step == 4 and len(straight.history) == 2
    assert straight.run_dir == scst_run_dir(config, root / "outputs") and straight.run_dir.name == "qvidcap-scst"
    assert straight.init_checkpoint == best and (best / "model.safetensors").read_bytes() == ce_weights
    assert set(straight.initial) == {"quick_cider", "distinct_captions", "repeated_bigrams", "mean_length"}
    assert {"reward", "baseline", "loss", "distinct_per_clip"} <= set(straight.steps.columns)
    assert {"quick_cider", "repeated_bigrams", "mean_length", "train_reward"} <= set(straight.history.columns)
    model, saved, _ = load_captioner(straight.best)
    assert saved.train.run_name == "qvidcap-scst" and saved.scst.num_samples == 3
    assert (straight.last / "extractors" / "extractors.json").is_file()
    straight_steps = straight.steps.set_index("step")[["loss", "reward", "baseline"]].copy()

    cut = train_scst(config, local_env(root), data=data, resume=False, max_steps=3)  # mid second epoch
    assert cut.stopped == "max_steps" and cut.step == 3
    resumed = train_scst(config, local_env(root), data=data)
    assert resumed.step == 4 and list(resumed.steps["step"]) == [1, 2, 3, 4] and len(resumed.history) == 2
    assert resumed.initial == straight.initial
    steps = resumed.steps.set_index("step")[["loss", "reward", "baseline"]]
    assert torch.allclose(torch.tensor(steps.values), torch.tensor(straight_steps.values), atol=1e-4)

    with pytest.raises(ResumeMismatchError, match="scst.num_samples: 3 -> 4"):
        train_scst(tiny_config(root, **{"train.epochs": 1, **SCST, "scst.num_samples": 4}), local_env(root), data=data)


def test_the_deadline_stops_after_one_step_and_says_so(ce_run, monkeypatch):
    root, config, data, _ = ce_run
    other = tiny_config(root, **{"train.epochs": 1, **SCST, "scst.run_suffix": "-scst-deadline"})
    monkeypatch.setenv("QVIDCAP_DEADLINE", "1")
    result = train_scst(other, local_env(root), data=data, resume=False)
    assert result.stopped == "deadline" and result.step == 1 and (result.last / "config.json").is_file()
    stop = json.loads((root / "outputs" / "deadline_stop.json").read_text())
    assert stop["stage"] == "self-critical training" and "1 of 4 SCST steps" in stop["done"]


def test_the_greedy_baseline_is_the_greedy_captions_reward(ce_run):
    """mean_others' baseline averages to the mean reward exactly; the greedy caption's reward does not."""
    root, config, data, _ = ce_run
    other = tiny_config(root, **{"train.epochs": 1, **SCST, "scst.baseline": "greedy", "scst.run_suffix": "-greedy"})
    row = train_scst(other, local_env(root), data=data, resume=False, max_steps=1).steps.iloc[0]
    assert abs(row["baseline"] - row["reward"]) > 1e-3
    again = train_scst(tiny_config(root, **{"train.epochs": 1, **SCST, "scst.run_suffix": "-mean"}), local_env(root),
                       data=data, resume=False, max_steps=1).steps.iloc[0]
    assert again["baseline"] == pytest.approx(again["reward"], abs=1e-4)


def test_bad_settings_and_a_missing_ce_checkpoint_are_named(tmp_path):
    with pytest.raises(ScstConfigError, match="scst.baseline='best'"):
        train_scst(tiny_config(tmp_path, **{"scst.baseline": "best"}), local_env(tmp_path))
    with pytest.raises(CheckpointError, match="no checkpoint at .*qvidcap/best"):
        train_scst(tiny_config(tmp_path), local_env(tmp_path))


@pytest.mark.slow
def test_on_the_default_profile_scst_raises_held_out_cider_and_keeps_captions_fluent(tmp_path):
    """Mini dataset (600 train clips) -> features -> 4 CE epochs (the normal trainer) -> 3 SCST epochs.

    Measured once (2-core CPU, about 10 min CE + 1 to 5 min SCST depending on load): quick CIDEr on the 40
    validation clips CE 31.0 -> SCST 31.0, 31.1, 44.3 by epoch; on the 60 public-test clips (held out from
    the choice of best/ too) 22.3 -> 38.3. Repeated bigrams 0 -> 0; mean length 17 -> 13 words (the
    references average 9.9). Both checkpoints give one caption for every clip (random features, 4 CE
    epochs): SCST found a better consensus caption, not a grounded one, so this test shows the stage
    optimises the reward without breaking fluency, not that it reads the video. One run, so the bars are
    loose: 1.1x where 1.43x was measured, and a length no farther from the references' than CE's (+2 words).
    """
    from qvidcap.config import load_config
    from qvidcap.features.extract import extract_features

    config = load_config("smoke", {"paths.output_dir": str(tmp_path / "out"), "paths.data_dir": str(tmp_path / "data"),
                                   "train.epochs": 4, "scst.epochs": 3})
    env = Environment("local", "cpu", 0, "", tmp_path / "data", tmp_path / "out", None)
    for split in ("train", "validation"):
        extract_features(config, env, split)
    train(config, env)
    result = train_scst(config, env)
    ce, best = result.initial, result.history.loc[result.history["quick_cider"].idxmax()]
    assert best["quick_cider"] > CIDER_GAIN * ce["quick_cider"]  # the same 40 validation clips, greedy captions
    assert best["repeated_bigrams"] <= ce["repeated_bigrams"] + 0.05
    references = [len(simple_tokenize(c).split()) for refs in _validation_references(config, env).values() for c in refs]
    reference_length = sum(references) / len(references)
    assert abs(best["mean_length"] - reference_length) <= abs(ce["mean_length"] - reference_length) + 2.0


def _validation_references(config, env):
    from qvidcap.data import load_clips

    records = load_clips(config, env, "validation").records[: config.train.eval_clips]
    return {r.video_id: r.captions for r in records}
