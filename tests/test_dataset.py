import torch

from qvidcap.training.dataset import CaptionDataset, EpochSampler, collate_samples, epoch_order, select_captions
from qvidcap.data.records import ClipRecord
from synthetic_training import make_training_data, tiny_config


def test_select_captions_per_clip():
    records = [ClipRecord("a_000000_000001", "train", ["one", " ", "two", "three"]), ClipRecord("b_000000_000001", "train", [])]
    assert select_captions(records) == [("a_000000_000001", c) for c in ("one", "two", "three")]
    assert select_captions(records, 2) == [("a_000000_000001", "one"), ("a_000000_000001", "two")]


def test_collate_pads_tokens_and_targets(tmp_path):
    data = make_training_data(tiny_config(tmp_path), tmp_path, num_train=8, num_validation=4)
    assert len(data.train) == 8 * 3
    samples = [data.train[i] for i in (0, 5, 7)]
    batch = collate_samples(samples, pad_token_id=0)
    B = 3
    L = max(len(s.targets.token_ids) for s in samples)
    assert batch["input_ids"].shape == (B, L) and batch["attention_mask"].sum(1).tolist() == [len(s.targets.token_ids) for s in samples]
    assert batch["objects"].shape[:2] == batch["object_mask"].shape and batch["temporal"].dtype == torch.float32
    K = max(s.targets.object_embeds.shape[0] for s in samples)
    assert batch["object_targets"].shape == (B, K, data.text_targets.embed_dim)
    assert batch["object_target_mask"].sum(1).tolist() == [s.targets.object_embeds.shape[0] for s in samples]
    assert batch["action_targets"].shape[0] == B and batch["global_target"].shape == (B, data.text_targets.embed_dim)
    assert batch["captions"] == [s.caption for s in samples]


def test_clips_without_features_are_skipped(tmp_path):
    data = make_training_data(tiny_config(tmp_path), tmp_path, num_train=4, num_validation=2)
    extra = ClipRecord("zzz_000000_000001", "train", ["a red circle moves to the left"])
    records = [ClipRecord(v, "train", [c]) for v, c in data.train.samples] + [extra]
    assert len(CaptionDataset(records, data.train.features, data.text_targets)) == len(data.train)


def test_epoch_order_is_a_function_of_seed_and_epoch():
    assert epoch_order(50, 0, 1) == epoch_order(50, 0, 1)
    assert epoch_order(50, 0, 1) != epoch_order(50, 0, 2) and epoch_order(50, 0, 1) != epoch_order(50, 1, 1)
    assert sorted(epoch_order(50, 3, 0)) == list(range(50))
    assert list(EpochSampler(50, 0, 1, start=20)) == epoch_order(50, 0, 1)[20:]


def test_epoch_captions_take_k_per_clip_and_rotate_through_all_of_them():
    from qvidcap.training.dataset import epoch_captions

    groups = [list(range(10 * c, 10 * c + 10)) for c in range(5)] + [[50, 51]]  # five clips of 10, one of 2
    epochs = [epoch_captions(groups, 0, e, 1) for e in range(10)]
    assert all(len(order) == 6 for order in epochs)
    for group in groups[:5]:  # one caption per clip and epoch; all ten in ten epochs
        seen = [i for order in epochs for i in order if i in group]
        assert sorted(seen) == group
    assert epochs[0] == epoch_captions(groups, 0, 0, 1) and epochs[0] != epoch_captions(groups, 1, 0, 1)
    two = epoch_captions(groups, 0, 3, 2)
    assert len(two) == 12 and all(sum(i in g for i in two) == 2 for g in groups)
    assert sorted(epoch_captions(groups, 0, 0, 20)) == list(range(52))  # k above a clip's count: each caption once
    sampler = EpochSampler(52, 0, 4, start=3, groups=groups, per_clip=1)
    assert list(sampler) == epoch_captions(groups, 0, 4, 1)[3:]


def test_captions_per_epoch_change_the_captions_trained_on_each_epoch(tmp_path, monkeypatch):
    from qvidcap.runtime.env import Environment
    from qvidcap.training import train as train_module

    config = tiny_config(tmp_path, **{"train.epochs": 3, "train.captions_per_epoch": 1})
    data = make_training_data(config, tmp_path, num_train=8, num_validation=2)
    seen, real = [], train_module.compute_losses

    def recording(output, batch, train_config):
        if torch.is_grad_enabled():
            seen.append(batch["captions"])
        return real(output, batch, train_config)

    monkeypatch.setattr(train_module, "compute_losses", recording)
    env = Environment("local", "cpu", 0, "", tmp_path / "data", tmp_path / "outputs", None)
    result = train_module.train(config, env, data=data)
    assert result.step == 3 and len(seen) == 3  # 8 clips, one caption each, batch 8: one step per epoch
    assert all(len(set(captions)) == 8 for captions in seen)
    assert sorted(c for captions in seen for c in captions) == sorted(c for _, c in data.train.samples)
