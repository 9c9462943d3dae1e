"""The training objective: caption cross-entropy plus three auxiliary cosine losses.

    loss = w_cap · CE(caption) + w_obj · L_match(objects, noun phrases)
         + w_act · L_match(actions, verbs) + w_glob · (1 − cos(global, caption embedding))

`L_match` pairs each head's query outputs with the caption's phrase embeddings by the Hungarian
algorithm on the cost 1 − cosine (padded phrases never take part) and is 1 − the mean cosine over the
matched pairs of the whole batch. The matching itself is not differentiated; the cosines of the matched
pairs are.

Ablations: a head switched off (`heads.object_head=false`, ...) has no output, so its loss is not computed
and not in the total (its logged component is 0). A loss whose weight is 0 (the "no auxiliary losses"
variant) is computed without gradient, for the log only, and is not in the total either.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment


@dataclass
class LossOutput:
    """The weighted total (what backward sees) and each unweighted component (what the log shows; 0 for a
    head switched off)."""

    total: torch.Tensor
    caption: torch.Tensor
    object: torch.Tensor
    action: torch.Tensor
    global_: torch.Tensor

    def as_dict(self) -> dict[str, float]:
        return {"loss": float(self.total), "caption": float(self.caption), "object": float(self.object),
                "action": float(self.action), "global": float(self.global_)}


def hungarian_match(predictions: torch.Tensor, targets: torch.Tensor, target_mask: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per sample, the (query index, target index) pairs that maximise the summed cosine.

    `predictions (B, Q, E)`, `targets (B, K, E)`, `target_mask (B, K)` with 1 = real phrase.
    Each sample gets min(Q, number of real targets) pairs; padded targets are never matched.
    """
    with torch.no_grad():
        cosine = _cosine_matrix(predictions.detach().float(), targets.detach().float()).cpu()  # (B, Q, K)
    mask = target_mask.detach().bool().cpu()
    pairs = []
    for b in range(cosine.shape[0]):
        real = torch.nonzero(mask[b], as_tuple=False).flatten()  # indices of real targets
        if real.numel() == 0:
            empty = torch.zeros(0, dtype=torch.long)
            pairs.append((empty, empty))
            continue
        rows, cols = linear_sum_assignment((1.0 - cosine[b][:, real]).numpy())
        pairs.append((torch.as_tensor(rows, dtype=torch.long), real[torch.as_tensor(cols, dtype=torch.long)]))
    return pairs


def hungarian_cosine_loss(predictions: torch.Tensor, targets: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
    """1 − mean cosine over Hungarian-matched (query, phrase) pairs of the batch; 0 when no sample has a phrase."""
    pairs = hungarian_match(predictions, targets, target_mask)
    batch_index = torch.cat([torch.full_like(rows, b) for b, (rows, _) in enumerate(pairs)]).to(predictions.device)
    query_index = torch.cat([rows for rows, _ in pairs]).to(predictions.device)
    target_index = torch.cat([cols for _, cols in pairs]).to(predictions.device)
    if batch_index.numel() == 0:
        return predictions.sum() * 0.0  # keeps the graph (and DDP) whole
    matched_predictions = predictions[batch_index, query_index].float()  # (M, E)
    matched_targets = targets[batch_index, target_index].float()  # (M, E)
    return 1.0 - F.cosine_similarity(matched_predictions, matched_targets, dim=-1).mean()


def global_cosine_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 − mean cosine between `prediction (B, E)` and `target (B, E)`."""
    return 1.0 - F.cosine_similarity(prediction.float(), target.float(), dim=-1).mean()


def compute_losses(output, batch: dict, train_config) -> LossOutput:
    """Combine the model's caption loss with the auxiliary losses, weighted by `train_config.*_weight`.

    `output` is a `CaptionerOutput` (caption_loss, object_embeds, action_embeds, global_embed; an embedding
    is None when its head is switched off); `batch` holds the text targets the collate function made.
    """
    caption = output.caption_loss.float()
    total = train_config.caption_weight * caption
    auxiliary = {
        "object": (train_config.object_weight, output.object_embeds,
                   lambda x: hungarian_cosine_loss(x, batch["object_targets"], batch["object_target_mask"])),
        "action": (train_config.action_weight, output.action_embeds,
                   lambda x: hungarian_cosine_loss(x, batch["action_targets"], batch["action_target_mask"])),
        "global": (train_config.global_weight, output.global_embed,
                   lambda x: global_cosine_loss(x, batch["global_target"])),
    }
    parts = {}
    for name, (weight, embeds, loss_of) in auxiliary.items():
        if embeds is None:  # the head is switched off: nothing to compare, nothing in the total
            parts[name] = caption.new_zeros(())
        elif weight == 0:  # weighted out: logged, not trained on
            with torch.no_grad():
                parts[name] = loss_of(embeds.detach())
        else:
            parts[name] = loss_of(embeds)
            total = total + weight * parts[name]
    return LossOutput(total=total, caption=caption.detach(), object=parts["object"].detach(),
                      action=parts["action"].detach(), global_=parts["global"].detach())


def _cosine_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine of every pair: `a (B, Q, E)`, `b (B, K, E)` -> `(B, Q, K)`."""
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).transpose(1, 2)
