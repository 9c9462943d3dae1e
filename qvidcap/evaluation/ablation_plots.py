"""The figure of notebook 09: each variant's CIDEr with its 95% interval, against the full model's."""
from __future__ import annotations


def plot_ablations(results: dict, title: str = ""):
    """One row per variant (`results.json` of `qvidcap.evaluation.ablations`): CIDEr with its 95% bootstrap
    interval as error bars, the full model's interval shaded, its other seeds as crosses, and the
    caption-blind baseline as a dashed line when it was scored."""
    import matplotlib.pyplot as plt

    from qvidcap.evaluation.ablations import verdict

    variants = results["variants"]
    names = list(variants)
    fig, ax = plt.subplots(figsize=(8.5, 0.45 * len(names) + 1.4))
    full = variants["full"]
    ax.axvspan(full["interval"]["low"], full["interval"]["high"], color="tab:blue", alpha=0.15,
               label="full model, 95% interval")
    for y, name in enumerate(names):
        row = variants[name]
        detected = name != "full" and verdict(row["paired_test"]) != "none"
        ax.errorbar(row["CIDEr"], y, xerr=[[row["CIDEr"] - row["interval"]["low"]], [row["interval"]["high"] - row["CIDEr"]]],
                    fmt="o", color="tab:red" if detected else "black", capsize=3, lw=1)
    seeds = [v for k, v in results.get("seeds", {}).get("runs", {}).items() if int(k) != full["seed"]]
    if seeds:
        ax.scatter(seeds, [0] * len(seeds), marker="x", color="tab:blue", zorder=3, label="full model, other seeds")
    if results.get("blind"):
        ax.axvline(results["blind"]["CIDEr"], color="grey", linestyle="--", label="caption-blind baseline")
    ax.set_yticks(range(len(names)), [variants[n]["label"] for n in names])
    ax.invert_yaxis()
    ax.set(xlabel="CIDEr (×100); red: paired difference from the full model detected", title=title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)
    fig.tight_layout()
    return fig
