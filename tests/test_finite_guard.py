"""The float16 overflow guard: a layer that overflows fp16 switches, with the rest of the decoder, to fp32."""
import logging

import torch

from qvidcap.config import load_config
from qvidcap.model.decoder import build_decoder
from qvidcap.model.tokenizer import build_word_tokenizer

TOKENIZER = build_word_tokenizer(["a red circle moves left", "a blue square grows"])
INPUT_IDS = torch.tensor([[1, 4, 5, 6, 7], [1, 7, 6, 5, 4]])


def decoder(dtype="float16", steps=3):
    torch.manual_seed(0)
    config = load_config("smoke", "decoder.small_hidden_size=32 decoder.small_intermediate_size=48 "
                                  f"decoder.small_moe_intermediate_size=16 decoder.small_layers=3 decoder.dtype={dtype} "
                                  f"decoder.finite_check_steps={steps} decoder.train_mode=frozen").decoder
    return build_decoder(config, TOKENIZER).eval()


def blow_up(model, layer=1):
    """Values and output projections of one layer so large that its residual stream passes fp16's 65,504
    (about 6e5), while every weight stays representable in fp16."""
    generator = torch.Generator().manual_seed(1)
    attention = model.model.layers[layer].self_attn
    for weight in (attention.v_proj.weight, attention.o_proj.weight):
        weight.data.copy_(torch.randn(weight.shape, generator=generator) * 100)


def float32_twin(model):
    twin = decoder("float32", steps=0)
    twin.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
    return twin


def test_an_overflowing_layer_and_those_after_it_switch_to_float32_and_the_forward_is_recomputed(caplog):
    model = decoder()
    blow_up(model)
    expected = float32_twin(model)(input_ids=INPUT_IDS).logits
    with caplog.at_level(logging.WARNING, logger="qvidcap.model.finite_guard"):
        logits = model(input_ids=INPUT_IDS).logits
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(logits.float(), expected, atol=2e-3, rtol=2e-3)
    layers = model.model.layers
    assert layers[0].self_attn.o_proj.weight.dtype == torch.float16  # before the overflow: untouched
    assert all(p.dtype == torch.float32 for layer in layers[1:] for p in layer.parameters())
    assert model.model.norm.weight.dtype == model.lm_head.weight.dtype == torch.float32
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "model.layers.1 gave inf/NaN" in warnings[0]
    assert "model.layers.1, model.layers.2, model.norm, lm_head now run in float32" in warnings[0]
    assert model.finite_guard.switched == ["model.layers.1", "model.layers.2", "model.norm", "lm_head"]
    assert torch.isfinite(model(input_ids=INPUT_IDS).logits).all()  # the next batch runs in the safe mode


def test_without_the_guard_the_same_decoder_gives_non_finite_logits():
    model = decoder(steps=0)
    blow_up(model)
    assert not hasattr(model, "finite_guard")
    assert not torch.isfinite(model(input_ids=INPUT_IDS).logits).all()


def test_finite_forwards_change_nothing_and_the_checks_stop_after_the_configured_steps():
    model = decoder(steps=2)
    guard = model.finite_guard
    for _ in range(2):
        assert torch.isfinite(model(input_ids=INPUT_IDS).logits).all()
    assert not guard.active and guard.switched == []
    assert all(p.dtype == torch.float16 for name, p in model.named_parameters() if not name.endswith("mlp.gate.weight"))
    assert all(not layer._forward_hooks for layer in model.model.layers)  # the per-layer checks are gone
    blow_up(model)  # an overflow after the checked forwards is no longer caught (the trainer's non-finite skip is)
    assert not torch.isfinite(model(input_ids=INPUT_IDS).logits).all()


def test_an_overflow_that_float32_cannot_fix_is_reported_as_an_error(caplog):
    model = decoder()
    model.model.layers[0].self_attn.o_proj.weight.data.fill_(float("inf"))
    with caplog.at_level(logging.WARNING, logger="qvidcap.model.finite_guard"):
        logits = model(input_ids=INPUT_IDS).logits
    assert not torch.isfinite(logits).all()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "model.layers.0 output is not finite even in float32" in errors[0]


def test_a_float32_decoder_gets_no_guard():
    assert not hasattr(decoder("float32"), "finite_guard")


def test_an_overflow_during_cached_generation_rewinds_the_kv_cache_before_recomputing():
    model = decoder(steps=20)
    blow_up(model)
    expected = float32_twin(model).generate(INPUT_IDS[:1], max_new_tokens=5, do_sample=False, pad_token_id=0)
    cached = model.generate(INPUT_IDS[:1], max_new_tokens=5, do_sample=False, use_cache=True, pad_token_id=0)
    assert model.finite_guard.switched[0] == "model.layers.1"  # the overflow happened in the cached prefill
    assert torch.equal(cached, expected)
    assert torch.equal(model.generate(INPUT_IDS[:1], max_new_tokens=5, do_sample=False, use_cache=False,
                                      pad_token_id=0), expected)
