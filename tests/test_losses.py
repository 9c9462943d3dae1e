import itertools

import pytest
import torch

from qvidcap.config import TrainConfig
from qvidcap.training.losses import compute_losses, global_cosine_loss, hungarian_cosine_loss, hungarian_match
from qvidcap.model import CaptionerOutput


def brute_force_loss(predictions, targets, mask):
    """1 - mean cosine over the best assignment, found by trying every one."""
    cosines = []
    for b in range(predictions.shape[0]):
        real = [k for k in range(targets.shape[1]) if mask[b, k]]
        if not real:
            continue
        cos = torch.nn.functional.cosine_similarity(predictions[b][:, None], targets[b][real][None], dim=-1)  # (Q, R)
        q, r = cos.shape
        best = None
        if q >= r:
            for rows in itertools.permutations(range(q), r):
                pairs = [cos[rows[j], j] for j in range(r)]
                if best is None or sum(pairs) > sum(best):
                    best = pairs
        else:
            for cols in itertools.permutations(range(r), q):
                pairs = [cos[i, cols[i]] for i in range(q)]
                if best is None or sum(pairs) > sum(best):
                    best = pairs
        cosines += best
    return 1 - torch.stack(cosines).mean()


@pytest.mark.parametrize("seed", range(6))
def test_hungarian_loss_equals_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    queries, slots = [(3, 4), (4, 2), (3, 3)][seed % 3]
    predictions = torch.randn(3, queries, 5, generator=g)
    targets = torch.randn(3, slots, 5, generator=g)
    mask = (torch.rand(3, slots, generator=g) > 0.3).long()
    mask[0, 0] = 1
    assert torch.allclose(hungarian_cosine_loss(predictions, targets, mask), brute_force_loss(predictions, targets, mask), atol=1e-5)


def test_padded_targets_are_never_matched():
    predictions = torch.randn(2, 3, 4)
    targets = torch.randn(2, 5, 4)
    mask = torch.tensor([[1, 0, 1, 0, 0], [0, 0, 0, 0, 1]])
    targets[mask == 0] = predictions[0, 0]  # padding that would be a perfect match
    for b, (rows, cols) in enumerate(hungarian_match(predictions, targets, mask)):
        assert all(mask[b, c] == 1 for c in cols.tolist())
        assert len(cols) == int(mask[b].sum())


def test_perfect_predictions_give_zero_loss_and_no_targets_give_zero():
    targets = torch.randn(2, 3, 6)
    predictions = torch.cat([targets.flip(1), torch.randn(2, 1, 6)], dim=1)  # matched in another order, one spare query
    mask = torch.ones(2, 3, dtype=torch.long)
    assert hungarian_cosine_loss(predictions, targets, mask).item() == pytest.approx(0.0, abs=1e-6)
    empty = hungarian_cosine_loss(predictions.requires_grad_(), targets, torch.zeros(2, 3, dtype=torch.long))
    assert empty.item() == 0.0 and empty.requires_grad


def test_gradient_flows_to_matched_queries_only():
    predictions = torch.randn(1, 3, 4, requires_grad=True)
    targets = torch.randn(1, 1, 4)
    hungarian_cosine_loss(predictions, targets, torch.ones(1, 1, dtype=torch.long)).backward()
    assert (predictions.grad.abs().sum(-1) > 0).sum().item() == 1


def test_compute_losses_weights_the_components():
    torch.manual_seed(0)
    output = CaptionerOutput(caption_loss=torch.tensor(2.0), logits=torch.zeros(1), object_embeds=torch.randn(2, 3, 4),
                             action_embeds=torch.randn(2, 3, 4), global_embed=torch.randn(2, 4))
    batch = {"object_targets": torch.randn(2, 2, 4), "object_target_mask": torch.ones(2, 2, dtype=torch.long),
             "action_targets": torch.randn(2, 1, 4), "action_target_mask": torch.ones(2, 1, dtype=torch.long),
             "global_target": torch.randn(2, 4)}
    losses = compute_losses(output, batch, TrainConfig())
    expected = 0.4 * 2.0 + 0.2 * (losses.object + losses.action + losses.global_)
    assert losses.total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert losses.global_.item() == pytest.approx(global_cosine_loss(output.global_embed, batch["global_target"]).item())
    assert set(losses.as_dict()) == {"loss", "caption", "object", "action", "global"}


def _output_and_batch(**missing):
    torch.manual_seed(0)
    embeds = {"object_embeds": torch.randn(2, 3, 4, requires_grad=True), "action_embeds": torch.randn(2, 3, 4, requires_grad=True),
              "global_embed": torch.randn(2, 4, requires_grad=True)}
    embeds.update(missing)
    output = CaptionerOutput(caption_loss=torch.tensor(2.0, requires_grad=True), logits=torch.zeros(1), **embeds)
    batch = {"object_targets": torch.randn(2, 2, 4), "object_target_mask": torch.ones(2, 2, dtype=torch.long),
             "action_targets": torch.randn(2, 1, 4), "action_target_mask": torch.ones(2, 1, dtype=torch.long),
             "global_target": torch.randn(2, 4)}
    return output, batch


@pytest.mark.parametrize("head", ["object_embeds", "action_embeds", "global_embed"])
def test_a_head_switched_off_has_no_loss_in_the_total(head):
    output, batch = _output_and_batch(**{head: None})
    losses = compute_losses(output, batch, TrainConfig())
    component = {"object_embeds": "object", "action_embeds": "action", "global_embed": "global_"}[head]
    parts = {name: getattr(losses, name).item() for name in ("object", "action", "global_")}
    assert parts[component] == 0.0
    others = sum(v for k, v in parts.items() if k != component)
    assert losses.total.item() == pytest.approx(0.4 * 2.0 + 0.2 * others, rel=1e-6)


def test_a_zero_weight_is_logged_but_not_trained_on():
    output, batch = _output_and_batch()
    config = TrainConfig(object_weight=0.0, action_weight=0.0, global_weight=0.0)
    losses = compute_losses(output, batch, config)
    assert losses.total.item() == pytest.approx(0.4 * 2.0)
    assert 0.0 < losses.object.item() and 0.0 < losses.global_.item()  # computed, for the log
    losses.total.backward()
    assert output.object_embeds.grad is None and output.global_embed.grad is None
