"""Looking inside the model: each stage's input and output shapes, and a short fit on one batch.

Notebook 04 calls these to build the model one head at a time; tests reach them here.
"""
from __future__ import annotations

import pandas as pd
import torch

from qvidcap.model.captioner import QVidCap


def _shape(x: torch.Tensor) -> str:
    return "(" + ", ".join(str(s) for s in x.shape) + ")"


@torch.no_grad()
def stage_shapes(model: QVidCap, temporal: torch.Tensor, context: torch.Tensor, objects: torch.Tensor,
                 object_mask: torch.Tensor) -> pd.DataFrame:
    """One row per stage of `encode_video`: what goes in, what comes out, with shapes."""
    s = model.projection(temporal, context, objects, object_mask)
    obj = model.object_head(s)
    act = model.action_head(s.motion, obj.queries)
    glo = model.global_head(s.motion, obj.queries, act.features)
    q = model.qformer(obj.queries, act.features, glo.features)
    prefix = model.caption_head(q.queries)
    rows = [
        ("InputProjection", f"temporal {_shape(temporal)}, objects {_shape(objects)}, context {_shape(context)}",
         f"motion {_shape(s.motion)}, objects {_shape(s.objects)}, context {_shape(s.context)}"),
        ("ObjectHead", "[motion, objects, context] + object mask", f"ξ {_shape(obj.queries)}, embeds {_shape(obj.embeds)}"),
        ("ActionHead", "motion, ξ", f"features {_shape(act.features)}, embeds {_shape(act.embeds)}"),
        ("GlobalHead", "[motion, ξ, action]", f"features {_shape(glo.features)}, embed {_shape(glo.embed)}"),
        ("QFormer", "[ξ, action, global] + types", f"queries {_shape(q.queries)}"),
        ("CaptionHead", "queries", f"prefix {_shape(prefix)}"),
    ]
    return pd.DataFrame(rows, columns=["stage", "input", "output"]).set_index("stage")


def fit_one_batch(model: QVidCap, batch: dict, steps: int = 200, lr: float = 1e-3) -> list[float]:
    """`steps` AdamW steps on one batch (caption loss only); the loss after each step's forward.

    `batch` holds temporal, context, objects, object_mask, input_ids, attention_mask. The model is left
    in training mode; its weights change (build a fresh one to train for real).
    """
    keys = ("temporal", "context", "objects", "object_mask", "input_ids", "attention_mask")
    missing = [k for k in keys if k not in batch]
    if missing:
        raise KeyError(f"fit_one_batch needs {missing} in the batch; it has {sorted(batch)}")
    inputs = {k: batch[k] for k in keys}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        loss = model(**inputs).caption_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def memorisation_verdict(references: list[str], generated: list[str]) -> str:
    """One sentence on how much of a fitted batch comes back: exact captions, and the share of reference words
    reproduced in place (a caption can be one word off and still not count as exact)."""
    def words(text: str) -> list[str]:
        return text.lower().replace(".", " ").replace(",", " ").split()

    exact = sum(words(r) == words(g) for r, g in zip(references, generated))
    in_place = [sum(a == b for a, b in zip(words(r), words(g))) / max(1, len(words(r))) for r, g in zip(references, generated)]
    share = 100 * sum(in_place) / max(1, len(in_place))
    if exact == len(references):
        verdict = "the batch is memorised word for word"
    elif share >= 80:
        verdict = "the batch is nearly memorised: most captions are right but for a word or two"
    else:
        verdict = "the batch is only partly memorised: more fitting steps (fit_steps) would push further"
    return f"{exact} of {len(references)} captions come back exactly, {share:.0f}% of reference words in place: {verdict}."


@torch.no_grad()
def query_spread(attention: torch.Tensor) -> float:
    """How differently the queries of one attention map look (rows: queries, columns: tokens): the mean total-
    variation distance between each query's weights and the queries' average, 0 = all alike, 1 = disjoint."""
    weights = attention.float()  # (Q, tokens)
    return float(0.5 * (weights - weights.mean(0, keepdim=True)).abs().sum(-1).mean())


def specialisation_verdict(before: torch.Tensor, after: torch.Tensor, name: str = "Q-Former") -> str:
    """A sentence comparing the queries' spread before and after fitting, for the maps the notebook shows."""
    b, a = query_spread(before), query_spread(after)
    if a > max(2 * b, b + 0.05):
        change = "the queries now read different tokens: they have started to specialise"
    elif a > b + 0.01:
        change = "the queries have moved apart a little, not much"
    else:
        change = "the queries still read the same tokens: a short fit on the caption loss alone does not separate them"
    return f"{name} query spread {b:.3f} before fitting, {a:.3f} after: {change}."
