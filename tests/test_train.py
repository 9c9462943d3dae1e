import json

import pytest
import torch
from safetensors.torch import load_file

from qvidcap.training import train as train_module
from qvidcap.model.checkpoint import load_captioner
from qvidcap.runtime.env import Environment
from qvidcap.training.train import NonFiniteLossError, read_log, train
from synthetic_training import make_training_data, tiny_config


def local_env(tmp_path):
    return Environment("local", "cpu", 0, "", tmp_path / "data", tmp_path / "outputs", None)


def test_training_lowers_the_losses_and_keeps_checkpoints(tmp_path):
    config = tiny_config(tmp_path, **{"train.epochs": 3})
    result = train(config, local_env(tmp_path), data=make_training_data(config, tmp_path))
    assert result.stopped == "finished" and result.step == 3 * 18 and len(result.history) == 3
    first, last = result.steps.head(5).mean(numeric_only=True), result.steps.tail(5).mean(numeric_only=True)
    assert last["caption"] < 0.6 * first["caption"]
    assert last["loss"] < first["loss"] and last["action"] < first["action"] and last["global"] < first["global"]
    assert result.history["val_caption"].iloc[-1] < result.history["val_caption"].iloc[0]
    assert result.history["quick_cider"].iloc[-1] > result.history["quick_cider"].iloc[0]
    assert (result.last / "extractors" / "extractors.json").is_file() and result.best is not None
    model, _, _ = load_captioner(result.best)
    assert not model.training


def test_resume_replays_the_same_batches(tmp_path):
    config = tiny_config(tmp_path / "a", **{"train.epochs": 2})
    straight = train(config, local_env(tmp_path / "a"), data=make_training_data(config, tmp_path / "a"))

    config_b = tiny_config(tmp_path / "b", **{"train.epochs": 2})
    data = make_training_data(config_b, tmp_path / "b")
    cut = train(config_b, local_env(tmp_path / "b"), max_steps=27, data=data)  # mid second epoch
    assert cut.stopped == "max_steps" and cut.step == 27
    resumed = train(config_b, local_env(tmp_path / "b"), data=data)
    assert resumed.step == straight.step == 36

    columns = ["loss", "caption", "object", "action", "global", "lr"]
    a = straight.steps.set_index("step")[columns]
    b = resumed.steps.set_index("step")[columns]
    assert list(b.index) == list(range(1, 37))  # no step logged twice
    assert torch.allclose(torch.tensor(a.values), torch.tensor(b.values), atol=1e-5)
    wa, wb = load_file(str(straight.last / "model.safetensors")), load_file(str(resumed.last / "model.safetensors"))
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)


def test_a_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    config = tiny_config(tmp_path, **{"train.epochs": 2})
    data = make_training_data(config, tmp_path)
    env = local_env(tmp_path)
    good = train(config, env, max_steps=18, data=data)  # one whole epoch, checkpointed
    before = (good.last / "model.safetensors").read_bytes()
    real = train_module.compute_losses
    calls = {"n": 0}

    def poisoned(output, batch, train_config):
        calls["n"] += 1
        losses = real(output, batch, train_config)
        if calls["n"] == 3:
            losses.total = losses.total * float("nan")
        return losses

    monkeypatch.setattr(train_module, "compute_losses", poisoned)
    with pytest.raises(NonFiniteLossError, match="step 21"):
        train(config, env, data=data)
    assert (good.last / "model.safetensors").read_bytes() == before
    assert json.loads((good.last / "trainer_state.json").read_text())["step"] == 18
    steps, _ = read_log(good.run_dir / "log.jsonl")
    assert steps["step"].max() == 20 and steps[["loss"]].notna().all().all()


def test_fresh_run_ignores_an_old_checkpoint(tmp_path):
    config = tiny_config(tmp_path, **{"train.epochs": 1})
    data = make_training_data(config, tmp_path)
    train(config, local_env(tmp_path), data=data)
    again = train(config, local_env(tmp_path), data=data, resume=False, max_steps=4)
    assert again.step == 4 and again.steps["step"].tolist() == [1, 2, 3, 4]
    assert again.best is None  # the older run's best is not taken for this run's


@pytest.mark.slow
def test_the_default_pipeline_trains_on_a_small_mini_dataset(tmp_path):
    """Mini dataset -> features -> text targets (bundled MiniLM, rules) -> a few epochs of the real trainer."""
    from qvidcap.config import load_config
    from qvidcap.features.extract import extract_features

    config = load_config("smoke", {"paths.output_dir": str(tmp_path / "out"), "paths.data_dir": str(tmp_path / "data"),
                                   "data.mini_train_clips": 24, "data.mini_validation_clips": 6, "data.mini_test_clips": 6,
                                   "train.epochs": 3, "train.eval_clips": 6})
    env = Environment("local", "cpu", 0, "", tmp_path / "data", tmp_path / "out", None)
    for split in ("train", "validation"):
        extract_features(config, env, split)
    result = train(config, env)
    assert result.text_backends["sentence_model"] == "all-MiniLM-L6-v2"
    assert result.steps["caption"].tail(5).mean() < 0.7 * result.steps["caption"].head(5).mean()
    assert (result.last / "feature_stats.safetensors").is_file() and (result.last / "extractors").is_dir()
