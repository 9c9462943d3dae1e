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


# ---------------------------------------------------------------- what notebook 04 showed, in one list


def build_summary(parameters: pd.DataFrame, initial_loss: float, vocabulary: int, losses: list[float],
                  references: list[str], generated: list[str], spread_before: float, spread_after: float) -> str:
    """The Summary cell of notebook 04 (Markdown), from the parameter table, the untrained loss, the fit's
    losses, the fitted captions and the Q-Former's query spread before and after the fit."""
    import math

    total = parameters.loc["total"]
    trainable, frozen = int(total["trainable"]), int(total["frozen"])
    exact = sum(r.lower().split() == g.lower().split() for r, g in zip(references, generated))
    return "\n".join([
        f"- The captioner has {trainable + frozen:,} parameters, {trainable:,} of them trained "
        f"({100 * trainable / max(1, trainable + frozen):.0f}%).",
        f"- Untrained, its caption loss is {initial_loss:.2f}, against log(vocabulary) = {math.log(vocabulary):.2f} "
        "for a model that knows nothing" + (": it starts where it should." if abs(initial_loss - math.log(vocabulary)) < 0.5
                                            else ": it does not start at chance; check the initialisation."),
        f"- {len(losses)} steps on one batch took the loss from {losses[0]:.2f} to {losses[-1]:.2f} "
        f"(lowest {min(losses):.2f}); {exact} of {len(references)} captions came back exactly.",
        f"- The Q-Former's queries spread {spread_before:.3f} before the fit and {spread_after:.3f} after "
        "(0 = every query reads the same tokens).",
    ])


# ---------------------------------------------------------------- reading a training run (notebook 05)


def best_epoch(history: pd.DataFrame) -> int | None:
    """The epoch `best/` holds: the first with the highest quick CIDEr (the trainer keeps a later epoch only
    when it is strictly better), else the lowest validation loss; None for an empty history."""
    if history.empty:
        return None
    if "quick_cider" in history and history["quick_cider"].notna().any():
        return int(history.loc[history["quick_cider"].idxmax(), "epoch"])
    column = "val_loss" if "val_loss" in history else "train_loss"
    return int(history.loc[history[column].idxmin(), "epoch"])


def stream_similarity(clips, stats: dict[str, torch.Tensor] | None = None) -> pd.DataFrame:
    """How alike different clips' features are, per stream: the mean cosine between two clips' mean vectors,
    as stored and after standardising with `stats` (from `compute_feature_stats`; computed from `clips` when
    None). Near 1: every clip looks the same to the heads; near 0: clips point in their own directions."""
    from qvidcap.model.normalization import STREAMS, compute_feature_stats

    clips = list(clips)
    stats = stats or compute_feature_stats(clips)
    rows = []
    for stream in STREAMS:
        means = [getattr(c, stream).float().reshape(-1, getattr(c, stream).shape[-1]) for c in clips]
        raw = torch.stack([m.mean(0) for m in means if len(m)])  # (C, D)
        standard = torch.stack([((m - stats[f"{stream}_mean"]) / stats[f"{stream}_std"]).mean(0) for m in means if len(m)])
        rows.append({"stream": stream, "clips": len(raw), "mean cosine, as stored": _mean_offdiagonal_cosine(raw),
                     "mean cosine, standardised": _mean_offdiagonal_cosine(standard)})
    return pd.DataFrame(rows).set_index("stream").round(3)


def _mean_offdiagonal_cosine(vectors: torch.Tensor) -> float:
    unit = torch.nn.functional.normalize(vectors, dim=-1)
    cosine = unit @ unit.T  # (C, C)
    n = len(vectors)
    return float((cosine.sum() - cosine.diagonal().sum()) / max(1, n * (n - 1)))


def standardisation_verdict(similarity: pd.DataFrame) -> str:
    """Markdown reading `stream_similarity`: does standardising make the clips tell apart?"""
    raw, standard = similarity["mean cosine, as stored"], similarity["mean cosine, standardised"]
    parts = ", ".join(f"{s} {raw[s]:.2f} → {standard[s]:.2f}" for s in similarity.index)
    alike = [s for s in similarity.index if raw[s] >= 0.5 and standard[s] <= raw[s] / 2]
    head = f"Mean cosine between two different clips' features, as stored → standardised: {parts}."
    if alike:
        return (f"{head} As stored, the {' and '.join(alike)} vectors of different clips point almost the same way, "
                "so what tells clips apart is a small part of each vector; standardised, every clip points in a "
                "direction of its own, which gives the heads something to learn from.")
    return (f"{head} The stored features already differ between clips, so standardising changes little here; it "
            "stays on because it costs nothing.")


def loss_gap_verdict(history: pd.DataFrame, config) -> str:
    """Markdown: is the validation caption loss below the training one, and why that is expected here."""
    if history.empty or "val_caption" not in history:
        return "No validation loss was computed in this run."
    below = int((history["val_caption"] < history["train_caption"]).sum())
    last = history.iloc[-1]
    word, heads, qformer = config.decoder.word_dropout, config.heads.dropout, config.qformer.dropout
    reasons = [f"dropout (heads {heads:g}, Q-Former {qformer:g})"] if heads or qformer else []
    if word:
        reasons.append(f"word dropout ({word:g}: that share of the caption words the decoder conditions on is hidden "
                       "as `<unk>`, which makes each next word harder to predict)")
    head = (f"The validation caption loss is below the training loss in {below} of {len(history)} epochs "
            f"(last epoch: {last['val_caption']:.2f} against {last['train_caption']:.2f}).")
    why = ("The training loss is measured with " + " and ".join(reasons) + " switched on, and averaged over the "
           "epoch while the model still improves; the validation loss is computed at the end of the epoch in "
           "evaluation mode, where neither is applied." if reasons else
           "The training loss is averaged over the epoch while the model still improves; the validation loss is "
           "computed at the end of the epoch.")
    if below == 0:
        return head + " " + why + " Even so, the model does worse on clips it has not seen: it generalises less well than it fits."
    return head + " " + why + " So a lower validation loss is expected here and is no sign of a leak."


def training_story(history: pd.DataFrame, config) -> str:
    """Markdown on what this run's per-epoch table shows: a one-caption phase (if any), when the captions
    began to differ, the quick CIDEr from there, and which epoch the best checkpoint holds."""
    if history.empty or "distinct_captions" not in history:
        return "No validation clips were captioned in this run, so the per-epoch story cannot be read from it."
    epochs = history["epoch"].astype(int).tolist()
    distinct = history["distinct_captions"].astype(int).tolist()
    cider = history["quick_cider"].tolist()
    clips = config.train.eval_clips
    best = best_epoch(history)
    best_text = (f" `best/` holds epoch {best} (quick CIDEr {max(cider):.1f}, the highest of the run); `last/` holds "
                 f"epoch {epochs[-1]} ({cider[-1]:.1f}).")
    collapsed = [e for e, d in zip(epochs, distinct) if d <= 1]
    if not collapsed:
        return (f"The greedy captions of the {clips} validation clips were never all the same: {min(distinct)} to "
                f"{max(distinct)} distinct captions per epoch, quick CIDEr {cider[0]:.1f} after the first epoch and "
                f"{cider[-1]:.1f} after the last." + best_text)
    if distinct[-1] <= 1:
        return (f"After {len(epochs)} epochs the model still gives one caption for every validation clip (quick "
                f"CIDEr {min(cider):.1f} to {max(cider):.1f} as that one caption changed): it has not learned to read "
                "the video. Train longer (`train.epochs`) or check the learning rate." + best_text)
    last_collapsed = collapsed[-1]
    after = [(e, d, c) for e, d, c in zip(epochs, distinct, cider) if e > last_collapsed]
    during = [c for c, d in zip(cider, distinct) if d <= 1]
    losses = history.set_index("epoch")["train_caption"] if "train_caption" in history else None
    learned = (f" (its training caption loss fell from {losses.iloc[0]:.2f} to {losses.loc[last_collapsed]:.2f} "
               "meanwhile)" if losses is not None else "")
    return (f"For the first {len(collapsed)} of {len(epochs)} epochs (up to epoch {last_collapsed}) the model gave "
            f"**one caption for every validation clip**: the decoder was learning the captions' language{learned} "
            f"but not yet reading the prefix, and the quick CIDEr ({min(during):.1f} to {max(during):.1f}) only "
            f"changed with the one caption it repeated. From epoch {after[0][0]} on, the captions differ "
            f"({min(d for _, d, _ in after)} to {max(d for _, d, _ in after)} distinct of {clips} per epoch) and the "
            f"quick CIDEr climbs to {max(c for _, _, c in after):.1f}. Stopped after epoch {last_collapsed}, this run "
            "would have had only that one caption to show: on this profile the number of epochs is part of what makes "
            "the model learn (a shorter schedule is not quite this run cut short, as its learning rate also decays "
            "sooner)." + best_text)


def training_summary(history: pd.DataFrame, steps: int, stopped: str, config) -> str:
    """The Summary cell of notebook 05 (Markdown), from the run's per-epoch table."""
    if history.empty:
        return f"- {steps} optimizer steps ({stopped}); no epoch finished, so there is nothing to summarise yet."
    first, last = history.iloc[0], history.iloc[-1]
    best = best_epoch(history)
    lines = [f"- {steps:,} optimizer steps over {len(history)} epochs ({stopped}), batch {config.train.batch_size}.",
             f"- Training caption loss {first['train_caption']:.2f} → {last['train_caption']:.2f}; validation "
             f"{first['val_caption']:.2f} → {last['val_caption']:.2f}." if "val_caption" in history else
             f"- Training caption loss {first['train_caption']:.2f} → {last['train_caption']:.2f}."]
    if "quick_cider" in history:
        collapsed = int((history["distinct_captions"] <= 1).sum()) if "distinct_captions" in history else 0
        lines.append(f"- Quick CIDEr {first['quick_cider']:.1f} after epoch {int(first['epoch'])}, "
                     f"{history['quick_cider'].max():.1f} at best (epoch {best}, kept as `best/`), "
                     f"{last['quick_cider']:.1f} at the end; {collapsed} epoch(s) gave one caption for every clip.")
    return "\n".join(lines)
