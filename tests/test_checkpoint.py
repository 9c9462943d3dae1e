import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from qvidcap.model import checkpoint as ckpt
from qvidcap.model.checkpoint import CheckpointError, find_checkpoint, load_captioner, load_training_state, save_checkpoint
from qvidcap.model import build_captioner, link_widths
from qvidcap.model.tokenizer import build_word_tokenizer
from synthetic_training import make_clips, tiny_config
from qvidcap.features.clip_features import collate_features


def tiny_model(tmp_path):
    config = link_widths(tiny_config(tmp_path), {"temporal": 16, "object": 16, "context": 16}, 24)
    records, features = make_clips(4, "train")
    tokenizer = build_word_tokenizer([c for r in records for c in r.captions])
    torch.manual_seed(0)
    return build_captioner(config, tokenizer), config, tokenizer, collate_features(list(features.values()))


def test_round_trip_rebuilds_the_same_model(tmp_path):
    model, config, tokenizer, clips = tiny_model(tmp_path)
    extractors = tmp_path / "store" / "extractors"
    extractors.mkdir(parents=True)
    (extractors / "state.json").write_text("{}")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(clips["temporal"], clips["context"], clips["objects"], clips["object_mask"],
          torch.ones(4, 3, dtype=torch.long), torch.ones(4, 3, dtype=torch.long)).caption_loss.backward()
    optimizer.step()
    path = save_checkpoint(tmp_path / "ckpt", model, config, tokenizer, extractors_dir=extractors, optimizer=optimizer,
                           trainer_state={"step": 7, "epoch": 1, "position": 16})
    loaded, loaded_config, loaded_tokenizer = load_captioner(path)
    assert loaded_config == config and loaded_tokenizer.get_vocab() == tokenizer.get_vocab()
    assert (path / "extractors" / "state.json").is_file()
    model.eval()
    inputs = (clips["temporal"], clips["context"], clips["objects"], clips["object_mask"])
    assert loaded.generate(*inputs, num_beams=1) == model.generate(*inputs, num_beams=1)
    for name, value in model.trainable_state_dict().items():
        assert torch.equal(value, loaded.state_dict()[name]), name
    state = torch.load(path / "training_state.pt", weights_only=True)  # no pickled code
    assert set(state) == {"optimizer", "scheduler", "rng"} and state["optimizer"]["state"]
    assert load_training_state(path)["trainer"]["step"] == 7
    assert set(load_file(str(path / "model.safetensors"))) == set(model.trainable_state_dict())


def test_missing_weights_are_reported(tmp_path):
    model, config, tokenizer, _ = tiny_model(tmp_path)
    path = save_checkpoint(tmp_path / "ckpt", model, config, tokenizer)
    weights = load_file(str(path / "model.safetensors"))
    dropped = sorted(weights)[0]
    del weights[dropped]
    weights["not.a.weight"] = torch.zeros(1)
    save_file(weights, str(path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="1 missing trainable weights") as error:
        load_captioner(path)
    assert dropped in str(error.value) and "not.a.weight" in str(error.value)
    load_captioner(path, strict=False)  # logged, not raised


def test_a_failed_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    model, config, tokenizer, _ = tiny_model(tmp_path)
    path = save_checkpoint(tmp_path / "last", model, config, tokenizer, trainer_state={"step": 1})

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_tokenizer", broken)
    with pytest.raises(OSError):
        save_checkpoint(path, model, config, tokenizer, trainer_state={"step": 2})
    assert json.loads((path / "trainer_state.json").read_text())["step"] == 1
    load_captioner(path)


def test_find_checkpoint(tmp_path):
    config = tiny_config(tmp_path)
    with pytest.raises(CheckpointError, match="qvidcap train"):
        find_checkpoint(config, tmp_path / "outputs")
    model, linked, tokenizer, _ = tiny_model(tmp_path)
    save_checkpoint(tmp_path / "outputs" / "checkpoints" / "qvidcap" / "best", model, linked, tokenizer)
    assert find_checkpoint(config, tmp_path / "outputs").name == "best"


def _frozen_gpt2_captioner(tmp_path):
    """A tiny captioner whose frozen decoder is a pretrained causal LM on disk (as the GPU profiles' is)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    records, features = make_clips(4, "train")
    tokenizer = build_word_tokenizer([c for r in records for c in r.captions])
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=16, n_layer=1, n_head=2,
                               n_positions=64)).save_pretrained(tmp_path / "gpt2")
    config = link_widths(tiny_config(tmp_path, **{"decoder.kind": "hf", "decoder.name": str(tmp_path / "gpt2"),
                                                   "decoder.train_mode": "frozen"}),
                         {"temporal": 16, "object": 16, "context": 16}, 24)
    return build_captioner(config, tokenizer), config, tokenizer


def test_on_a_t4_the_loader_builds_the_decoder_straight_in_float16(tmp_path, monkeypatch):
    from fake_gpu import fake_gpu
    from qvidcap.model import QVidCap
    from qvidcap.model import decoder as decoder_module

    model, config, tokenizer = _frozen_gpt2_captioner(tmp_path)
    path = save_checkpoint(tmp_path / "ckpt", model, config, tokenizer)
    fake_gpu(monkeypatch, (7, 5))
    asked, moved = [], []
    real_dtype = decoder_module.decoder_dtype
    monkeypatch.setattr(decoder_module, "decoder_dtype", lambda c, d="cpu": asked.append(real_dtype(c, d)) or asked[-1])
    monkeypatch.setattr(QVidCap, "to", lambda self, device: moved.append(device) or self)  # no CUDA here
    loaded, _, _ = load_captioner(path, "cuda")
    assert asked == [torch.float16] and moved == ["cuda"]
    assert {p.dtype for p in loaded.decoder.parameters()} == {torch.float16}  # built so, never fp32 first
    assert {p.dtype for p in loaded.qformer.parameters()} == {torch.float32}  # the small trained parts stay fp32
    monkeypatch.undo()
    on_cpu, _, _ = load_captioner(path)
    assert {p.dtype for p in on_cpu.decoder.parameters()} == {torch.float32}
