"""The DeepSeek-VL2 language-model loader, offline, on a small random checkpoint written in the VL2 layout.

The reference forward below is written from the published facts of DeepSeek-V2 with `use_mla` false
(LLaMA attention with rotate_half RoPE over the whole head, RMSNorm, a dense first layer, then MoE
layers: fp32 softmax router, greedy top-k without renormalisation, shared experts added), one expert
at a time, straight from the checkpoint's per-expert tensors.
"""
import copy
import json
import time

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from qvidcap.model.deepseek_vl2 import (
    CheckpointError,
    CheckpointMismatchError,
    DeepseekCausalLM,
    load_deepseek_vl2_language_model,
    text_config_from_vl2,
)
from qvidcap.model.tokenizer import build_word_tokenizer, load_tokenizer

LANG = {
    "model_type": "deepseek_v2", "vocab_size": 40, "hidden_size": 32, "intermediate_size": 48,
    "moe_intermediate_size": 16, "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 4,
    "n_routed_experts": 6, "n_shared_experts": 2, "num_experts_per_tok": 3, "first_k_dense_replace": 1,
    "use_mla": False, "kv_lora_rank": None, "q_lora_rank": None, "qk_rope_head_dim": 0, "v_head_dim": 0,
    "qk_nope_head_dim": 0, "topk_method": "greedy", "n_group": 1, "topk_group": 1, "max_position_embeddings": 64,
    "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "bfloat16",
}


def random_vl2_weights(lang: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def w(*shape):
        return torch.randn(*shape, generator=g) * 0.2

    h, i, mi, v = lang["hidden_size"], lang["intermediate_size"], lang["moe_intermediate_size"], lang["vocab_size"]
    sd = {"language.model.embed_tokens.weight": w(v, h), "language.model.norm.weight": 1 + w(h),
          "language.lm_head.weight": w(v, h),
          "vision.blocks.0.attn.qkv.weight": w(8, 8), "projector.layers.0.weight": w(4, 8),
          "image_newline": w(h), "view_seperator": w(h)}
    for layer in range(lang["num_hidden_layers"]):
        p = f"language.model.layers.{layer}."
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            sd[p + f"self_attn.{name}.weight"] = w(h, h)
        sd[p + "input_layernorm.weight"] = 1 + w(h)
        sd[p + "post_attention_layernorm.weight"] = 1 + w(h)
        if layer < lang["first_k_dense_replace"]:
            sd[p + "mlp.gate_proj.weight"], sd[p + "mlp.up_proj.weight"] = w(i, h), w(i, h)
            sd[p + "mlp.down_proj.weight"] = w(h, i)
            continue
        sd[p + "mlp.gate.weight"] = w(lang["n_routed_experts"], h)
        for e in range(lang["n_routed_experts"]):
            sd[p + f"mlp.experts.{e}.gate_proj.weight"], sd[p + f"mlp.experts.{e}.up_proj.weight"] = w(mi, h), w(mi, h)
            sd[p + f"mlp.experts.{e}.down_proj.weight"] = w(h, mi)
        shared = mi * lang["n_shared_experts"]
        sd[p + "mlp.shared_experts.gate_proj.weight"] = w(shared, h)
        sd[p + "mlp.shared_experts.up_proj.weight"] = w(shared, h)
        sd[p + "mlp.shared_experts.down_proj.weight"] = w(h, shared)
    return sd


def write_vl2_checkpoint(directory, weights, lang=LANG):
    directory.mkdir(parents=True, exist_ok=True)
    config = {"model_type": "deepseek_vl_v2", "language_config": lang,
              "vision_config": {"model_name": "siglip_so400m_patch14_384"}, "projector_config": {"n_embed": lang["hidden_size"]}}
    (directory / "config.json").write_text(json.dumps(config))
    names = sorted(weights)
    half = len(names) // 2  # two shards and an index, as the real checkpoint has
    shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    for file, keys in shards.items():
        save_file({k: weights[k].contiguous() for k in keys}, str(directory / file))
    index = {"metadata": {}, "weight_map": {k: f for f, keys in shards.items() for k in keys}}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    return directory


# ---- the slow reference forward, one expert at a time ----

def rms_norm(x, weight, eps):
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rotate_half(x):
    a, b = x.chunk(2, dim=-1)
    return torch.cat([-b, a], dim=-1)


def swiglu(x, gate, up, down):
    return (F.silu(x @ gate.T) * (x @ up.T)) @ down.T


def reference_logits(sd, lang, input_ids):
    h, nh, eps = lang["hidden_size"], lang["num_attention_heads"], lang["rms_norm_eps"]
    hd = h // nh
    B, L = input_ids.shape
    x = sd["language.model.embed_tokens.weight"][input_ids]  # (B, L, H)
    inv_freq = 1.0 / (lang["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    angles = torch.arange(L, dtype=torch.float64)[:, None] * inv_freq[None]  # (L, hd/2)
    cos, sin = (torch.cat([angles, angles], -1).cos().float(), torch.cat([angles, angles], -1).sin().float())  # (L, hd)
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    for layer in range(lang["num_hidden_layers"]):
        p = f"language.model.layers.{layer}."
        y = rms_norm(x, sd[p + "input_layernorm.weight"], eps)
        q, k, v = (((y @ sd[p + f"self_attn.{n}_proj.weight"].T).view(B, L, nh, hd).transpose(1, 2)) for n in "qkv")
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        scores = (q @ k.transpose(-1, -2)) / hd ** 0.5
        attn = scores.masked_fill(~causal, float("-inf")).softmax(-1) @ v  # (B, nh, L, hd)
        x = x + attn.transpose(1, 2).reshape(B, L, h) @ sd[p + "self_attn.o_proj.weight"].T
        y = rms_norm(x, sd[p + "post_attention_layernorm.weight"], eps)
        if layer < lang["first_k_dense_replace"]:
            x = x + swiglu(y, sd[p + "mlp.gate_proj.weight"], sd[p + "mlp.up_proj.weight"], sd[p + "mlp.down_proj.weight"])
            continue
        probs = (y.float() @ sd[p + "mlp.gate.weight"].float().T).softmax(-1)  # (B, L, E)
        weights, chosen = probs.topk(lang["num_experts_per_tok"], dim=-1)
        out = torch.zeros_like(y)
        for b in range(B):
            for t in range(L):
                for weight, e in zip(weights[b, t], chosen[b, t]):
                    e = int(e)
                    out[b, t] += weight.to(y.dtype) * swiglu(
                        y[b, t], sd[p + f"mlp.experts.{e}.gate_proj.weight"], sd[p + f"mlp.experts.{e}.up_proj.weight"],
                        sd[p + f"mlp.experts.{e}.down_proj.weight"])
        out = out + swiglu(y, sd[p + "mlp.shared_experts.gate_proj.weight"], sd[p + "mlp.shared_experts.up_proj.weight"],
                           sd[p + "mlp.shared_experts.down_proj.weight"])
        x = x + out
    x = rms_norm(x, sd["language.model.norm.weight"], eps)
    return x @ sd["language.lm_head.weight"].T


def test_config_is_read_from_language_config():
    config = text_config_from_vl2({"model_type": "deepseek_vl_v2", "language_config": LANG})
    assert (config.hidden_size, config.num_hidden_layers, config.n_routed_experts) == (32, 3, 6)
    assert config.mlp_layer_types == ["dense", "sparse", "sparse"]
    assert config.head_dim == 8 and config.num_experts_per_tok == 3


def test_loaded_model_matches_the_slow_reference_forward(tmp_path):
    weights = random_vl2_weights(LANG)
    model = load_deepseek_vl2_language_model(write_vl2_checkpoint(tmp_path / "vl2", weights))
    assert isinstance(model, DeepseekCausalLM)
    input_ids = torch.randint(0, LANG["vocab_size"], (2, 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(input_ids=input_ids).logits
    expected = reference_logits(weights, LANG, input_ids)
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)


def test_fused_experts_equal_the_per_expert_checkpoint_weights(tmp_path):
    weights = random_vl2_weights(LANG)
    model = load_deepseek_vl2_language_model(write_vl2_checkpoint(tmp_path / "vl2", weights))
    experts = model.model.layers[2].mlp.experts
    p = "language.model.layers.2.mlp.experts.4."
    torch.testing.assert_close(experts.gate_up_proj[4], torch.cat([weights[p + "gate_proj.weight"], weights[p + "up_proj.weight"]]))
    torch.testing.assert_close(experts.down_proj[4], weights[p + "down_proj.weight"])
    torch.testing.assert_close(model.lm_head.weight, weights["language.lm_head.weight"])


def test_a_missing_key_is_a_loud_error_naming_it(tmp_path):
    weights = random_vl2_weights(LANG)
    del weights["language.model.layers.1.self_attn.k_proj.weight"]
    with pytest.raises(CheckpointMismatchError, match=r"layers\.1\.self_attn\.k_proj"):
        load_deepseek_vl2_language_model(write_vl2_checkpoint(tmp_path / "vl2", weights))


def test_a_missing_expert_is_a_loud_error_naming_it(tmp_path):
    weights = random_vl2_weights(LANG)
    del weights["language.model.layers.2.mlp.experts.3.up_proj.weight"]
    with pytest.raises(CheckpointMismatchError, match=r"experts\.3\.up_proj"):
        load_deepseek_vl2_language_model(write_vl2_checkpoint(tmp_path / "vl2", weights))


def test_an_extra_language_key_is_a_loud_error_naming_it(tmp_path):
    weights = random_vl2_weights(LANG)
    weights["language.model.layers.0.self_attn.rotary.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointMismatchError, match=r"rotary\.weight"):
        load_deepseek_vl2_language_model(write_vl2_checkpoint(tmp_path / "vl2", weights))


def test_mla_checkpoints_are_refused_with_a_clear_error(tmp_path):
    weights = random_vl2_weights(LANG)
    with pytest.raises(CheckpointError, match="use_mla.*not supported"):
        load_deepseek_vl2_language_model(write_vl2_checkpoint(tmp_path / "vl2", weights, {**LANG, "use_mla": True}))


def test_a_directory_without_config_names_what_is_missing(tmp_path):
    with pytest.raises(CheckpointError, match="config.json not found"):
        load_deepseek_vl2_language_model(tmp_path)


def test_tokenizer_loads_from_the_checkpoint_directory(tmp_path):
    directory = write_vl2_checkpoint(tmp_path / "vl2", random_vl2_weights(LANG))
    build_word_tokenizer(["a red ball rolls"]).save_pretrained(directory)
    tokenizer = load_tokenizer(directory)
    assert tokenizer.pad_token_id is not None and tokenizer.eos_token_id is not None
    assert tokenizer.decode(tokenizer("a red ball", add_special_tokens=False)["input_ids"]) == "a red ball"


def test_generate_runs_on_the_loaded_model_with_a_kv_cache(tmp_path):
    model = load_deepseek_vl2_language_model(write_vl2_checkpoint(tmp_path / "vl2", random_vl2_weights(LANG)))
    input_ids = torch.tensor([[1, 5, 6]])
    cached = model.generate(input_ids, max_new_tokens=6, do_sample=False, use_cache=True, pad_token_id=0)
    uncached = model.generate(input_ids, max_new_tokens=6, do_sample=False, use_cache=False, pad_token_id=0)
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize("setting", [{"norm_topk_prob": True}, {"scoring_func": "sigmoid"},
                                     {"rope_scaling": {"type": "yarn", "factor": 4}}])
def test_settings_the_native_model_would_ignore_are_refused(setting):
    with pytest.raises(CheckpointError, match=next(iter(setting))):
        text_config_from_vl2({"model_type": "deepseek_vl_v2", "language_config": {**LANG, **setting}})


def test_the_tiny_models_real_config_builds_on_meta_with_the_published_size():
    tiny = {**LANG, "vocab_size": 129280, "hidden_size": 1280, "intermediate_size": 6848, "moe_intermediate_size": 896,
            "num_hidden_layers": 12, "num_attention_heads": 10, "num_key_value_heads": 10, "n_routed_experts": 64,
            "n_shared_experts": 2, "num_experts_per_tok": 6, "first_k_dense_replace": 1, "max_position_embeddings": 4096}
    with torch.device("meta"):
        model = DeepseekCausalLM(text_config_from_vl2({"model_type": "deepseek_vl_v2", "language_config": tiny}))
    assert sum(p.numel() for p in model.parameters()) == 2_934_734_080  # with the untied lm_head
    assert model.model.layers[1].mlp.experts.gate_up_proj.shape == (64, 2 * 896, 1280)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_the_router_routes_in_float32_in_a_half_precision_model(tmp_path, dtype):
    directory = write_vl2_checkpoint(tmp_path / "vl2", random_vl2_weights(LANG))
    reference = load_deepseek_vl2_language_model(directory)  # float32
    for half in (copy.deepcopy(reference).to(dtype), load_deepseek_vl2_language_model(directory, dtype)):
        gate, expected_gate = half.model.layers[2].mlp.gate, reference.model.layers[2].mlp.gate
        assert half.model.layers[2].mlp.experts.gate_up_proj.dtype == dtype and half.lm_head.weight.dtype == dtype
        assert gate.weight.dtype == torch.float32
        x = torch.randn(2, 5, LANG["hidden_size"], generator=torch.Generator().manual_seed(3)).to(dtype)
        logits, weights, chosen = gate(x)
        expected_logits, expected_weights, expected_chosen = expected_gate(x.float())
        assert logits.dtype == weights.dtype == torch.float32
        torch.testing.assert_close(logits, expected_logits)
        torch.testing.assert_close(weights.sort(-1).values, expected_weights.sort(-1).values)
        assert torch.equal(chosen.sort(-1).values, expected_chosen.sort(-1).values)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # as under the trainer's mixed precision
            autocast_logits, _, _ = gate(x)
        assert autocast_logits.dtype == torch.float32
        torch.testing.assert_close(autocast_logits, expected_logits)


def test_a_bfloat16_checkpoints_router_is_held_in_float32(tmp_path):
    weights = {k: v.to(torch.bfloat16) for k, v in random_vl2_weights(LANG).items()}  # as the real checkpoint
    model = load_deepseek_vl2_language_model(write_vl2_checkpoint(tmp_path / "vl2", weights), torch.float16)
    gate = model.model.layers[1].mlp.gate.weight
    assert gate.dtype == torch.float32
    torch.testing.assert_close(gate, weights["language.model.layers.1.mlp.gate.weight"].float(), rtol=0, atol=0)


def _forward_backward(model, input_ids):
    model.zero_grad()
    logits = model(input_ids=input_ids).logits
    logits.pow(2).mean().backward()
    return logits.detach(), model.model.layers[2].mlp.experts.gate_up_proj.grad.clone()


def test_grouped_mm_experts_give_the_per_expert_loops_logits_and_gradients(tmp_path, monkeypatch):
    from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS

    directory = write_vl2_checkpoint(tmp_path / "vl2", random_vl2_weights(LANG))
    loop, grouped = load_deepseek_vl2_language_model(directory), load_deepseek_vl2_language_model(directory)
    assert loop.config._experts_implementation == "eager"  # unless asked for, the per-expert loop
    grouped.set_experts_implementation("grouped_mm")  # refused when the class is not eligible
    assert grouped.config._experts_implementation == "grouped_mm"
    calls = []
    grouped_forward = ALL_EXPERTS_FUNCTIONS["grouped_mm"]

    def counted(*args, **kwargs):
        calls.append(1)
        return grouped_forward(*args, **kwargs)

    monkeypatch.setitem(ALL_EXPERTS_FUNCTIONS, "grouped_mm", counted)
    input_ids = torch.randint(0, LANG["vocab_size"], (3, 9), generator=torch.Generator().manual_seed(2))
    timings = {}
    for name, model in (("loop", loop), ("grouped_mm", grouped)):
        start = time.perf_counter()
        timings[name] = (*_forward_backward(model, input_ids), time.perf_counter() - start)
    assert len(calls) == LANG["num_hidden_layers"] - LANG["first_k_dense_replace"]  # every MoE layer, loop none
    torch.testing.assert_close(timings["grouped_mm"][0], timings["loop"][0])  # float32 tolerance
    torch.testing.assert_close(timings["grouped_mm"][1], timings["loop"][1])
    print({name: f"{seconds * 1e3:.1f} ms" for name, (_, _, seconds) in timings.items()})
