import torch

from qvidcap.model.checkpoint import load_captioner, save_checkpoint
from qvidcap.features.clip_features import collate_features
from qvidcap.model import build_captioner, link_widths
from qvidcap.model.tokenizer import build_word_tokenizer
from qvidcap.model.normalization import attach_feature_stats, compute_feature_stats, feature_stats_of
from synthetic_training import make_clips, tiny_config


def test_stats_standardise_the_inputs_on_every_path(tmp_path):
    records, features = make_clips(8, "train")
    clips = list(features.values())
    stats = compute_feature_stats(clips)
    tokens = torch.cat([c.context.float() for c in clips])
    assert torch.allclose(stats["context_mean"], tokens.mean(0)) and stats["objects_std"].shape == (16,)

    config = link_widths(tiny_config(tmp_path), {"temporal": 16, "object": 16, "context": 16}, 24)
    tokenizer = build_word_tokenizer([c for r in records for c in r.captions])
    torch.manual_seed(0)
    plain = build_captioner(config, tokenizer).eval()
    hooked = build_captioner(config, tokenizer).eval()
    hooked.load_state_dict(plain.state_dict())
    attach_feature_stats(hooked, stats)
    assert set(hooked.state_dict()) == set(plain.state_dict())  # the statistics add no weights

    batch = collate_features(clips)
    standardised = {k: (batch[k] - stats[f"{k}_mean"]) / stats[f"{k}_std"] for k in ("temporal", "context", "objects")}
    standardised["objects"] = standardised["objects"] * batch["object_mask"].unsqueeze(-1)
    expected = plain.encode_video(standardised["temporal"], standardised["context"], standardised["objects"], batch["object_mask"])
    got = hooked.encode_video(batch["temporal"], batch["context"], batch["objects"], batch["object_mask"])
    assert torch.allclose(expected.prefix, got.prefix, atol=1e-5)

    path = save_checkpoint(tmp_path / "ckpt", hooked, config, tokenizer)
    loaded, _, _ = load_captioner(path)
    assert all(torch.equal(feature_stats_of(loaded)[k], stats[k]) for k in stats)
    args = (batch["temporal"], batch["context"], batch["objects"], batch["object_mask"])
    assert loaded.generate(*args, num_beams=1) == hooked.generate(*args, num_beams=1)
