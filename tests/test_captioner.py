import pytest
import torch
import torch.nn.functional as F

from qvidcap.config import load_config
from qvidcap.features.clip_features import ClipFeatures, collate_features
from qvidcap.model import build_captioner, build_tokenizer, link_widths, tokenize_captions

CAPTIONS = ["a red circle moves left .", "a blue square grows", "the green triangle bounces up and down"]
DIMS = {"temporal": 12, "object": 10, "context": 8}
SMALL = ("heads.hidden_size=16 heads.num_heads=2 heads.num_object_queries=3 qformer.num_queries=4 "
         "qformer.num_heads=2 qformer.intermediate_size=32 decoder.small_hidden_size=32 decoder.small_layers=2 "
         "decoder.small_intermediate_size=48 decoder.small_moe_intermediate_size=16 heads.dropout=0 qformer.dropout=0 "
         "decoder.word_dropout=0")


def clip(i, num_objects):
    g = torch.Generator().manual_seed(i)
    return ClipFeatures(f"v{i}", torch.randn(2, 12, generator=g), torch.randn(4, 8, generator=g),
                        torch.randn(num_objects, 10, generator=g), torch.zeros(num_objects, 4), torch.ones(num_objects),
                        torch.zeros(num_objects, dtype=torch.long), torch.zeros(num_objects, dtype=torch.long))


def batch_of(tokenizer, captions=CAPTIONS, max_tokens=30):
    features = collate_features([clip(i, n) for i, n in enumerate([2, 0, 5][: len(captions)])])
    ids = tokenize_captions(tokenizer, captions, max_tokens)
    length = max(map(len, ids))
    input_ids = torch.tensor([i + [tokenizer.pad_token_id] * (length - len(i)) for i in ids])
    attention_mask = torch.tensor([[1] * len(i) + [0] * (length - len(i)) for i in ids])
    features.pop("video_ids")
    return features, input_ids, attention_mask


@pytest.fixture
def built():
    torch.manual_seed(0)
    config = link_widths(load_config("smoke", SMALL), DIMS, 6)
    tokenizer = build_tokenizer(config, CAPTIONS)
    return build_captioner(config, tokenizer).eval(), tokenizer


def test_link_widths_fills_the_heads_widths():
    config = link_widths(load_config(), DIMS, 6)
    assert (config.heads.temporal_dim, config.heads.object_dim, config.heads.context_dim) == (12, 10, 8)
    assert config.heads.text_embed_dim == 6 and load_config().heads.temporal_dim == 0
    with pytest.raises(ValueError, match="lacks"):
        link_widths(load_config(), {"temporal": 1}, 6)


def test_encode_video_and_forward_shapes(built):
    model, tokenizer = built
    features, input_ids, attention_mask = batch_of(tokenizer)
    enc = model.encode_video(**features)
    assert enc.object_embeds.shape == (3, 3, 6) and enc.action_embeds.shape == (3, 3, 6)
    assert enc.global_embed.shape == (3, 6) and enc.prefix.shape == (3, 4, 32)
    assert enc.qformer_attention.shape == (3, 4, 7) and enc.object_attention.shape == (3, 3, 2 + 5 + 4)
    out = model(**features, input_ids=input_ids, attention_mask=attention_mask)
    assert out.logits.shape == (*input_ids.shape, len(tokenizer)) and out.caption_loss.ndim == 0


def test_loss_counts_real_tokens_and_eos_only(built):
    model, tokenizer = built
    features, input_ids, attention_mask = batch_of(tokenizer)
    out = model(**features, input_ids=input_ids, attention_mask=attention_mask)
    real = attention_mask.bool()
    last = input_ids.gather(1, (attention_mask.sum(1) - 1)[:, None]).squeeze(1)
    assert (last == tokenizer.eos_token_id).all()  # every caption ends with EOS, inside the mask
    expected = F.cross_entropy(out.logits[real], input_ids[real])
    torch.testing.assert_close(out.caption_loss, expected)
    other_pad = input_ids.masked_fill(~real, 5)  # whatever sits in the padding changes nothing
    again = model(**features, input_ids=other_pad, attention_mask=attention_mask)
    torch.testing.assert_close(again.caption_loss, out.caption_loss)
    torch.testing.assert_close(again.logits[real], out.logits[real])


def test_the_prefix_reaches_the_decoder(built):
    model, tokenizer = built
    features, input_ids, attention_mask = batch_of(tokenizer)
    out = model(**features, input_ids=input_ids, attention_mask=attention_mask)
    changed = dict(features, temporal=features["temporal"] + 1.0)
    assert not torch.allclose(model(**changed, input_ids=input_ids, attention_mask=attention_mask).logits, out.logits)
    model.train()
    model(**features, input_ids=input_ids, attention_mask=attention_mask).caption_loss.backward()
    assert model.projection.temporal[0].weight.grad.abs().sum() > 0


def slow_greedy(model, features, max_new_tokens):
    """Reference decode: the full sequence re-run every step, no KV cache, one clip at a time."""
    captions = []
    for b in range(features["temporal"].shape[0]):
        one = {k: v[b: b + 1] for k, v in features.items()}
        prefix = model.encode_video(**one).prefix
        tokens = []
        for _ in range(max_new_tokens):
            embeds = model._decoder_inputs(prefix, torch.tensor([tokens], dtype=torch.long))
            next_id = int(model.decoder(inputs_embeds=embeds, use_cache=False).logits[0, -1].argmax())
            tokens.append(next_id)
            if next_id == model.eos_id:
                break
        captions.append(tokens)
    return captions


def overfit(model, tokenizer, steps=60):
    features, input_ids, attention_mask = batch_of(tokenizer)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(steps):
        loss = model(**features, input_ids=input_ids, attention_mask=attention_mask).caption_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return features, losses


def test_training_one_batch_drives_the_loss_down_and_generation_stops_at_eos(built):
    model, tokenizer = built
    features, losses = overfit(model, tokenizer)
    assert losses[-1] < 0.05 * losses[0], losses[::10]  # memorised: the exact captions below are the real check
    expected = [tokenizer.decode(tokenizer(c, add_special_tokens=False)["input_ids"]) for c in CAPTIONS]
    assert model.generate(**features, num_beams=1, max_new_tokens=20) == expected
    assert model.generate(**features, num_beams=3, max_new_tokens=20) == expected
    ids = model.generate_ids(**features, num_beams=1, max_new_tokens=20)
    assert ids.shape[1] < 20  # all stopped at EOS before the limit
    assert model.training  # generate restored the mode it found


def test_greedy_with_kv_cache_equals_the_slow_reference_decode(built):
    model, tokenizer = built
    features, _ = overfit(model, tokenizer, steps=8)  # half-trained: varied, non-trivial continuations
    model.eval()
    fast = model.generate_ids(**features, num_beams=1, max_new_tokens=8)
    for row, reference in zip(fast.tolist(), slow_greedy(model, features, 8)):
        assert row[: len(reference)] == reference
        assert all(t == tokenizer.pad_token_id for t in row[len(reference):])


def test_beam_search_with_and_without_cache_agree_and_batching_changes_nothing(built):
    model, tokenizer = built
    features, _ = overfit(model, tokenizer, steps=8)
    cached = model.generate(**features, num_beams=3, max_new_tokens=8)
    assert cached == model.generate(**features, num_beams=3, max_new_tokens=8, use_cache=False)
    one_by_one = [model.generate(**{k: v[b: b + 1] for k, v in features.items()}, num_beams=3, max_new_tokens=8)[0]
                  for b in range(3)]
    assert cached == one_by_one


def test_trainable_state_dict_leaves_out_a_frozen_decoder_and_round_trips(built):
    _, tokenizer = built
    config = link_widths(load_config("smoke", SMALL + " decoder.train_mode=frozen"), DIMS, 6)
    model = build_captioner(config, tokenizer)
    state = model.trainable_state_dict()
    assert state and not any(k.startswith("decoder.") for k in state)
    table = model.parameter_table()
    assert table.loc["decoder", "trainable"] == 0 and table.loc["decoder", "frozen"] > 0
    assert table.loc["total", "trainable"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    fresh = build_captioner(config, tokenizer)
    fresh.load_trainable_state_dict(state)
    torch.testing.assert_close(fresh.qformer.queries, model.qformer.queries)
    with pytest.raises(RuntimeError, match="missing"):
        fresh.load_trainable_state_dict({k: v for k, v in state.items() if not k.startswith("qformer.")})


def test_full_mode_keeps_the_decoder_in_the_trainable_state(built):
    model, _ = built
    assert any(k.startswith("decoder.") for k in model.trainable_state_dict())


def test_stage_shapes_and_fit_one_batch(built):
    from qvidcap.model.inspection import fit_one_batch, stage_shapes

    model, tokenizer = built
    features, input_ids, attention_mask = batch_of(tokenizer)
    table = stage_shapes(model, **features)
    assert list(table.index) == ["InputProjection", "ObjectHead", "ActionHead", "GlobalHead", "QFormer", "CaptionHead"]
    assert table.loc["CaptionHead", "output"] == "prefix (3, 4, 32)"
    losses = fit_one_batch(model, dict(features, input_ids=input_ids, attention_mask=attention_mask), steps=5, lr=3e-3)
    assert len(losses) == 5 and losses[-1] < losses[0]
    with pytest.raises(KeyError, match="input_ids"):
        fit_one_batch(model, features, steps=1)


def test_plots_draw_attention_and_losses(built):
    import matplotlib

    matplotlib.use("Agg")
    from qvidcap.model.plots import object_token_labels, plot_attention, plot_losses, qformer_token_labels

    model, tokenizer = built
    features, _, _ = batch_of(tokenizer)
    enc = model.encode_video(**features)
    labels = object_token_labels(2, features["object_mask"][0], 4)
    assert labels[:3] == ["m0", "m1", "o0"] and labels.count("pad") == 3
    ax = plot_attention(enc.object_attention[0], labels)
    assert len(ax.get_xticklabels()) == len(labels)
    plot_attention(enc.qformer_attention[0], qformer_token_labels(3))
    plot_losses([3.0, 2.0, 1.0])
    with pytest.raises(ValueError, match="one clip"):
        plot_attention(enc.object_attention, labels)


def test_lora_and_hf_decoders_train_and_generate(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    tokenizer = build_tokenizer(load_config(), CAPTIONS)
    tokenizer.save_pretrained(tmp_path)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=16, n_layer=1, n_head=2, n_positions=64,
                               bos_token_id=1, eos_token_id=2)).save_pretrained(tmp_path)
    for overrides in ("decoder.train_mode=lora decoder.lora_r=2", f"decoder.kind=hf decoder.name={tmp_path} decoder.train_mode=lora"):
        config = link_widths(load_config("smoke", SMALL + " " + overrides), DIMS, 6)
        model = build_captioner(config, tokenizer)
        decoder_state = [k for k in model.trainable_state_dict() if k.startswith("decoder.")]
        assert decoder_state and all("lora_" in k for k in decoder_state)
        features, input_ids, attention_mask = batch_of(tokenizer)
        model(**features, input_ids=input_ids, attention_mask=attention_mask).caption_loss.backward()
        captions = model.generate(**features, num_beams=2, max_new_tokens=4)
        assert len(captions) == 3 and all(isinstance(c, str) for c in captions)


def test_a_frozen_decoder_stays_in_eval_mode_while_the_heads_train(built):
    _, tokenizer = built
    model = build_captioner(link_widths(load_config("smoke", SMALL + " decoder.train_mode=frozen"), DIMS, 6), tokenizer)
    model.train()
    assert model.qformer.training and not model.decoder.training
    assert not any(m.training for m in model.decoder.modules())


def test_word_dropout_hides_words_in_training_only_and_leaves_the_labels(built):
    model, tokenizer = built
    features, input_ids, attention_mask = batch_of(tokenizer)
    model.config.decoder.word_dropout = 1.0
    model.train()
    hidden = model._word_dropout(input_ids)
    assert (hidden == tokenizer.unk_token_id).all()
    out = model(**features, input_ids=input_ids, attention_mask=attention_mask)
    blind = model(**features, input_ids=torch.full_like(input_ids, 7), attention_mask=attention_mask)
    # every word hidden: the decoder's inputs no longer depend on the caption, only the labels do
    torch.testing.assert_close(out.logits, blind.logits)
    assert not torch.equal(out.caption_loss, blind.caption_loss)
    model.config.decoder.word_dropout = 0.5
    torch.manual_seed(0)
    share = (model._word_dropout(torch.full((64, 64), 7)) == tokenizer.unk_token_id).float().mean()
    assert 0.4 < share < 0.6
    model.eval()
    assert torch.equal(model._word_dropout(input_ids), input_ids)


def test_a_float16_decoder_with_float32_heads_trains_the_prefix_and_generates():
    torch.manual_seed(0)
    config = link_widths(load_config("smoke", SMALL + " decoder.dtype=float16 decoder.train_mode=frozen"), DIMS, 6)
    tokenizer = build_tokenizer(config, CAPTIONS)
    model = build_captioner(config, tokenizer)
    assert model.decoder.lm_head.weight.dtype == torch.float16 and model.qformer.parameters().__next__().dtype == torch.float32
    assert hasattr(model.decoder, "finite_guard")  # a float16 decoder is watched for overflow
    features, input_ids, attention_mask = batch_of(tokenizer)
    out = model.train()(**features, input_ids=input_ids, attention_mask=attention_mask)
    assert out.logits.dtype == torch.float32 and torch.isfinite(out.caption_loss)
    out.caption_loss.backward()
    assert model.caption_head.parameters().__next__().grad is not None  # gradients reach the prefix through fp16
    captions = model.generate(**features, num_beams=2, max_new_tokens=4)
    assert len(captions) == 3 and all(isinstance(c, str) for c in captions)


# ------------------------------------------------------------ ablation switches (see QVidCap's module docstring)


def variant(tokenizer, overrides):
    torch.manual_seed(0)
    config = link_widths(load_config("smoke", f"{SMALL} {overrides}"), DIMS, 6)
    return build_captioner(config, tokenizer).eval()


def test_without_the_object_head_objects_and_context_are_not_read(built):
    _, tokenizer = built
    model = variant(tokenizer, "heads.object_head=false")
    assert model.object_head is None and model.object_queries is not None
    features, input_ids, attention_mask = batch_of(tokenizer)
    enc = model.encode_video(**features)
    assert enc.object_embeds is None and enc.object_attention is None and enc.action_embeds.shape == (3, 3, 6)
    assert enc.qformer_attention.shape == (3, 4, 3 + 1)  # action tokens and the global token only
    other = dict(features, objects=torch.randn_like(features["objects"]) * 5, context=features["context"] - 3.0,
                 object_mask=torch.ones_like(features["object_mask"]))
    torch.testing.assert_close(model.encode_video(**other).prefix, enc.prefix)
    logits = model(**features, input_ids=input_ids, attention_mask=attention_mask).logits
    torch.testing.assert_close(model(**other, input_ids=input_ids, attention_mask=attention_mask).logits, logits)
    moved = dict(features, temporal=features["temporal"] + 1.0)
    assert not torch.allclose(model.encode_video(**moved).prefix, enc.prefix)  # motion still reaches the prefix


def test_without_the_action_or_global_head_the_memory_shrinks(built):
    _, tokenizer = built
    features, input_ids, attention_mask = batch_of(tokenizer)
    no_action = variant(tokenizer, "heads.action_head=false")
    enc = no_action.encode_video(**features)
    assert no_action.action_head is None and enc.action_embeds is None and enc.interaction is None
    assert enc.qformer_attention.shape == (3, 4, 3 + 1) and enc.global_embed.shape == (3, 6)
    no_global = variant(tokenizer, "heads.global_head=false")
    enc = no_global.encode_video(**features)
    assert no_global.global_head is None and enc.global_embed is None
    assert enc.qformer_attention.shape == (3, 4, 3 + 3)
    out = no_global(**features, input_ids=input_ids, attention_mask=attention_mask)
    assert out.global_embed is None and out.object_embeds.shape == (3, 3, 6)
    assert "global_head" not in no_global.parameter_table().index
    with pytest.raises(ValueError, match="keep at least one head"):
        variant(tokenizer, "heads.object_head=false heads.action_head=false heads.global_head=false")


def test_the_cross_attention_kind_and_fewer_queries_change_the_prefix(built):
    from qvidcap.model.qformer import CrossAttentionReader

    _, tokenizer = built
    features, _, _ = batch_of(tokenizer)
    reader = variant(tokenizer, "qformer.kind=cross_attention")
    assert isinstance(reader.qformer, CrossAttentionReader)
    assert reader.encode_video(**features).prefix.shape == (3, 4, 32)
    assert variant(tokenizer, "qformer.num_queries=2").encode_video(**features).prefix.shape == (3, 2, 32)


@pytest.mark.parametrize("overrides", ["heads.object_head=false", "heads.action_head=false",
                                       "heads.global_head=false", "qformer.kind=cross_attention"])
def test_a_variant_round_trips_through_a_checkpoint(built, tmp_path, overrides):
    from qvidcap.model.checkpoint import load_captioner, save_checkpoint

    _, tokenizer = built
    model = variant(tokenizer, overrides)
    save_checkpoint(tmp_path / "ckpt", model, model.config, tokenizer)
    loaded, config, _ = load_captioner(tmp_path / "ckpt")
    assert (config.heads, config.qformer) == (model.config.heads, model.config.qformer)
    assert set(loaded.state_dict()) == set(model.state_dict())
    features, _, _ = batch_of(tokenizer)
    torch.testing.assert_close(loaded.encode_video(**features).prefix, model.encode_video(**features).prefix)
