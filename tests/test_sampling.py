import pytest
import torch
import torch.nn.functional as F

from qvidcap.config import load_config
from qvidcap.model import build_captioner, build_tokenizer, link_widths
from qvidcap.model.sampling import draw_token_ids, eos_mask, greedy_captions, sample_captions, sequence_log_probs
from test_captioner import CAPTIONS, DIMS, SMALL, batch_of


def built_model(train_mode="full"):
    torch.manual_seed(0)
    config = link_widths(load_config("smoke", SMALL + f" decoder.train_mode={train_mode}"), DIMS, 6)
    tokenizer = build_tokenizer(config, CAPTIONS)
    return build_captioner(config, tokenizer), tokenizer


def clips_of(tokenizer):
    features, _, _ = batch_of(tokenizer)
    return features


def test_eos_mask_keeps_the_first_eos_and_drops_what_follows():
    ids = torch.tensor([[5, 6, 2, 0, 0], [2, 7, 2, 7, 7], [5, 6, 7, 8, 9]])
    assert eos_mask(ids, eos_id=2).tolist() == [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]]


def test_samples_have_k_rows_per_clip_and_log_probs_with_gradients():
    model, tokenizer = built_model()
    torch.manual_seed(1)
    out = sample_captions(model.train(), clips_of(tokenizer), num_samples=4, max_new_tokens=8)
    assert out.token_ids.shape[0] == 3 * 4 and out.token_ids.shape[1] <= 8
    assert out.mask.shape == out.token_ids.shape and out.log_probs.shape == (12,) and len(out.captions) == 12
    assert out.log_probs.requires_grad and bool((out.log_probs < 0).all())
    assert model.training  # the mode it was called in comes back
    out.log_probs.sum().backward()
    grads = [p.grad for p in model.qformer.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)


def test_log_probs_are_those_of_the_sampling_distribution_and_stop_at_eos():
    """The teacher-forced pass gives, token by token, the log-probabilities generate sampled from (KV cache),
    summed only up to each caption's first EOS."""
    model, tokenizer = built_model()
    clips = clips_of(tokenizer)
    torch.manual_seed(3)
    out = sample_captions(model, clips, num_samples=6, max_new_tokens=10, temperature=1.3)
    ended = (out.mask.sum(1) < out.token_ids.shape[1])
    assert ended.any()  # some captions end before the longest: their tail is masked
    # the same draws again, with generate's own scores (the tempered logits it sampled from)
    torch.manual_seed(3)
    again = draw_token_ids(model, clips, 6, 10, temperature=1.3)
    assert torch.equal(again, out.token_ids)
    with torch.no_grad():
        model.eval()
        enc = model.encode_video(**clips)
        embeds = model._decoder_inputs(enc.prefix.repeat_interleave(6, 0))
        torch.manual_seed(3)
        gen = model.decoder.generate(inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long),
                                     do_sample=True, temperature=1.3, top_k=0, top_p=1.0, max_new_tokens=10,
                                     eos_token_id=model.eos_id, pad_token_id=model.pad_id, output_scores=True,
                                     return_dict_in_generate=True)
    steps = torch.stack([F.log_softmax(s.float(), -1) for s in gen.scores], 1)  # (B*k, L, V)
    per_token = steps.gather(-1, out.token_ids.unsqueeze(-1)).squeeze(-1)  # (B*k, L)
    expected = (per_token * out.mask).sum(1)
    assert torch.allclose(out.log_probs.detach(), expected, atol=1e-4)
    # tokens after EOS do not count: replacing them changes nothing
    scrambled = out.token_ids.masked_fill(out.mask == 0, model.start_id)
    logits = model(**{k: v.repeat_interleave(6, 0) for k, v in clips.items()}, input_ids=scrambled,
                   attention_mask=out.mask).logits
    assert torch.allclose(sequence_log_probs(logits, scrambled, out.mask, 1.3), out.log_probs, atol=1e-4)


def test_a_frozen_decoder_passes_gradients_to_the_prefix_only():
    model, tokenizer = built_model("frozen")
    out = sample_captions(model, clips_of(tokenizer), num_samples=2, max_new_tokens=6)
    out.log_probs.mean().backward()
    assert all(p.grad is None for p in model.decoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.caption_head.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.object_head.parameters())


def test_greedy_captions_is_generate_with_one_beam():
    model, tokenizer = built_model()
    clips = clips_of(tokenizer)
    assert greedy_captions(model, clips, 8) == model.generate(**clips, num_beams=1, max_new_tokens=8)


def test_bad_arguments_are_named():
    model, tokenizer = built_model()
    with pytest.raises(ValueError, match="temperature=0"):
        sample_captions(model, clips_of(tokenizer), num_samples=2, max_new_tokens=4, temperature=0)
