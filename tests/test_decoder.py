import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from qvidcap.config import load_config
from qvidcap.model.deepseek_vl2 import CheckpointError, DeepseekCausalLM
from qvidcap.model.decoder import DecoderError, build_decoder, decoder_dtype
from qvidcap.model.tokenizer import build_word_tokenizer

CAPTIONS = ["a red circle moves left", "a blue square grows"]


def decoder_config(overrides=""):
    return load_config("smoke", "decoder.small_hidden_size=32 decoder.small_intermediate_size=48 "
                                "decoder.small_moe_intermediate_size=16 " + overrides).decoder


def test_small_decoder_is_the_deepseek_moe_class_at_small_sizes():
    tok = build_word_tokenizer(CAPTIONS)
    model = build_decoder(decoder_config(), tok)
    assert isinstance(model, DeepseekCausalLM)
    assert model.config.vocab_size == len(tok) and model.config.hidden_size == 32
    assert model.config.mlp_layer_types == ["dense", "sparse"]
    assert all(p.requires_grad for p in model.parameters())
    assert model(input_ids=torch.tensor([[1, 4, 5]])).logits.shape == (1, 3, len(tok))


def test_frozen_decoder_trains_nothing_but_passes_gradients_to_its_inputs():
    model = build_decoder(decoder_config("decoder.train_mode=frozen"), build_word_tokenizer(CAPTIONS))
    assert not any(p.requires_grad for p in model.parameters())
    embeds = torch.randn(1, 4, 32, requires_grad=True)
    model(inputs_embeds=embeds).logits.sum().backward()
    assert embeds.grad is not None and embeds.grad.abs().sum() > 0


def test_lora_trains_only_adapters_on_the_attention_projections():
    model = build_decoder(decoder_config("decoder.train_mode=lora decoder.lora_r=2"), build_word_tokenizer(CAPTIONS))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable} == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert model.get_input_embeddings().embedding_dim == 32


def test_hf_kind_loads_any_causal_lm_from_a_local_directory(tmp_path):
    tok = build_word_tokenizer(CAPTIONS)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=16, n_layer=1, n_head=2, n_positions=32)).save_pretrained(tmp_path)
    model = build_decoder(decoder_config(f"decoder.kind=hf decoder.name={tmp_path} decoder.train_mode=frozen"), tok)
    assert isinstance(model, GPT2LMHeadModel) and not any(p.requires_grad for p in model.parameters())


def test_bad_kind_mode_and_missing_checkpoints_are_clear_errors(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    tok = build_word_tokenizer(CAPTIONS)
    with pytest.raises(DecoderError, match="unknown decoder.kind 'gpt'"):
        build_decoder(decoder_config("decoder.kind=gpt"), tok)
    with pytest.raises(DecoderError, match="unknown decoder.train_mode 'half'"):
        build_decoder(decoder_config("decoder.train_mode=half"), tok)
    with pytest.raises(DecoderError, match="could not load the causal LM"):
        build_decoder(decoder_config(f"decoder.kind=hf decoder.name={tmp_path / 'absent'}"), tok)
    with pytest.raises(CheckpointError, match="decoder.name=/path"):
        build_decoder(decoder_config("decoder.kind=deepseek_vl2 decoder.name=nobody/no-such-vl2"), tok)


def test_auto_dtype_is_float32_on_cpu():
    assert decoder_dtype(decoder_config()) == torch.float32
    assert decoder_dtype(decoder_config("decoder.dtype=bfloat16")) == torch.bfloat16


def test_an_explicit_half_dtype_builds_the_small_decoder_directly_in_it(monkeypatch):
    seen = []
    original = DeepseekCausalLM.__init__

    def spy(self, config):
        seen.append(torch.get_default_dtype())  # the dtype its parameters are created in
        original(self, config)

    monkeypatch.setattr(DeepseekCausalLM, "__init__", spy)
    model = build_decoder(decoder_config("decoder.dtype=float16 decoder.train_mode=frozen"), build_word_tokenizer(CAPTIONS))
    assert seen == [torch.float16] and torch.get_default_dtype() == torch.float32
    dtypes = {name: p.dtype for name, p in model.named_parameters()}
    assert {d for n, d in dtypes.items() if not n.endswith("mlp.gate.weight")} == {torch.float16}
    assert {d for n, d in dtypes.items() if n.endswith("mlp.gate.weight")} == {torch.float32}  # the router


def test_a_pretrained_decoder_on_a_t4_loads_straight_into_float16(tmp_path, monkeypatch):
    from fake_gpu import fake_gpu

    tok = build_word_tokenizer(CAPTIONS)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=16, n_layer=1, n_head=2, n_positions=32)).save_pretrained(tmp_path)
    fake_gpu(monkeypatch, (7, 5))
    model = build_decoder(decoder_config(f"decoder.kind=hf decoder.name={tmp_path} decoder.train_mode=frozen"), tok,
                          device="cuda")
    assert {p.dtype for p in model.parameters()} == {torch.float16}


def test_experts_implementation_comes_from_the_config():
    tok = build_word_tokenizer(CAPTIONS)
    assert build_decoder(decoder_config(), tok).config._experts_implementation == "eager"
    grouped = build_decoder(decoder_config("decoder.experts_implementation=grouped_mm"), tok)
    assert grouped.config._experts_implementation == "grouped_mm"
    assert load_config("colab").decoder.experts_implementation == "grouped_mm"
    assert load_config("kaggle").decoder.experts_implementation == "grouped_mm"
    with pytest.raises(DecoderError, match="decoder.experts_implementation 'fast_mm'.*grouped_mm"):
        build_decoder(decoder_config("decoder.experts_implementation=fast_mm"), tok)
