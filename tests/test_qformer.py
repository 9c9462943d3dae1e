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
