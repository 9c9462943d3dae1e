import pytest
import torch

from qvidcap.config import HeadsConfig
from qvidcap.model.heads import ActionHead, GlobalHead, InputProjection, ObjectHead, _additive_mask

B, T, N, P = 3, 2, 4, 5
CONFIG = HeadsConfig(hidden_size=16, num_heads=2, num_object_queries=3, object_encoder_layers=2, global_layers=1,
                     dropout=0.0, temporal_dim=12, object_dim=10, context_dim=8, text_embed_dim=6)


def streams(object_mask, seed=0):
    g = torch.Generator().manual_seed(seed)
    temporal, context = torch.randn(B, T, 12, generator=g), torch.randn(B, N, 8, generator=g)
    objects = torch.randn(B, object_mask.shape[1], 10, generator=g)
    return temporal, context, objects, object_mask


@pytest.fixture
def parts():
    torch.manual_seed(0)
    return InputProjection(CONFIG).eval(), ObjectHead(CONFIG).eval(), ActionHead(CONFIG).eval(), GlobalHead(CONFIG).eval()


def run(parts, temporal, context, objects, object_mask):
    projection, object_head, action_head, global_head = parts
    s = projection(temporal, context, objects, object_mask)
    obj = object_head(s)
    act = action_head(s.motion, obj.queries)
    glo = global_head(s.motion, obj.queries, act.features)
    return s, obj, act, glo


MASK = torch.tensor([[1, 1, 0, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]])


def test_shapes_of_every_head(parts):
    s, obj, act, glo = run(parts, *streams(MASK))
    assert s.motion.shape == (B, T, 16) and s.objects.shape == (B, P, 16) and s.context.shape == (B, N, 16)
    assert obj.queries.shape == (B, 3, 16) and obj.embeds.shape == (B, 3, 6) and obj.attention.shape == (B, 3, T + P + N)
    assert act.features.shape == (B, 3, 16) and act.embeds.shape == (B, 3, 6) and act.interaction.shape == (B, T, 3)
    assert glo.features.shape == (B, 16) and glo.embed.shape == (B, 6)
    torch.testing.assert_close(act.embeds.norm(dim=-1), torch.ones(B, 3))
    torch.testing.assert_close(act.interaction.sum(-1), torch.ones(B, T))


def test_padded_objects_do_not_change_any_output(parts):
    temporal, context, objects, mask = streams(MASK)
    before = run(parts, temporal, context, objects, mask)
    noisy = objects.clone()
    noisy[mask == 0] = 1000.0  # garbage in every padded slot
    wider = torch.cat([noisy, torch.randn(B, 2, 10)], dim=1)  # and two more padded slots
    after = run(parts, temporal, context, wider, torch.cat([mask, torch.zeros(B, 2, dtype=mask.dtype)], dim=1))
    for a, b in zip(before[1:], after[1:]):
        torch.testing.assert_close(a.embeds if hasattr(a, "embeds") else a.embed,
                                   b.embeds if hasattr(b, "embeds") else b.embed)
    assert after[1].attention[:, :, T + P: T + P + 2].abs().max() == 0  # no weight on the padding


def test_padded_objects_get_no_attention(parts):
    _, obj, _, _ = run(parts, *streams(MASK))
    object_weights = obj.attention[:, :, T: T + P]  # (B, Q, P)
    assert object_weights[0, :, 2:].abs().max() == 0
    assert object_weights[1].abs().max() == 0
    torch.testing.assert_close(obj.attention.sum(-1), torch.ones(B, 3))


def test_clips_with_zero_objects_give_finite_outputs_even_with_no_object_slot(parts):
    temporal, context, _, _ = streams(MASK)
    for objects, mask in ((torch.zeros(B, 1, 10), torch.zeros(B, 1)), (torch.zeros(B, 0, 10), torch.zeros(B, 0))):
        _, obj, act, glo = run(parts, temporal, context, objects, mask.long())
        assert all(torch.isfinite(x).all() for x in (obj.embeds, act.embeds, glo.embed))


def test_training_mode_gradients_reach_every_parameter(parts):
    for part in parts:
        part.train()
    s, obj, act, glo = run(parts, *streams(MASK))
    (obj.embeds.sum() + act.embeds.sum() + glo.embed.sum()).backward()
    unreached = [n for part in parts for n, p in part.named_parameters() if p.grad is None]
    assert unreached == []


def test_unlinked_widths_are_a_clear_error():
    with pytest.raises(ValueError, match="link_widths"):
        InputProjection(HeadsConfig())


def test_additive_mask_is_zero_on_real_and_very_negative_on_padding():
    mask = _additive_mask(torch.tensor([[1, 0]]), torch.float32)
    assert mask[0, 0] == 0 and mask[0, 1] == torch.finfo(torch.float32).min


def test_motion_order_matters_but_object_order_does_not(parts):
    temporal, context, objects, mask = streams(torch.ones(B, P, dtype=torch.long))
    _, obj, act, glo = run(parts, temporal, context, objects, mask)
    _, obj_rev, _, glo_rev = run(parts, temporal.flip(1), context, objects, mask)
    assert not torch.allclose(glo.embed, glo_rev.embed)  # "moves left" is not "moves right"
    _, obj_perm, act_perm, glo_perm = run(parts, temporal, context, objects.flip(1), mask)
    torch.testing.assert_close(obj_perm.embeds, obj.embeds)  # objects are a set
    torch.testing.assert_close(glo_perm.embed, glo.embed)


# ------------------------------------------------------------ ablation switches


def test_without_the_object_head_the_projection_reads_only_motion():
    import dataclasses

    config = dataclasses.replace(CONFIG, object_head=False)
    projection = InputProjection(config).eval()
    assert projection.objects is None and projection.context is None
    assert not any(name.startswith(("objects", "context")) for name, _ in projection.named_parameters())
    s = projection(*streams(MASK))
    assert s.objects is None and s.context is None and s.motion.shape == (B, T, 16)


def test_the_global_head_reads_whichever_tokens_it_is_given(parts):
    s, obj, act, _ = run(parts, *streams(MASK))
    global_head = parts[3]
    full = global_head(s.motion, obj.queries, act.features).features
    motion_only = global_head(s.motion).features
    assert motion_only.shape == (B, 16) and not torch.allclose(full, motion_only)
    torch.testing.assert_close(global_head(s.motion, None, act.features).features,
                               global_head(s.motion, act.features).features)  # [motion, actions] either way


def test_constant_queries_are_the_same_for_every_clip():
    from qvidcap.model.heads import ConstantQueries

    queries = ConstantQueries(CONFIG)(4)
    assert queries.shape == (4, 3, 16) and torch.equal(queries[0], queries[3])


# ------------------------------------------------------------ stream deltas


def test_deltas_put_each_token_beside_its_change_from_the_clip_mean():
    from qvidcap.model.heads import with_deltas

    tokens = torch.randn(B, T + 3, 12, generator=torch.Generator().manual_seed(1))  # (B, T, D)
    widened = with_deltas(tokens)
    assert widened.shape == (B, T + 3, 24)
    torch.testing.assert_close(widened[..., :12], tokens)
    torch.testing.assert_close(widened[..., 12:].sum(dim=1), torch.zeros(B, 12), atol=1e-5, rtol=0)
    # what every step shares (a static background) cancels; a change at one step stays there
    torch.testing.assert_close(with_deltas(tokens + 5.0)[..., 12:], widened[..., 12:], atol=1e-5, rtol=0)
    moved = tokens.clone()
    moved[:, 0] += 1.0
    change = with_deltas(moved)[..., 12:] - widened[..., 12:]
    torch.testing.assert_close(change[:, 0], torch.full((B, 12), 1 - 1 / (T + 3)))


def test_stream_deltas_widen_only_the_time_ordered_streams():
    import dataclasses

    widths = lambda p: (p.temporal[0].in_features, p.context[0].in_features, p.objects[0].in_features)  # noqa: E731
    assert widths(InputProjection(CONFIG)) == (24, 16, 10)  # objects are a set: no order, no delta
    assert widths(InputProjection(dataclasses.replace(CONFIG, stream_deltas=False))) == (12, 8, 10)
