import torch

from qvidcap.config import QFormerConfig
from qvidcap.model.qformer import CaptionHead, QFormer

CONFIG = QFormerConfig(num_queries=5, num_layers=2, num_heads=2, intermediate_size=32, dropout=0.0)


def test_qformer_and_caption_head_shapes():
    torch.manual_seed(0)
    qformer, head = QFormer(16, CONFIG).eval(), CaptionHead(16, 24)
    out = qformer(torch.randn(2, 3, 16), torch.randn(2, 3, 16), torch.randn(2, 16))
    assert out.queries.shape == (2, 5, 16)
    assert out.attention.shape == (2, 5, 7)  # 3 object + 3 action + 1 global memory tokens
    torch.testing.assert_close(out.attention.sum(-1), torch.ones(2, 5))
    assert head(out.queries).shape == (2, 5, 24)


def test_every_memory_type_reaches_the_queries():
    torch.manual_seed(0)
    qformer = QFormer(16, CONFIG).eval()
    objects, actions, global_feature = torch.randn(1, 3, 16), torch.randn(1, 3, 16), torch.randn(1, 16)
    base = qformer(objects, actions, global_feature).queries
    for changed in (qformer(objects + 1, actions, global_feature), qformer(objects, actions + 1, global_feature),
                    qformer(objects, actions, global_feature + 1)):
        assert not torch.allclose(changed.queries, base)


def test_batch_items_are_independent():
    torch.manual_seed(0)
    qformer = QFormer(16, CONFIG).eval()
    objects, actions, global_feature = torch.randn(2, 3, 16), torch.randn(2, 3, 16), torch.randn(2, 16)
    both = qformer(objects, actions, global_feature).queries
    first = qformer(objects[:1], actions[:1], global_feature[:1]).queries
    torch.testing.assert_close(both[:1], first)


# ------------------------------------------------------------ ablations: memory size and the original's reader


def test_the_memory_holds_only_the_heads_that_are_on():
    torch.manual_seed(0)
    qformer = QFormer(16, CONFIG).eval()
    objects, actions, global_feature = torch.randn(2, 3, 16), torch.randn(2, 3, 16), torch.randn(2, 16)
    assert qformer(None, actions, global_feature).attention.shape == (2, 5, 4)  # no object tokens
    assert qformer(objects, None, global_feature).attention.shape == (2, 5, 4)  # no action tokens
    assert qformer(objects, actions, None).attention.shape == (2, 5, 6)  # no global token
    assert qformer(None, None, global_feature).attention.shape == (2, 5, 1)
    import pytest

    with pytest.raises(ValueError, match="every head is switched off"):
        qformer(None, None, None)


def test_the_cross_attention_kind_is_one_cross_attention_and_nothing_else():
    import dataclasses

    from qvidcap.model.qformer import CrossAttentionReader, build_qformer

    torch.manual_seed(0)
    reader = build_qformer(16, dataclasses.replace(CONFIG, kind="cross_attention")).eval()
    assert isinstance(reader, CrossAttentionReader)
    names = {name.split(".")[0] for name, _ in reader.named_parameters()}
    assert names == {"queries", "type_embed", "cross_attn"}  # no self-attention, feed-forward or norm
    assert not any(isinstance(m, (torch.nn.LayerNorm, torch.nn.Linear)) and not name.startswith("cross_attn")
                   for name, m in reader.named_modules())
    full = sum(p.numel() for p in QFormer(16, CONFIG).parameters())
    assert sum(p.numel() for p in reader.parameters()) < full / 3
    out = reader(torch.randn(2, 3, 16), torch.randn(2, 3, 16), torch.randn(2, 16))
    assert out.queries.shape == (2, 5, 16) and out.attention.shape == (2, 5, 7)


def test_an_unknown_qformer_kind_names_the_known_ones():
    import dataclasses

    import pytest

    from qvidcap.model.qformer import build_qformer

    with pytest.raises(ValueError, match="cross_attention"):
        build_qformer(16, dataclasses.replace(CONFIG, kind="perceiver"))
